"""sched_ext in one kernel: the symbols, enum constants and derived offsets the walkers need,
resolved once from the kernel object, and the walkers called with them.

:class:`SchedExt` takes the kernel object (``kernel.KernelContext``, or any object with its
public methods: ``reader``, ``layout``, ``symbol()``, ``enum()``, ``per_cpu_offsets()``,
``maps()``, ``btf_at()``, ``sorted_symbols()``) and does not re-wrap it: callers ask
``sx.kernel`` for kernel-generic things (symbols, enums), ``sx`` for sched_ext ones.
"""

from dataclasses import dataclass, field
from typing import Any

from ..bpf import runstats
from ..core import LayoutError, ReadError
from ..errors import KtstrError
from ..kds import Damage, DamageLog
from ..walkers import arena as arenaw
from ..walkers import printk
from . import dsq as dsqs
from .cpuctx import CpuContexts, find_cpu_contexts
from .discovery import SchedOpsMap, SchedRef, find_scheds, sched_ops_maps
from .events import EventStats, read_events
from .exit import UserExitInfo, find_user_exit_infos, kind_text
from .state import SchedState, read_sched_state
from .symbols import class_names, decode_flags, ops_state_text, read_global, resolve_symbols


@dataclass
class KernelLog:
    """The printk ring buffer, read once: its records, what was skipped, and why it could not
    be read at all (``unavailable``)."""

    records: list = field(default_factory=list)
    damage: DamageLog = field(default_factory=DamageLog)
    unavailable: Damage = None


class SchedExt:
    """sched_ext state of the kernel object ``kernel`` (see the module doc)."""

    def __init__(self, kernel, list_maps=None) -> None:
        self.kernel = kernel
        # How the dump's BPF maps are listed: the kernel's registry by default; views pass the
        # union of every path (views/inventory) so a damaged map_idr hides nothing here.
        self._list_maps = list_maps or kernel.maps
        self.reader = kernel.reader
        self.layout = kernel.layout
        if not self.layout.has("sched_ext_entity"):
            raise KtstrError("kernel type 'struct sched_ext_entity' is not in the symbol table: "
                             "this kernel has no sched_ext (CONFIG_SCHED_CLASS_EXT)")
        self.syms = resolve_symbols(kernel.symbol)
        self.classes = class_names(self.syms)
        lnode = kernel.enum("scx_dsq_lnode_flags")
        cursor = dict(lnode).get("SCX_DSQ_LNODE_ITER_CURSOR", 1) if lnode else 1
        self.dsq_offs = dsqs.DsqOffsets.from_layout(self.layout, cursor_flag=cursor)
        self._maps: Any = None             # caches, filled on first use
        self._maps_missing: Any = None
        self._ops_maps: Any = None
        self._ops_damage = DamageLog()
        self._log: Any = None

    # --- kernel types and constants ----------------------------------------------------------

    def callback_names(self, struct: str = "sched_ext_ops") -> list[str]:
        """Function-pointer members of ``struct`` in offset order."""
        if not self.layout.has(struct):
            return []
        return [n for n, f in self.layout.members(struct) if f.kind == "function"]

    def enable_state_names(self) -> list[tuple[str, int]] | None:
        return self.kernel.enum("scx_enable_state") or self.kernel.enum("scx_ops_enable_state")

    def nr_nodes(self) -> int:
        try:
            n = read_global(self.reader, self.layout, self.syms, "nr_node_ids")
        except (ReadError, LayoutError):
            return 1
        if n is None:
            return 1
        return n if 0 < n <= dsqs.MAX_NODES else 1

    def class_name(self, ptr: int | None) -> str | None:
        if ptr is None:
            return None
        return self.classes.get(ptr, f"{ptr:#x}" if ptr else "none")

    def task_flags(self, value: int | None) -> str | None:
        return None if value is None else decode_flags(self.kernel.enum("scx_ent_flags"), value,
                                                        "SCX_TASK_", 32)

    def ops_state(self, value: int | None) -> str | None:
        return ops_state_text(value, self.kernel.enum("scx_ops_state"))

    def exit_kind(self, value: int | None) -> str | None:
        return kind_text(self.kernel.enum("scx_exit_kind"), value)

    def cursor_flag(self) -> int:
        return dict(self.kernel.enum("scx_ent_flags") or ()).get("SCX_TASK_CURSOR", 0) & 0xFFFFFFFF

    # --- state -------------------------------------------------------------------------------

    def sched_state(self, sch: int | None = None) -> SchedState:
        return read_sched_state(self.reader, self.layout, self.syms, self.callback_names(),
                                self.enable_state_names(), sch=sch)

    def bpf_maps(self, damage: DamageLog | None = None) -> list:
        """The BPF maps of the dump, listed once ([] and a Damage when the registry is missing).
        The one place the sched_ext package lists maps."""
        if self._maps is None:
            try:
                self._maps, self._maps_missing = list(self._list_maps()), None
            except KtstrError as e:
                self._maps, self._maps_missing = [], Damage("BPF map registry", 0, str(e), "corrupt")
        d = self._maps_missing
        if damage is not None and d is not None:
            damage.add(d.what, d.addr, d.reason, d.kind)
        return self._maps

    def ops_maps(self, damage: DamageLog | None = None) -> list[SchedOpsMap]:
        """Every struct_ops map holding a ``sched_ext_ops``, with its ``ops.priv`` scheduler
        (:func:`discovery.sched_ops_maps`), read once."""
        if self._ops_maps is None:
            self._ops_maps = sched_ops_maps(self.reader, self.layout, self.bpf_maps(self._ops_damage),
                                            self._ops_damage)
        if damage is not None:
            damage.extend(self._ops_damage)
        return self._ops_maps

    def schedulers(self, damage: DamageLog | None = None, struct_ops: bool = True) -> list[SchedRef]:
        """[SchedRef]: ``scx_root``, ``scx_sched_all``, children, and (``struct_ops``) the
        scheduler each sched_ext struct_ops map registered (``ops.priv``)."""
        extra = [(om.priv, f"struct_ops map {om.map.id} {om.map.name} (ops.priv)")
                 for om in self.ops_maps()] if struct_ops else []
        return find_scheds(self.reader, self.layout, self.syms, [e for e in extra if e[0]], damage)

    def cpus(self, sch: int | None, walk: bool = True) -> list[dsqs.CpuState]:
        """One CpuState per possible CPU (raises KtstrError when ``runqueues`` is missing)."""
        runqueues = self.syms.get("runqueues")
        if runqueues is None:
            raise KtstrError("symbol 'runqueues' is not in the symbol table")
        return dsqs.read_cpus(self.reader, self.layout, runqueues,
                              self.kernel.per_cpu_offsets(), self.dsq_offs, sch, walk=walk)

    def bypass_dsqs(self, sch: int, walk: bool = True) -> list[dsqs.Dsq]:
        """The per-CPU bypass DSQs of scheduler ``sch`` (7.x), as Dsq records."""
        return [dsqs.read_dsq(self.reader, self.layout, self.dsq_offs, addr, "bypass", walk=walk, cpu=cpu)
                for cpu, addr in dsqs.bypass_dsq_addrs(self.reader, self.layout, sch,
                                                       self.kernel.per_cpu_offsets())]

    def cpu_contexts(self) -> CpuContexts:
        """The schedulers' own per-CPU context (per-CPU maps, CPU-indexed arrays in their
        globals and arena globals: :mod:`.cpuctx`), read once per kernel."""
        def arena_of(btf_kva, maps):
            try:
                arenas = arenaw.kernel_arenas(self.kernel)
            except (LayoutError, KtstrError) as e:
                return None, f"arenas unreadable: {e}"
            progs, prog_arenas = arenaw.kernel_prog_arenas(self.kernel)
            return arenaw.arena_for_program(arenas, progs, btf_kva, [m.kva for m in maps], None,
                                            prog_arenas)

        def build() -> CpuContexts:
            try:
                offsets = self.kernel.per_cpu_offsets()
            except (KtstrError, ReadError) as e:
                out = CpuContexts()
                out.damage.add("per-CPU offsets", 0, str(e))
                return out
            return find_cpu_contexts(self.reader, self.layout, self.bpf_maps(), self.kernel.btf_at,
                                     [om.map for om in self.ops_maps()], offsets, arena_of)

        memo = getattr(self.kernel, "memo", None)
        return memo(("scx.cpu_contexts",), build) if memo else build()

    def events(self, sch: int | None) -> EventStats | None:
        return read_events(self.reader, self.layout, sch, self.kernel.per_cpu_offsets(), self.syms)

    def prog_stats(self, prog_kva: int) -> runstats.RunStats:
        return runstats.prog_stats(self.reader, self.layout, prog_kva, self.kernel.per_cpu_offsets())

    def stats_enabled(self) -> bool | None:
        return runstats.stats_enabled(self.reader, self.layout, self.syms.get("bpf_stats_key"))

    def user_exit_infos(self, damage: DamageLog | None = None) -> list[UserExitInfo]:
        maps = self.bpf_maps(damage)
        if not maps or not self.layout.has("bpf_array", "value"):
            return []
        return find_user_exit_infos(self.reader, self.layout, maps, self.kernel.btf_at, damage)

    def kernel_log(self) -> KernelLog:
        """The printk ring buffer, read once."""
        if self._log is None:
            log = self._log = KernelLog()
            addr = self.syms.get("prb")
            if addr is None:
                log.unavailable = Damage("printk ring buffer", 0, "kernel symbol 'prb' is not in "
                                         "the symbol table", "corrupt")
            else:
                try:
                    log.records = printk.kernel_log(self.reader, self.layout, addr, log.damage)
                except (ReadError, LayoutError) as e:
                    log.unavailable = Damage("printk ring buffer", 0, f"unreadable: {e}")
        return self._log

    def symbolize(self, addr: int) -> str:
        """``function+0xoff`` for a kernel text address (the nearest symbol below), else hex."""
        return self.kernel.symbol_near(addr) or f"{addr:#x}"
