"""Rows of ``linux.ktstr.scxtasks``: one per task under sched_ext, where it waits and since when.

Tasks come from ``scx_tasks`` (every task sched_ext knows); where each one is comes from the
CPUs' ``curr`` and the DSQ it points at (``scx.dsq``); how long it has waited runnable is
``jiffies - scx.runnable_at`` for the tasks on a CPU's ``runnable_list`` (the watchdog's list,
walked in order: ``RunnableList`` is the CPU and the position, oldest first), against the
timeout of the task's own scheduler (``scx.sched->watchdog_timeout``, else the root's).
``stalled=True`` keeps only the tasks past that timeout (what the watchdog kills a scheduler for).

Takes a kernel adapter (``kernel.KernelContext`` or the same methods); no Volatility import.
"""

from ..core import LayoutError, ReadError
from ..errors import KtstrError
from ..kds import DamageLog
from ..scx_support import ScxKernel
from ..walkers import scx
from . import HEX, Grid

GRID = Grid(
    ("PID", int), ("TGID", int), ("COMM", str), ("SchedClass", str), ("Where", str),
    ("DSQ", HEX), ("SliceNs", int), ("DsqVtime", int), ("Weight", int), ("Flags", str),
    ("OpsState", str), ("RunnableAt", int), ("RunnableForJiffies", int), ("StickyCPU", int),
    ("Starved", str), ("Task", HEX), ("RunnableList", str), ("TimeoutJiffies", int),
    note="Where")

# A row that reports damage (no task): the text columns empty, the rest N/A.
_BAD = dict(PID=-1, COMM="", SchedClass="", Flags="", OpsState="", Starved="")


def rows(kctx, pids=(), show_all=False, stalled=False):
    sk = ScxKernel(kctx)
    reader, layout = sk.reader, sk.layout
    if sk.syms.get("tasks") is None:
        raise KtstrError("kernel symbol 'scx_tasks' is not in the symbol table; build the ISF "
                         "from a System.map (or kallsyms with CONFIG_KALLSYMS_ALL)")
    st = sk.sched_state()
    pids = set(pids or ())
    ext = sk.syms.get("class:ext")
    timeouts = {}
    for ref in scx.find_scheds(reader, layout, sk.syms):
        s = st if ref.addr == st.sch else sk.sched_state(ref.addr)
        timeouts[ref.addr] = s.watchdog_timeout

    # Where tasks can be: running on a CPU, on a local/bypass/global/user DSQ, on a runnable_list.
    running, dsq_label, on_list = {}, {}, {}
    damage = DamageLog()
    cpus = []
    if sk.syms.get("runqueues") is not None:
        try:
            offsets = kctx.per_cpu_offsets()
            cpus = scx.read_cpus(reader, layout, sk.syms["runqueues"], offsets, sk.dsq_offs, st.sch,
                                 walk=False)
        except (ReadError, LayoutError, KtstrError):
            cpus = []
    for c in cpus:
        if c.curr:
            running[c.curr] = c.cpu
        for d in (c.local_dsq, c.bypass_dsq):
            if d is not None:
                dsq_label[d.addr] = f"{d.kind} cpu{d.cpu}"
        if c.error is None:
            for i, t in enumerate(scx.runnable_list(reader, layout, c.rq, damage)):
                on_list[t] = f"cpu{c.cpu}[{i}]"
    walked_lists = bool(cpus) and layout.has("rq", "scx.runnable_list")
    globals_, _ = scx.global_dsq_addrs(reader, layout, st.sch, sk.syms, sk.nr_nodes())
    for node, addr in globals_:
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
                ids[t.dsq] = reader.u64(t.dsq + layout.offset("scx_dispatch_q", "id"))
            except ReadError:
                ids[t.dsq] = None
        dsq_id = ids[t.dsq]
        label = dsq_label.get(t.dsq)
        if label is None:
            label = f"dsq {dsq_id:#x}" if dsq_id is not None else f"dsq at {t.dsq:#x} (unreadable)"
        return label, dsq_id

    walk = scx.walk_scx_tasks(reader, layout, sk.syms["tasks"], cursor_flag=sk.cursor_flag())
    shown = 0
    for addr in walk.tasks:
        t = scx.read_task(reader, layout, addr)
        if t.error:
            if not pids and not stalled:
                yield 0, GRID.damage(t.error, Task=addr, **_BAD)
            continue
        if pids and t.pid not in pids:
            continue
        if not show_all and ext is not None and t.sched_class != ext:
            continue
        timeout = timeouts.get(t.sched, st.watchdog_timeout)
        age = scx.runnable_for(t, st.jiffies, linked=(addr in on_list) if walked_lists else None)
        starved = scx.is_starved(age, timeout)
        if stalled and not starved:
            continue
        loc, dsq_id = where(t)
        shown += 1
        yield 0, GRID.row(
            PID=t.pid, TGID=t.tgid, COMM=t.comm, SchedClass=sk.class_name(t.sched_class) or "",
            Where=loc, DSQ=dsq_id, SliceNs=t.slice, DsqVtime=t.dsq_vtime, Weight=t.weight,
            Flags=sk.task_flags(t.flags) or "", OpsState=sk.ops_state(t.ops_state) or "",
            RunnableAt=t.runnable_at, RunnableForJiffies=age, StickyCPU=t.sticky_cpu,
            Starved="STARVED" if starved else "", Task=addr, RunnableList=on_list.get(addr, ""),
            TimeoutJiffies=timeout)
    if walk.error:
        yield 0, GRID.damage(f"scx_tasks walk stopped: {walk.error}", Task=sk.syms["tasks"], **_BAD)
    for d in damage:
        yield 0, GRID.damage(f"runnable_list walk: {d}", Task=d.addr or None, **_BAD)
    if not shown:   # never a silent empty table: say what was walked and what was asked
        asked = "in the ext class" if not show_all and ext is not None else "at all"
        asked += " matching the filters" if pids or stalled else ""
        whole = "not read whole (row above)" if walk.error else "read whole"
        yield 0, GRID.damage(f"no task {asked}: {len(walk.tasks)} tasks on scx_tasks, {whole}",
                             Task=sk.syms["tasks"], **_BAD)
