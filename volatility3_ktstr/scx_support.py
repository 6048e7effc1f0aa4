"""What the sched_ext plugins share: symbols, enum constants and the kernel-type facts they need.

Kept outside the plugins directory so that no plugin imports another plugin module. Everything
comes through the kernel adapter (``kernel.KernelContext``, or anything with the same
``reader``, ``layout``, ``symbol()``, ``enum()``, ``per_cpu_offsets()``, ``maps()``,
``btf_at()`` and ``sorted_symbols()``); no Volatility import here.
"""

import bisect
from dataclasses import dataclass

from .bpf import runstats
from .core import LayoutError, ReadError, Record
from .errors import KtstrError
from .kds import DamageLog
from .walkers import printk, scx, scx_exit

SCX_VALUE_STRUCT = "bpf_struct_ops_sched_ext_ops"


@dataclass
class SchedOpsMap:
    """A struct_ops map holding a ``sched_ext_ops`` (a BPF scheduler's registration)."""

    map: object              # BpfMap
    st_map: int              # struct bpf_struct_ops_map address
    kdata: int               # the kernel copy of the ops
    priv: int = None         # ops.priv: the scx_sched it registered (None: kernel without priv)
    error: str = None


class ScxKernel:
    """sched_ext view of a kernel adapter: symbols, enums, offsets (all resolved once)."""

    def __init__(self, kctx):
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
        self._ops_maps = None
        self._ops_errors = []
        self._maps = None
        self._maps_error = None
        self._log = None

    def symbol(self, name):
        return self.kctx.symbol(name)

    def enum(self, name):
        """Constants of ``enum name`` as (name, value) pairs in declaration order, or None."""
        return self.kctx.enum(name)

    def callback_names(self, struct="sched_ext_ops"):
        """Function-pointer members of ``struct`` in offset order."""
        if not self.layout.has(struct):
            return []
        return [n for n, f in self.layout.members(struct) if f.kind == "function"]

    def enable_state_names(self):
        return self.enum("scx_enable_state") or self.enum("scx_ops_enable_state")

    def nr_nodes(self):
        addr = self.syms.get("nr_node_ids")
        if addr is None:
            return 1
        try:
            n = self.reader.u32(addr)
        except ReadError:
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

    def exit_kind(self, value):
        return scx_exit.kind_text(self.enum("scx_exit_kind"), value)

    def cursor_flag(self):
        return dict(self.enum("scx_ent_flags") or ()).get("SCX_TASK_CURSOR", 0) & 0xFFFFFFFF

    # --- state -----------------------------------------------------------------------------

    def sched_state(self, sch=None):
        return scx.read_sched_state(self.reader, self.layout, self.syms, self.callback_names(),
                                    self.enable_state_names(), sch=sch)

    def maps(self, errors=None):
        """BPF maps of the dump ([] with a line in ``errors`` when the registry is missing)."""
        if self._maps is None:
            try:
                from .views import inventory  # every map reachable, not only map_idr's

                self._maps = list(inventory.maps(self.kctx))
                self._maps_error = None
            except KtstrError as e:
                self._maps, self._maps_error = [], str(e)
        if errors is not None and self._maps_error:
            errors.append(self._maps_error)
        return self._maps

    def ops_maps(self, errors=None):
        """Every struct_ops map whose value is a ``sched_ext_ops``, with ``ops.priv`` (kept only
        when it points at a ``scx_sched`` whose ops carry the same name)."""
        if self._ops_maps is None:
            self._ops_maps, errs = [], []
            lay = self.layout
            if lay.has("bpf_struct_ops_map"):
                off = lay.offset("bpf_struct_ops_map", "map")
                size = lay.size(SCX_VALUE_STRUCT) if lay.has(SCX_VALUE_STRUCT) else None
                for m in self.maps(errs):
                    # Other struct_ops (tcp_congestion_ops, ...) have values of other sizes.
                    if m.type_name != "struct_ops" or m.error or (size and m.value_size != size):
                        continue
                    st_map = m.kva - off
                    om = SchedOpsMap(m, st_map, scx.struct_ops_kdata(lay, st_map, SCX_VALUE_STRUCT))
                    try:
                        priv = scx.struct_ops_sched(self.reader, lay, st_map, SCX_VALUE_STRUCT)
                        if priv and self._same_ops(priv, om.kdata):
                            om.priv = priv
                        elif priv:
                            om.error = (f"struct_ops map {m.id} ops.priv {priv:#x} is not a "
                                        f"scheduler with these ops")
                    except (ReadError, LayoutError) as e:
                        om.error = f"struct_ops map {m.id} ops.priv unreadable: {e}"
                    if om.error:
                        errs.append(om.error)
                    self._ops_maps.append(om)
            self._ops_errors = errs
        if errors is not None:
            errors.extend(self._ops_errors)
        return self._ops_maps

    def _same_ops(self, sch, kdata):
        """The scx_sched at ``sch`` copied its ops from ``kdata`` (same name)."""
        if not self.layout.has("scx_sched", "ops"):
            return False
        name = Record(self.reader, self.layout, "sched_ext_ops", kdata, ["name"]).str("name")
        mine = Record(self.reader, self.layout, "sched_ext_ops", scx.sched_ops_addr(self.layout, sch),
                      ["name"]).str("name")
        return bool(name) and name == mine

    def schedulers(self, damage=None):
        """[SchedRef]: ``scx_root``, ``scx_sched_all``, children, and the scheduler each
        sched_ext struct_ops map registered (``ops.priv``)."""
        extra = [(om.priv, f"struct_ops map {om.map.id} {om.map.name} (ops.priv)")
                 for om in self.ops_maps() if om.priv]
        return scx.find_scheds(self.reader, self.layout, self.syms, extra, damage)

    def events(self, sch):
        return scx.read_events(self.reader, self.layout, sch, self.kctx.per_cpu_offsets(), self.syms)

    def prog_stats(self, prog_kva):
        return runstats.prog_stats(self.reader, self.layout, prog_kva, self.kctx.per_cpu_offsets())

    def stats_enabled(self):
        return runstats.stats_enabled(self.reader, self.layout, self.syms.get("bpf_stats_key"))

    def user_exit_infos(self, errors=None):
        errors = errors if errors is not None else []
        maps = self.maps(errors)
        if not maps or not self.layout.has("bpf_array", "value"):
            return []
        return scx_exit.find_user_exit_infos(self.reader, self.layout, maps, self.kctx.btf_at, errors)

    def kernel_log(self):
        """(records, damage, error): the printk ring buffer, read once."""
        if self._log is None:
            damage = DamageLog()
            addr = self.syms.get("prb")
            if addr is None:
                self._log = ([], damage, "kernel symbol 'prb' (the printk ring buffer) is not in "
                                         "the symbol table")
            else:
                try:
                    self._log = (printk.kernel_log(self.reader, self.layout, addr, damage), damage, None)
                except (ReadError, LayoutError) as e:
                    self._log = ([], damage, f"printk ring buffer unreadable: {e}")
        return self._log

    def symbolize(self, addr):
        """``function+0xoff`` for a kernel text address (the nearest symbol below), else hex."""
        try:
            table = self.kctx.sorted_symbols()
        except (KtstrError, AttributeError):
            table = []
        i = bisect.bisect_right(table, (addr, "\uffff")) - 1
        if i < 0 or not table or addr - table[i][0] > 1 << 20:
            return f"{addr:#x}"
        base, name = table[i]
        return f"{name}+{addr - base:#x}" if addr != base else name
