"""Rows of ``linux.ktstr.scxstate``: a sched_ext post-mortem as Section / Object / Key / Value.

Sections, in the order a post-mortem asks its questions:

- ``exit``: did a scheduler exit, and why. A ``verdict`` first, then every place the answer
  survives: each scheduler's ``scx_exit_info`` (kernel), each ``user_exit_info`` variable of a
  BPF program (its ``.data`` map, with the ``.data.<uei>_dump`` text), and the sched_ext lines of
  the kernel log (printk ring buffer). "no exit" is only said when a live scheduler's exit kind
  is NONE; without one the verdict says what was and was not found.
- ``scheduler``: the root scheduler (or "scx_root NULL" and the global state), and any other
  top-level scheduler still in memory (a disabled one whose BPF link is still attached).
- ``events``: the ``SCX_EV_*`` counters (sysfs ``events``), summed, with per-CPU children.
- ``watchdog``: ``jiffies - scx_watchdog_timestamp``, the timeouts, and each CPU's
  ``runnable_list`` in order with every task's wait against its scheduler's timeout.
- ``struct_ops`` / ``callback``: the struct_ops map behind each scheduler, each callback's BPF
  program and its run count / run time (``bpf_prog_stats`` summed over CPUs).
- ``subsched``: sub-schedulers (parent, depth, cgroup).
- ``cpu``, ``dsq``: per-CPU run queues and every dispatch queue with its queued tasks.

Takes a kernel adapter (``kernel.KernelContext`` or an object with the same methods, see
``scx_support``); no Volatility import. Absent values are NA, never the text "None".
"""

from ..core import LayoutError, ReadError
from ..kds import DamageLog
from ..scx_support import ScxKernel
from ..walkers import scx, scx_exit
from . import HEX, Grid

GRID = Grid(("Section", str), ("Object", str), ("Key", str), ("Value", str), ("Address", HEX),
            note="Value")

NONE_OBJ = "(none)"


def _text(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def row(section, obj, key, value, addr=None, depth=0):
    return depth, GRID.row(Section=section, Object=obj, Key=key, Value=_text(value),
                           Address=addr if addr else None)


def damage_rows(section, obj, damage):
    for d in damage:
        yield 0, GRID.damage(d, Section=section, Object=obj, Key="error", Address=d.addr or None)
    if damage.dropped:
        yield 0, GRID.damage(f"{damage.dropped} more parts skipped", Section=section, Object=obj,
                             Key="error")


class _View:
    """Everything read once per run, shared by the sections."""

    def __init__(self, kctx, walk_tasks=True):
        self.kctx = kctx
        self.sk = sk = ScxKernel(kctx)
        self.reader, self.layout = sk.reader, sk.layout
        self.walk_tasks = walk_tasks
        self.root = sk.sched_state()
        self.sched_damage = DamageLog()
        self.refs = sk.schedulers(self.sched_damage)
        self.states = {}
        for ref in self.refs:
            self.states[ref.addr] = self.root if ref.addr == self.root.sch else sk.sched_state(ref.addr)
        self.tasks = {}

    def name(self, st, addr=None):
        if st.name:
            return st.name
        return f"@{addr:#x}" if addr else NONE_OBJ

    def loaded(self):
        """A root scheduler is in memory: scx_root set, or (6.12) scx_ops has a name."""
        st = self.root
        return bool(st.sch) if st.sch is not None else bool(st.name)

    def task(self, addr):
        if addr not in self.tasks:
            self.tasks[addr] = scx.read_task(self.reader, self.layout, addr)
        return self.tasks[addr]

    def task_text(self, addr):
        t = self.task(addr)
        if t.error:
            return f"{addr:#x} ({t.error})"
        return f"{t.pid} {t.comm}"


def rows(kctx, walk_tasks=True):
    v = _View(kctx, walk_tasks)
    yield from exit_rows(v)
    yield from scheduler_rows(v)
    yield from event_rows(v)
    yield from watchdog_rows(v)
    yield from callback_rows(v)
    yield from subsched_rows(v)
    cpus = []
    yield from cpu_rows(v, cpus)
    yield from dsq_rows(v, cpus)


# --- exit ------------------------------------------------------------------------------------


def _kernel_sources(v):
    """[(scheduler name, how it was found, state)] for every scheduler with exit info."""
    out = []
    if v.refs:
        for ref in v.refs:
            st = v.states[ref.addr]
            out.append((v.name(st, ref.addr), ", ".join(ref.via), st))
    elif v.loaded() or v.root.exit is not None or v.root.exit_kind:
        how = "scx_root" if v.root.sch else "scx_exit_info (global)"
        out.append((v.name(v.root), how, v.root))
    return out


def _sched_kind(st):
    if st.exit is not None and st.exit.kind:
        return st.exit.kind
    return st.exit_kind


def exit_rows(v):
    sk = v.sk
    kinds = sk.enum("scx_exit_kind")
    errors = []
    kernel = _kernel_sources(v)
    ueis = sk.user_exit_infos(errors)
    records, log_damage, log_error = sk.kernel_log()
    log_recs = scx_exit.sched_ext_records(records)
    log_exits = scx_exit.log_exits(log_recs)
    yield row("exit", "summary", "verdict", _verdict(v, kinds, kernel, ueis, log_exits, log_error))
    for name, how, st in kernel:
        yield from _kernel_exit_rows(v, kinds, name, how, st)
    for u in ueis:
        yield from _uei_rows(v, kinds, u)
    for e in errors:
        yield row("exit", "user_exit_info", "error", e)
    obj = "kernel log"
    if log_error:
        yield row("exit", obj, "error", log_error)
    else:
        nlines = sum(r.text.count("\n") + 1 for r in records)
        yield row("exit", obj, "source", f"printk ring buffer: {len(records)} records "
                                          f"({nlines} lines), {len(log_recs)} about sched_ext")
        for r in log_recs:
            for line in r.lines():
                yield row("exit", obj, "line", line, depth=1)
        for e in log_exits:
            text = f"{e.name}: {e.reason}" + (f": {e.msg}" if e.msg else "")
            yield row("exit", obj, "exit", text)
    yield from damage_rows("exit", obj, log_damage)


def _verdict(v, kinds, kernel, ueis, log_exits, log_error):
    """One line: EXITED (with the best source), no exit (a live scheduler says so), or unknown
    (and what was looked at). Kernel exit info beats a BPF program's copy beats the log."""

    def exit_text(name, k, reason, msg):
        text = f"{name}: {scx_exit.kind_text(kinds, k)}"
        return text + (f" ({reason})" if reason else "") + (f": {msg}" if msg else "")

    k_exits = [(exit_text(name, _sched_kind(st), (st.exit or scx.ExitInfo()).reason,
                          (st.exit or scx.ExitInfo()).msg), f"scx_exit_info ({how})")
               for name, how, st in kernel if _sched_kind(st)]
    u_exits = [(exit_text(u.var, u.kind, u.reason, u.msg), f"{u.var} in {u.map_name}")
               for u in ueis if u.kind]
    # Loaded: the root (scx_root, or 6.12's scx_ops with a name) or linked on scx_sched_all.
    live = [name for name, how, st in kernel if not _sched_kind(st)
            and ((st is v.root and v.loaded()) or "scx_sched_all" in how)]
    if k_exits:
        text, where = k_exits[0]
        return f"EXITED: {text} [from {where}]"
    evidence = [f"scheduler {name!r} is loaded and its exit kind is "
                f"{scx_exit.kind_text(kinds, 0) or 0}" for name in live]
    evidence += [f"{u.var}.kind is 0 in {u.map_name}" for u in ueis if not u.kind]
    evidence += [f"earlier exit recorded in {where}: {text}" for text, where in u_exits] if live else []
    if log_error:
        evidence.append("kernel log unreadable")
    elif log_exits:
        last = log_exits[-1]
        evidence.append(f"the kernel log records an {'earlier ' if live else ''}exit of "
                        f"{last.name!r} ({last.reason})")
    else:
        evidence.append("the kernel log has no 'disabled' line")
    if live:
        return "no exit: " + "; ".join(evidence)
    if u_exits:
        text, where = u_exits[0]
        return f"EXITED: {text} [from {where}; the kernel's exit info is gone]"
    if log_exits:
        last = log_exits[-1]
        return (f"EXITED: {last.name}: {last.reason}" + (f": {last.msg}" if last.msg else "")
                + " [from the kernel log only; no exit info left in memory]")
    if not v.loaded() and v.root.enable_seq == 0 and not ueis:
        return "no exit: no scheduler has been enabled since boot (scx_enable_seq is 0)"
    parts = ["no scheduler in memory" + (" (scx_root NULL)" if v.root.sch == 0 else "")
             if not v.loaded() else "the scheduler's exit state is unreadable"]
    if not ueis:
        parts.append("no user_exit_info variable in any BPF map")
    return "unknown: " + "; ".join(parts + evidence)


def _kernel_exit_rows(v, kinds, name, how, st):
    obj = f"kernel {name}"
    ei = st.exit
    addr = ei.addr if ei is not None else None
    yield row("exit", obj, "source", f"scx_exit_info via {how}", addr)
    yield row("exit", obj, "kind", scx_exit.kind_text(kinds, _sched_kind(st)))
    if ei is None or not (_sched_kind(st) or ei.kind):
        if ei is not None and ei.errors:
            yield row("exit", obj, "error", ei.error)
        return
    eflags = v.sk.enum("scx_exit_flags")
    yield row("exit", obj, "exit_code", None if ei.exit_code is None else f"{ei.exit_code:#x}")
    yield row("exit", obj, "exit_cpu", ei.exit_cpu)
    yield row("exit", obj, "flags", None if ei.flags is None else
              scx.decode_flags(eflags, ei.flags, "SCX_EFLAG_"))
    yield row("exit", obj, "reason", ei.reason)
    yield row("exit", obj, "msg", ei.msg)
    yield row("exit", obj, "backtrace", f"{len(ei.bt)} frames")
    for i, pc in enumerate(ei.bt):
        yield row("exit", obj, f"bt[{i}]", v.sk.symbolize(pc), pc, depth=1)
    yield from _dump_rows(obj, ei.dump)
    if ei.errors:
        yield row("exit", obj, "error", ei.error)


def _dump_rows(obj, dump):
    if dump is None:
        yield row("exit", obj, "dump", None)
        return
    lines = dump.rstrip("\n").split("\n") if dump else []
    yield row("exit", obj, "dump", f"{len(lines)} lines, {len(dump.encode())} bytes")
    for i, line in enumerate(lines):
        yield row("exit", obj, f"dump[{i}]", line, depth=1)


def _uei_rows(v, kinds, u):
    obj = f"uei {u.map_name}"
    owners = [m.name for m in scx_exit.scheduler_maps(v.sk.maps(), u.btf_kva)]
    prog = f" (program of struct_ops {', '.join(owners)})" if owners else ""
    yield row("exit", obj, "source", f"{u.var} (struct user_exit_info) in map {u.map_id} "
                                     f"{u.map_name}{prog}", u.addr)
    yield row("exit", obj, "kind", scx_exit.kind_text(kinds, u.kind) if u.kind else
              (None if u.kind is None else "0 (no exit recorded)"))
    if u.kind:
        yield row("exit", obj, "exit_code", None if u.exit_code is None else f"{u.exit_code:#x}")
        yield row("exit", obj, "reason", u.reason)
        yield row("exit", obj, "msg", u.msg)
        yield from _dump_rows(obj, u.dump if u.dump_map else None)
        if u.dump_map:
            yield row("exit", obj, "dump_map", f"{u.dump_map} ({u.dump_size} bytes)")
    for e in u.errors:
        yield row("exit", obj, "error", e)


# --- schedulers ------------------------------------------------------------------------------


# (key, attribute or function of the state): one scheduler's own rows, in output order.
_SCHED_FIELDS = (
    ("flags", "flags"), ("timeout_ms", "timeout_ms"), ("watchdog_timeout_jiffies", "watchdog_timeout"),
    ("dispatch_max_batch", "dispatch_max_batch"), ("exit_dump_len", "exit_dump_len"),
    ("slice_dfl_ns", "slice_dfl"), ("level", "level"), ("exit_kind", "exit_kind"),
)
# Global state (the same whichever scheduler): shown with the root.
_GLOBAL_FIELDS = (
    ("enable_state", "enable_state"), ("enabled", "enabled"), ("switching_all", "switching_all"),
    ("switched_all", "switched_all"), ("bypass_depth", "bypass_depth"), ("aborting", "aborting"),
    ("in_softlockup", "in_softlockup"), ("breather_depth", "breather_depth"),
    ("nr_rejected", "nr_rejected"), ("enable_seq", "enable_seq"), ("hotplug_seq", "hotplug_seq"),
    ("jiffies", "jiffies"),
)


def _field_value(v, st, attr):
    sk = v.sk
    if attr == "flags":
        return None if st.ops_flags is None else scx.decode_flags(sk.enum("scx_ops_flags"),
                                                                  st.ops_flags, "SCX_OPS_")
    if attr == "exit_kind":
        return None if st.exit_kind is None else (
            scx.enum_name(sk.enum("scx_exit_kind"), st.exit_kind, "SCX_EXIT_") or str(st.exit_kind))
    if attr == "enable_state":
        return st.enable_state_str if st.enable_state_str is not None else st.enable_state
    return getattr(st, attr)


def _one_scheduler(v, section, obj, st, with_globals, via=None):
    if st.sch is not None:
        yield row(section, obj, "scx_sched", f"{st.sch:#x}", st.sch)
    if via:
        yield row(section, obj, "found_via", via)
    yield row(section, obj, "name", st.name, st.ops_addr)
    for key, attr in _SCHED_FIELDS:
        yield row(section, obj, key, _field_value(v, st, attr))
    if st.exit is not None and st.exit_kind:
        ei = st.exit
        yield row(section, obj, "exit_info.kind", None if ei.kind is None else (
            scx.enum_name(v.sk.enum("scx_exit_kind"), ei.kind, "SCX_EXIT_") or str(ei.kind)))
        yield row(section, obj, "exit_info.exit_code", ei.exit_code)
        yield row(section, obj, "exit_info.reason", ei.reason)
        yield row(section, obj, "exit_info.msg", ei.msg)
        if ei.error:
            yield row(section, obj, "error", ei.error)
    if with_globals:
        for key, attr in _GLOBAL_FIELDS:
            yield row(section, obj, key, _field_value(v, st, attr))
    for err in st.errors:
        yield row(section, obj, "error", err)
    if st.cgroup_path is not None:
        yield row(section, obj, "cgroup", st.cgroup_path)


def scheduler_rows(v):
    st = v.root
    if v.loaded():
        yield from _one_scheduler(v, "scheduler", v.name(st), st, True)
    else:
        # No root scheduler: its own fields do not exist (not "None"); the global state does.
        what = "NULL (no scheduler)" if st.sch is not None else "no scheduler (scx_ops empty)"
        yield row("scheduler", NONE_OBJ, "scx_root" if st.sch is not None else "scx_ops", what)
        for key, attr in _GLOBAL_FIELDS:
            yield row("scheduler", NONE_OBJ, key, _field_value(v, st, attr))
        for err in st.errors:
            yield row("scheduler", NONE_OBJ, "error", err)
    # Other top-level schedulers in memory (not scx_root, no parent): disabled ones whose BPF
    # link is still attached (reached through their struct_ops map's ops.priv).
    for ref in v.refs:
        if ref.addr == st.sch or ref.parent:
            continue
        sub = v.states[ref.addr]
        yield from _one_scheduler(v, "scheduler", v.name(sub, ref.addr), sub, False, ", ".join(ref.via))
    yield from damage_rows("scheduler", "-", v.sched_damage)


def _all_states(v):
    """[(name, state)]: the root (or 6.12 globals) and every other scheduler in memory."""
    out = []
    if v.loaded():
        out.append((v.name(v.root), v.root))
    for ref in v.refs:
        if ref.addr != v.root.sch:
            st = v.states[ref.addr]
            out.append((v.name(st, ref.addr), st))
    return out


# --- event counters --------------------------------------------------------------------------


def event_rows(v):
    for name, st in _all_states(v):
        try:
            ev = v.sk.events(st.sch)
        except (ReadError, LayoutError) as e:
            yield row("events", name, "error", str(e))
            continue
        if ev is None:
            continue
        yield row("events", name, "source", f"{ev.source}, summed over {len(ev.per_cpu)} CPUs")
        totals = ev.totals
        for i, ename in enumerate(ev.names):
            yield row("events", name, ename, totals[i])
            for cpu, values in ev.per_cpu:
                yield row("events", name, f"cpu{cpu}", None if values is None else values[i], depth=1)
        for e in ev.errors:
            yield row("events", name, "error", e)


# --- watchdog --------------------------------------------------------------------------------


def watchdog_rows(v):
    st = v.root
    j = st.jiffies
    yield row("watchdog", "-", "jiffies", j)
    yield row("watchdog", "-", "scx_watchdog_timestamp", st.watchdog_timestamp)
    age = None
    if j is not None and st.watchdog_timestamp is not None:
        age = (j - st.watchdog_timestamp) & scx.MASK64
        age = age if age < 1 << 63 else -((1 << 64) - age)
    yield row("watchdog", "-", "heartbeat_age_jiffies", age)
    if st.watchdog_interval is not None:
        yield row("watchdog", "-", "interval_jiffies", st.watchdog_interval)
    timeouts = {}
    for name, s in _all_states(v):
        yield row("watchdog", name, "timeout_jiffies", s.watchdog_timeout)
        if s.sch:
            timeouts[s.sch] = s.watchdog_timeout
    root_timeout = st.watchdog_timeout
    if not v.loaded() or not st.enabled:
        verdict = "idle (no scheduler enabled)"
    elif age is None or not root_timeout:
        verdict = None
    elif age < 0:
        verdict = f"timestamp {-age} jiffies after jiffies (inconsistent)"
    elif age > root_timeout:
        verdict = f"LATE: the watchdog has not run for {age} jiffies (timeout {root_timeout})"
    else:
        verdict = f"ok: ran {age} jiffies ago (timeout {root_timeout})"
    yield row("watchdog", "-", "heartbeat", verdict)
    if v.sk.syms.get("runqueues") is None or not v.layout.has("rq", "scx.runnable_list"):
        return
    stalled = 0
    try:
        offsets = v.kctx.per_cpu_offsets()
    except Exception as e:   # noqa: BLE001 - per-CPU offsets missing: no per-CPU view
        yield row("watchdog", "-", "error", str(e))
        return
    for cpu in range(len(offsets)):
        rq = v.kctx.percpu_address("runqueues", cpu)
        damage = DamageLog()
        tasks = scx.runnable_list(v.reader, v.layout, rq, damage)
        obj = f"cpu{cpu}"
        yield row("watchdog", obj, "runnable_list", f"{len(tasks)} tasks", rq + v.layout.offset("rq", "scx.runnable_list"))
        for i, addr in enumerate(tasks):
            t = v.task(addr)
            if t.error:
                yield row("watchdog", obj, f"runnable[{i}]", f"{addr:#x} ({t.error})", addr, depth=1)
                continue
            wait = scx.runnable_for(t, j, linked=True)
            timeout = timeouts.get(t.sched, root_timeout)
            text = f"{t.pid} {t.comm} runnable for {wait} jiffies" if wait is not None else \
                f"{t.pid} {t.comm} runnable_at {t.runnable_at} is after jiffies {j}"
            if scx.is_starved(wait, timeout):
                stalled += 1
                text += f" STALLED (timeout {timeout})"
            yield row("watchdog", obj, f"runnable[{i}]", text, addr, depth=1)
        yield from damage_rows("watchdog", obj, damage)
    yield row("watchdog", "-", "stalled_tasks", stalled)


# --- struct_ops callbacks --------------------------------------------------------------------


def _find_ops_map(v, st, errors):
    """The sched_ext struct_ops map of scheduler ``st``: by ``ops.priv``, else the one whose
    kernel copy of the ops holds the same function pointers."""
    oms = v.sk.ops_maps(errors)
    for om in oms:
        if st.sch and om.priv == st.sch:
            return om
    live = dict(st.callbacks)
    names = list(live)
    for om in oms:
        try:
            got = scx.ops_callbacks(v.reader, v.layout, om.kdata, names)
        except (ReadError, LayoutError) as e:
            errors.append(f"struct_ops map {om.map.id}: {e}")
            continue
        if got and all(live.get(n) == p for n, p in got):
            return om
    return None


def callback_rows(v):
    sk = v.sk
    enabled = sk.stats_enabled()
    shown_stats = False
    for name, st in _all_states(v):
        if not st.callbacks:
            continue
        errors = []
        om = _find_ops_map(v, st, errors) if v.layout.has("bpf_struct_ops_map") else None
        if om is None:
            yield row("struct_ops", "-", "map", "no struct_ops map holds the running ops")
            for n, p in st.callbacks:
                yield row("callback", n, "prog", None, p)
        else:
            m = om.map
            yield row("struct_ops", m.name, "map", f"id {m.id} {m.name}", m.kva)
            if not shown_stats:
                shown_stats = True
                yield row("struct_ops", m.name, "bpf_stats_enabled", None if enabled is None else (
                    "yes" if enabled else "no (sysctl kernel.bpf_stats_enabled is 0: run_cnt and "
                    "run_time_ns are not counted)"))
            try:
                cbs, errs = scx.struct_ops_callbacks(v.reader, v.layout, om.st_map, "sched_ext_ops",
                                                     [n for n, _ in st.callbacks], "bpf_struct_ops_sched_ext_ops")
            except (ReadError, LayoutError) as e:
                cbs, errs = [], [f"struct_ops map {m.id}: {e}"]
            errors.extend(errs)
            for cb in cbs:
                prog = (f"{cb.prog_name} (id {cb.prog_id})" if cb.prog_name is not None
                        else (f"id {cb.prog_id}" if cb.prog_id else None))
                yield row("callback", cb.member, "prog", prog, cb.kfunc)
                if cb.prog:
                    yield from _stats_rows(v, cb.member, cb.prog)
        for e in errors:
            yield row("struct_ops", "-", "error", e)


def _stats_rows(v, member, prog):
    s = v.sk.prog_stats(prog)
    if s.error:
        yield row("callback", member, "run_stats", s.error, prog, depth=1)
        return
    yield row("callback", member, "run_cnt", s.cnt, prog, depth=1)
    yield row("callback", member, "run_time_ns", s.nsecs, depth=1)
    yield row("callback", member, "avg_ns", s.avg_ns, depth=1)
    yield row("callback", member, "recursion_misses", s.misses, depth=1)
    if s.unreadable:
        yield row("callback", member, "error", f"bpf_prog_stats of CPUs {s.unreadable} unreadable",
                  depth=1)


# --- sub-schedulers --------------------------------------------------------------------------


def subsched_rows(v):
    for ref in v.refs:
        if not ref.parent:
            continue
        sub = v.states[ref.addr]
        o = sub.name if sub.name is not None else f"@{ref.addr:#x}"
        yield row("subsched", o, "scx_sched", f"{ref.addr:#x}", ref.addr)
        yield row("subsched", o, "parent", f"{ref.parent:#x}", ref.parent)
        yield row("subsched", o, "depth", ref.depth)
        yield row("subsched", o, "level", sub.level)
        yield row("subsched", o, "cgroup", sub.cgroup_path)
        yield row("subsched", o, "exit_kind", _field_value(v, sub, "exit_kind"))
        yield row("subsched", o, "bypass_depth", sub.bypass_depth)
        yield row("subsched", o, "found_via", ", ".join(ref.via))
        for err in sub.errors:
            yield row("subsched", o, "error", err)


# --- CPUs and dispatch queues ----------------------------------------------------------------


def cpu_rows(v, cpus):
    sk, st = v.sk, v.root
    if sk.syms.get("runqueues") is None:
        yield row("cpu", "-", "error", "symbol 'runqueues' is not in the symbol table")
        return
    try:
        cpus.extend(scx.read_cpus(v.reader, v.layout, sk.syms["runqueues"], v.kctx.per_cpu_offsets(),
                                  sk.dsq_offs, st.sch, walk=True))
    except (ReadError, LayoutError) as e:
        yield row("cpu", "-", "error", str(e))
        return
    rq_flags = sk.enum("scx_rq_flags")
    for c in cpus:
        o = f"cpu{c.cpu}"
        if c.error:
            yield row("cpu", o, "error", c.error, c.rq)
            continue
        yield row("cpu", o, "nr_running", c.nr_running, c.rq)
        yield row("cpu", o, "scx.nr_running", c.scx_nr_running)
        yield row("cpu", o, "local_dsq.nr", c.local_dsq.nr if c.local_dsq else None)
        yield row("cpu", o, "flags", None if c.flags is None else
                  scx.decode_flags(rq_flags, c.flags, "SCX_RQ_", 32))
        if c.curr:
            t = v.task(c.curr)
            cur = (f"{c.curr:#x} ({t.error})" if t.error else
                   f"{t.pid} {t.comm} ({sk.class_name(t.sched_class)})")
        else:
            cur = "NULL"
        yield row("cpu", o, "curr", cur, c.curr)


def dsq_rows(v, cpus):
    """The root's global DSQs, every CPU's local and bypass DSQs, the root's user DSQs; then, for
    every other scheduler in memory (sub-schedulers, disabled ones), its own global, bypass and
    user DSQs, their Object suffixed with ``[name]``."""
    sk, st = v.sk, v.root
    for e, d in _sched_dsqs(v, st.sch, cpus):
        if e:
            yield row("dsq", d, "error", e)
        else:
            yield from _dsq(v, d)
    for name, other in _all_states(v):
        if other is st or not other.sch:
            continue
        own = []
        base = scx._pcpu_base(v.reader, v.layout, other.sch)
        for c in range(len(v.kctx.per_cpu_offsets())):
            if base and v.layout.has("scx_sched_pcpu", "bypass_dsq"):
                addr = (v.kctx.percpu_address(base, c) + v.layout.offset("scx_sched_pcpu", "bypass_dsq")) & scx.MASK64
                own.append(scx.read_dsq(v.reader, v.layout, sk.dsq_offs, addr, "bypass", walk=True, cpu=c))
        for e, d in _sched_dsqs(v, other.sch, own):
            if e:
                yield row("dsq", f"{d} [{name}]", "error", e)
            else:
                yield from _dsq(v, d, f" [{name}]")


def _sched_dsqs(v, sch, cpus):
    """[(error, None) or (None, Dsq)]: global DSQs of ``sch``, the per-CPU DSQs of ``cpus``
    (CpuState, or bypass Dsq records), the user DSQs of ``sch`` sorted by id."""
    sk = v.sk
    if sch == 0:   # scx_root is NULL: no scheduler, so no global or user DSQs
        addrs, errors = [], []
    else:
        addrs, errors = scx.global_dsq_addrs(v.reader, v.layout, sch, sk.syms, sk.nr_nodes())
    out = [(e, "global") for e in errors]
    out += [(None, scx.read_dsq(v.reader, v.layout, sk.dsq_offs, a, "global", walk=True, node=n))
            for n, a in addrs]
    out += [(None, c) for c in cpus if isinstance(c, scx.Dsq)]
    out += [(None, c.local_dsq) for c in cpus if not isinstance(c, scx.Dsq) and c.local_dsq is not None]
    out += [(None, c.bypass_dsq) for c in cpus if not isinstance(c, scx.Dsq) and c.bypass_dsq is not None]
    if sch == 0:
        addrs, errors = [], []
    else:
        addrs, errors = scx.user_dsq_addrs(v.reader, v.layout, sch, sk.syms)
    out += [(e, "user") for e in errors]
    user = [scx.read_dsq(v.reader, v.layout, sk.dsq_offs, a, "user", walk=True) for a in addrs]
    user.sort(key=lambda d: (d.id is None, d.id or 0))
    return out + [(None, d) for d in user]


def _dsq(v, d, suffix=""):
    ids = v.sk.enum("scx_dsq_id_flags")
    if d.kind == "user":
        o = f"{d.id:#x}" if d.id is not None else f"@{d.addr:#x}"
    elif d.kind == "global":
        o = f"GLOBAL node{d.node}"
    else:
        o = f"{d.kind.upper()} cpu{d.cpu}"
    o += suffix
    if d.error:
        yield row("dsq", o, "error", d.error, d.addr)
        return
    name = scx.enum_name(ids, d.id, "SCX_DSQ_") if d.id is not None and d.id >> 63 else None
    yield row("dsq", o, "id", f"{d.id:#x}" + (f" ({name})" if name else ""), d.addr)
    w = d.walk
    order = "vtime" if d.vtime else ("fifo" if d.vtime is not None else None)
    if d.nr == 0 and not d.vtime and d.vtime is not None:
        order = "empty"  # an empty DSQ keeps no trace of how it was used
    yield row("dsq", o, "ordering", order)
    yield row("dsq", o, "nr", d.nr)
    if w is None:
        return
    yield row("dsq", o, "queued", len(w.tasks))
    if v.walk_tasks:
        for i, t in enumerate(w.tasks):
            yield row("dsq", o, f"task[{i}]", v.task_text(t), t, depth=1)
    if w.cursors:
        yield row("dsq", o, "iterator_cursors", w.cursors)
    if w.error:
        yield row("dsq", o, "error", w.error)
    elif d.nr is not None and d.nr != len(w.tasks):
        yield row("dsq", o, "note", f"nr says {d.nr} but the list holds {len(w.tasks)} tasks")
