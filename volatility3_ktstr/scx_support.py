"""What the sched_ext plugins share: symbols, enum constants and the kernel-type facts they need.

Kept outside the plugins directory so that no plugin imports another plugin module.
"""

import logging

from volatility3.framework import objects

from .errors import KtstrError
from .kernel import KernelContext
from .walkers import scx

vollog = logging.getLogger(__name__)


class ScxKernel:
    """sched_ext view of a :class:`KernelContext`: symbols, enums, offsets (all resolved once)."""

    def __init__(self, kctx: KernelContext):
        self.kctx = kctx
        self.reader = kctx.reader
        self.layout = kctx.layout
        if not self.layout.has("sched_ext_entity"):
            raise KtstrError("kernel type 'struct sched_ext_entity' is not in the symbol table: "
                             "this kernel has no sched_ext (CONFIG_SCHED_CLASS_EXT)")
        self.syms = scx.resolve_symbols(self.symbol)
        self.classes = scx.class_names(self.syms)
        self._enums = {}
        self._btf = None
        lnode = self.enum("scx_dsq_lnode_flags")
        cursor = dict(lnode).get("SCX_DSQ_LNODE_ITER_CURSOR", 1) if lnode else 1
        self.dsq_offs = scx.DsqOffsets.from_layout(self.layout, cursor_flag=cursor)

    def symbol(self, name):
        """A symbol's address as the kernel's pointers hold it (canonical: the layer may hand back
        symbol addresses cut to its address width, which breaks per-CPU sums and comparisons
        with pointers read from memory)."""
        addr = self.kctx.symbol(name)
        return None if addr is None else self.canonical(addr)

    def canonical(self, addr):
        addr &= (1 << 64) - 1
        mask = getattr(self.kctx.layer, "address_mask", (1 << 64) - 1)
        if mask < (1 << 64) - 1 and addr & ((mask + 1) >> 1):
            addr |= ((1 << 64) - 1) & ~mask
        # Kernel image symbols live in the top half; a 48-bit-cut one is sign-extended (the
        # symbol table may cut to 48 bits even under a wider layer).
        if addr >> 48 == 0 and addr & (1 << 47):
            addr |= 0xFFFF << 48
        return addr

    def enum(self, name):
        """Constants of ``enum name`` as (name, value) pairs in declaration order, or None."""
        if name in self._enums:
            return self._enums[name]
        out = None
        try:
            out = list(self.kctx.module.get_enumeration(name).choices.items())
        except Exception:  # not in the ISF: try the kernel's own BTF
            try:
                if self._btf is None:
                    self._btf = self.kctx.kernel_btf()
                types = self._btf.find(name)
                if types:
                    out = list(types[0].values)
            except KtstrError as e:
                vollog.debug("enum %s: %s", name, e)
        self._enums[name] = out
        return out

    def callback_names(self, struct="sched_ext_ops"):
        """Function-pointer members of ``struct`` in offset order (from the kernel ISF)."""
        try:
            tmpl = self.kctx.module.get_type(struct)
        except Exception:
            return []
        members = sorted(tmpl.vol.members.items(), key=lambda kv: kv[1][0])
        out = []
        for name, (_off, sub) in members:
            if getattr(sub.vol, "object_class", None) is objects.Pointer:
                target = sub.vol.get("subtype")
                # Volatility types a function as Function or as Void named "<table>!function".
                if target is not None and (
                        getattr(target.vol, "object_class", None) is objects.Function
                        or str(target.vol.get("type_name", "")).endswith("!function")):
                    out.append(name)
        return out

    def nr_nodes(self):
        addr = self.syms.get("nr_node_ids")
        if addr is None:
            return 1
        try:
            n = self.reader.u32(addr)
        except Exception:
            return 1
        return n if 0 < n <= scx.MAX_NODES else 1

    def class_name(self, ptr):
        if ptr is None:
            return None
        return self.classes.get(ptr, f"{ptr:#x}" if ptr else "none")

    def task_flags(self, value):
        return None if value is None else scx.decode_flags(self.enum("scx_ent_flags"), value,
                                                            "SCX_TASK_", 32)

    def ops_state(self, value):
        return scx.ops_state_text(value, self.enum("scx_ops_state"))
