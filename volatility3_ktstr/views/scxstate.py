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
- ``cpu``, ``dsq``: per-CPU run queues, each with the scheduler's own per-CPU context as child
  ``sched_ctx`` rows (its per-CPU maps and CPU-indexed arrays among its globals and arena
  globals, typed by its BTF; Object ``sched_ctx`` says which were taken and why), and every
  dispatch queue with its queued tasks.

The model (inventory, verdict, watchdog, DSQ addressing) is ``sched_ext.postmortem``; this module
only formats it. Takes the kernel object (``kernel.KernelContext`` or one with the same public
methods, see ``sched_ext.domain``); no Volatility import. Absent values are NA, never "None".
"""

import struct
from collections.abc import Iterable, Iterator

from ..core import LayoutError, ReadError
from ..errors import KtstrError
from ..kds import Damage, DamageLog
from ..sched_ext import atexit, invariants, locks, read_dsq, runnable_list, walk_scx_tasks
from ..btf.types import Kind
from ..sched_ext.exit import datasec_vars
from ..sched_ext.tasks import cpus_ptr_text, read_task_affinity, read_task_cpus
from ..walkers.sections import section_maps
from ..sched_ext import (SCX_VALUE_STRUCT, SLICE_INF, SchedExt, decode_flags, enum_name, exitlog,
                         kind_text, postmortem, scheduler_maps, struct_ops_callbacks)
from ..sched_ext.dumptext import cpu_list, int_field
from ..sched_ext.postmortem import NONE_OBJ, sched_kind
from . import HEX, Grid, inventory
from .scxtasks import scheduler_records

GRID = Grid(("Section", str), ("Object", str), ("Key", str), ("Value", str), ("At", str),
            ("Address", HEX), note="Value")
AT_DUMP = "dump"     # the At of a row read from the memory as the dump holds it


def _text(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def row(section, obj, key, value, addr=None, depth=0, at=AT_DUMP):
    """One row. ``at``: "dump" (the memory as dumped) or the ExitState tag ("exit [t]": the
    kernel's debug dump, the machine at the moment of the exit)."""
    return depth, GRID.row(Section=section, Object=obj, Key=key, Value=_text(value), At=at,
                           Address=addr if addr else None)


def damage_row(section, obj, d, depth=0):
    """The one shape of a damage row: Key "error", the Damage in Value, its address."""
    return depth, GRID.damage(d, Section=section, Object=obj, Key="error", At=AT_DUMP,
                              Address=d.addr or None)


def damage_rows(section, obj, damage):
    for d in damage:
        yield damage_row(section, obj, d)
    if damage.dropped:
        yield 0, GRID.damage(f"{damage.dropped} more parts skipped", Section=section, Object=obj,
                             Key="error", At=AT_DUMP)


def rows(kctx, walk_tasks: bool = True, pids: Iterable[int] = ()) -> Iterator[tuple[int, tuple]]:
    inv = postmortem.Inventory(SchedExt(kctx, list_maps=lambda: inventory.maps(kctx)))
    es = atexit.exit_state_of(inv)
    yield from exit_rows(inv, es)
    yield from stall_rows(inv, es, set(pids or ()))
    yield from scheduler_rows(inv)
    yield from event_rows(inv, es)
    yield from watchdog_rows(inv)
    yield from callback_rows(inv)
    yield from subsched_rows(inv)
    cpus, dsqs = [], []
    yield from cpu_rows(inv, cpus, es)
    yield from dsq_rows(inv, cpus, walk_tasks, dsqs)
    yield from invariant_rows(inv, cpus, dsqs)
    yield from lock_rows(inv, cpus, dsqs)


def _task_text(v, addr):
    t = v.task(addr)
    if t.damage:
        return f"{addr:#x} ({t.damage})"
    return f"{t.pid} {t.comm}"


# --- exit ------------------------------------------------------------------------------------


def exit_rows(v, es: "atexit.ExitState | None" = None):
    """The verdict; whether the scheduler was torn down before the dump and when it exited;
    each place the exit survives (kernel, uei, kernel log), the debug dump text once (its CPU
    and task blocks go to the cpu section and its counters to the events section, At=exit)."""
    sx = v.sx
    kinds = sx.kernel.enum("scx_exit_kind")
    uei_damage = DamageLog()
    ueis = sx.user_exit_infos(uei_damage)
    log = sx.kernel_log()
    log_recs = exitlog.sched_ext_records(log.records)
    log_exits = exitlog.log_exits(log_recs)
    if es is None:
        es = atexit.exit_state(v, ueis, None if log.unavailable else log.records)
    yield row("exit", "summary", "verdict",
              postmortem.exit_verdict(v, kinds, ueis, log_exits, log.unavailable is not None))
    exited = es.chosen is not None or bool(log_exits) or any(u.kind for u in ueis)
    if exited:
        yield row("exit", "summary", "torn_down", _torn_down_text(v, es))
    if es.time_ns is not None:
        yield row("exit", "summary", "exit_time", f"{es.tag[5:]} (kernel log: the scheduler's "
                                                  "disabled line)", at=es.tag)
    kernel_bt = []
    for name, how, st in v.exit_sources():
        yield from _kernel_exit_rows(v, kinds, name, how, st, kernel_bt)
    first_kernel = next((st.exit for _, _, st in v.exit_sources() if st.exit is not None
                         and st.exit.kind), None)
    for u in ueis:
        yield from _uei_rows(v, kinds, u, first_kernel)
    yield from damage_rows("exit", "user_exit_info", uei_damage)
    yield from debug_dump_rows(v, es, kernel_bt)
    frames = list(kernel_bt) + (es.dump.backtrace if es.dump is not None else [])
    yield from _kernel_log_rows(log, log_recs, log_exits, frames)


def _torn_down_text(v, es):
    if es.torn_down:
        what = "scx_root is NULL" if v.root.sch is not None else "no scheduler in scx_ops"
        return (f"yes: {what} at the dump; rows At={AT_DUMP} show the machine after the "
                f"teardown, rows At=exit the kernel's debug dump made at the exit")
    return f"no: {v.name(v.root)} is still loaded at the dump"


def _kernel_log_rows(log, log_recs, log_exits, kernel_bt):
    obj = "kernel log"
    if log.unavailable is not None:
        yield damage_row("exit", obj, log.unavailable)
        return
    records = log.records
    nlines = sum(r.text.count("\n") + 1 for r in records)
    yield row("exit", obj, "source", f"printk ring buffer: {len(records)} records "
                                      f"({nlines} lines), {len(log_recs)} about sched_ext")
    frames = {_frame_key(f) for f in kernel_bt}
    run = 0            # backtrace lines equal to the kernel's bt[] rows, shown once as a count
    for r in log_recs:
        for line in r.lines():
            body = line.split("] ", 1)[-1].strip()
            if frames and line.split("] ", 1)[-1][:1] in (" ", "\t") and _frame_key(body) in frames:
                run += 1
                continue
            if run:
                yield row("exit", obj, "backtrace", f"{run} lines, the frames of the bt[] rows above", depth=1)
                run = 0
            yield row("exit", obj, "line", line, depth=1)
    if run:
        yield row("exit", obj, "backtrace", f"{run} lines, the frames of the bt[] rows above", depth=1)
    for e in log_exits:
        text = f"{e.name}: {e.reason}" + (f": {e.msg}" if e.msg else "")
        yield row("exit", obj, "exit", text)
    yield from damage_rows("exit", obj, log.damage)


def _same_frames(keys, kernel_bt) -> bool:
    """The text's frames are the kernel's bt[] (an unnamed bt[] address matches any frame)."""
    return len(keys) == len(kernel_bt) and all(
        k == _frame_key(b) or b.startswith("0x") for k, b in zip(keys, kernel_bt))


def _frame_key(frame: str) -> str:
    """``sym+0xoff`` of ``sym+0xoff/0xsize [mod]`` (how bt[] rows and printed frames compare)."""
    return frame.strip().split("/", 1)[0].split(" ", 1)[0]


def _kernel_exit_rows(v, kinds, name, how, st, kernel_bt):
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
    yield from backtrace_rows(v, obj, ei.bt)
    if not kernel_bt:
        kernel_bt.extend(_bt_text(v.sx, pc) for pc in ei.bt)
    if ei.dump is None:
        yield row("exit", obj, "dump", None)
    yield from damage_rows("exit", obj, ei.damage)


def backtrace_rows(v, obj, bt):
    """The exit backtrace (``scx_exit_info.bt``), one row per frame: the one place these rows
    are made (the frame naming of BPF programs and trampolines belongs here)."""
    for i, pc in enumerate(bt):
        yield row("exit", obj, f"bt[{i}]", _bt_text(v.sx, pc), pc, depth=1)


def _uei_rows(v, kinds, u, kernel_ei=None):
    obj = f"uei {u.map_name}"
    owners = [m.name for m in scheduler_maps(v.sx.bpf_maps(), u.btf_kva)]
    prog = f" (program of struct_ops {', '.join(owners)})" if owners else ""
    yield row("exit", obj, "source", f"{u.var} (struct user_exit_info) in map {u.map_id} "
                                     f"{u.map_name}{prog}", u.addr)
    same = (kernel_ei is not None and u.kind and u.kind == kernel_ei.kind and u.reason == kernel_ei.reason
            and u.msg == kernel_ei.msg and u.exit_code in (None, kernel_ei.exit_code))
    if same:   # the scheduler's copy of the kernel's record: said once, not repeated
        yield row("exit", obj, "kind", kind_text(kinds, u.kind))
        yield row("exit", obj, "same_as", "the kernel's scx_exit_info above: exit_code, reason, msg")
    else:
        yield row("exit", obj, "kind", kind_text(kinds, u.kind) if u.kind else
                  (None if u.kind is None else "0 (no exit recorded)"))
        if u.kind:
            yield row("exit", obj, "exit_code", None if u.exit_code is None else f"{u.exit_code:#x}")
            yield row("exit", obj, "reason", u.reason)
            yield row("exit", obj, "msg", u.msg)
    if u.kind and u.dump_map:
        yield row("exit", obj, "dump_map", f"{u.dump_map} ({u.dump_size} bytes)")
    yield from damage_rows("exit", obj, u.damage)


def debug_dump_rows(v, es, kernel_bt=()):
    """The debug dump text once: the copy shown, the copies with the same text, the parts of
    the text that have no other rows (header, the scheduler's ops.dump lines, lines not parsed);
    the backtrace as a reference to the bt[] rows when it has the same frames."""
    obj = "debug dump"
    if es.chosen is None:
        return
    d, c = es.dump, es.chosen
    yield row("exit", obj, "source", f"{c.where}: {len(d.lines)} lines, {len(c.text.encode())} bytes",
              c.addr, at=es.tag)
    for o in es.same:
        yield row("exit", obj, "same_text", o.where, o.addr, at=es.tag)
    for o in es.differing:
        lines = o.text.rstrip("\n").split("\n")
        yield row("exit", obj, "other_text", f"{o.where}: {len(lines)} lines (another exit)", o.addr,
                  at=es.tag)
        for i, line in enumerate(lines):
            yield row("exit", obj, f"other[{i}]", line, depth=1, at=es.tag)
    if d.sched:
        yield row("exit", obj, "scheduler", d.sched, at=es.tag)
    if d.trigger_comm is not None:
        cpu = f" on CPU {d.exit_cpu}" if d.exit_cpu is not None else ""
        yield row("exit", obj, "trigger", f"{d.trigger_comm}[{d.trigger_pid}]{cpu}: exit kind {d.kind}: "
                                          f"{d.reason} ({d.msg})", at=es.tag)
    elif d.reason is not None:
        yield row("exit", obj, "trigger", d.reason, at=es.tag)
    keys = [_frame_key(f) for f in d.backtrace]
    if keys and _same_frames(keys, kernel_bt):
        # the text names frames the bt[] rows leave as addresses (BPF programs, trampolines)
        named = [(i, f) for i, (f, k) in enumerate(zip(d.backtrace, kernel_bt)) if k.startswith("0x")]
        yield row("exit", obj, "backtrace", f"{len(keys)} frames, those of the bt[] rows above"
                  + (f"; {len(named)} named only here" if named else ""), at=es.tag)
        for i, f in named:
            yield row("exit", obj, f"bt[{i}]", f, depth=1, at=es.tag)
    else:
        yield row("exit", obj, "backtrace", f"{len(keys)} frames", at=es.tag)
        for i, f in enumerate(d.backtrace):
            yield row("exit", obj, f"bt[{i}]", f, depth=1, at=es.tag)
    if d.ops_lines:
        yield row("exit", obj, "ops.dump", f"{len(d.ops_lines)} lines (the scheduler's ops.dump)",
                  at=es.tag)
        for i, line in enumerate(d.ops_lines):
            yield row("exit", obj, f"ops.dump[{i}]", line, depth=1, at=es.tag)
    ntasks = len(d.tasks)
    yield row("exit", obj, "cpus", f"{len(d.cpus)} CPUs, {ntasks} tasks: section cpu, At=exit",
              at=es.tag)
    if d.events:
        yield row("exit", obj, "events", f"{len(d.events)} counters: section events, Key at exit",
                  at=es.tag)
    for i, line in d.other:
        yield row("exit", obj, f"line[{i}]", line, depth=1, at=es.tag)
    if d.truncated:
        yield row("exit", obj, "truncated", "yes (~~~~ TRUNCATED ~~~~: the buffer filled)", at=es.tag)


# --- the stall chain ------------------------------------------------------------------------

MAX_CHAIN_CPUS = 4096         # allowed CPUs described per stalled task


def task_stack_rows(v, task_addr: int) -> Iterator[str]:
    """Frames of the kernel stack of the task at ``task_addr``, innermost first, for the stall
    chain, as ``linux.ktstr.stacks`` unwinds them (views/stacks.py), then where the walk started
    and why it stopped."""
    from .stacks import stack_lines

    return iter(stack_lines(v.sx.kernel, task_addr))


def stall_rows(v, es, pids=frozenset()):
    """For each stalled task (live: past its scheduler's watchdog timeout on a runnable_list; at
    the exit: the task a watchdog exit names, or past ``timeout_ms`` in the debug dump) and each
    task of ``pids``: its wait, DSQ and position, allowed CPUs, what each of them ran (class,
    priority, for how long; RT/DL hogs called out) or that it was idle, the scheduler's own
    record of the task, its kernel stack. Nothing when there is no stall and no ``pids``."""
    sx = v.sx
    stalled = []
    timeouts = v.timeouts()
    try:
        cpus = sx.cpus(v.root.sch, walk=False)
    except (ReadError, LayoutError, KtstrError):
        cpus = []
    if sx.layout.has("rq", "scx.runnable_list"):
        for c in cpus:
            if c.damage is not None:
                continue
            for i, w in enumerate(postmortem.runnable_waits(v, c.rq, timeouts, DamageLog())):
                if w.stalled or (pids and w.task.pid in pids):
                    stalled.append((w.task, w, c.cpu, i))
    listed = {t.pid for t, *_ in stalled}
    if pids and sx.syms.get("tasks") is not None:
        walk = walk_scx_tasks(sx.reader, sx.layout, sx.syms["tasks"], cursor_flag=sx.cursor_flag())
        for a in walk.tasks:
            t = v.task(a)
            if not t.damage and t.pid in pids and t.pid not in listed:
                stalled.append((t, None, None, None))
                listed.add(t.pid)
    at_exit = []
    if es.dump is not None:
        tmo = next((s.timeout_ms for _, s in v.all_states() if s.timeout_ms), None) or \
            next((s.timeout_ms for s in v.states.values() if s.timeout_ms), None)
        at_exit = [t for t in es.dump.tasks if t.pid == es.stall_pid or (tmo and -t.wait_ms > tmo)
                   or t.pid in pids]
    if not stalled and not at_exit:
        return
    records = scheduler_records(sx.kernel)
    by_cpu = {c.cpu: c for c in cpus if c.damage is None}
    nr_cpus = len(cpus)
    for t, w, cpu, pos in stalled:
        yield from _live_chain(v, t, w, cpu, pos, by_cpu, nr_cpus, records)
    for t in at_exit:
        yield from _exit_chain(v, es, t, records, tmo)


def _live_chain(v, t, w, cpu, pos, by_cpu, nr_cpus, records):
    sx, o = v.sx, f"{t.pid} {t.comm}"
    if w is not None:
        yield row("stall", o, "wait", f"runnable for {w.wait} jiffies (timeout {w.timeout})"
                  + (" STALLED" if w.stalled else ""), t.addr)
        yield row("stall", o, "runnable_list", f"cpu{cpu}[{pos}]")
    else:
        yield row("stall", o, "wait", "not on a runnable_list", t.addr)
    yield row("stall", o, "state", f"{t.state}, class {sx.class_name(t.sched_class)}, "
                                   f"ops_state {sx.ops_state(t.ops_state)}")
    if t.dsq:
        d = read_dsq(sx.reader, sx.layout, sx.dsq_offs, t.dsq, "dsq")
        tasks = d.walk.tasks if d.walk is not None else []
        where = (f"position {tasks.index(t.addr)} of {len(tasks)}" if t.addr in tasks
                 else f"not on its list ({len(tasks)} tasks)")
        yield row("stall", o, "dsq", f"{d.id:#x}, {where}" if d.id is not None else where, t.dsq)
    else:
        opss = sx.ops_state(t.ops_state) or ""
        why = ("held by the BPF scheduler (ops_state QUEUED)" if opss.startswith("QUEUED") else
               "not runnable" if not t.on_rq else "runnable, on no DSQ")
        yield row("stall", o, "dsq", f"none: {why}")
    mask = read_task_cpus(sx.reader, sx.layout, t, nr_cpus)
    yield row("stall", o, "allowed_cpus", (cpu_list(mask) if mask is not None else None),
              t.cpus_ptr)
    yield row("stall", o, "migration_disabled", t.migration_disabled)
    if t.cpus_mask is not None and t.cpus_ptr != t.cpus_mask:
        # migrate_disable() pinned it: cpus_ptr is cpumask_of(cpu), its affinity is cpus_mask
        own = read_task_affinity(sx.reader, sx.layout, t, nr_cpus)
        yield row("stall", o, "affinity", f"{cpu_list(own) if own is not None else 'unreadable'} "
                                          f"(cpus_mask, nr_cpus_allowed {t.nr_cpus_allowed}); "
                                          f"cpus_ptr {cpus_ptr_text(t)}", t.cpus_mask)
    yield row("stall", o, "ran", _last_ran(v, t, by_cpu))
    allowed = [c for c in range(min(nr_cpus, MAX_CHAIN_CPUS)) if mask is None or mask >> c & 1]
    for c in allowed:
        yield row("stall", o, f"cpu{c}", _cpu_ran(v, by_cpu.get(c)), depth=1)
    for text in scheduler_record_texts(records, t.pid):
        yield row("stall", o, "sched_record", text)
    for i, frame in enumerate(task_stack_rows(v, t.addr)):
        yield row("stall", o, f"stack[{i}]", frame, depth=1)


def scheduler_record_texts(records, pid):
    return records.get(pid, ()) if pid is not None else ()


def _cpu_ran(v, c):
    """What a CPU was running and for how long; idle said; an RT or deadline task called out
    as a hog of a CPU the stalled task may use. The times are the kernel's own accounting, in
    the task clock it charges (``rq->clock_task``: ``rq->clock`` less IRQ and steal time):
    ``clock_task - se.exec_start`` (running since its last accounting, as of the CPU's last
    clock update), ``se.sum_exec_runtime`` (its CPU time in all), and for a sched_ext task the
    slice it has left (``scx.slice``)."""
    if c is None:
        return "run queue unreadable"
    if not c.curr:
        return "curr NULL"
    cur = v.task(c.curr)
    if cur.damage:
        return f"curr {c.curr:#x} unreadable"
    cls = v.sx.class_name(cur.sched_class) or "?"
    if cls == "idle":
        return f"idle ({cur.comm}), nr_running {c.nr_running}"
    hog = " -- RT hog" if cls == "rt" else " -- deadline hog" if cls == "dl" else ""
    prio = f", prio {cur.prio}" if cur.prio is not None else ""
    return (f"{cur.pid} {cur.comm} ({cls}{prio}){_ran_text(c, cur, cls == 'ext')}, "
            f"nr_running {c.nr_running}{hog}")


def _ms(ns):
    return f"{ns / 1e6:.3f} ms"


def _ran_text(c, t, scx: bool) -> str:
    """``for X ms (rq clock_task - se.exec_start), N ms CPU in all (se.sum_exec_runtime), slice
    left S ms (scx.slice)``: the parts the dump holds."""
    parts = []
    clock, which = (c.clock_task, "clock_task") if c.clock_task else (c.clock, "clock")
    if clock and t.exec_start and clock >= t.exec_start:
        parts.append(f" for {_ms(clock - t.exec_start)} (rq {which} - se.exec_start)")
    if t.sum_exec_runtime is not None:
        parts.append(f", {_ms(t.sum_exec_runtime)} CPU in all (se.sum_exec_runtime)")
    if scx and t.slice is not None:
        left = "infinite (SCX_SLICE_INF)" if t.slice == SLICE_INF else _ms(t.slice)
        parts.append(f", slice left {left} (scx.slice)")
    return "".join(parts)


def _last_ran(v, t, by_cpu) -> str | None:
    """When the stalled task last ran, from the kernel's accounting on the CPU it last ran on:
    ``clock_task - se.exec_start`` there (exec_start is set at each charge, so for a task not
    running it is when it was last charged: when it stopped), and its CPU time in all."""
    c = by_cpu.get(t.cpu)
    parts = []
    if c is not None and t.exec_start:
        clock, which = (c.clock_task, "clock_task") if c.clock_task else (c.clock, "clock")
        if clock and clock >= t.exec_start:
            parts.append(f"last charged {_ms(clock - t.exec_start)} before cpu{t.cpu}'s rq {which} "
                         f"(se.exec_start {t.exec_start})")
    if t.sum_exec_runtime is not None:
        parts.append(f"{_ms(t.sum_exec_runtime)} CPU in all (se.sum_exec_runtime)")
    if t.slice is not None:
        parts.append("slice left " + ("infinite" if t.slice == SLICE_INF else _ms(t.slice)) + " (scx.slice)")
    return "; ".join(parts) or None


def _exit_chain(v, es, t, records, timeout_ms):
    at, o = es.tag, f"{t.pid} {t.comm}"
    named = " (named by the watchdog)" if t.pid == es.stall_pid else ""
    tmo = f" (timeout {timeout_ms} ms)" if timeout_ms else ""
    yield row("stall", o, "wait", f"{t.wait_ms:+d}ms at the exit{tmo}{named}", at=at)
    where = "running" if t.marker == "*" else f"cpu{t.cpu} runnable_list[{t.pos}]"
    yield row("stall", o, "runnable_list", where, at=at)
    yield row("stall", o, "dsq", f"{t.fields.get('dsq_id')} (the dump text gives no position)", at=at)
    yield row("stall", o, "allowed_cpus", t.cpus, at=at)
    yield row("stall", o, "migration_disabled", t.fields.get("no_mig"), at=at)
    listed = {c.cpu: c for c in es.dump.cpus}
    mask = t.fields.get("cpus")
    try:
        bits = int(mask.replace(",", ""), 16) if mask else None
    except ValueError:
        bits = None
    span = max(listed, default=0) + 1 if bits is None else bits.bit_length()
    for c in range(min(span, MAX_CHAIN_CPUS)):
        if bits is not None and not bits >> c & 1:
            continue
        dc = listed.get(c)
        if dc is None:
            text = "not in the dump: idle with an empty runnable_list (the kernel leaves such CPUs out)"
        else:
            cls = _class_text(dc.curr_class)
            hog = " -- RT hog" if cls == "rt" else " -- deadline hog" if cls == "dl" else ""
            text = (f"{dc.curr_pid} {dc.curr_comm} ({cls}), nr_run {dc.fields.get('nr_run')}, "
                    f"{len(dc.tasks)} tasks listed{hog}")
        yield row("stall", o, f"cpu{c}", text, depth=1, at=at)
    yield row("stall", o, "stack", f"{len(t.stack)} frames: section cpu, object cpu{t.cpu}", at=at)
    for text in scheduler_record_texts(records, t.pid):
        yield row("stall", o, "sched_record", text)


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
        kind = None if ei.kind is None else (
            enum_name(v.sx.kernel.enum("scx_exit_kind"), ei.kind, "SCX_EXIT_") or str(ei.kind))
        # kind, exit_code, reason and msg are the exit section's "kernel <name>" rows
        yield row(section, obj, "exit_info", f"{kind}: section exit, object kernel {obj}", ei.addr)
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
        absent = []
        for key, attr in _GLOBAL_FIELDS:
            value = _field_value(v, st, attr)
            if value is None:   # a per-scheduler field, gone with the scheduler: listed once
                absent.append(key)
                continue
            yield row("scheduler", NONE_OBJ, key, value)
        if absent:
            yield row("scheduler", NONE_OBJ, "absent", ", ".join(absent) + " (no scheduler to hold them)")
        yield from damage_rows("scheduler", NONE_OBJ, st.damage)
    for ref, sub in v.other_tops():
        yield from _one_scheduler(v, "scheduler", v.name(sub, ref.addr), sub, False, ", ".join(ref.via))
    yield from damage_rows("scheduler", "-", v.damage)


# --- event counters --------------------------------------------------------------------------


def event_rows(v, es=None):
    at_exit = dict(es.dump.events) if es is not None and es.dump is not None else {}
    # the dump's counters are its scheduler's (7.x names it on the first line)
    owner = es.dump.sched.split(":", 1)[0] if at_exit and es.dump.sched else None
    shown = False
    for name, st in v.all_states():
        try:
            ev = v.sx.events(st.sch)
        except (ReadError, LayoutError) as e:
            yield damage_row("events", name, Damage("scx_event_stats", 0, str(e)))
            continue
        if ev is None:
            continue
        yield row("events", name, "source", f"{ev.source}, summed over {len(ev.per_cpu)} CPUs "
                                            "(per-CPU rows for the counters not 0 on every CPU)")
        totals = ev.totals
        for i, ename in enumerate(ev.names):
            yield row("events", name, ename, totals[i])
            # a total of 0 with every CPU read and 0: no per-CPU rows (the source row says so)
            if totals[i] or any(values is None or values[i] for _, values in ev.per_cpu):
                for cpu, values in ev.per_cpu:
                    yield row("events", name, f"cpu{cpu}", None if values is None else values[i],
                              depth=1)
            if ename in at_exit and not shown and owner in (None, name):
                yield row("events", name, "at exit", at_exit[ename], depth=1, at=es.tag)
        yield from damage_rows("events", name, ev.damage)
        shown = shown or bool(at_exit) and owner in (None, name)
    if at_exit and not shown:   # no scheduler left to read counters from: the exit's alone
        for ename, value in at_exit.items():
            yield row("events", es.chosen.where, ename, value, at=es.tag)


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
                    "run_time_ns are not counted; a callback's run_stats row only when a count is "
                    "not 0)"))
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
                    yield from _stats_rows(v, cb.member, cb.prog, counted=enabled is not False)
        yield from damage_rows("struct_ops", "-", damage)


def _stats_rows(v, member, prog, counted=True):
    """A callback program's run statistics; with bpf_stats off (``counted`` False) one
    ``run_stats`` row, only when something is not 0 (recursion misses are counted always)."""
    s = v.sx.prog_stats(prog)
    if s.error:
        yield row("callback", member, "run_stats", s.error, prog, depth=1)
        return
    if not counted:
        if s.cnt or s.nsecs or s.misses:
            yield row("callback", member, "run_stats", f"run_cnt {s.cnt}, run_time_ns {s.nsecs}, "
                                                       f"recursion_misses {s.misses}", prog, depth=1)
        if s.unreadable:
            yield damage_row("callback", member, Damage("bpf_prog_stats", 0,
                                                        f"CPUs {s.unreadable} unreadable"), depth=1)
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


def cpu_rows(v, cpus, es=None):
    """Every CPU's run queue as the dump holds it, then (after an exit with a debug dump) each
    CPU and task the kernel's dump lists, At=exit."""
    sx = v.sx
    try:
        cpus.extend(sx.cpus(v.root.sch, walk=True))
    except (ReadError, LayoutError, KtstrError) as e:
        yield damage_row("cpu", "-", Damage("run queues", 0, str(e)))
        cpus = []
    rq_flags = sx.kernel.enum("scx_rq_flags")
    ctx = sx.cpu_contexts()
    yield from sched_ctx_rows(ctx)
    for c in cpus:
        o = f"cpu{c.cpu}"
        if c.damage:
            yield damage_row("cpu", o, c.damage)
            yield from _cpu_ctx_rows(ctx, c.cpu)
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
        yield row("cpu", o, "cpu_released", c.cpu_released)
        if c.ops_qseq is not None:
            yield row("cpu", o, "ops_qseq", c.ops_qseq)
        if c.kick_sync is not None or c.pnt_seq is not None:
            yield row("cpu", o, "kick_sync" if c.kick_sync is not None else "pnt_seq",
                      c.kick_sync if c.kick_sync is not None else c.pnt_seq)
        yield row("cpu", o, "clock_ns", c.clock)
        if c.clock_task is not None:
            yield row("cpu", o, "clock_task_ns", c.clock_task)
        set_masks = {k: m for k, m in c.masks.items() if m}
        if set_masks:
            yield row("cpu", o, "masks", " ".join(f"{k}={cpu_list(m)}" for k, m in set_masks.items()))
        yield from _cpu_ctx_rows(ctx, c.cpu)
    if es is not None and es.dump is not None:
        yield from exit_cpu_rows(v, es)


# --- the scheduler's per-CPU context ----------------------------------------------------------

SCHED_CTX_TEXT = 512          # characters of one rendered value


def sched_ctx_rows(ctx):
    """Which maps and variables of the scheduler were taken as its per-CPU context and why
    (``sched_ext.cpuctx``: by shape in its BTF), the candidates the values ruled out, or that
    there is none."""
    for s in ctx.sources:
        yield row("cpu", "sched_ctx", "source", f"{s.name}: {s.why}", s.addr)
    for name, why in ctx.rejected:
        yield row("cpu", "sched_ctx", "rejected", f"{name}: {why}")
    if not ctx.sources:
        objs = ", ".join(ctx.objects) or "none (no struct_ops map holds a sched_ext_ops)"
        yield row("cpu", "sched_ctx", "source", f"none: no per-CPU map and no array of structs "
                                                f"sized by a CPU maximum among the {ctx.maps_seen} "
                                                f"maps and {ctx.vars_seen} global variables of the "
                                                f"scheduler's BPF objects: {objs}")
    yield from damage_rows("cpu", "sched_ctx", ctx.damage)


def _cpu_ctx_rows(ctx, cpu):
    """A CPU's values of each per-CPU context source, typed by the scheduler's BTF, one line
    each (child rows of the CPU)."""
    for src, val in ctx.for_cpu(cpu):
        yield row("cpu", f"cpu{cpu}", "sched_ctx", sched_ctx_text(src, val), val.addr, depth=1)


def sched_ctx_text(src, val) -> str:
    from ..render import render, render_text

    head = f"{val.label} ({src.btf.type_name(src.type_id)})"
    if val.error or val.raw is None:
        return f"{head}: {val.error or 'unreadable'}"
    try:
        text = render_text(render(src.btf, src.type_id, val.raw), SCHED_CTX_TEXT)
    except (ValueError, KeyError, IndexError, RecursionError, struct.error) as e:
        text = f"{val.raw[:SCHED_CTX_TEXT // 2].hex()} (not rendered: {e})"
    return f"{head}: {text}"


def _class_text(sym):
    """``idle_sched_class`` -> ``idle`` (how the live rows name a class)."""
    return sym[:-len("_sched_class")] if sym and sym.endswith("_sched_class") else sym


def exit_task_text(sx, t) -> str:
    """One task of the kernel's debug dump on one line, its fields decoded like the live rows."""
    f = t.fields
    where = f"running on cpu{t.cpu}" if t.marker == "*" else f"cpu{t.cpu} runnable_list[{t.pos}]"
    parts = [f"{t.pid} {t.comm}", f"state {t.state}", where, f"waited {t.wait_ms:+d}ms"]
    if t.owner:
        parts.append(f"sched {t.owner.lstrip('*')}" + (" (own)" if t.owner.startswith("*") else ""))
    ids = sx.kernel.enum("scx_dsq_id_flags")
    dsq = int_field(f, "dsq_id")
    if dsq is not None:
        name = enum_name(ids, dsq, "SCX_DSQ_") if dsq >> 63 else None
        parts.append(f"dsq {dsq:#x}" + (f" ({name})" if name else ""))
    elif "dsq_id" in f:
        parts.append(f"dsq {f['dsq_id']}")
    st, fl = int_field(f, "scx_state"), int_field(f, "flags")
    shift = dict(sx.kernel.enum("scx_ent_flags") or ()).get("SCX_TASK_STATE_SHIFT")
    if st is not None:
        parts.append(f"scx_state {st}")
    if fl is not None:
        # the dump prints the state apart from the flags: put it back to decode them as one word
        word = fl | (st << shift if st is not None and shift is not None else 0)
        parts.append(f"flags {sx.task_flags(word) or '0'}")
    for key in ("dsq_flags", "ops_state", "qseq", "sticky", "holding_cpu", "dsq_vtime", "slice",
                "weight", "no_mig"):
        if key in f:
            value = f[key]
            if key == "ops_state":
                opss = int_field(f, key)
                value = (enum_name(sx.kernel.enum("scx_ops_state"), opss, "SCX_OPSS_")
                         if opss is not None else None) or value
            parts.append(f"{key} {value}")
    if t.cpus is not None:
        parts.append(f"cpus {t.cpus}")
    return ", ".join(parts)


def exit_cpu_rows(v, es):
    """The CPUs and tasks of the kernel's debug dump (the machine at the exit), At=exit."""
    sx, at = v.sx, es.tag
    rq_flags = sx.kernel.enum("scx_rq_flags")
    for c in es.dump.cpus:
        o = f"cpu{c.cpu}"
        f = c.fields
        yield row("cpu", o, "scx.nr_running", f.get("nr_run"), at=at)
        flags = int_field(f, "flags")
        yield row("cpu", o, "flags", decode_flags(rq_flags, flags, "SCX_RQ_", 32) if flags is not None
                  else f.get("flags"), at=at)
        if c.curr_comm is not None:
            yield row("cpu", o, "curr", f"{c.curr_pid} {c.curr_comm} ({_class_text(c.curr_class)})", at=at)
        for key, name in (("cpu_rel", "cpu_released"), ("ops_qseq", "ops_qseq"), ("ksync", "kick_sync"),
                          ("pnt_seq", "pnt_seq")):
            if key in f:
                yield row("cpu", o, name, f[key], at=at)
        if c.masks:
            yield row("cpu", o, "masks", " ".join(f"{k}={m}" for k, m in c.masks.items()), at=at)
        for i, line in enumerate(c.ops_lines):
            yield row("cpu", o, f"ops.dump_cpu[{i}]", line.strip(), at=at)
        for i, t in enumerate(c.tasks):
            yield row("cpu", o, f"task[{i}]", exit_task_text(sx, t), at=at)
            for j, line in enumerate(t.ops_lines):
                yield row("cpu", o, f"ops.dump_task[{j}]", line.strip(), depth=1, at=at)
            for j, frame in enumerate(t.stack):
                yield row("cpu", o, f"stack[{j}]", frame, depth=1, at=at)


def dsq_rows(v, cpus, walk_tasks=True, seen=None):
    """The root's global DSQs, every CPU's local and bypass DSQs, the root's user DSQs; then, for
    every other scheduler in memory (sub-schedulers, disabled ones), its own global, bypass and
    user DSQs, their Object suffixed with ``[name]``."""
    seen = seen if seen is not None else []
    for d, item in postmortem.sched_dsqs(v, v.root.sch, cpus):
        if d:
            yield damage_row("dsq", item, d)
        else:
            seen.append(item)
            yield from _dsq(v, item, walk_tasks=walk_tasks)
    for name, other in v.all_states():
        if other is v.root or not other.sch:
            continue
        for d, item in postmortem.sched_dsqs(v, other.sch, v.sx.bypass_dsqs(other.sch)):
            if d:
                yield damage_row("dsq", f"{item} [{name}]", d)
            else:
                seen.append(item)
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


# --- invariants ------------------------------------------------------------------------------


def invariant_rows(v, cpus, dsqs):
    """Each broken invariant of sched_ext's bookkeeping (``sched_ext.invariants``) as a row
    naming the task, the DSQ, the CPU and the evidence; one summary row says what was checked."""
    sx = v.sx
    damage = DamageLog()
    tasks = []
    if sx.syms.get("tasks") is not None:
        walk = walk_scx_tasks(sx.reader, sx.layout, sx.syms["tasks"], cursor_flag=sx.cursor_flag())
        tasks = [v.task(a) for a in walk.tasks]
        damage.extend(walk.damage)
    running = {c.curr: c.cpu for c in cpus if not c.damage and c.curr}
    on_dsq = {t for d in dsqs if d.walk is not None for t in d.walk.tasks}
    flags = dict(sx.kernel.enum("scx_ent_flags") or ())
    opss = dict(sx.kernel.enum("scx_ops_state") or ())
    shift = next((val for n, val in opss.items() if n.endswith("QSEQ_SHIFT")), None)
    found = invariants.dsq_checks(dsqs, v.task)
    if shift is not None and "SCX_OPSS_NONE" in opss:
        found += invariants.task_checks(tasks, running, on_dsq, sx.syms.get("class:ext"),
                                        flags.get("SCX_TASK_QUEUED"), opss["SCX_OPSS_NONE"],
                                        (1 << shift) - 1)
    rl_damage = DamageLog()
    for c in cpus:
        if c.damage is None:
            order = [v.task(a) for a in runnable_list(sx.reader, sx.layout, c.rq, rl_damage)]
            found += invariants.runnable_order(c.cpu, order)
    yield row("invariants", "-", "checked",
              f"{', '.join(invariants.CHECKS)} over {len(tasks)} tasks, {len(dsqs)} DSQs, "
              f"{len(cpus)} CPUs: " + (f"{len(found)} broken" if found else "all hold"))
    for f in found:
        yield row("invariants", f.check, f.where(), f.evidence, f.task or f.dsq)
    yield from damage_rows("invariants", "-", damage)
    yield from damage_rows("invariants", "-", rl_damage)


# --- locks -----------------------------------------------------------------------------------

MUTEXES = ("scx_enable_mutex", "cgroup_mutex")
PERCPU_RWSEMS = ("scx_fork_rwsem", "cgroup_threadgroup_rwsem")
# spinlock_t and raw_spinlock_t both start with their arch_spinlock_t: read as raw_spinlock
SPINLOCKS = ("scx_tasks_lock", "scx_sched_lock", "scx_bypass_lock", "scx_dsq_lock")


def lock_rows(v, cpus, dsqs):
    """The sched_ext-related locks (``sched_ext.locks``): a summary row, then each lock that is
    held or waited for: its owner task where the lock records one (mutex, rwsem writer), its
    readers, the tasks queued on it, and for spinlocks (rq and DSQ locks included) whose lock
    it is and the last CPU spinning on it."""
    sx = v.sx
    kernel, reader, layout = sx.kernel, sx.reader, sx.layout
    states = []
    for name in MUTEXES:
        addr = kernel.symbol(name)
        if addr is not None and layout.has("mutex"):
            states.append(locks.mutex_state(reader, layout, addr, name))
    try:
        offsets = kernel.per_cpu_offsets()
    except Exception:   # noqa: BLE001 - no per-CPU offsets: readers not counted
        offsets = []
    for name in PERCPU_RWSEMS:
        addr = kernel.symbol(name)
        if addr is not None and layout.has("percpu_rw_semaphore"):
            states.append(locks.percpu_rwsem_state(reader, layout, addr, name, offsets))
    for name in SPINLOCKS:
        addr = kernel.symbol(name)
        if addr is not None and layout.has("raw_spinlock"):
            states.append(locks.spinlock_state(reader, layout, "raw_spinlock", addr, "raw_lock", name))
    for c in cpus:
        if c.damage is None and layout.has("rq", "__lock"):
            states.append(locks.spinlock_state(reader, layout, "rq", c.rq, "__lock", f"rq cpu{c.cpu}"))
    for d in dsqs:
        if d.damage is None and layout.has("scx_dispatch_q", "lock"):
            label = (f"dsq {d.id:#x}" if d.id is not None else f"dsq @{d.addr:#x}") + \
                (f" cpu{d.cpu}" if d.cpu is not None else "")
            states.append(locks.spinlock_state(reader, layout, "scx_dispatch_q", d.addr, "lock", label))
    states += _bpf_lock_states(v)
    busy = [s for s in states if s.held or s.waiters or s.spinner_cpu is not None or s.pending]
    yield row("locks", "-", "checked", f"{len(states)} locks ({', '.join(s.name for s in states[:4])}"
                                       f"{', ...' if len(states) > 4 else ''}): "
                                       f"{len(busy) or 'none'} held or waited for")
    for s in busy:
        yield from _lock_state_rows(v, s)
    for s in states:
        yield from damage_rows("locks", s.name, s.damage)


BPF_LOCK_STRUCTS = ("bpf_spin_lock", "bpf_res_spin_lock")


def _bpf_lock_states(v):
    """The BPF programs' own spinlocks: every ``bpf_spin_lock`` / ``bpf_res_spin_lock`` variable
    of a section map (``.data.<name>``, ``.bss``...; typed by the program's BTF)."""
    sx = v.sx
    layout = sx.layout
    if not layout.has("bpf_array", "value") or not layout.has("qspinlock", "locked"):
        return []
    value_off = layout.offset("bpf_array", "value") - layout.offset("bpf_array", "map")
    out = []
    for m, btf, error in section_maps(sx.bpf_maps(), sx.kernel.btf_at):
        if error is not None:
            continue
        for name, t, offset, size in datasec_vars(btf, m.btf_value_type_id):
            if t is None:
                continue
            elem, count = t, 1
            if t.kind == Kind.ARRAY:      # an array of locks: each element
                elem = btf.resolve(t.type)
                count = t.nelems
            if elem is None or elem.name not in BPF_LOCK_STRUCTS or not elem.size:
                continue
            for i in range(min(count, 64)):
                label = f"{m.name} {name}" + (f"[{i}]" if t.kind == Kind.ARRAY else "")
                out.append(locks.qspinlock_state(sx.reader, layout, m.kva + value_off + offset
                                                 + i * elem.size, label))
    return out


def _task_name(v, addr):
    if not addr:
        return None
    t = v.task(addr)
    return f"{addr:#x} ({t.damage})" if t.damage else f"{t.pid} {t.comm}"


def _lock_state_rows(v, s):
    o = s.name
    if s.kind == "mutex":
        flags = [n for bit, n in ((1, "WAITERS"), (2, "HANDOFF"), (4, "PICKUP")) if s.flags & bit]
        yield row("locks", o, "owner", (_task_name(v, s.owner) or "none")
                  + (f" (flags {'|'.join(flags)})" if flags else ""), s.addr)
    elif s.kind == "percpu_rwsem":
        yield row("locks", o, "readers", s.readers, s.addr)
        yield row("locks", o, "writer", (_task_name(v, s.owner) or "none")
                  + (" (readers blocked)" if s.flags else ""))
    elif s.kind == "rwsem":
        reader_owned = s.flags & locks.RWSEM_READER_OWNED
        yield row("locks", o, "owner", ("reader-owned, last reader " if reader_owned else "")
                  + (_task_name(v, s.owner) or "none"), s.addr)
    else:
        what = f"held ({o}'s lock)" if s.held else "free"
        if s.pending:
            what += ", a CPU spinning (pending)"
        if s.spinner_cpu is not None:
            what += f", last queued spinner cpu{s.spinner_cpu}"
        yield row("locks", o, "state", what, s.addr)
    for i, w in enumerate(s.waiters):
        yield row("locks", o, f"waiter[{i}]", _task_name(v, w), w, depth=1)


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
