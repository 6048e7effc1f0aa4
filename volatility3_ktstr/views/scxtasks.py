"""Rows of ``linux.ktstr.scxtasks``: one per task under sched_ext, where it waits and since when.

Tasks come from ``scx_tasks`` (every task sched_ext knows); where each one is comes from the
CPUs' ``curr`` and the DSQ it points at (``scx.dsq``); how long it has waited runnable is
``jiffies - scx.runnable_at`` for the tasks on a CPU's ``runnable_list`` (the watchdog's list,
walked in order: ``RunnableList`` is the CPU and the position, oldest first), against the
timeout of the task's own scheduler (``scx.sched->watchdog_timeout``, else the root's).
``stalled=True`` keeps only the tasks past that timeout (what the watchdog kills a scheduler for).
CPUs are ``*p->cpus_ptr`` (where it may run now), Affinity ``p->cpus_mask`` with
``nr_cpus_allowed``; CpusPtr says when ``cpus_ptr`` is not the task's own mask (a
``migrate_disable()`` pin: ``cpumask_of(cpu)`` while NoMig is set).

Schedulers come from the sched_ext package's discovery (``SchedExt.schedulers``). Takes the
kernel object (``kernel.KernelContext`` or the same public methods); no Volatility import.
"""

from collections.abc import Iterable, Iterator
from typing import cast

from ..core import LayoutError, ReadError, Record
from ..errors import KtstrError
from ..kds import DamageLog
from ..sched_ext import SchedExt, global_dsq_addrs, is_starved, read_task, runnable_for, runnable_list
from ..sched_ext import atexit, postmortem, walk_scx_tasks
from ..sched_ext.dumptext import cpu_list, int_field
from ..sched_ext.tasks import cpus_ptr_text, read_task_affinity, read_task_cpus
from . import HEX, Grid, inventory
from .stacks import stack_lines

GRID = Grid(
    ("PID", int), ("TGID", int), ("COMM", str), ("SchedClass", str), ("Where", str),
    ("DSQ", HEX), ("SliceNs", int), ("DsqVtime", int), ("Weight", int), ("Flags", str),
    ("OpsState", str), ("RunnableAt", int), ("RunnableForJiffies", int), ("StickyCPU", int),
    ("Starved", str), ("Task", HEX), ("RunnableList", str), ("TimeoutJiffies", int),
    ("At", str), ("State", str), ("HoldingCPU", int), ("DsqFlags", HEX), ("QSeq", int),
    ("CPUs", str), ("NoMig", int), ("RunnableAtMs", int), ("Prio", int), ("SchedRecord", str),
    ("Affinity", str), ("NrCpusAllowed", int), ("CpusPtr", str),
    note="Where")
AT_DUMP = "dump"

# A row that reports damage (no task): the text columns empty, the rest N/A.
_BAD = dict(PID=-1, COMM="", SchedClass="", Flags="", OpsState="", Starved="", At=AT_DUMP)


def scheduler_records(kctx) -> dict:
    """{pid: ["<map or allocator>: <value typed by the scheduler's BTF>", ...]}: the scheduler's
    own per-task records, its task storage values (views/localstorage) and its sdt_alloc
    payloads owned by a task (views/sdtalloc), joined by the owning task's pid. Cached per
    kernel: scxstate's stall chain and scxtasks ask for the same."""
    def build() -> dict:
        from . import localstorage, sdtalloc   # views of the package's walkers
        out: dict = {}
        names = localstorage.GRID.names()
        try:
            for _, r in localstorage.rows(kctx):
                d = dict(zip(names, r))
                if d["OwnerKind"] == "task" and isinstance(d["PID"], int) and d["PID"] >= 0 \
                        and isinstance(d["Value"], str) and d["Value"]:
                    out.setdefault(d["PID"], []).append(f"{d['MapName']}: {d['Value']}")
        except (KtstrError, ReadError, LayoutError):
            pass   # no task storage map, or one unreadable: no record from it
        names = sdtalloc.GRID.names()
        try:
            for _, r in sdtalloc.rows(kctx):
                d = dict(zip(names, r))
                if isinstance(d["PID"], int) and d["PID"] >= 0 and isinstance(d["Payload"], str):
                    have = out.setdefault(d["PID"], [])
                    if not any(d["Payload"] in text for text in have):   # not already in a storage value
                        have.append(f"{d['Allocator']}[{d['Idx']}]: {d['Payload']}")
        except (KtstrError, ReadError, LayoutError):
            pass   # no scheduler using sdt_alloc
        return out
    memo = getattr(kctx, "memo", None)
    return memo(("scx.scheduler_records",), build) if memo else build()


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
    try:
        nr_cpus = len(sx.kernel.per_cpu_offsets())
    except Exception:   # noqa: BLE001 - no per-CPU offsets: no CPU lists
        nr_cpus = 0
    qseq_shift = next((v for n, v in sx.kernel.enum("scx_ops_state") or () if n.endswith("QSEQ_SHIFT")), None)
    hz = (st.watchdog_timeout * 1000 // st.timeout_ms) if st.watchdog_timeout and st.timeout_ms else None
    records = scheduler_records(kctx)
    shown = 0
    live_by_pid = {}
    for addr in walk.tasks:
        t = read_task(reader, layout, addr)
        if not t.damage:
            live_by_pid.setdefault(t.pid, t)
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
            TimeoutJiffies=timeout, At=AT_DUMP, State=t.state, HoldingCPU=t.holding_cpu,
            DsqFlags=t.dsq_flags, QSeq=(t.ops_state >> qseq_shift) if qseq_shift is not None
            and t.ops_state is not None else None,
            CPUs=_cpus_text(read_task_cpus(reader, layout, t, nr_cpus)), NoMig=t.migration_disabled,
            RunnableAtMs=-(age * 1000 // hz) if age is not None and hz else None, Prio=t.prio,
            SchedRecord="; ".join(records.get(t.pid, ())) or None,
            Affinity=_cpus_text(read_task_affinity(reader, layout, t, nr_cpus)),
            NrCpusAllowed=t.nr_cpus_allowed, CpusPtr=cpus_ptr_text(t))
        if stacks:   # the task's kernel stack (views/stacks.py), one child row per frame
            for line in stack_lines(kctx, addr):
                yield 1, GRID.row(PID=t.pid, TGID=t.tgid, COMM=t.comm, Where=line)
    es = atexit.exit_state_of(inv)
    for r in exit_rows(sx, inv, es, pids, stalled, live_by_pid):
        shown += 1
        yield 0, r
    for d in walk.damage:
        yield 0, GRID.damage(f"scx_tasks walk stopped: {d}", Task=sx.syms["tasks"], **_BAD)
    for d in damage:
        yield 0, GRID.damage(f"runnable_list walk: {d}", Task=d.addr or None, **_BAD)
    if not shown:   # never a silent empty table: say what was walked and what was asked
        asked = "in the ext class" if not show_all and ext is not None else "at all"
        if es.dump is not None:
            asked += f" (nor among the {len(es.dump.tasks)} of the debug dump at the exit)"
        asked += " matching the filters" if pids or stalled else ""
        whole = "not read whole (row above)" if len(walk.damage) else "read whole"
        yield 0, GRID.damage(f"no task {asked}: {len(walk.tasks)} tasks on scx_tasks, {whole}",
                             Task=sx.syms["tasks"], **_BAD)


def _cpus_text(bitmap: int | None) -> str | None:
    return None if bitmap is None else cpu_list(bitmap)


def exit_rows(sx, inv, es, pids=(), stalled=False, live_by_pid=None) -> Iterator[tuple]:
    """Rows of the tasks the kernel's debug dump lists (the state at the exit, At "exit [t]"):
    the same columns as the live rows, from the text. STARVED: the task a watchdog exit names,
    or one waiting longer than its scheduler's timeout (``timeout_ms``) at the exit."""
    if es.dump is None:
        return
    owner = es.dump.sched.split(":", 1)[0] if es.dump.sched else None
    timeout_ms = next((s.timeout_ms for name, s in inv.all_states() if owner in (None, name)
                       and s.timeout_ms), None)
    if timeout_ms is None:
        timeout_ms = next((s.timeout_ms for s in inv.states.values() if s.timeout_ms), None)
    shift = dict(sx.kernel.enum("scx_ent_flags") or ()).get("SCX_TASK_STATE_SHIFT")
    qshift = next((v for n, v in sx.kernel.enum("scx_ops_state") or () if n.endswith("QSEQ_SHIFT")), None)
    live_by_pid = live_by_pid or {}
    for t in es.dump.tasks:
        if pids and t.pid not in pids:
            continue
        # the same task in memory now (pid and comm agree): its tgid and address
        live = live_by_pid.get(t.pid)
        live = live if live is not None and live.comm == t.comm else None
        f = t.fields
        starved = t.pid == es.stall_pid or bool(timeout_ms and -t.wait_ms > timeout_ms)
        if stalled and not starved:
            continue
        st, fl, opss, qseq = (int_field(f, k) for k in ("scx_state", "flags", "ops_state", "qseq"))
        word = None if fl is None else fl | (st << shift if st is not None and shift is not None else 0)
        if opss is not None and qseq is not None and qshift is not None:
            opss |= qseq << qshift
        where = (f"running on CPU {t.cpu}" if t.marker == "*" else
                 f"runnable on CPU {t.cpu}")
        yield GRID.row(
            PID=t.pid, TGID=live.tgid if live else None, Task=live.addr if live else None,
            COMM=t.comm, SchedClass="ext", Where=where, DSQ=int_field(f, "dsq_id"),
            SliceNs=int_field(f, "slice"), DsqVtime=int_field(f, "dsq_vtime"),
            Weight=int_field(f, "weight"), Flags=sx.task_flags(word) or "",
            OpsState=sx.ops_state(opss) or "",
            StickyCPU=int_field(f, "sticky"), Starved="STARVED" if starved else "",
            RunnableList=f"cpu{t.cpu}[{t.pos}]" if t.marker != "*" else "",
            At=es.tag, State=t.state, HoldingCPU=int_field(f, "holding_cpu"),
            DsqFlags=int_field(f, "dsq_flags"), QSeq=qseq, CPUs=t.cpus, NoMig=int_field(f, "no_mig"),
            RunnableAtMs=t.wait_ms)
