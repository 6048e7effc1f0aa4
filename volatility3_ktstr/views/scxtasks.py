"""Rows of ``linux.ktstr.scxtasks``: one per task under sched_ext, where it waits and since when.

Tasks come from ``scx_tasks`` (every task sched_ext knows); where each one is comes from the
CPUs' ``curr`` and the DSQ it points at (``scx.dsq``); how long it has waited runnable is
``jiffies - scx.runnable_at`` for the tasks on a CPU's ``runnable_list`` (the watchdog's list,
walked in order: ``RunnableList`` is the CPU and the position, oldest first), against the
timeout of the task's own scheduler (``scx.sched->watchdog_timeout``, else the root's).
``stalled=True`` keeps only the tasks past that timeout (what the watchdog kills a scheduler for).

Schedulers come from the sched_ext package's discovery (``SchedExt.schedulers``). Takes the
kernel object (``kernel.KernelContext`` or the same public methods); no Volatility import.
"""

from collections.abc import Iterable, Iterator
from typing import cast

from ..core import LayoutError, ReadError, Record
from ..errors import KtstrError
from ..kds import DamageLog
from ..sched_ext import SchedExt, global_dsq_addrs, is_starved, read_task, runnable_for, runnable_list
from ..sched_ext import postmortem, walk_scx_tasks
from . import HEX, Grid, inventory
from .stacks import stack_lines

GRID = Grid(
    ("PID", int), ("TGID", int), ("COMM", str), ("SchedClass", str), ("Where", str),
    ("DSQ", HEX), ("SliceNs", int), ("DsqVtime", int), ("Weight", int), ("Flags", str),
    ("OpsState", str), ("RunnableAt", int), ("RunnableForJiffies", int), ("StickyCPU", int),
    ("Starved", str), ("Task", HEX), ("RunnableList", str), ("TimeoutJiffies", int),
    note="Where")

# A row that reports damage (no task): the text columns empty, the rest N/A.
_BAD = dict(PID=-1, COMM="", SchedClass="", Flags="", OpsState="", Starved="")


def rows(kctx, pids: Iterable[int] = (), show_all: bool = False,
         stalled: bool = False, stacks: bool = False) -> Iterator[tuple[int, tuple]]:
    sx = SchedExt(kctx, list_maps=lambda: inventory.maps(kctx))
    reader, layout = sx.reader, sx.layout
    if sx.syms.get("tasks") is None:
        raise KtstrError("kernel symbol 'scx_tasks' is not in the symbol table; build the ISF "
                         "from a System.map (or kallsyms with CONFIG_KALLSYMS_ALL)")
    inv = postmortem.Inventory(sx)
    st = inv.root
    timeouts = inv.timeouts()
    pids = set(pids or ())
    ext = sx.syms.get("class:ext")

    # Where tasks can be: running on a CPU, on a local/bypass/global/user DSQ, on a runnable_list.
    running, dsq_label, on_list = {}, {}, {}
    damage = DamageLog()
    cpus = []
    if sx.syms.get("runqueues") is not None:
        try:
            cpus = sx.cpus(st.sch, walk=False)
        except (ReadError, LayoutError, KtstrError):
            cpus = []
    for c in cpus:
        if c.curr:
            running[c.curr] = c.cpu
        for d in (c.local_dsq, c.bypass_dsq):
            if d is not None:
                dsq_label[d.addr] = f"{d.kind} cpu{d.cpu}"
        if c.damage is None:
            for i, t in enumerate(runnable_list(reader, layout, c.rq, damage)):
                on_list[t] = f"cpu{c.cpu}[{i}]"
    walked_lists = bool(cpus) and layout.has("rq", "scx.runnable_list")
    for node, addr in global_dsq_addrs(reader, layout, st.sch, sx.syms, sx.nr_nodes()):
        dsq_label[addr] = f"global node{node}"

    ids = {}

    def where(t):
        if t.addr in running:
            return f"running on CPU {running[t.addr]}", None
        if not t.dsq:
            # Not on a DSQ: asleep, or runnable but held by the BPF scheduler itself.
            return ("runnable, not on a DSQ" if t.on_rq else "not runnable"), None
        if t.dsq not in ids:
            try:
                ids[t.dsq] = Record(reader, layout, "scx_dispatch_q", t.dsq, ["id"]).int("id")
            except ReadError:
                ids[t.dsq] = None
        dsq_id = ids[t.dsq]
        label = dsq_label.get(t.dsq)
        if label is None:
            label = f"dsq {dsq_id:#x}" if dsq_id is not None else f"dsq at {t.dsq:#x} (unreadable)"
        return label, dsq_id

    walk = walk_scx_tasks(reader, layout, cast(int, sx.syms["tasks"]), cursor_flag=sx.cursor_flag())
    shown = 0
    for addr in walk.tasks:
        t = read_task(reader, layout, addr)
        if t.damage:
            if not pids and not stalled:
                yield 0, GRID.damage(t.damage, Task=addr, **_BAD)
            continue
        if pids and t.pid not in pids:
            continue
        if not show_all and ext is not None and t.sched_class != ext:
            continue
        timeout = timeouts.get(t.sched, st.watchdog_timeout)
        age = runnable_for(t, st.jiffies, linked=(addr in on_list) if walked_lists else None)
        starved = is_starved(age, timeout)
        if stalled and not starved:
            continue
        loc, dsq_id = where(t)
        shown += 1
        yield 0, GRID.row(
            PID=t.pid, TGID=t.tgid, COMM=t.comm, SchedClass=sx.class_name(t.sched_class) or "",
            Where=loc, DSQ=dsq_id, SliceNs=t.slice, DsqVtime=t.dsq_vtime, Weight=t.weight,
            Flags=sx.task_flags(t.flags) or "", OpsState=sx.ops_state(t.ops_state) or "",
            RunnableAt=t.runnable_at, RunnableForJiffies=age, StickyCPU=t.sticky_cpu,
            Starved="STARVED" if starved else "", Task=addr, RunnableList=on_list.get(addr, ""),
            TimeoutJiffies=timeout)
        if stacks:   # the task's kernel stack (views/stacks.py), one child row per frame
            for line in stack_lines(kctx, addr):
                yield 1, GRID.row(PID=t.pid, TGID=t.tgid, COMM=t.comm, Where=line)
    for d in walk.damage:
        yield 0, GRID.damage(f"scx_tasks walk stopped: {d}", Task=sx.syms["tasks"], **_BAD)
    for d in damage:
        yield 0, GRID.damage(f"runnable_list walk: {d}", Task=d.addr or None, **_BAD)
    if not shown:   # never a silent empty table: say what was walked and what was asked
        asked = "in the ext class" if not show_all and ext is not None else "at all"
        asked += " matching the filters" if pids or stalled else ""
        whole = "not read whole (row above)" if len(walk.damage) else "read whole"
        yield 0, GRID.damage(f"no task {asked}: {len(walk.tasks)} tasks on scx_tasks, {whole}",
                             Task=sx.syms["tasks"], **_BAD)
