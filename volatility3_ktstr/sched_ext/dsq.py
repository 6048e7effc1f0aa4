"""Dispatch queues and per-CPU run queues.

A DSQ (``struct scx_dispatch_q``) queues tasks on ``list`` through
``task_struct.scx.dsq_list.node`` (vtime DSQs keep that list in vtime order and also an rbtree in
``priq``); BPF DSQ iterators insert cursor nodes flagged ``SCX_DSQ_LNODE_ITER_CURSOR``, which are
skipped. Where the DSQs are: global ones per NUMA node (``scx_sched.pnode[n]->global_dsq``,
``scx_sched.global_dsqs[n]``, 6.12's ``global_dsqs``/``scx_dsq_global``), user ones in the
scheduler's DSQ hash (``scx_sched.dsq_hash``, 6.12's ``dsq_hash``), a local one per CPU
(``rq->scx.local_dsq``) and, 7.x, a bypass one per CPU and scheduler
(``scx_sched.pcpu->bypass_dsq``).
"""

from dataclasses import dataclass, field

from .. import kds
from ..core import Layout, Reader, ReadError, Record, percpu_sum
from .exit import damage_text
from .symbols import MASK64

MAX_DSQ_TASKS = 1 << 16      # per DSQ list walk
MAX_NODES = 1024             # NUMA nodes


@dataclass
class DsqOffsets:
    """Offsets of the DSQ list walk, from the layout once."""

    dsq_list: int         # scx_dispatch_q.list (list_head)
    dsq_size: int
    lnode_node: int       # task_struct offset of the list_head linking a task into a DSQ
    lnode_flags: "int | None"  # task_struct offset of scx_dsq_list_node.flags, or None
    cursor_flag: int      # SCX_DSQ_LNODE_ITER_CURSOR (0 when the kernel has no cursors)
    flags_size: int = 4

    @classmethod
    def from_layout(cls, layout: Layout, cursor_flag: int = 1) -> "DsqOffsets":
        scx = layout.offset("task_struct", "scx")
        flags_size = 4
        if layout.has("sched_ext_entity", "dsq_list.node"):
            node = scx + layout.offset("sched_ext_entity", "dsq_list.node")
            flags = None
            if layout.has("sched_ext_entity", "dsq_list.flags"):
                f = layout.field("sched_ext_entity", "dsq_list.flags")
                flags, flags_size = scx + f.offset, f.size
        else:  # older: a plain list_head (dsq_node or dsq_list)
            node = scx + layout.first("sched_ext_entity", "dsq_list", "dsq_node")
            flags, cursor_flag = None, 0
        return cls(dsq_list=layout.offset("scx_dispatch_q", "list"),
                   dsq_size=layout.size("scx_dispatch_q"),
                   lnode_node=node, lnode_flags=flags, cursor_flag=cursor_flag,
                   flags_size=flags_size)


@dataclass
class TaskListWalk:
    """Tasks found on a kernel list (a DSQ's, or ``scx_tasks``), in list order, with the
    iterator cursors skipped and what stopped the walk early."""

    tasks: list = field(default_factory=list)   # task_struct addresses, list order
    cursors: int = 0                            # iterator cursors skipped
    damage: kds.DamageLog = field(default_factory=kds.DamageLog)

    @property
    def error(self):
        """Why the walk stopped early, if it did."""
        return damage_text(self.damage)

    @property
    def truncated(self):
        return any(d.kind == "bound" for d in self.damage)


DsqWalk = TaskListWalk
TaskWalk = TaskListWalk


def walk_dsq_list(reader: Reader, layout: Layout, offs: DsqOffsets, dsq_addr: int,
                  max_tasks: int = MAX_DSQ_TASKS) -> DsqWalk:
    """Tasks queued on the DSQ at ``dsq_addr`` in list order (bounded, cycle-safe); BPF
    iterator cursors (``dsq_list.flags & SCX_DSQ_LNODE_ITER_CURSOR``) are counted, not listed."""
    w = DsqWalk()
    flags_at = offs.lnode_flags if offs.cursor_flag else None
    window = (flags_at - offs.lnode_node, offs.flags_size) if flags_at is not None else None
    nodes = kds.list_nodes(reader, layout, dsq_addr + offs.dsq_list, limit=max_tasks,
                           damage=w.damage, what="DSQ list node", window=window)
    if flags_at is None:
        w.tasks = [n - offs.lnode_node for n in nodes]
        return w
    rel = flags_at - offs.lnode_node
    lo = min(rel, layout.offset("list_head", "next"))
    for node, raw in nodes:
        flags = int.from_bytes(raw[rel - lo:rel - lo + offs.flags_size], "little")
        if flags & offs.cursor_flag:
            w.cursors += 1
        else:
            w.tasks.append(node - offs.lnode_node)
    return w


@dataclass
class Dsq:
    addr: int
    kind: str                     # "global", "user", "local", "bypass"
    id: int = None
    nr: int = None
    seq: int = None
    vtime: bool = None            # priq in use (vtime ordering); None when unknown
    cpu: int = None               # local/bypass DSQs
    node: int = None              # global DSQs
    walk: DsqWalk = None
    damage: kds.Damage = None     # the DSQ itself could not be read


def read_dsq(reader: Reader, layout: Layout, offs: DsqOffsets, addr: int, kind: str, walk: bool = True,
             **extra) -> Dsq:
    d = Dsq(addr=addr, kind=kind, **extra)
    try:
        r = Record(reader, layout, "scx_dispatch_q", addr)
    except ReadError as e:
        d.damage = kds.Damage("struct scx_dispatch_q", addr, f"unreadable: {e.reason}")
        return d
    d.id = r.int("id")
    d.nr = r.int("nr")
    d.seq = r.int("seq")
    if r.has("priq") and layout.has("rb_root", "rb_node"):
        d.vtime = bool(r.int("priq.rb_node"))
    elif r.has("priq"):
        d.vtime = False
    if walk:
        d.walk = walk_dsq_list(reader, layout, offs, addr)
    return d


def global_dsq_addrs(reader: Reader, layout: Layout, sch: int | None, syms: dict, nr_nodes: int,
                     damage: kds.DamageLog | None = None) -> list[tuple[int, int]]:
    """[(node, DSQ address)] of the global DSQs; an unreadable array goes to ``damage``."""
    damage = damage if damage is not None else kds.DamageLog()
    out = []
    nr_nodes = max(1, min(nr_nodes or 1, MAX_NODES))
    word = reader.pointer_size

    def ptrs(arr):
        raw = reader.read(arr, word * nr_nodes) if arr else b""
        return [(n, int.from_bytes(raw[word * n:word * n + word], "little")) for n in range(len(raw) // word)]

    def member(path):
        return Record(reader, layout, "scx_sched", sch, [path]).int(path)

    try:
        if sch and layout.has("scx_sched", "pnode") and layout.has("scx_sched_pnode", "global_dsq"):
            inner = layout.offset("scx_sched_pnode", "global_dsq")
            out = [(n, p + inner) for n, p in ptrs(member("pnode")) if p]
        elif sch and layout.has("scx_sched", "global_dsqs"):
            out = [(n, p) for n, p in ptrs(member("global_dsqs")) if p]
        elif syms.get("global_dsqs") is not None:
            out = [(n, p) for n, p in ptrs(reader.ptr(syms["global_dsqs"])) if p]
        elif syms.get("dsq_global") is not None:
            out = [(0, syms["dsq_global"])]
    except ReadError as e:
        damage.add("global DSQ array", e.addr, f"unreadable: {e.reason}")
    return out


def user_dsq_addrs(reader: Reader, layout: Layout, sch: int | None, syms: dict,
                   damage: kds.DamageLog | None = None) -> list[int]:
    """Addresses of every user DSQ (the scheduler's DSQ hash table); what the table walk
    skipped goes to ``damage``."""
    damage = damage if damage is not None else kds.DamageLog()
    if sch and layout.has("scx_sched", "dsq_hash"):
        ht = sch + layout.offset("scx_sched", "dsq_hash")
    elif syms.get("dsq_hash") is not None:
        ht = syms["dsq_hash"]
    else:
        damage.add("DSQ hash table", 0, "not in this kernel", "corrupt")
        return []
    off = layout.offset("scx_dispatch_q", "hash_node")
    return [n - off for n in kds.rhashtable_nodes(reader, layout, ht, damage=damage, what="DSQ hash node")]


# --- per-CPU run queues ------------------------------------------------------------------------


@dataclass
class CpuState:
    cpu: int
    rq: int
    nr_running: int = None
    scx_nr_running: int = None
    flags: int = None
    curr: int = None
    local_dsq: Dsq = None
    bypass_dsq: Dsq = None
    cpu_released: int = None
    ops_qseq: int = None
    kick_sync: int = None         # 6.18+ (pnt_seq before)
    pnt_seq: int = None
    clock: int = None             # rq->clock (ns)
    clock_task: int = None        # rq->clock_task (ns): rq->clock less IRQ/steal time, the clock
                                  # se.exec_start and sum_exec_runtime are charged in
    masks: dict = field(default_factory=dict)   # cpus_to_kick... -> CPU bitmap (int), when set
    damage: kds.Damage = None     # the rq could not be read


RQ_MASKS = ("cpus_to_kick", "cpus_to_kick_if_idle", "cpus_to_preempt", "cpus_to_wait", "cpus_to_sync")
_RQ_OPTIONAL = ("scx.cpu_released", "scx.ops_qseq", "scx.kick_sync", "scx.pnt_seq", "clock",
                "clock_task")


def read_cpumask(reader: Reader, layout: Layout, addr: int, nr_cpus: int) -> int:
    """The first ``nr_cpus`` bits of the ``struct cpumask`` at ``addr`` as an int (one read)."""
    word = reader.pointer_size
    size = -(-max(nr_cpus, 1) // (8 * word)) * word
    if layout.has("cpumask"):
        size = min(size, layout.size("cpumask"))
    value = int.from_bytes(reader.read(addr, size), "little")
    return value & ((1 << nr_cpus) - 1)


def _rq_masks(reader, layout, r, nr_cpus):
    """{name: bitmap} of the rq's kick/preempt/wait masks (cpumask_var_t: a pointer with
    CONFIG_CPUMASK_OFFSTACK, else the mask inline); unreadable ones are left out."""
    out = {}
    for name in RQ_MASKS:
        path = "scx." + name
        if not r.has(path):
            continue
        f = r.field(path)
        try:
            at = r.int(path) if f.kind == "pointer" else r.addr_of(path)
            if at:
                out[name] = read_cpumask(reader, layout, at, nr_cpus)
        except ReadError:
            continue
    return out


def pcpu_base(reader: Reader, layout: Layout, sch: int | None) -> int | None:
    """``scx_sched.pcpu``: the per-CPU base of the scheduler's per-CPU data, or None."""
    if sch and layout.has("scx_sched", "pcpu"):
        try:
            return Record(reader, layout, "scx_sched", sch, ["pcpu"]).int("pcpu")
        except ReadError:
            return None
    return None


def bypass_dsq_addrs(reader: Reader, layout: Layout, sch: int | None,
                     percpu_offsets: list[int]) -> list[tuple[int, int]]:
    """[(cpu, address of the scheduler's bypass DSQ of that CPU)]: ``per_cpu_ptr(sch->pcpu,
    cpu)->bypass_dsq``; [] on kernels (or schedulers) without per-CPU bypass DSQs."""
    if not layout.has("scx_sched_pcpu", "bypass_dsq"):
        return []
    base = pcpu_base(reader, layout, sch)
    if not base:
        return []
    off = layout.offset("scx_sched_pcpu", "bypass_dsq")
    return [(cpu, (percpu_sum(base, pco) + off) & MASK64) for cpu, pco in enumerate(percpu_offsets)]


def read_cpus(reader: Reader, layout: Layout, runqueues: int, percpu_offsets: list[int], offs: DsqOffsets,
              sch: int | None = None, walk: bool = True) -> list[CpuState]:
    """One :class:`CpuState` per possible CPU (``rq`` = ``runqueues`` + per-CPU offset)."""
    out = []
    bypass = dict(bypass_dsq_addrs(reader, layout, sch, percpu_offsets))
    local_off = layout.offset("rq", "scx.local_dsq")
    paths = ["nr_running", "curr", "scx.nr_running", "scx.flags"]
    paths += [p for p in _RQ_OPTIONAL + tuple("scx." + m for m in RQ_MASKS) if layout.has("rq", p)]
    for cpu, pco in enumerate(percpu_offsets):
        rq = percpu_sum(runqueues, pco)
        c = CpuState(cpu=cpu, rq=rq)
        out.append(c)
        try:
            r = Record(reader, layout, "rq", rq, paths)
        except ReadError as e:
            c.damage = kds.Damage("struct rq", rq, f"unreadable: {e.reason}")
            continue
        c.nr_running = r.int("nr_running")
        c.scx_nr_running = r.int("scx.nr_running")
        c.flags = r.int("scx.flags")
        c.curr = r.int("curr")
        c.cpu_released = r.int("scx.cpu_released")
        c.ops_qseq = r.int("scx.ops_qseq")
        c.kick_sync = r.int("scx.kick_sync")
        c.pnt_seq = r.int("scx.pnt_seq")
        c.clock = r.int("clock")
        c.clock_task = r.int("clock_task")
        c.masks = _rq_masks(reader, layout, r, len(percpu_offsets))
        c.local_dsq = read_dsq(reader, layout, offs, rq + local_off, "local", walk=walk, cpu=cpu)
        if cpu in bypass:
            c.bypass_dsq = read_dsq(reader, layout, offs, bypass[cpu], "bypass", walk=walk, cpu=cpu)
    return out
