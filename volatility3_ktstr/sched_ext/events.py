"""sched_ext event counters (``SCX_EV_*``, ``struct scx_event_stats``, 6.15+), per CPU and summed
as sysfs ``events`` prints them (``scx_read_events``: the sum over every possible CPU)."""

from dataclasses import dataclass, field

from ..core import Layout, Reader, ReadError, Record, percpu_sum
from ..kds import DamageLog
from .dsq import pcpu_base
from .symbols import MASK64


@dataclass
class EventStats:
    """The counters of one scheduler."""

    names: list = field(default_factory=list)     # members of struct scx_event_stats, in order
    per_cpu: list = field(default_factory=list)   # [(cpu, [values] or None when unreadable)]
    source: str = None
    damage: DamageLog = field(default_factory=DamageLog)

    @property
    def totals(self):
        sums = [0] * len(self.names)
        for _, values in self.per_cpu:
            if values is not None:
                sums = [a + b for a, b in zip(sums, values)]
        return sums


def read_events(reader: Reader, layout: Layout, sch: int | None, percpu_offsets: list[int],
                syms: dict | None = None) -> EventStats | None:
    """The event counters of the scheduler at ``sch``: ``scx_sched.pcpu->event_stats`` (7.x),
    ``scx_sched.event_stats_cpu`` (6.17), or the per-CPU global ``event_stats_cpu`` (6.15);
    None on kernels without event counters."""
    if not layout.has("scx_event_stats"):
        return None
    ev = EventStats()
    if sch and layout.has("scx_sched", "pcpu") and layout.has("scx_sched_pcpu", "event_stats"):
        base, inner = pcpu_base(reader, layout, sch), layout.offset("scx_sched_pcpu", "event_stats")
        ev.source = "scx_sched.pcpu->event_stats"
    elif sch and layout.has("scx_sched", "event_stats_cpu"):
        try:
            base = Record(reader, layout, "scx_sched", sch, ["event_stats_cpu"]).int("event_stats_cpu")
        except ReadError:
            base = None
        inner = 0
        ev.source = "scx_sched.event_stats_cpu"
    elif syms and syms.get("event_stats_cpu") is not None:
        base, inner = syms["event_stats_cpu"], 0
        ev.source = "event_stats_cpu (per-CPU)"
    else:
        return None
    fields = [(n, f) for n, f in layout.members("scx_event_stats") if f.kind in ("int", "struct")]
    ev.names = [n for n, _ in fields]
    if not base:
        ev.damage.add(ev.source, 0, "per-CPU pointer NULL or unreadable", "null")
        return ev
    size = layout.size("scx_event_stats")
    for cpu, pco in enumerate(percpu_offsets):
        if cpu and not pco:
            continue
        addr = (percpu_sum(base, pco) + inner) & MASK64
        raw = reader.try_read(addr, size)
        if raw is None:
            ev.per_cpu.append((cpu, None))
            ev.damage.add(f"cpu{cpu}: scx_event_stats", addr, "unreadable")
            continue
        ev.per_cpu.append((cpu, [_signed(f, raw) for _, f in fields]))
    return ev


def _signed(f, raw):
    """Counters are s64 (some are atomic64_t structs): decode signed by the member's width."""
    v = f.decode(raw)
    if f.kind == "struct" and f.size and v >> (8 * f.size - 1):
        v -= 1 << (8 * f.size)
    return v

