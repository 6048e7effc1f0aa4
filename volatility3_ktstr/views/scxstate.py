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

The model (inventory, verdict, watchdog, DSQ addressing) is ``sched_ext.postmortem``; this module
only formats it. Takes the kernel object (``kernel.KernelContext`` or one with the same public
methods, see ``sched_ext.domain``); no Volatility import. Absent values are NA, never "None".
"""

from collections.abc import Iterator

from ..core import LayoutError, ReadError
from ..errors import KtstrError
from ..kds import Damage, DamageLog
from ..sched_ext import (SCX_VALUE_STRUCT, SchedExt, decode_flags, enum_name, exitlog, kind_text,
                         postmortem, scheduler_maps, struct_ops_callbacks)
from ..sched_ext.postmortem import NONE_OBJ, sched_kind
from . import HEX, Grid, inventory

GRID = Grid(("Section", str), ("Object", str), ("Key", str), ("Value", str), ("Address", HEX),
            note="Value")


def _text(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def row(section, obj, key, value, addr=None, depth=0):
    return depth, GRID.row(Section=section, Object=obj, Key=key, Value=_text(value),
                           Address=addr if addr else None)


def damage_row(section, obj, d, depth=0):
    """The one shape of a damage row: Key "error", the Damage in Value, its address."""
    return depth, GRID.damage(d, Section=section, Object=obj, Key="error", Address=d.addr or None)


def damage_rows(section, obj, damage):
    for d in damage:
        yield damage_row(section, obj, d)
    if damage.dropped:
        yield 0, GRID.damage(f"{damage.dropped} more parts skipped", Section=section, Object=obj,
                             Key="error")


def rows(kctx, walk_tasks: bool = True) -> Iterator[tuple[int, tuple]]:
    inv = postmortem.Inventory(SchedExt(kctx, list_maps=lambda: inventory.maps(kctx)))
    yield from exit_rows(inv)
    yield from scheduler_rows(inv)
    yield from event_rows(inv)
    yield from watchdog_rows(inv)
    yield from callback_rows(inv)
    yield from subsched_rows(inv)
    cpus = []
    yield from cpu_rows(inv, cpus)
    yield from dsq_rows(inv, cpus, walk_tasks)


def _task_text(v, addr):
    t = v.task(addr)
    if t.damage:
        return f"{addr:#x} ({t.damage})"
    return f"{t.pid} {t.comm}"


# --- exit ------------------------------------------------------------------------------------


def exit_rows(v):
    sx = v.sx
    kinds = sx.kernel.enum("scx_exit_kind")
    uei_damage = DamageLog()
    ueis = sx.user_exit_infos(uei_damage)
    log = sx.kernel_log()
    log_recs = exitlog.sched_ext_records(log.records)
    log_exits = exitlog.log_exits(log_recs)
    yield row("exit", "summary", "verdict",
              postmortem.exit_verdict(v, kinds, ueis, log_exits, log.unavailable is not None))
    for name, how, st in v.exit_sources():
        yield from _kernel_exit_rows(v, kinds, name, how, st)
    for u in ueis:
        yield from _uei_rows(v, kinds, u)
    yield from damage_rows("exit", "user_exit_info", uei_damage)
    obj = "kernel log"
    if log.unavailable is not None:
        yield damage_row("exit", obj, log.unavailable)
    else:
        records = log.records
        nlines = sum(r.text.count("\n") + 1 for r in records)
        yield row("exit", obj, "source", f"printk ring buffer: {len(records)} records "
                                          f"({nlines} lines), {len(log_recs)} about sched_ext")
        for r in log_recs:
            for line in r.lines():
                yield row("exit", obj, "line", line, depth=1)
        for e in log_exits:
            text = f"{e.name}: {e.reason}" + (f": {e.msg}" if e.msg else "")
            yield row("exit", obj, "exit", text)
    yield from damage_rows("exit", obj, log.damage)


def _kernel_exit_rows(v, kinds, name, how, st):
    obj = f"kernel {name}"
    ei = st.exit
    addr = ei.addr if ei is not None else None
    yield row("exit", obj, "source", f"scx_exit_info via {how}", addr)
    yield row("exit", obj, "kind", kind_text(kinds, sched_kind(st)))
    if ei is None or not (sched_kind(st) or ei.kind):
        if ei is not None:
            yield from damage_rows("exit", obj, ei.damage)
        return
    eflags = v.sx.kernel.enum("scx_exit_flags")
    yield row("exit", obj, "exit_code", None if ei.exit_code is None else f"{ei.exit_code:#x}")
    yield row("exit", obj, "exit_cpu", ei.exit_cpu)
    yield row("exit", obj, "flags", None if ei.flags is None else
              decode_flags(eflags, ei.flags, "SCX_EFLAG_"))
    yield row("exit", obj, "reason", ei.reason)
    yield row("exit", obj, "msg", ei.msg)
    yield row("exit", obj, "backtrace", f"{len(ei.bt)} frames")
    for i, pc in enumerate(ei.bt):
        yield row("exit", obj, f"bt[{i}]", _bt_text(v.sx, pc), pc, depth=1)
    yield from _dump_rows(obj, ei.dump)
    yield from damage_rows("exit", obj, ei.damage)


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
    owners = [m.name for m in scheduler_maps(v.sx.bpf_maps(), u.btf_kva)]
    prog = f" (program of struct_ops {', '.join(owners)})" if owners else ""
    yield row("exit", obj, "source", f"{u.var} (struct user_exit_info) in map {u.map_id} "
                                     f"{u.map_name}{prog}", u.addr)
    yield row("exit", obj, "kind", kind_text(kinds, u.kind) if u.kind else
              (None if u.kind is None else "0 (no exit recorded)"))
    if u.kind:
        yield row("exit", obj, "exit_code", None if u.exit_code is None else f"{u.exit_code:#x}")
        yield row("exit", obj, "reason", u.reason)
        yield row("exit", obj, "msg", u.msg)
        yield from _dump_rows(obj, u.dump if u.dump_map else None)
        if u.dump_map:
            yield row("exit", obj, "dump_map", f"{u.dump_map} ({u.dump_size} bytes)")
    yield from damage_rows("exit", obj, u.damage)


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
    enum = v.sx.kernel.enum
    if attr == "flags":
        return None if st.ops_flags is None else decode_flags(enum("scx_ops_flags"),
                                                              st.ops_flags, "SCX_OPS_")
    if attr == "exit_kind":
        return None if st.exit_kind is None else (
            enum_name(enum("scx_exit_kind"), st.exit_kind, "SCX_EXIT_") or str(st.exit_kind))
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
            enum_name(v.sx.kernel.enum("scx_exit_kind"), ei.kind, "SCX_EXIT_") or str(ei.kind)))
        yield row(section, obj, "exit_info.exit_code", ei.exit_code)
        yield row(section, obj, "exit_info.reason", ei.reason)
        yield row(section, obj, "exit_info.msg", ei.msg)
        yield from damage_rows(section, obj, ei.damage)
    if with_globals:
        for key, attr in _GLOBAL_FIELDS:
            yield row(section, obj, key, _field_value(v, st, attr))
    yield from damage_rows(section, obj, st.damage)
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
        yield from damage_rows("scheduler", NONE_OBJ, st.damage)
    for ref, sub in v.other_tops():
        yield from _one_scheduler(v, "scheduler", v.name(sub, ref.addr), sub, False, ", ".join(ref.via))
    yield from damage_rows("scheduler", "-", v.damage)


# --- event counters --------------------------------------------------------------------------


def event_rows(v):
    for name, st in v.all_states():
        try:
            ev = v.sx.events(st.sch)
        except (ReadError, LayoutError) as e:
            yield damage_row("events", name, Damage("scx_event_stats", 0, str(e)))
            continue
        if ev is None:
            continue
        yield row("events", name, "source", f"{ev.source}, summed over {len(ev.per_cpu)} CPUs")
        totals = ev.totals
        for i, ename in enumerate(ev.names):
            yield row("events", name, ename, totals[i])
            for cpu, values in ev.per_cpu:
                yield row("events", name, f"cpu{cpu}", None if values is None else values[i], depth=1)
        yield from damage_rows("events", name, ev.damage)


# --- watchdog --------------------------------------------------------------------------------


def watchdog_rows(v):
    hb = postmortem.heartbeat(v)
    yield row("watchdog", "-", "jiffies", hb.jiffies)
    yield row("watchdog", "-", "scx_watchdog_timestamp", hb.timestamp)
    yield row("watchdog", "-", "heartbeat_age_jiffies", hb.age)
    if hb.interval is not None:
        yield row("watchdog", "-", "interval_jiffies", hb.interval)
    for name, s in v.all_states():
        yield row("watchdog", name, "timeout_jiffies", s.watchdog_timeout)
    yield row("watchdog", "-", "heartbeat", hb.verdict)
    sx = v.sx
    if sx.syms.get("runqueues") is None or not sx.layout.has("rq", "scx.runnable_list"):
        return
    try:
        offsets = sx.kernel.per_cpu_offsets()
    except Exception as e:   # noqa: BLE001 - per-CPU offsets missing: no per-CPU view
        yield damage_row("watchdog", "-", Damage("per-CPU offsets", 0, str(e)))
        return
    timeouts = v.timeouts()
    list_off = sx.layout.offset("rq", "scx.runnable_list")
    stalled = 0
    for cpu, rq in enumerate(sx.kernel.percpu_addresses("runqueues")):
        damage = DamageLog()
        waits = postmortem.runnable_waits(v, rq, timeouts, damage)
        obj = f"cpu{cpu}"
        yield row("watchdog", obj, "runnable_list", f"{len(waits)} tasks", rq + list_off)
        for i, w in enumerate(waits):
            t = w.task
            if t.damage:
                yield row("watchdog", obj, f"runnable[{i}]", f"{w.addr:#x} ({t.damage})", w.addr, depth=1)
                continue
            text = f"{t.pid} {t.comm} runnable for {w.wait} jiffies" if w.wait is not None else \
                f"{t.pid} {t.comm} runnable_at {t.runnable_at} is after jiffies {hb.jiffies}"
            if w.stalled:
                stalled += 1
                text += f" STALLED (timeout {w.timeout})"
            yield row("watchdog", obj, f"runnable[{i}]", text, w.addr, depth=1)
        yield from damage_rows("watchdog", obj, damage)
    yield row("watchdog", "-", "stalled_tasks", stalled)


# --- struct_ops callbacks --------------------------------------------------------------------


def callback_rows(v):
    sx = v.sx
    enabled = sx.stats_enabled()
    shown_stats = False
    for name, st in v.all_states():
        if not st.callbacks:
            continue
        damage = DamageLog()
        om = postmortem.find_ops_map(v, st, damage) if sx.layout.has("bpf_struct_ops_map") else None
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
                cbs = struct_ops_callbacks(sx.reader, sx.layout, om.st_map, "sched_ext_ops",
                                           [n for n, _ in st.callbacks], SCX_VALUE_STRUCT, damage)
            except (ReadError, LayoutError) as e:
                cbs = []
                damage.add(f"struct_ops map {m.id}", om.st_map, str(e))
            for cb in cbs:
                prog = (f"{cb.prog_name} (id {cb.prog_id})" if cb.prog_name is not None
                        else (f"id {cb.prog_id}" if cb.prog_id else None))
                yield row("callback", cb.member, "prog", prog, cb.kfunc)
                if cb.prog:
                    yield from _stats_rows(v, cb.member, cb.prog)
        yield from damage_rows("struct_ops", "-", damage)


def _stats_rows(v, member, prog):
    s = v.sx.prog_stats(prog)
    if s.error:
        yield row("callback", member, "run_stats", s.error, prog, depth=1)
        return
    yield row("callback", member, "run_cnt", s.cnt, prog, depth=1)
    yield row("callback", member, "run_time_ns", s.nsecs, depth=1)
    yield row("callback", member, "avg_ns", s.avg_ns, depth=1)
    yield row("callback", member, "recursion_misses", s.misses, depth=1)
    if s.unreadable:
        yield damage_row("callback", member, Damage("bpf_prog_stats", 0,
                                                    f"CPUs {s.unreadable} unreadable"), depth=1)


# --- sub-schedulers --------------------------------------------------------------------------


def subsched_rows(v):
    for ref, sub in v.subs():
        o = sub.name if sub.name is not None else f"@{ref.addr:#x}"
        yield row("subsched", o, "scx_sched", f"{ref.addr:#x}", ref.addr)
        yield row("subsched", o, "parent", f"{ref.parent:#x}", ref.parent)
        yield row("subsched", o, "depth", ref.depth)
        yield row("subsched", o, "level", sub.level)
        yield row("subsched", o, "cgroup", sub.cgroup_path)
        yield row("subsched", o, "exit_kind", _field_value(v, sub, "exit_kind"))
        yield row("subsched", o, "bypass_depth", sub.bypass_depth)
        yield row("subsched", o, "found_via", ", ".join(ref.via))
        yield from damage_rows("subsched", o, sub.damage)


# --- CPUs and dispatch queues ----------------------------------------------------------------


def cpu_rows(v, cpus):
    sx = v.sx
    try:
        cpus.extend(sx.cpus(v.root.sch, walk=True))
    except (ReadError, LayoutError, KtstrError) as e:
        yield damage_row("cpu", "-", Damage("run queues", 0, str(e)))
        return
    rq_flags = sx.kernel.enum("scx_rq_flags")
    for c in cpus:
        o = f"cpu{c.cpu}"
        if c.damage:
            yield damage_row("cpu", o, c.damage)
            continue
        yield row("cpu", o, "nr_running", c.nr_running, c.rq)
        yield row("cpu", o, "scx.nr_running", c.scx_nr_running)
        yield row("cpu", o, "local_dsq.nr", c.local_dsq.nr if c.local_dsq else None)
        yield row("cpu", o, "flags", None if c.flags is None else
                  decode_flags(rq_flags, c.flags, "SCX_RQ_", 32))
        if c.curr:
            t = v.task(c.curr)
            cur = (f"{c.curr:#x} ({t.damage})" if t.damage else
                   f"{t.pid} {t.comm} ({sx.class_name(t.sched_class)})")
        else:
            cur = "NULL"
        yield row("cpu", o, "curr", cur, c.curr)


def dsq_rows(v, cpus, walk_tasks=True):
    """The root's global DSQs, every CPU's local and bypass DSQs, the root's user DSQs; then, for
    every other scheduler in memory (sub-schedulers, disabled ones), its own global, bypass and
    user DSQs, their Object suffixed with ``[name]``."""
    for d, item in postmortem.sched_dsqs(v, v.root.sch, cpus):
        if d:
            yield damage_row("dsq", item, d)
        else:
            yield from _dsq(v, item, walk_tasks=walk_tasks)
    for name, other in v.all_states():
        if other is v.root or not other.sch:
            continue
        for d, item in postmortem.sched_dsqs(v, other.sch, v.sx.bypass_dsqs(other.sch)):
            if d:
                yield damage_row("dsq", f"{item} [{name}]", d)
            else:
                yield from _dsq(v, item, walk_tasks, f" [{name}]")


def _dsq(v, d, walk_tasks=True, suffix=""):
    ids = v.sx.kernel.enum("scx_dsq_id_flags")
    if d.kind == "user":
        o = f"{d.id:#x}" if d.id is not None else f"@{d.addr:#x}"
    elif d.kind == "global":
        o = f"GLOBAL node{d.node}"
    else:
        o = f"{d.kind.upper()} cpu{d.cpu}"
    o += suffix
    if d.damage:
        yield damage_row("dsq", o, d.damage)
        return
    name = enum_name(ids, d.id, "SCX_DSQ_") if d.id is not None and d.id >> 63 else None
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
    if walk_tasks:
        for i, t in enumerate(w.tasks):
            yield row("dsq", o, f"task[{i}]", _task_text(v, t), t, depth=1)
    if w.cursors:
        yield row("dsq", o, "iterator_cursors", w.cursors)
    yield from damage_rows("dsq", o, w.damage)
    if not w.damage and d.nr is not None and d.nr != len(w.tasks):
        yield row("dsq", o, "note", f"nr says {d.nr} but the list holds {len(w.tasks)} tasks")


def _bt_text(sx, pc: int) -> str:
    """A backtrace address: its kernel symbol, else the BPF program (id, source line) or
    trampoline it is in (unwind.bpf_frame_text), else hex."""
    from ..unwind import bpf_frame_text

    near = sx.kernel.symbol_near(pc)
    if near:
        return near
    try:
        return bpf_frame_text(sx.kernel, pc) or f"{pc:#x}"
    except Exception:    # unreadable BPF symbols: the address stays as it was
        return f"{pc:#x}"
