"""sched_ext post-mortem on synthetic kernel memory (tests/helpers/scxmem.py; the padded
synthetic kernel, plus the real 7.2 x86-64 kernel BTF when KTSTR_DUMPS is set).

- The printk ring buffer reader (order, wrapped blocks, data-less and reused records, bounds).
- Exit information for every exit kind (the kernel's ``enum scx_exit_kind``, including kinds
  newer kernels add) in each place it survives: the kernel's scx_exit_info reached through
  scx_root or through a struct_ops map's ops.priv (scx_root NULL), the scheduler's own
  user_exit_info in its .data map with the .data.uei_dump text (program BTF made by hand, or the
  real scx_sdt program BTF read from a dump), and the kernel log.
- "no exit" only from evidence; with scx_root NULL no field prints "None".
- The watchdog view, the scxtasks rows and its --stalled filter.
"""

import pytest

from helpers.scxmem import kernel, real, synth, w  # noqa: F401 (fixtures)
from helpers.scxmem import BtfKernel, ScxWorld, enum_values, scx_kernel, synth_kernel, uei_program_btf
from volatility3_ktstr.core import BtfLayout
from volatility3_ktstr.kds import DamageLog
from volatility3_ktstr.views import NA, scxstate, scxtasks
from volatility3_ktstr import sched_ext as scx_exit
from volatility3_ktstr.walkers import printk

ENABLED = 'sched_ext: BPF scheduler "sdt" enabled'


def kinds_of(btf):
    return [(n, v) for n, v in enum_values(btf, "scx_exit_kind") if v]


def state_rows(w):
    return [(d, dict(zip(scxstate.GRID.names(), r))) for d, r in scxstate.rows(scx_kernel(w))]


def section(rows, name):
    return [r for _, r in rows if r["Section"] == name]


def value(rows, sect, obj, key):
    got = [r["Value"] for _, r in rows if (r["Section"], r["Object"], r["Key"]) == (sect, obj, key)]
    assert len(got) == 1, (sect, obj, key, got)
    return got[0]


def no_none_text(rows):
    for _, r in rows:
        for k, v in r.items():
            assert not (isinstance(v, str) and "None" in v), (k, r)


def live(w, name="sdt"):
    sch = w.sched(name)
    w.set_root(sch)
    w.link_all(sch)
    w.static_key("__scx_enabled", True)
    w.glob("scx_enable_seq", 1)
    w.glob("jiffies_64", 100000)
    w.glob("scx_watchdog_timestamp", 99000)
    return sch


# --- the printk ring buffer -----------------------------------------------------------------


def test_printk_records_in_order_with_wrap(w):
    recs = [(1_000_000 * i, f"line {i} " + "x" * (30 + i), 100 + i) for i in range(12)]
    # 12 records in a 16-slot ring; the text ring (1 KiB) wraps: the block that does not fit
    # before its end goes to its start, and the oldest blocks were logically overwritten.
    prb = w.printk(recs, count_bits=4, size_bits=10, first_id=40, text_start=700)
    d = DamageLog()
    got = printk.read_log(w.mem, w.L, prb, d)
    assert [r.text for r in got] == [t for _, t, _ in recs] and not d
    assert [r.caller_id for r in got] == [c for *_, c in recs] and got[3].ts_nsec == 3_000_000
    assert got[2].lines() == [f"[    0.002000] {recs[2][1]}"]


def test_printk_skips_reused_and_overwritten_records(w):
    recs = [(i, f"record {i}", 1) for i in range(5)]
    prb = w.printk(recs, count_bits=3, size_bits=9)
    L = w.L
    dr = prb + L.offset("printk_ringbuffer", "desc_ring")
    descs = int.from_bytes(w.mem.read(dr + L.offset("prb_desc_ring", "descs"), 8), "little")
    shift = 8 * L.field("prb_desc", "state_var").size - 2
    dsz = L.size("prb_desc")
    w.mem.set("prb_desc", descs + dsz * 1, "state_var", (3 << shift) | 1)   # reusable: freed
    w.mem.set("prb_desc", descs + dsz * 2, "state_var", (2 << shift) | 10)  # id of a newer record
    w.mem.set("prb_desc", descs + dsz * 3, "text_blk_lpos.begin", 1)        # data-less (empty line)
    w.mem.set("prb_desc", descs + dsz * 3, "text_blk_lpos.next", 1)
    d = DamageLog()
    got = printk.read_log(w.mem, w.L, prb, d)
    assert [r.text for r in got] == ["record 0", "", "record 4"] and not d
    # A text block whose id is not the descriptor's: overwritten, reported.
    data = int.from_bytes(w.mem.read(prb + L.offset("printk_ringbuffer", "text_data_ring")
                                     + L.offset("prb_data_ring", "data"), 8), "little")
    w.mem.u64(data, 99)
    got = printk.read_log(w.mem, w.L, prb, d)
    assert [r.text for r in got] == ["", "record 4"] and "overwritten" in str(d.items[0])


def test_printk_bounds(w):
    prb = w.printk([(0, "a", 1)], count_bits=3, size_bits=9)
    dr = prb + w.L.offset("printk_ringbuffer", "desc_ring")
    w.mem.set("prb_desc_ring", dr, "count_bits", 40)
    d = DamageLog()
    assert printk.read_log(w.mem, w.L, prb, d) == [] and "implausible" in str(d.items[0])
    w.mem.set("prb_desc_ring", dr, "count_bits", 3)
    w.mem.set("prb_desc_ring", dr, "head_id", 1 << 40)       # never reached: bounded by the ring
    d = DamageLog()
    assert [r.text for r in printk.read_log(w.mem, w.L, prb, d)] == ["a"]
    assert "not reached" in str(d.items[0])


def test_log_exits_parsed():
    R = printk.LogRecord
    recs = [R(1, 5, 6, 1, ENABLED), R(2, 6, 6, 9, "unrelated"),
            R(3, 7, 3, 2, 'sched_ext: BPF scheduler "sdt" disabled (runtime error)'),
            R(4, 7, 3, 2, "sched_ext: sdt: scx_bpf_error (sdt.bpf.c:12: oops)"),
            R(5, 7, 3, 2, "   scx_bpf_error_bstr+0x65/0x80"),
            R(6, 7, 3, 2, "   bpf_prog_1234_sdt_enqueue+0x4f/0x51"),
            R(7, 8, 6, 3, "   not a continuation (other caller)"),
            R(8, 9, 3, 4, 'sched_ext: BPF scheduler "old" errored, disabling'),
            R(9, 9, 3, 4, "sched_ext: runnable task stall (t[1] failed to run for 5.1s)"),
            R(10, 9, 3, 4, "    scx_check_timeout_workfn+0x10e/0x1b0")]
    rel = scx_exit.sched_ext_records(recs)
    assert [r.seq for r in rel] == [1, 3, 4, 5, 6, 8, 9, 10]
    exits = scx_exit.log_exits(rel)
    assert [(e.name, e.reason, e.msg, e.error) for e in exits] == [
        ("sdt", "runtime error", "scx_bpf_error (sdt.bpf.c:12: oops)", True),
        ("old", "runnable task stall", "t[1] failed to run for 5.1s", True)]
    assert exits[0].backtrace == ["scx_bpf_error_bstr+0x65/0x80", "bpf_prog_1234_sdt_enqueue+0x4f/0x51"]


# --- user_exit_info --------------------------------------------------------------------------


def test_uei_layout_from_program_btf(w):
    w.uei_maps(kind=1025, exit_code=0x1000000000005, reason="scx_bpf_error",
               msg="scx_qmap.bpf.c:388: test triggering error", dump="line 1\nline 2\n")
    errors = DamageLog()
    (u,) = scx_exit.find_user_exit_infos(w.mem, w.L, scx_kernel(w).maps(), scx_kernel(w).btf_at, errors)
    assert (u.var, u.map_name, u.kind, u.exit_code, u.reason, u.msg) == (
        "uei", "scx_sdt.data", 1025, 0x1000000000005, "scx_bpf_error",
        "scx_qmap.bpf.c:388: test triggering error")
    assert (u.dump, u.dump_map, u.dump_size, list(u.damage), list(errors)) == (
        "line 1\nline 2\n", ".data.uei_dump", 4096, [], [])


def test_uei_without_exit_code_and_without_dump_map(w):
    btf = uei_program_btf(reason_len=64, msg_len=256, with_exit_code=False)
    dkva, ukva = w.uei_maps(kind=67, reason="disabled by sysrq-S", prog_btf=btf)
    w.map_list = [(i, k) for i, k in w.map_list if i != 10]          # no .data.uei_dump map
    (u,) = scx_exit.find_user_exit_infos(w.mem, w.L, scx_kernel(w).maps(), scx_kernel(w).btf_at)
    assert (u.kind, u.exit_code, u.reason, u.msg, u.dump) == (67, None, "disabled by sysrq-S", "", None)


def test_uei_broken_program_btf_is_reported(w):
    w.uei_maps(kind=1)
    w.btfs.clear()                  # the program BTF is not in the dump
    k = scx_kernel(w)
    errors = DamageLog()
    assert scx_exit.find_user_exit_infos(w.mem, w.L, k.maps(), k.btf_at, errors) == []
    assert any("program BTF" in d.reason and d.kind == "corrupt" for d in errors)


@pytest.mark.slow
def test_uei_from_the_real_scheduler_program_btf(w, real_sdt_program_btf):
    """The .data/.data.uei_dump layout of the real scx_sdt program (its BTF read from a dump),
    every exit kind, through the view."""
    btf, data_id, dump_id = real_sdt_program_btf
    size = btf.type(data_id).size
    assert BtfLayout(btf).has("user_exit_info", "exit_code")
    for name, kind in kinds_of(w.btf):
        world = ScxWorld(w.k)
        world.uei_maps(kind=kind, reason="runnable task stall", exit_code=kind,
                       msg="labreplica[125] failed to run for 5.492s", dump="DUMP line\n" * 3,
                       prog_btf=(btf, data_id, dump_id, size))
        (u,) = scx_exit.find_user_exit_infos(world.mem, world.L, scx_kernel(world).maps(), scx_kernel(world).btf_at)
        assert (u.kind, u.exit_code, u.reason, u.msg) == (
            kind, kind, "runnable task stall", "labreplica[125] failed to run for 5.492s")
        assert u.dump == "DUMP line\n" * 3 and u.dump_size == btf.type(dump_id).size
        rows = state_rows(world)
        assert value(rows, "exit", "summary", "verdict").startswith(
            f"EXITED: uei: {name[len('SCX_EXIT_'):]} ({kind}) (runnable task stall)")


@pytest.fixture(scope="module")
def real_sdt_program_btf():
    """(program BTF, .data DATASEC id, .data.uei_dump DATASEC id) of scx_sdt, read from the
    x86_64/scx_sdt dump (slow: opens the dump with Volatility once)."""
    import dumps
    if dumps.dumps_root() is None or "x86_64/scx_sdt" not in dumps.list_dumps():
        pytest.skip("KTSTR_DUMPS with x86_64/scx_sdt is needed for the real program BTF")
    pytest.importorskip("volatility3")
    from helpers.vol_kctx import open_kctx
    kctx = open_kctx("x86_64/scx_sdt")
    data = [m for m in kctx.maps() if m.name.endswith(".data") and m.btf_kva]
    dump = [m for m in kctx.maps() if m.name == ".data.uei_dump"]
    assert data and dump
    btf = kctx.btf_at(data[0].btf_kva)
    return btf, data[0].btf_value_type_id, dump[0].btf_value_type_id


# --- exit: every kind, every place -----------------------------------------------------------


def test_exit_every_kind_from_the_kernel_through_scx_root(w):
    for name, kind in kinds_of(w.btf):
        world = ScxWorld(w.k)
        sch = live(world)
        world.exit(sch, kind, reason=f"reason {name}", msg=f"msg {name}", bt=[0xFFFFFFFF81000010],
                   dump="a\nb\n", exit_code=7)
        world.text_syms["scx_bpf_error_bstr"] = 0xFFFFFFFF81000000
        rows = state_rows(world)
        assert rows[0][1]["Key"] == "verdict"
        short = name[len("SCX_EXIT_"):]
        assert value(rows, "exit", "summary", "verdict") == (
            f"EXITED: sdt: {short} ({kind}) (reason {name}): msg {name} "
            f"[from scx_exit_info (scx_root, scx_sched_all)]")
        assert value(rows, "exit", "kernel sdt", "kind") == f"{short} ({kind})"
        assert value(rows, "exit", "kernel sdt", "exit_code") == "0x7"
        assert value(rows, "exit", "kernel sdt", "bt[0]") == "scx_bpf_error_bstr+0x10"
        # the debug dump text once, under its own object; lines it cannot place kept as lines
        assert value(rows, "exit", "debug dump", "source") == "scx_exit_info.dump of sdt: 2 lines, 4 bytes"
        assert [r["Value"] for _, r in rows if r["Key"].startswith("line[")] == ["a", "b"]
        assert value(rows, "exit", "summary", "torn_down") == "no: sdt is still loaded at the dump"
        assert value(rows, "scheduler", "sdt", "exit_info") == f"{short}: section exit, object kernel sdt"
        no_none_text(rows)


def test_exit_every_kind_through_struct_ops_priv_with_scx_root_null(w):
    """The loader was stopped after the exit: scx_root is NULL and the scheduler is off
    scx_sched_all, but its struct_ops map still points at it (ops.priv)."""
    for name, kind in kinds_of(w.btf):
        world = ScxWorld(w.k)
        sch = world.sched("sdt")
        world.struct_ops_map(sch, map_id=13, name="sdt_ops")
        world.exit(sch, kind, reason="r", msg="")
        rows = state_rows(world)
        short = name[len("SCX_EXIT_"):]
        assert value(rows, "exit", "summary", "verdict") == (
            f"EXITED: sdt: {short} ({kind}) (r) [from scx_exit_info (struct_ops map 13 sdt_ops (ops.priv))]")
        assert value(rows, "scheduler", "(none)", "scx_root") == "NULL (no scheduler)"
        assert value(rows, "scheduler", "sdt", "found_via") == "struct_ops map 13 sdt_ops (ops.priv)"
        assert value(rows, "scheduler", "sdt", "exit_kind") == short
        assert not [r for _, r in rows if r["Object"] == "(none)" and r["Key"] in ("name", "flags", "timeout_ms")]
        no_none_text(rows)


def test_exit_every_kind_from_the_schedulers_own_copy(w):
    """Kernel exit info gone (link detached), scx_root NULL: the .data map's uei and the
    .data.uei_dump text remain (a loader killed before it read them)."""
    for name, kind in kinds_of(w.btf):
        world = ScxWorld(w.k)
        world.glob("scx_enable_seq", 1)
        dump = "".join(f"dump line {i}\n" for i in range(100))
        world.uei_maps(kind=kind, exit_code=-3, reason=f"why {kind}", msg="" if kind == 67 else "what",
                       dump=dump)
        rows = state_rows(world)
        short = name[len("SCX_EXIT_"):]
        tail = "" if kind == 67 else ": what"
        assert value(rows, "exit", "summary", "verdict") == (
            f"EXITED: uei: {short} ({kind}) (why {kind}){tail} [from uei in scx_sdt.data; "
            f"the kernel's exit info is gone]")
        assert value(rows, "exit", "uei scx_sdt.data", "kind") == f"{short} ({kind})"
        assert value(rows, "exit", "uei scx_sdt.data", "exit_code") == hex(-3)
        assert value(rows, "exit", "debug dump", "source") == (
            "uei_dump in map .data.uei_dump (uei in map scx_sdt.data): 100 lines, 1290 bytes")
        assert value(rows, "exit", "debug dump", "line[99]") == "dump line 99"
        assert value(rows, "exit", "summary", "torn_down").startswith("yes: ")
        assert value(rows, "exit", "uei scx_sdt.data", "dump_map") == ".data.uei_dump (4096 bytes)"
        no_none_text(rows)


def test_exit_from_the_kernel_log_only(w):
    w.glob("scx_enable_seq", 1)
    w.printk([(5_000_000_000, ENABLED, 1),
              (9_000_000_000, 'sched_ext: BPF scheduler "sdt" disabled (runtime error)', 2),
              (9_000_000_000, "sched_ext: sdt: oops", 2),
              (9_000_000_000, "   scx_bpf_error_bstr+0x65/0x80", 2)], size_bits=12)
    rows = state_rows(w)
    assert value(rows, "exit", "summary", "verdict") == (
        "EXITED: sdt: runtime error: oops [from the kernel log only; no exit info left in memory]")
    lines = [r["Value"] for d, r in rows if r["Key"] == "line" and d == 1]
    assert lines == ['[    5.000000] ' + ENABLED,
                     '[    9.000000] sched_ext: BPF scheduler "sdt" disabled (runtime error)',
                     "[    9.000000] sched_ext: sdt: oops", "[    9.000000]    scx_bpf_error_bstr+0x65/0x80"]
    assert value(rows, "exit", "kernel log", "exit") == "sdt: runtime error: oops"
    no_none_text(rows)


def test_no_exit_is_stated_from_evidence(w):
    live(w)
    w.uei_maps(kind=0)
    w.printk([(5_399_734_000, ENABLED, 1)])
    rows = state_rows(w)
    assert rows[0][1]["Section"] == "exit"
    assert value(rows, "exit", "summary", "verdict") == (
        "no exit: scheduler 'sdt' is loaded and its exit kind is NONE (0); uei.kind is 0 in "
        "scx_sdt.data; the kernel log has no 'disabled' line")
    assert value(rows, "exit", "kernel sdt", "kind") == "NONE (0)"
    assert value(rows, "exit", "uei scx_sdt.data", "kind") == "0 (no exit recorded)"
    assert value(rows, "exit", "kernel log", "line") == "[    5.399734] " + ENABLED


def test_scx_root_null_prints_no_none(w):
    """No scheduler in memory: the scheduler's own fields are not printed (not N/A, never
    "None"); the global state is; the verdict says what was looked at."""
    w.glob("scx_enable_seq", 2)
    rows = state_rows(w)
    assert value(rows, "exit", "summary", "verdict") == (
        "unknown: no scheduler in memory (scx_root NULL); no user_exit_info variable in any BPF "
        "map; kernel log unreadable")
    sched = section(rows, "scheduler")
    assert {r["Object"] for r in sched} == {"(none)"}
    assert {r["Key"] for r in sched} >= {"scx_root", "enable_state", "nr_rejected", "jiffies"}
    assert not {r["Key"] for r in sched} & {"name", "flags", "timeout_ms", "exit_kind", "level"}
    assert value(rows, "watchdog", "-", "heartbeat") == "idle (no scheduler enabled)"
    no_none_text(rows)
    w2 = ScxWorld(w.k)
    assert value(state_rows(w2), "exit", "summary", "verdict") == (
        "no exit: no scheduler has been enabled since boot (scx_enable_seq is 0)")


# --- events, watchdog, callbacks in the view --------------------------------------------------


def test_events_and_callback_stats_rows(w):
    sch = live(w)
    w.events(sch, [{"SCX_EV_DISPATCH_KEEP_LAST": 2}, {"SCX_EV_DISPATCH_KEEP_LAST": 3}])
    p = w.prog(9, "sdt_enqueue", stats=[(2, 100, 0), (2, 300, 0)])
    w.struct_ops_map(sch, progs={"enqueue": p})
    w.static_key("bpf_stats_enabled_key", True)
    rows = state_rows(w)
    assert value(rows, "events", "sdt", "SCX_EV_DISPATCH_KEEP_LAST") == "5"
    i = [r for _, r in rows].index(next(r for _, r in rows if r["Key"] == "SCX_EV_DISPATCH_KEEP_LAST"))
    assert [(d, r["Key"], r["Value"]) for d, r in rows[i + 1:i + 3]] == [(1, "cpu0", "2"), (1, "cpu1", "3")]
    assert value(rows, "callback", "enqueue", "prog") == "sdt_enqueue (id 9)"
    assert value(rows, "callback", "enqueue", "run_cnt") == "4"
    assert value(rows, "callback", "enqueue", "run_time_ns") == "400"
    assert value(rows, "callback", "enqueue", "avg_ns") == "100"
    assert value(rows, "struct_ops", "sdt_ops", "bpf_stats_enabled") == "yes"


def test_watchdog_runnable_lists_and_stalls(w):
    sch = live(w)                                    # jiffies 100000, watchdog ran at 99000
    a = w.task(10, "fresh", sched=sch)
    b = w.task(11, "starved", sched=sch)
    c = w.task(12, "other", sched=sch)
    w.make_runnable(b, 0, 100000 - 8000)             # timeout 7500: stalled
    w.make_runnable(a, 0, 100000 - 10)
    w.make_runnable(c, 1, 100000 - 7500)             # exactly the timeout: not yet
    rows = state_rows(w)
    assert value(rows, "watchdog", "-", "heartbeat_age_jiffies") == "1000"
    assert value(rows, "watchdog", "-", "heartbeat") == "ok: ran 1000 jiffies ago (timeout 7500)"
    runnable = [(r["Object"], r["Key"], r["Value"]) for d, r in rows if r["Key"].startswith("runnable[")]
    assert runnable == [("cpu0", "runnable[0]", "11 starved runnable for 8000 jiffies STALLED (timeout 7500)"),
                        ("cpu0", "runnable[1]", "10 fresh runnable for 10 jiffies"),
                        ("cpu1", "runnable[0]", "12 other runnable for 7500 jiffies")]
    assert value(rows, "watchdog", "-", "stalled_tasks") == "1"
    w.glob("scx_watchdog_timestamp", 100000 - 9000)
    assert value(state_rows(w), "watchdog", "-", "heartbeat") == (
        "LATE: the watchdog has not run for 9000 jiffies (timeout 7500)")
    # scxtasks: the same ages, the list positions, and --stalled.
    grid = scxtasks.GRID.names()
    rows = [dict(zip(grid, r)) for _, r in scxtasks.rows(scx_kernel(w))]
    by = {r["PID"]: r for r in rows}
    assert (by[11]["RunnableForJiffies"], by[11]["Starved"], by[11]["RunnableList"], by[11]["TimeoutJiffies"]) == (
        8000, "STARVED", "cpu0[0]", 7500)
    assert (by[10]["RunnableForJiffies"], by[10]["RunnableList"]) == (10, "cpu0[1]")
    assert (by[12]["RunnableForJiffies"], by[12]["Starved"], by[12]["RunnableList"]) == (7500, "", "cpu1[0]")
    stalled = [dict(zip(grid, r)) for _, r in scxtasks.rows(scx_kernel(w), stalled=True)]
    assert [r["PID"] for r in stalled] == [11]
    assert [dict(zip(grid, r))["PID"] for _, r in scxtasks.rows(scx_kernel(w), pids=[12])] == [12]


def test_scxtasks_damage_rows(w):
    live(w)
    t = w.task(5, "x")
    node = w.L.offset("task_struct", "scx.tasks_node") + w.L.offset("list_head", "next")
    w.mem.u64(t + node, 0)                           # the scx_tasks list is cut after task 5
    grid = scxtasks.GRID.names()
    rows = [dict(zip(grid, r)) for _, r in scxtasks.rows(scx_kernel(w))]
    assert rows[0]["PID"] == 5
    assert rows[-1]["PID"] == -1 and "scx_tasks walk stopped" in rows[-1]["Where"]
    assert rows[-1]["TGID"] is NA


def test_older_kernel_without_scx_sched(w):
    """6.12: scx_ops, scx_exit_kind and scx_exit_info are globals (no struct scx_sched)."""
    from helpers.synth import HidingLayout
    kinds = dict(enum_values(w.btf, "scx_exit_kind"))
    ops = w.mem.alloc("sched_ext_ops")
    w.mem.set("sched_ext_ops", ops, "name", "oldsched")
    w.mem.set("sched_ext_ops", ops, "enqueue", 0xFFFFFFFFC0000100)
    ei = w.mem.alloc("scx_exit_info")
    g, gi = w.mem.alloc("atomic_t"), w.mem.alloc(8)     # atomic_t scx_exit_kind; scx_exit_info
    w.syms.update(scx_ops=ops, scx_exit_kind=g, scx_exit_info=gi)
    w.mem.set("atomic_t", g, "counter", kinds["SCX_EXIT_ERROR_BPF"])
    w.mem.u64(gi, ei)
    w.mem.put("scx_exit_info", ei, kind=kinds["SCX_EXIT_ERROR_BPF"], reason=w.cstr("scx_bpf_error"),
              msg=w.cstr("old.bpf.c:1: bad"))
    del w.syms["scx_root"], w.syms["scx_sched_all"]
    k = scx_kernel(w)
    k.layout = HidingLayout(w.btf, hide_types={"scx_sched"})
    rows = [(d, dict(zip(scxstate.GRID.names(), r))) for d, r in scxstate.rows(k)]
    assert value(rows, "exit", "summary", "verdict") == (
        f"EXITED: oldsched: ERROR_BPF ({kinds['SCX_EXIT_ERROR_BPF']}) (scx_bpf_error): old.bpf.c:1: bad "
        f"[from scx_exit_info (scx_exit_info (global))]")
    assert value(rows, "scheduler", "oldsched", "name") == "oldsched"
    assert not [r for _, r in rows if r["Key"] == "scx_sched"]
    assert not section(rows, "events")
    no_none_text(rows)
    # Running, no exit: "no exit" from the global exit kind.
    w.mem.set("atomic_t", g, "counter", 0)
    w.mem.set("scx_exit_info", ei, "kind", 0)
    rows = [(d, dict(zip(scxstate.GRID.names(), r))) for d, r in scxstate.rows(k)]
    assert value(rows, "exit", "summary", "verdict").startswith(
        "no exit: scheduler 'oldsched' is loaded and its exit kind is NONE (0)")
    # scx_ops emptied (memset on disable): no scheduler, no per-scheduler rows.
    w.mem.set("sched_ext_ops", ops, "name", "")
    w.mem.u64(g + 8, 0)
    w.mem.write(g, bytes(4))
    rows = [(d, dict(zip(scxstate.GRID.names(), r))) for d, r in scxstate.rows(k)]
    assert value(rows, "scheduler", "(none)", "scx_ops") == "no scheduler (scx_ops empty)"
    no_none_text(rows)


def test_sub_scheduler_rows_and_its_own_dsqs(w):
    root = live(w, "root")
    sub = w.sched("child", level=1, parent=root, cgroup="/lab/web", timeout=2500)
    w.link_all(sub)
    t = w.task(42, "labweb", sched=sub)
    pnodes = int.from_bytes(w.mem.read(sub + w.L.offset("scx_sched", "pnode"), 8), "little")
    gdsq = int.from_bytes(w.mem.read(pnodes, 8), "little") + w.L.offset("scx_sched_pnode", "global_dsq")
    w.enqueue(t, gdsq)
    w.exit(sub, dict(enum_values(w.btf, "scx_exit_kind"))["SCX_EXIT_PARENT"], reason="parent exiting")
    rows = state_rows(w)
    assert value(rows, "subsched", "child", "parent") == f"{root:#x}"
    assert value(rows, "subsched", "child", "cgroup") == "/lab/web"
    assert value(rows, "subsched", "child", "found_via") == f"scx_sched_all, children of {root:#x}"
    assert value(rows, "watchdog", "child", "timeout_jiffies") == "2500"
    assert value(rows, "exit", "kernel child", "reason") == "parent exiting"
    assert value(rows, "dsq", "GLOBAL node0 [child]", "task[0]") == "42 labweb"
    assert value(rows, "dsq", "GLOBAL node0", "nr") == "0"
    assert value(rows, "events", "child", "source").startswith("scx_sched.pcpu->event_stats")
