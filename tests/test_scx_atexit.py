"""The state at a sched_ext exit: the kernel's debug dump text (scx_dump_state) parsed into CPU
and task fields (sched_ext/dumptext.py) for the formats of 6.12 (pnt_seq, "Runqueue states") and
of 7.x (ksync, sched id line, owner marker), the copy chosen among the kernel's and the
scheduler's (sched_ext/atexit.py), and the rows scxstate / scxtasks make of it on synthetic
kernel memory (tests/helpers/scxmem.py): a watchdog stall whose tasks are back in fair after the
teardown still lists the stalled task under --stalled."""

import pytest

from helpers.scxmem import kernel, real, synth, w  # noqa: F401 (fixtures)
from helpers.scxmem import scx_kernel
from volatility3_ktstr.sched_ext import atexit
from volatility3_ktstr.sched_ext.dumptext import cpu_list, cpumask_list, parse_debug_dump
from volatility3_ktstr.views import scxstate, scxtasks

# 6.12's layout (kernel/sched/ext.c scx_dump_state / scx_dump_task of that release)
DUMP_612 = """kworker/u8:3[123] triggered exit kind 1026:
  runnable task stall (stress[456] failed to run for 30.520s)

Backtrace:
  scx_watchdog_workfn+0x154/0x1e0
  process_one_work+0x18f/0x380

SIMPLE: nr_queued=2

Runqueue states
---------------

CPU 1   : nr_run=3 flags=0x1 cpu_rel=0 ops_qseq=1234 pnt_seq=567
          curr=stress[457] class=ext_sched_class
  cpus_to_kick   : 00000003
  cpus_to_wait   : 00000000,00000004

  SIMPLE: cpu note

 *R stress[457] -3ms
      scx_state/flags=3/0x5 dsq_flags=0x0 ops_state/qseq=0/0
      sticky/holding_cpu=-1/-1 dsq_id=(n/a) dsq_vtime=0
      cpus=ff

    __schedule+0x1/0x2

  R stress[456] -30520ms
      scx_state/flags=3/0x1 dsq_flags=0x1 ops_state/qseq=2/17
      sticky/holding_cpu=-1/2 dsq_id=0x5 dsq_vtime=12
      cpus=0f

    SIMPLE: task note

    do_nanosleep+0x1/0x2
    hrtimer_nanosleep+0x3/0x4

  S odd[9] +0ms
something the parser does not know

Event counters
--------------
              SCX_EV_SELECT_CPU_FALLBACK:                3

~~~~ TRUNCATED ~~~~
"""

DUMP_72 = """qmap: root
swapper/0[0] triggered exit kind 1025 on CPU 0:
  scx_bpf_error (scx_qmap.bpf.c:388: test triggering error)

Backtrace:
  __scx_exit+0x4f/0x70

QMAP FIFO[0]:

CPU states
----------

CPU 0   : nr_run=1 flags=0x1 cpu_rel=0 ksync=8383
          curr=swapper/0[0] class=idle_sched_class

  R labdb[125] *root -4ms
      scx_state/flags=4/0x9 dsq_flags=0x0 ops_state/qseq=0/0
      sticky/holding_cpu=-1/-1 dsq_id=0x8000000000000002
      dsq_vtime=0 slice=20000000 weight=100
      cpus=3 no_mig=0

    common_nsleep+0x34/0x60
"""


def test_cpumask_text():
    assert cpumask_list("0f") == "0-3"
    assert cpumask_list("00000001,00000005") == "0,2,32"
    assert cpumask_list("0") == "-"
    assert cpu_list(0b1011) == "0-1,3"


def test_parse_612_format():
    d = parse_debug_dump(DUMP_612)
    assert (d.trigger_comm, d.trigger_pid, d.kind, d.exit_cpu) == ("kworker/u8:3", 123, 1026, None)
    assert d.reason == "runnable task stall" and d.msg.startswith("stress[456] failed")
    assert d.backtrace == ["scx_watchdog_workfn+0x154/0x1e0", "process_one_work+0x18f/0x380"]
    assert d.ops_lines == ["SIMPLE: nr_queued=2"]
    (c,) = d.cpus
    assert c.fields == {"nr_run": "3", "flags": "0x1", "cpu_rel": "0", "ops_qseq": "1234", "pnt_seq": "567"}
    assert (c.curr_comm, c.curr_pid, c.curr_class) == ("stress", 457, "ext_sched_class")
    assert c.masks == {"cpus_to_kick": "0-1", "cpus_to_wait": "2"}
    assert c.ops_lines == ["  SIMPLE: cpu note"]
    cur, stalled, odd = c.tasks
    assert (cur.marker, cur.state, cur.pid, cur.wait_ms, cur.pos) == ("*", "R", 457, -3, 0)
    assert cur.fields["dsq_id"] == "(n/a)" and cur.cpus == "0-7" and cur.stack == ["__schedule+0x1/0x2"]
    assert (stalled.pid, stalled.wait_ms, stalled.pos) == (456, -30520, 0)
    assert stalled.fields["holding_cpu"] == "2" and stalled.fields["qseq"] == "17"
    assert stalled.ops_lines == ["    SIMPLE: task note"]
    assert stalled.stack == ["do_nanosleep+0x1/0x2", "hrtimer_nanosleep+0x3/0x4"]
    assert (odd.state, odd.pos, odd.wait_ms) == ("S", 1, 0)
    assert odd.ops_lines == ["something the parser does not know"]   # kept, not dropped
    assert d.events == [("SCX_EV_SELECT_CPU_FALLBACK", 3)] and d.truncated


def test_parse_72_format():
    d = parse_debug_dump(DUMP_72)
    assert d.sched == "qmap: root" and d.exit_cpu == 0 and d.kind == 1025
    assert d.ops_lines == ["QMAP FIFO[0]:"]
    (t,) = d.tasks
    assert (t.owner, t.cpus, t.fields["weight"], t.fields["no_mig"]) == ("*root", "0-1", "100", "0")
    assert d.cpus[0].fields["ksync"] == "8383" and not d.other


def test_unknown_text_is_kept_not_lost():
    d = parse_debug_dump("first\nsecond line\n")
    assert d.other == [(0, "first"), (1, "second line")]
    assert parse_debug_dump("").cpus == []


def test_choice_of_copies():
    kernel_copy = atexit.DumpCopy("k", "text A", 1025, "r", "m")
    same = atexit.DumpCopy("u", "text A", 1025, "r", "m")
    older = atexit.DumpCopy("old", "text B", 1026, "stall", "x")
    best, sames, differing = atexit.choose([kernel_copy, same, older])
    assert best is kernel_copy and sames == [same] and differing == [older]

    class LastExit:
        reason, msg = "stall", "x"
    best, _, differing = atexit.choose([kernel_copy, older], LastExit())
    assert best is older and differing == [kernel_copy]      # the kernel log's last exit wins
    live = atexit.DumpCopy("live", "text C", 1, "r", "m", live=True)
    assert atexit.choose([older, live], LastExit())[0] is live


def _stalled_world(w):
    """A watchdog exit, the scheduler torn down (scx_root NULL; found through its struct_ops
    map), every task back in another class: only the dump text knows the stall."""
    sch = w.sched("simple")
    w.mem.set("sched_ext_ops", sch + w.L.offset("scx_sched", "ops"), "timeout_ms", 5000)
    w.struct_ops_map(sch, map_id=13, name="simple_ops")
    kind = w.enum("scx_exit_kind", "SCX_EXIT_ERROR_STALL")
    w.exit(sch, kind, reason="runnable task stall", msg="stress[456] failed to run for 30.520s",
           dump=DUMP_612.replace("kind 1026", f"kind {kind}"))
    w.task(456, "stress", ext=False)
    w.task(457, "stress", ext=False)


def test_stalled_task_of_a_watchdog_exit_after_teardown(w):
    _stalled_world(w)
    k = scx_kernel(w)
    names = scxtasks.GRID.names()
    rows = [dict(zip(names, r)) for _, r in scxtasks.rows(k, stalled=True)]
    (r,) = rows
    assert (r["PID"], r["COMM"], r["Starved"], r["At"]) == (456, "stress", "STARVED", "exit")
    assert (r["HoldingCPU"], r["QSeq"], r["CPUs"], r["RunnableAtMs"], r["DSQ"]) == (2, 17, "0-3", -30520, 5)
    assert r["Where"] == "runnable on CPU 1" and r["RunnableList"] == "cpu1[0]"
    assert r["Task"] is not None        # the same pid and comm in memory: its task_struct
    every = [dict(zip(names, r)) for _, r in scxtasks.rows(k)]
    assert sorted(x["PID"] for x in every if x["At"] == "exit") == [9, 456, 457]


def test_scxstate_exit_rows_from_the_dump_text(w):
    _stalled_world(w)
    rows = [(d, dict(zip(scxstate.GRID.names(), r))) for d, r in scxstate.rows(scx_kernel(w))]
    at_exit = [r for _, r in rows if r["At"] == "exit"]
    cpu1 = {r["Key"]: r["Value"] for r in at_exit if r["Section"] == "cpu" and r["Object"] == "cpu1"}
    assert cpu1["pnt_seq"] == "567" and cpu1["ops_qseq"] == "1234" and cpu1["cpu_released"] == "0"
    assert cpu1["masks"] == "cpus_to_kick=0-1 cpus_to_wait=2"
    assert cpu1["curr"] == "457 stress (ext)"
    assert "456 stress, state R, cpu1 runnable_list[0], waited -30520ms" in cpu1["task[1]"]
    summary = {r["Key"]: r["Value"] for _, r in rows if r["Object"] == "summary"}
    assert summary["torn_down"].startswith("yes: ")
    dd = {r["Key"]: r["Value"] for _, r in rows if r["Object"] == "debug dump"}
    assert dd["truncated"].startswith("yes")
    assert "something the parser does not know" in [r["Value"] for r in at_exit]
    # the counters at the exit next to the scheduler's counters at the dump
    events = [(d, r) for d, r in rows if r["Section"] == "events"]
    i = next(i for i, (_, r) in enumerate(events) if r["Key"] == "SCX_EV_SELECT_CPU_FALLBACK")
    assert [(d, r["Key"], r["Value"]) for d, r in events if r["At"] == "exit"] == [(1, "at exit", "3")]
    assert events[i][1]["At"] == "dump"


# --- the stall chain ----------------------------------------------------------------------------


def stall_section(w, pids=()):
    rows = [(d, dict(zip(scxstate.GRID.names(), r))) for d, r in scxstate.rows(scx_kernel(w), pids=pids)]
    sections = [r["Section"] for _, r in rows]
    return rows, [(d, r["Object"], r["Key"], r["Value"], r["At"]) for d, r in rows if r["Section"] == "stall"], sections


def test_stall_chain_live_with_an_rt_hog(w):
    sch = w.sched("sdt", timeout=1000)
    w.set_root(sch)
    w.link_all(sch)
    w.static_key("__scx_enabled", True)
    w.glob("jiffies_64", 100000)
    w.glob("scx_watchdog_timestamp", 99990)
    w.syms["rt_sched_class"] = w.mem.alloc(64)
    hog = w.task(50, "rt_hog", cpu=1)
    w.mem.set("task_struct", hog, "sched_class", w.syms["rt_sched_class"])
    w.mem.set("rq", w.rq(1), "curr", hog)
    starving = w.task(51, "starving", cpu=1, flags=w.enum("scx_ent_flags", "SCX_TASK_QUEUED"))
    w.make_runnable(starving, 1, 100000 - 5000)          # 5000 jiffies, timeout 1000
    dsq = w.rq(1) + w.L.offset("rq", "scx.local_dsq")
    w.enqueue(starving, dsq)
    rows, chain, sections = stall_section(w)
    # the chain is the second section when a stall is found
    assert sections.index("stall") == sections.count("exit")
    got = {(k, d): v for d, o, k, v, _ in chain if o == "51 starving"}
    assert got[("wait", 0)] == "runnable for 5000 jiffies (timeout 1000) STALLED"
    assert got[("runnable_list", 0)] == "cpu1[0]"
    assert got[("dsq", 0)] == f"{w.enum('scx_dsq_id_flags', 'SCX_DSQ_LOCAL'):#x}, position 0 of 1"
    assert got[("cpu1", 1)].startswith("50 rt_hog (rt") and got[("cpu1", 1)].endswith("-- RT hog")
    assert got[("cpu0", 1)].startswith("curr NULL") or "idle" in got[("cpu0", 1)]
    # not stalled, asked for: its chain too; nobody stalled, nobody asked: no section
    _, chain2, _ = stall_section(w, pids=(50,))
    assert {o for _, o, *_ in chain2} == {"51 starving", "50 rt_hog"}
    w.glob("jiffies_64", 95500)
    assert stall_section(w)[1] == []


def test_stall_chain_at_exit_of_a_watchdog_exit(w):
    _stalled_world(w)
    _, chain, _ = stall_section(w)
    got = {(o, k): (v, at) for _, o, k, v, at in chain}
    assert got[("456 stress", "wait")] == ("-30520ms at the exit (timeout 5000 ms) (named by the "
                                            "watchdog)", "exit")
    assert got[("456 stress", "allowed_cpus")][0] == "0-3"
    assert got[("456 stress", "cpu1")][0].startswith("457 stress (ext), nr_run 3")
    assert got[("456 stress", "cpu0")][0].startswith("not in the dump: idle")
    assert got[("456 stress", "stack")][0] == "2 frames: section cpu, object cpu1"


def test_stall_chain_times_from_the_kernels_accounting(w):
    """What each allowed CPU ran and for how long, in the clock the kernel charges tasks in
    (rq->clock_task, not rq->clock), with se.sum_exec_runtime and a sched_ext task's slice."""
    sch = w.sched("sdt", timeout=1000)
    w.set_root(sch)
    w.link_all(sch)
    w.glob("jiffies_64", 100000)
    w.syms["rt_sched_class"] = w.mem.alloc(64)
    hog = w.task(50, "rt_hog", cpu=1)
    w.mem.set("task_struct", hog, "sched_class", w.syms["rt_sched_class"])
    w.mem.put("task_struct", hog, se__exec_start=4_990_000_000, se__sum_exec_runtime=123_000_000)
    w.mem.put("rq", w.rq(1), curr=hog, clock=5_100_000_000, clock_task=5_000_000_000)
    busy = w.task(52, "busy", cpu=0, slice=3_000_000)
    w.mem.put("task_struct", busy, se__exec_start=4_999_500_000, se__sum_exec_runtime=7_000_000)
    w.mem.put("rq", w.rq(0), curr=busy, clock=5_000_000_000, clock_task=5_000_000_000)
    starving = w.task(51, "starving", cpu=1, slice=20_000_000)
    w.mem.put("task_struct", starving, se__exec_start=3_000_000_000, se__sum_exec_runtime=2_000_000)
    w.make_runnable(starving, 1, 100000 - 5000)
    _, chain, _ = stall_section(w)
    got = {(k, d): v for d, o, k, v, _ in chain if o == "51 starving"}
    assert got[("cpu1", 1)] == ("50 rt_hog (rt, prio 0) for 10.000 ms (rq clock_task - se.exec_start), "
                                "123.000 ms CPU in all (se.sum_exec_runtime), nr_running 0 -- RT hog")
    assert got[("cpu0", 1)] == ("52 busy (ext, prio 0) for 0.500 ms (rq clock_task - se.exec_start), "
                                "7.000 ms CPU in all (se.sum_exec_runtime), slice left 3.000 ms "
                                "(scx.slice), nr_running 0")
    assert got[("ran", 0)] == ("last charged 2000.000 ms before cpu1's rq clock_task (se.exec_start "
                               "3000000000); 2.000 ms CPU in all (se.sum_exec_runtime); slice left "
                               "20.000 ms (scx.slice)")


def _cpumask(w, bits):
    """A struct cpumask in memory holding ``bits`` (the first word; the rest zero)."""
    size = w.L.size("cpumask")
    a = w.mem.alloc(size, align=8)
    w.mem.write(a, bits.to_bytes(8, "little"))
    return a


def test_migrate_disable_pin_shown_in_scxtasks_and_the_chain(w):
    """cpus_ptr pointed away from cpus_mask (migrate_disable: cpumask_of(cpu)) is told apart
    from the task's affinity, with nr_cpus_allowed; a task with its own mask says so."""
    sch = w.sched("sdt", timeout=1000)
    w.set_root(sch)
    w.link_all(sch)
    pinned = w.task(60, "pinned", cpu=1)
    own = w.task(61, "free", cpu=0)
    for t in (pinned, own):
        mask = t + w.L.offset("task_struct", "cpus_mask")
        w.mem.write(mask, (0b11).to_bytes(8, "little"))
        w.mem.put("task_struct", t, cpus_ptr=mask, nr_cpus_allowed=2)
    w.mem.put("task_struct", pinned, cpus_ptr=_cpumask(w, 0b10), migration_disabled=1)
    names = scxtasks.GRID.names()
    rows = {r["PID"]: r for r in (dict(zip(names, v)) for _, v in scxtasks.rows(scx_kernel(w)))}
    p, f = rows[60], rows[61]
    assert (p["CPUs"], p["Affinity"], p["NrCpusAllowed"], p["NoMig"]) == ("1", "0-1", 2, 1)
    assert p["CpusPtr"] == "pinned: migrate_disable (depth 1)"
    assert (f["CPUs"], f["Affinity"], f["CpusPtr"]) == ("0-1", "0-1", "cpus_mask")
    _, chain, _ = stall_section(w, pids=(60, 61))
    got = {(o, k): v for _, o, k, v, _ in chain}
    assert got[("60 pinned", "allowed_cpus")] == "1"
    assert got[("60 pinned", "affinity")] == ("0-1 (cpus_mask, nr_cpus_allowed 2); cpus_ptr pinned: "
                                              "migrate_disable (depth 1)")
    assert ("61 free", "affinity") not in got
