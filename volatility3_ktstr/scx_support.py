"""What the sched_ext plugins share: symbols, enum constants and the kernel-type facts they need.

Kept outside the plugins directory so that no plugin imports another plugin module. Everything
comes through the kernel adapter (KernelContext); no Volatility import here.
"""

from .errors import KtstrError
from .kernel import KernelContext
from .walkers import scx


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
        lnode = self.enum("scx_dsq_lnode_flags")
        cursor = dict(lnode).get("SCX_DSQ_LNODE_ITER_CURSOR", 1) if lnode else 1
        self.dsq_offs = scx.DsqOffsets.from_layout(self.layout, cursor_flag=cursor)

    def symbol(self, name):
        return self.kctx.symbol(name)

    def canonical(self, addr):
        return self.kctx.canonical(addr)

    def enum(self, name):
        """Constants of ``enum name`` as (name, value) pairs in declaration order, or None."""
        return self.kctx.enum(name)

    def callback_names(self, struct="sched_ext_ops"):
        """Function-pointer members of ``struct`` in offset order."""
        if not self.layout.has(struct):
            return []
        return [n for n, f in self.layout.members(struct) if f.kind == "function"]

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
