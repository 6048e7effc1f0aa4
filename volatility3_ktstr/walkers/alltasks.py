"""Every task the kernel's lists know, with the lists each is on: the cross-view of tasks.

Lists read (each bounded, cycle-checked, damage recorded per list):

- ``tasks``: ``init_task.tasks`` (thread-group leaders) and each leader's threads;
- ``pid_idr``: ``init_pid_ns.idr`` -> ``struct pid`` -> ``pid->tasks[PIDTYPE_PID]`` (every
  task with a pid, threads included);
- ``scx_tasks``: sched_ext's list of every task it knows (``scx.tasks_node``; the iterator's
  cursor, flagged ``SCX_TASK_CURSOR``, skipped);
- ``cgroups``: ``css_set->tasks``/``mg_tasks``/``dying_tasks`` of every css_set a task found
  above points at (``task->cgroups``);
- ``runqueues``: each CPU's ``rq->curr`` (where a task runs; not expected of every task).

A live task (no ``exit_state``, not ``PF_EXITING``, pid > 0) is expected on ``tasks``,
``pid_idr`` and ``cgroups``, and on ``scx_tasks`` when that list is in use. One missing from an
expected list is a finding: ``hidden`` when that list was read whole, ``unverifiable`` when its
walk skipped parts (the reason says which). No Volatility import.
"""

from dataclasses import dataclass, field

from ..core import ReadError, Record, read_int
from ..kds import DamageLog, hlist_nodes, idr_entries, list_nodes
from . import tasks as taskwalk

LISTS = ("tasks", "pid_idr", "scx_tasks", "cgroups", "runqueues")
MAX_CSETS = 1 << 14
MAX_CSET_TASKS = 1 << 17
PF_EXITING = 0x4


@dataclass
class ListedTask:
    kva: int
    pid: int = -1
    tgid: int = -1
    comm: str = ""
    exiting: bool = False
    found_in: list = field(default_factory=list)
    missing_from: list = field(default_factory=list)
    verdict: str = ""
    why: str = ""

    @property
    def state(self):
        return "exiting" if self.exiting else "live"


class TaskLists:
    """The union of the task lists of one kernel."""

    def __init__(self):
        self.by_kva = {}
        self.damage = DamageLog()
        self.list_damage = {name: DamageLog() for name in LISTS}
        self.read = {name: False for name in LISTS}
        self.counts = {name: 0 for name in LISTS}

    def add(self, kva, source):
        t = self.by_kva.get(kva)
        if t is None:
            t = self.by_kva[kva] = ListedTask(kva)
        if source not in t.found_in:
            t.found_in.append(source)
            self.counts[source] += 1
        return t

    def lists_damaged(self):
        return any(self.list_damage.values())

    def coverage(self):
        parts = []
        for name in LISTS:
            if not self.read[name]:
                parts.append(f"{name} not read")
                continue
            d = self.list_damage[name]
            parts.append(f"{name} {self.counts[name]}" + (f" ({len(d)} parts skipped)" if d else ""))
        return f"{len(self.by_kva)} tasks: " + ", ".join(parts)

    def expected(self, t):
        if t.pid <= 0 or t.exiting:
            return []
        out = ["tasks", "pid_idr", "cgroups"]
        if self.counts["scx_tasks"]:
            out.append("scx_tasks")
        return [n for n in out if self.read[n]]

    def findings(self):
        """Tasks missing from a list they are expected on, each with a verdict."""
        out = []
        for t in self.by_kva.values():
            missing = [n for n in self.expected(t) if n not in t.found_in]
            if not missing:
                continue
            t.missing_from = missing
            damaged = [n for n in missing if self.list_damage[n]]
            if damaged:
                t.verdict = "unverifiable"
                first = next(iter(self.list_damage[damaged[0]]))
                t.why = (f"missing from {', '.join(missing)}; {', '.join(damaged)} not read whole "
                         f"({first})")
            else:
                t.verdict = "hidden"
                t.why = f"missing from {', '.join(missing)} (read whole)"
            out.append(t)
        return sorted(out, key=lambda t: (t.verdict != "hidden", t.pid, t.kva))


def collect(reader, layout, symbol, per_cpu_offsets=(), cursor_flag=0) -> TaskLists:
    """Walk every task list the kernel has (``symbol(name)`` gives runtime addresses)."""
    out = TaskLists()
    init_task = symbol("init_task")
    if init_task is None or not layout.has("task_struct"):
        return out
    _task_list(out, reader, layout, init_task)
    _pid_idr(out, reader, layout, symbol("init_pid_ns"))
    _scx_tasks(out, reader, layout, symbol("scx_tasks"), cursor_flag)
    _runqueues(out, reader, layout, symbol("runqueues"), per_cpu_offsets)
    _describe(out, reader, layout)
    _cgroups(out, reader, layout)
    return out


def _task_list(out, reader, layout, init_task):
    log = out.list_damage["tasks"]
    for leader in taskwalk.processes(reader, layout, init_task, log):
        out.add(leader.kva, "tasks")
        for t in taskwalk.threads(reader, layout, leader, log):
            out.add(t.kva, "tasks")
    out.read["tasks"] = True


def _pid_idr(out, reader, layout, ns):
    if ns is None or not layout.has("pid_namespace", "idr") or not layout.has("task_struct", "pid_links"):
        return
    log = out.list_damage["pid_idr"]
    tasks_off = layout.offset("pid", "tasks")          # tasks[PIDTYPE_PID] is the first head
    link_off = layout.offset("task_struct", "pid_links")
    try:
        for _nr, pid in idr_entries(reader, layout, ns + layout.offset("pid_namespace", "idr"),
                                    damage=log):
            try:
                for node in hlist_nodes(reader, layout, pid + tasks_off, limit=4, damage=log):
                    out.add(node - link_off, "pid_idr")
            except ReadError as e:
                log.add("struct pid", pid, f"unreadable ({e.reason})")
    except ReadError as e:
        log.add("init_pid_ns.idr", ns, f"unreadable ({e.reason})")
    out.read["pid_idr"] = True


def _scx_tasks(out, reader, layout, head, cursor_flag):
    if head is None or not layout.has("task_struct", "scx.tasks_node"):
        return
    log = out.list_damage["scx_tasks"]
    node_off = layout.offset("task_struct", "scx.tasks_node")
    flags_off = layout.offset("task_struct", "scx.flags") if layout.has("task_struct", "scx.flags") else None
    for node in list_nodes(reader, layout, head, limit=taskwalk.MAX_TASKS * 8, damage=log,
                           what="scx_tasks node"):
        kva = node - node_off
        if cursor_flag and flags_off is not None:
            try:
                if read_int(reader, layout, "task_struct", kva, "scx.flags") & cursor_flag:
                    continue        # scx_task_iter's cursor, not a task
            except ReadError as e:
                log.add("scx_tasks entry", kva, f"unreadable ({e.reason})")
                continue
        out.add(kva, "scx_tasks")
    out.read["scx_tasks"] = True


def _runqueues(out, reader, layout, rq_sym, offsets):
    if rq_sym is None or not offsets or not layout.has("rq", "curr"):
        return
    log = out.list_damage["runqueues"]
    off = layout.offset("rq", "curr")
    for cpu, pco in enumerate(offsets):
        rq = (rq_sym + pco) & ((1 << 64) - 1)
        try:
            cur = reader.ptr(rq + off)
        except ReadError as e:
            log.add(f"rq of CPU {cpu}", rq, f"unreadable ({e.reason})")
            continue
        if cur:
            out.add(cur, "runqueues")
    out.read["runqueues"] = True


def _describe(out, reader, layout):
    has_exit = layout.has("task_struct", "exit_state")
    has_flags = layout.has("task_struct", "flags")
    paths = ("pid", "tgid", "comm") + (("flags",) if has_flags else ()) + (
        ("exit_state",) if has_exit else ())
    for t in out.by_kva.values():
        try:
            r = Record(reader, layout, "task_struct", t.kva, paths)
        except ReadError as e:
            t.comm = "?"
            t.exiting = True        # unknown state: not judged
            out.damage.add("task_struct", t.kva, f"unreadable ({e.reason})")
            continue
        t.pid, t.tgid, t.comm = r.int("pid"), r.int("tgid"), r.str("comm")
        t.exiting = bool(has_flags and r.int("flags") & PF_EXITING) or bool(has_exit and r.int("exit_state"))


def _cgroups(out, reader, layout):
    if not layout.has("task_struct", "cgroups") or not layout.has("css_set", "tasks"):
        return
    log = out.list_damage["cgroups"]
    cg_off = layout.offset("task_struct", "cg_list")
    csets = set()
    for t in list(out.by_kva.values()):
        if t.pid <= 0:
            continue
        try:
            cset = reader.ptr(t.kva + layout.offset("task_struct", "cgroups"))
        except ReadError as e:
            log.add("task_struct.cgroups", t.kva, f"unreadable ({e.reason})")
            continue
        if cset and len(csets) < MAX_CSETS:
            csets.add(cset)
    heads = [h for h in ("tasks", "mg_tasks", "dying_tasks") if layout.has("css_set", h)]
    for cset in sorted(csets):
        for h in heads:
            for node in list_nodes(reader, layout, cset + layout.offset("css_set", h),
                                   limit=MAX_CSET_TASKS, damage=log, what=f"css_set.{h} node"):
                t = out.by_kva.get(node - cg_off)
                if t is not None:
                    out.add(t.kva, "cgroups")
                else:
                    t = out.add(node - cg_off, "cgroups")
                    _describe_one(out, reader, layout, t)
    out.read["cgroups"] = True


def _describe_one(out, reader, layout, t):
    tmp = TaskLists()
    tmp.by_kva[t.kva] = t
    _describe(tmp, reader, layout)
    out.damage.extend(tmp.damage)
