"""Tasks under sched_ext: every task on ``scx_tasks``, a task's sched_ext fields, and the
per-CPU ``runnable_list`` the watchdog checks.

Every task known to sched_ext is on ``scx_tasks`` through ``scx.tasks_node`` (the
``scx_task_iter`` cursor, flagged ``SCX_TASK_CURSOR``, is skipped). A runnable task is on its
rq's ``scx.runnable_list`` through ``scx.runnable_node``, oldest first: the watchdog checks
``jiffies - scx.runnable_at`` of each against the timeout.
"""

from dataclasses import dataclass

from .. import kds
from ..core import Layout, Reader, ReadError, Record
from .dsq import TaskWalk, read_cpumask
from .symbols import MASK64

MAX_TASKS = 1 << 20          # scx_tasks walk
MAX_RUNNABLE = 1 << 16       # per runnable_list walk


def runnable_list(reader: Reader, layout: Layout, rq: int, damage: kds.DamageLog | None = None,
                  limit: int = MAX_RUNNABLE) -> list[int]:
    """Tasks on ``rq->scx.runnable_list`` (linked through ``task_struct.scx.runnable_node``) in
    list order: the order the watchdog checks them, oldest ``runnable_at`` first."""
    if not layout.has("rq", "scx.runnable_list"):
        return []
    return list(kds.list_entries(reader, layout, rq + layout.offset("rq", "scx.runnable_list"),
                                 "task_struct", "scx.runnable_node", limit=limit, damage=damage,
                                 what="runnable_list node"))


TASK_PATHS = ("pid", "tgid", "comm", "sched_class", "on_rq", "on_cpu", "thread_info.cpu", "cpu",
              "policy", "__state", "state", "exit_state", "cpus_ptr", "migration_disabled", "prio",
              "rt_priority", "se.sum_exec_runtime", "se.exec_start", "nr_cpus_allowed")

# task_state_to_char (include/linux/sched.h): the /proc state letters, indexed by the highest
# TASK_REPORT bit set. These are preprocessor constants (no BTF record of them), stable since
# 4.14 and part of what user space reads from /proc/<pid>/stat.
_STATE_CHARS = "RSDTtXZPI"
_TASK_REPORT = 0x7F
_TASK_IDLE = 0x402            # TASK_UNINTERRUPTIBLE | TASK_NOLOAD: reported as I
_TASK_RTLOCK_WAIT = 0x1000    # reported as D


def state_char(state: int | None, exit_state: int | None = 0) -> str | None:
    """The task's state letter as ``ps`` and the sched_ext debug dump print it."""
    if state is None:
        return None
    if state == _TASK_IDLE:
        return "I"
    if state == _TASK_RTLOCK_WAIT:
        state = 2
    report = (state | (exit_state or 0)) & _TASK_REPORT
    return _STATE_CHARS[report.bit_length()]
SCX_PATHS = ("sched", "dsq", "ops_state", "flags", "dsq_flags", "weight", "sticky_cpu",
             "holding_cpu", "runnable_at", "runnable_node", "slice", "dsq_vtime", "tasks_node",
             "ddsp_dsq_id", "disallow")


@dataclass
class ScxTask:
    addr: int
    pid: int = None
    tgid: int = None
    comm: str = None
    sched_class: int = None
    cpu: int = None
    on_rq: int = None
    on_cpu: int = None
    policy: int = None
    sched: int = None
    dsq: int = None
    ops_state: int = None
    flags: int = None
    dsq_flags: int = None
    weight: int = None
    sticky_cpu: int = None
    holding_cpu: int = None
    runnable_at: int = None
    runnable_linked: bool = None   # on its rq's runnable_list (what the watchdog checks)
    slice: int = None
    dsq_vtime: int = None
    state: str = None             # the state letter (R, S, D, ...)
    cpus_ptr: int = None          # struct cpumask * (read_task_cpus reads the mask)
    cpus_mask: int = None         # address of the task's own affinity mask (&p->cpus_mask)
    nr_cpus_allowed: int = None
    migration_disabled: int = None
    prio: int = None
    rt_priority: int = None
    sum_exec_runtime: int = None
    exec_start: int = None        # se.exec_start: rq clock when it last started running
    damage: kds.Damage = None     # the task_struct could not be read


def _task_paths(layout):
    paths = [p for p in TASK_PATHS if layout.has("task_struct", p)]
    paths += ["scx." + p for p in SCX_PATHS if layout.has("sched_ext_entity", p)]
    return paths


def read_task(reader: Reader, layout: Layout, addr: int) -> ScxTask:
    """The task and sched_ext fields of the ``task_struct`` at ``addr`` (one bulk read)."""
    t = ScxTask(addr=addr)
    try:
        r = Record(reader, layout, "task_struct", addr, _task_paths(layout))
    except ReadError as e:
        t.damage = kds.Damage("task_struct", addr, f"unreadable: {e.reason}")
        return t
    t.pid = r.int("pid")
    t.tgid = r.int("tgid")
    t.comm = r.str("comm")
    t.sched_class = r.int("sched_class")
    t.cpu = r.first_int("thread_info.cpu", "cpu")
    t.on_rq = r.int("on_rq")
    t.on_cpu = r.int("on_cpu")
    t.policy = r.int("policy")
    t.state = state_char(r.first_int("__state", "state"), r.int("exit_state"))
    t.cpus_ptr = r.int("cpus_ptr")
    if layout.has("task_struct", "cpus_mask"):
        t.cpus_mask = r.addr_of("cpus_mask")
    t.nr_cpus_allowed = r.int("nr_cpus_allowed")
    t.migration_disabled = r.int("migration_disabled")
    t.prio = r.int("prio")
    t.rt_priority = r.int("rt_priority")
    t.sum_exec_runtime = r.int("se.sum_exec_runtime")
    t.exec_start = r.int("se.exec_start")
    for attr in ("sched", "dsq", "ops_state", "flags", "dsq_flags", "weight", "sticky_cpu",
                 "holding_cpu", "runnable_at", "slice", "dsq_vtime"):
        setattr(t, attr, r.int("scx." + attr))
    if r.has("scx.runnable_node"):
        nxt = r.int("scx.runnable_node.next")
        own = r.addr_of("scx.runnable_node")
        # list_del_init leaves the node pointing at itself; a never-added node is zeroed.
        t.runnable_linked = bool(nxt) and nxt != own and nxt < MASK64 - 4096 and nxt >> 48 != 0xdead
    return t


def read_task_cpus(reader: Reader, layout: Layout, task: ScxTask, nr_cpus: int) -> int | None:
    """The CPUs ``task`` may run on (``*p->cpus_ptr``) as a bitmap, None when unreadable."""
    if not task.cpus_ptr or not nr_cpus:
        return None
    try:
        return read_cpumask(reader, layout, task.cpus_ptr, nr_cpus)
    except ReadError:
        return None


def read_task_affinity(reader: Reader, layout: Layout, task: ScxTask, nr_cpus: int) -> int | None:
    """The task's own affinity (``p->cpus_mask``) as a bitmap, None when unreadable. It differs
    from ``*p->cpus_ptr`` while ``migrate_disable()`` pins the task (the kernel then points
    ``cpus_ptr`` at ``cpumask_of(cpu)`` and leaves ``cpus_mask`` and ``nr_cpus_allowed``)."""
    if not task.cpus_mask or not nr_cpus:
        return None
    if task.cpus_ptr == task.cpus_mask:
        return read_task_cpus(reader, layout, task, nr_cpus)
    try:
        return read_cpumask(reader, layout, task.cpus_mask, nr_cpus)
    except ReadError:
        return None


def cpus_ptr_text(task: ScxTask) -> str | None:
    """Where ``cpus_ptr`` points: the task's own ``cpus_mask``, or elsewhere (a
    ``migrate_disable()`` pin when ``migration_disabled`` is set)."""
    if task.cpus_ptr is None or task.cpus_mask is None:
        return None
    if task.cpus_ptr == task.cpus_mask:
        return "cpus_mask"
    if task.migration_disabled:
        return f"pinned: migrate_disable (depth {task.migration_disabled})"
    return f"other mask at {task.cpus_ptr:#x}"


def walk_scx_tasks(reader: Reader, layout: Layout, head: int, cursor_flag: int = 0,
                   max_tasks: int = MAX_TASKS) -> TaskWalk:
    """Tasks on the ``scx_tasks`` list at ``head`` (``task_struct.scx.tasks_node``), in order.

    Cursor entries (``scx.flags & cursor_flag``, the ``scx_task_iter`` cursor) are skipped."""
    w = TaskWalk()
    node_off = layout.offset("task_struct", "scx.tasks_node")
    if not cursor_flag:
        w.tasks = [n - node_off for n in kds.list_nodes(reader, layout, head, limit=max_tasks,
                                                          damage=w.damage, what="scx_tasks node")]
        return w
    f = layout.field("sched_ext_entity", "flags")
    rel = f.offset - layout.offset("sched_ext_entity", "tasks_node")
    lo = min(rel, layout.offset("list_head", "next"))
    for node, raw in kds.list_nodes(reader, layout, head, limit=max_tasks, damage=w.damage,
                                    what="scx_tasks node", window=(rel, f.size)):
        if int.from_bytes(raw[rel - lo:rel - lo + f.size], "little") & cursor_flag:
            w.cursors += 1
        else:
            w.tasks.append(node - node_off)
    return w


def runnable_for(task: ScxTask, jiffies: int | None, linked: bool | None = None) -> int | None:
    """Jiffies the task has waited runnable (``jiffies - scx.runnable_at``), or None when it is
    not on a runnable list (asleep or running: ``runnable_at`` is stale then) or the value is
    in the future (not meaningful). ``linked`` (found on a runnable_list walk) overrides the
    task's own ``runnable_node`` check."""
    on_list = task.runnable_linked if linked is None else linked
    if not on_list or jiffies is None or task.runnable_at is None:
        return None
    age = (jiffies - task.runnable_at) & MASK64
    return None if age >= 1 << 63 else age


def is_starved(age: int | None, watchdog_timeout: int | None) -> bool:
    """What the sched_ext watchdog checks: runnable for longer than the timeout (jiffies)."""
    return bool(age is not None and watchdog_timeout and age > watchdog_timeout)
