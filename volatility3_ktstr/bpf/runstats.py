"""Run counts and run times of BPF programs: ``struct bpf_prog_stats`` summed over CPUs.

``bpf_prog.stats`` is a ``__percpu`` pointer to ``struct bpf_prog_stats {cnt, nsecs, misses,
syncp}`` (``u64_stats_t`` counters; 5.1+, ``misses`` 5.12+). CPU c's copy is at
``stats + __per_cpu_offset[c]``. The kernel only counts while the static key
``bpf_stats_enabled_key`` is on (sysctl ``kernel.bpf_stats_enabled``, or a
``BPF_ENABLE_STATS`` fd); ``misses`` counts runs skipped for recursion and is kept either way.
This is what ``bpftool prog`` shows as ``run_cnt``/``run_time_ns``/``recursion_misses``.
"""

from dataclasses import dataclass, field

from ..core import LayoutError, ReadError, percpu_sum

MASK64 = (1 << 64) - 1


@dataclass
class RunStats:
    cnt: int = 0
    nsecs: int = 0
    misses: int = None           # None: this kernel has no misses counter
    cpus: int = 0                # CPUs whose copy was read
    unreadable: list = field(default_factory=list)   # CPUs whose copy could not be read
    error: str = None

    @property
    def avg_ns(self):
        return self.nsecs // self.cnt if self.cnt else None


def prog_stats(reader, layout, prog_kva, percpu_offsets) -> RunStats:
    """Sum of the per-CPU ``bpf_prog_stats`` of the ``struct bpf_prog`` at ``prog_kva``."""
    out = RunStats()
    if not layout.has("bpf_prog", "stats") or not layout.has("bpf_prog_stats"):
        out.error = "this kernel keeps no per-program run statistics (no bpf_prog.stats)"
        return out
    try:
        pptr = reader.ptr(prog_kva + layout.offset("bpf_prog", "stats"))
    except ReadError as e:
        out.error = f"bpf_prog.stats unreadable: {e.reason}"
        return out
    if not pptr:
        out.error = "bpf_prog.stats is NULL"
        return out
    size = layout.size("bpf_prog_stats")
    f_cnt = layout.field("bpf_prog_stats", "cnt")
    f_ns = layout.field("bpf_prog_stats", "nsecs")
    f_miss = layout.field("bpf_prog_stats", "misses") if layout.has("bpf_prog_stats", "misses") else None
    if f_miss is not None:
        out.misses = 0
    for cpu, off in enumerate(percpu_offsets):
        if cpu and not off:
            continue          # an unused tail slot of __per_cpu_offset would alias CPU 0
        raw = reader.try_read(percpu_sum(pptr, off), size)
        if raw is None:
            out.unreadable.append(cpu)
            continue
        out.cpus += 1
        out.cnt += f_cnt.decode(raw)
        out.nsecs += f_ns.decode(raw)
        if f_miss is not None:
            out.misses += f_miss.decode(raw)
    if not out.cpus:
        out.error = f"no CPU's bpf_prog_stats readable at {pptr:#x}"
    return out


def stats_enabled(reader, layout, key_addr):
    """True/False: the static key ``bpf_stats_enabled_key`` (``struct static_key_false``) at
    ``key_addr`` is on; None when the kernel has no such key."""
    if key_addr is None:
        return None
    try:
        off = layout.offset("static_key", "enabled")
        if layout.has("static_key_false", "key"):
            off += layout.offset("static_key_false", "key")
        size = layout.field("static_key", "enabled").size    # atomic_t: a signed int
        return int.from_bytes(reader.read(key_addr + off, size), "little", signed=True) > 0
    except (ReadError, LayoutError):
        return None
