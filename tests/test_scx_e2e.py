"""linux.ktstr.scxstate and linux.ktstr.scxtasks on the real dumps against truth.json.

scxstate: scheduler name (/sys/kernel/sched_ext/root/ops), enable state, switch_all,
nr_rejected, enable_seq and hotplug_seq equal the guest's sysfs; every callback maps to a program
truth lists under the same id and name, through a struct_ops map truth lists; DSQ walks agree
with their ``nr`` counters.

Post-mortem (issue 17): the event counters equal sysfs ``root/events`` (see
test_event_counters_match_sysfs for the tolerance), the exit section comes first and says "no
exit" from its evidence, the kernel log read from the printk ring buffer holds the console's
sched_ext line, every callback program has run statistics, and the watchdog view agrees with the
dump's jiffies and with scxtasks.

scxtasks: with switch_all set, every task of the guest runs in the ext class except the kernel
threads that ask for another class (the stopper ``migration/N``, SCHED_FIFO ``idle_inject/N``,
threaded IRQs ``irq/...``, ``watchdogd`` and sched_ext's own RT helper kthreads); so the set of tasks under
sched_ext must equal truth ``tasks[]`` minus those, by pid and ``task_struct.comm``. ``--all``
adds exactly those. Skips without KTSTR_DUMPS.
"""

import functools
import re

import pytest

import dumps
import volrun

DUMPS = dumps.with_kdump(dumps.list_dumps())
# Checks that hold on a real vmcore too, whatever its dump level left out (test_vmcore_e2e.py).
HOLDS_ON_VMCORE = dumps.smoke_first(DUMPS) + dumps.vmcore_params() or ["<no dumps>"]
# Dumps whose scheduler was loaded at dump time (sysfs state, events, watchdog, switch_all
# expectations hold); the exit dump's torn-down scheduler has its own checks below.
LIVE = [d for d in DUMPS if dumps.scheduler_live(d if isinstance(d, str) else d.values[0])]
LIVE_ON_VMCORE = dumps.smoke_first(LIVE) + dumps.vmcore_params() or ["<no dumps>"]
ONE = dumps.one_dump()
# Kernel threads that set a non-fair policy for themselves (so switch_all does not move them).
OTHER_CLASS = re.compile(r"^(migration/\d+|idle_inject/\d+|irq/.*|watchdogd|scx_enable_help.*|sched_ext_helpe.*)$")


@functools.lru_cache(maxsize=None)
def rows(name, plugin, *args):
    return volrun.run_vol(name, plugin, *args).check().rows


def _skip_without_dumps():
    if dumps.dumps_root() is None:
        pytest.skip("KTSTR_DUMPS is unset (real-dump tests need it)")


def state(name):
    out = {}
    for r in rows(name, "linux.ktstr.scxstate"):
        if r["Section"] == "scheduler":
            out.setdefault(r["Key"], r["Value"])
    return out


def task_comm(t):
    """task_struct.comm of a truth task. Some truth files lack ``task_comm``: derive it from the
    /proc name (kworkers get a -<wq>/+<wq> suffix there, rescuers are literally kworker/R-<wq>;
    task_struct.comm holds at most 15 characters)."""
    if "task_comm" in t:
        return t["task_comm"]
    comm = t["comm"]
    if comm.startswith("kworker/") and not comm.startswith("kworker/R-"):
        comm = re.split(r"[-+]", comm, maxsplit=1)[0]
    return comm[:15]


@pytest.mark.parametrize("name", LIVE_ON_VMCORE)
def test_scheduler_matches_sysfs(name):
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    sysfs = truth["sched_ext"]
    s = state(name)
    assert s["name"] == sysfs["root/ops"]
    assert truth["scheduler"]["name"].endswith(s["name"])
    assert s["enable_state"] == sysfs["state"]
    assert s["switched_all"] == {"1": "yes", "0": "no"}[sysfs["switch_all"]]
    assert s["nr_rejected"] == sysfs["nr_rejected"]
    assert s["enable_seq"] == sysfs["enable_seq"]
    assert s["hotplug_seq"] == sysfs["hotplug_seq"]
    assert s["enabled"] == "yes" and s["exit_kind"] == "NONE"
    assert "error" not in s, s["error"]


@pytest.mark.parametrize("name", dumps.smoke_first(DUMPS) or ["<no dumps>"])
def test_callbacks_map_to_truth_programs(name):
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    progs = {p["id"]: p["name"] for p in truth["progs"]}
    maps = {m["id"]: m for m in truth["maps"]}
    rs = rows(name, "linux.ktstr.scxstate")
    so = [r for r in rs if r["Section"] == "struct_ops" and r["Key"] in ("map", "error")]
    assert len(so) == 1 and so[0]["Key"] == "map", so
    map_id = int(so[0]["Value"].split()[1])
    assert maps[map_id]["type_name"] == "struct_ops" and maps[map_id]["name"] == so[0]["Object"]
    cbs = [r for r in rs if r["Section"] == "callback" and r["Key"] == "prog"]
    assert cbs, "no callbacks"
    for r in cbs:
        m = re.fullmatch(r"(\S+) \(id (\d+)\)", r["Value"] or "")
        assert m, r
        assert progs[int(m.group(2))] == m.group(1), r
        assert r["Address"], r
    # scx_sdt implements at least these.
    assert {"enqueue", "dispatch", "init"} <= {r["Object"] for r in cbs}


@pytest.mark.parametrize("name", dumps.smoke_first(DUMPS) or ["<no dumps>"])
def test_cpus_and_dsqs_consistent(name):
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    rs = rows(name, "linux.ktstr.scxstate")
    cpus = {r["Object"] for r in rs if r["Section"] == "cpu" and r["Object"] != "sched_ctx"}
    assert cpus == {f"cpu{i}" for i in range(truth["kernel"]["meta"]["possible_cpus"])}
    assert not [r for r in rs if r["Key"] in ("error", "note")], [r for r in rs if r["Key"] in ("error", "note")]
    dsq = {}
    for r in rs:
        if r["Section"] == "dsq":
            dsq.setdefault(r["Object"], {}).setdefault(r["Key"], r["Value"])
    kinds = {o.split()[0] for o in dsq}
    assert {"GLOBAL", "LOCAL"} <= kinds, kinds
    for o, kv in dsq.items():
        assert kv["nr"] == kv["queued"], (o, kv)
    tids = {t["tid"]: t for t in truth["tasks"]}
    for r in rs:
        if r["Section"] == "dsq" and r["Key"].startswith("task["):
            pid, comm = r["Value"].split(" ", 1)
            assert task_comm(tids[int(pid)]) == comm, r


@pytest.mark.parametrize("name", LIVE_ON_VMCORE)
def test_tasks_under_sched_ext_match_truth(name):
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    assert truth["sched_ext"]["switch_all"] == "1", "expectation below assumes switch_all"
    got = {r["PID"]: r for r in rows(name, "linux.ktstr.scxtasks") if r["PID"] >= 0}
    expect = {t["tid"]: t for t in truth["tasks"] if not OTHER_CLASS.match(task_comm(t))}
    assert set(got) == set(expect), (sorted(set(got) - set(expect)), sorted(set(expect) - set(got)))
    for tid, t in expect.items():
        r = got[tid]
        assert (r["COMM"], r["TGID"], r["SchedClass"]) == (task_comm(t), t["tgid"], "ext"), r
        assert "ENABLED" in r["Flags"].split("|"), r
        assert r["Weight"] > 0 and r["Starved"] == "", r


@pytest.mark.parametrize("name", LIVE_ON_VMCORE)
def test_all_adds_exactly_other_class_tasks(name):
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    every = [r for r in rows(name, "linux.ktstr.scxtasks", "--all") if r["PID"] >= 0]
    others = {r["PID"]: r for r in every if r["SchedClass"] != "ext"}
    truth_others = {t["tid"] for t in truth["tasks"] if OTHER_CLASS.match(task_comm(t))}
    # Idle tasks (pid 0, not in /proc) may be on scx_tasks too.
    assert set(others) - {0} == truth_others
    assert all(r["SchedClass"] == "idle" for p, r in others.items() if p == 0)
    assert {r["SchedClass"] for r in others.values()} <= {"stop", "rt", "dl", "idle"}


@pytest.mark.parametrize("name", HOLDS_ON_VMCORE)
def test_running_tasks_agree(name):
    """A CPU's current ext task is shown by scxtasks as running on that CPU, and vice versa."""
    _skip_without_dumps()
    cur = {}
    for r in rows(name, "linux.ktstr.scxstate"):
        if r["Section"] == "cpu" and r["Key"] == "curr" and r["Value"].endswith("(ext)"):
            cur[int(r["Value"].split()[0])] = int(r["Object"][3:])
    running = {r["PID"]: int(r["Where"].rsplit(" ", 1)[1]) for r in rows(name, "linux.ktstr.scxtasks")
               if r["Where"].startswith("running on CPU")}
    assert running == cur


@pytest.mark.parametrize("name", ONE)
def test_pid_filter(name):
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    web = sorted(t["tid"] for t in truth["tasks"] if task_comm(t).startswith("labweb"))[:2]
    assert web
    got = rows(name, "linux.ktstr.scxtasks", "--pid", *map(str, web))
    assert sorted(r["PID"] for r in got) == web


# --- post-mortem --------------------------------------------------------------------------------


def _kv(name, section):
    return [(r["__depth"], r["Object"], r["Key"], r["Value"]) for r in rows(name, "linux.ktstr.scxstate")
            if r["Section"] == section]


def sysfs_events(truth):
    words = truth["sched_ext"]["root/events"].split()
    return [(words[i], int(words[i + 1])) for i in range(0, len(words), 2)]


@pytest.mark.parametrize("name", dumps.smoke_first(LIVE) or ["<no dumps>"])
def test_event_counters_match_sysfs(name):
    """The SCX_EV_* sums equal /sys/kernel/sched_ext/root/events as truth.json recorded it.

    Tolerance: truth read the sysfs file while the scheduler ran (right after it was enabled;
    the dump is taken tens of seconds later), and the counters only grow, so each counter in the
    dump is >= the recorded value; the bypass counters (SCX_EV_BYPASS_*), which only move while
    the scheduler is being enabled or disabled, are equal exactly. Same names in the same order;
    the per-CPU children sum to each total."""
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    want = sysfs_events(truth)
    ev = _kv(name, "events")
    sums = [(k, int(v)) for d, o, k, v in ev if d == 0 and k.startswith("SCX_EV_")]
    assert [k for k, _ in sums] == [k for k, _ in want]
    for (k, got), (_, exp) in zip(sums, want):
        if k.startswith("SCX_EV_BYPASS_"):
            assert got == exp, (k, got, exp)
        else:
            assert got >= exp, (k, got, exp)
    # per-CPU children follow each total not 0 and sum to it (a total of 0: none, every CPU 0)
    ncpu = truth["kernel"]["meta"]["possible_cpus"]
    for i, (d, o, k, v) in enumerate(ev):
        if d == 0 and k.startswith("SCX_EV_"):
            kids = []
            for c in ev[i + 1:]:
                if c[0] != 1:
                    break
                if c[2].startswith("cpu"):
                    kids.append(c)
            if int(v) == 0:
                assert kids == [], k
                continue
            assert [c[2] for c in kids] == [f"cpu{c}" for c in range(ncpu)]
            assert sum(int(c[3]) for c in kids) == int(v)


@pytest.mark.parametrize("name", dumps.smoke_first(LIVE) or ["<no dumps>"])
def test_exit_section_first_says_no_exit(name):
    _skip_without_dumps()
    rs = rows(name, "linux.ktstr.scxstate")
    first = rs[0]
    assert (first["Section"], first["Object"], first["Key"]) == ("exit", "summary", "verdict")
    assert first["Value"].startswith("no exit: scheduler 'sdt' is loaded and its exit kind is NONE (0)")
    ex = {(o, k): v for d, o, k, v in _kv(name, "exit") if d == 0}
    assert ex[("kernel sdt", "kind")] == "NONE (0)"
    assert "scx_root" in ex[("kernel sdt", "source")] and "ops.priv" in ex[("kernel sdt", "source")]
    ueis = [o for o, k in ex if o.startswith("uei ") and k == "kind"]
    assert ueis and all(ex[(o, "kind")] == "0 (no exit recorded)" for o in ueis)
    assert "the kernel log has no 'disabled' line" in first["Value"]


@pytest.mark.parametrize("name", dumps.smoke_first(LIVE) or ["<no dumps>"])
def test_kernel_log_from_the_printk_ring(name):
    """The sched_ext lines of the log read from memory are the console's (serial.log), with
    the same timestamps; the ring holds at least the lines truth's dmesg had."""
    _skip_without_dumps()
    serial = (dumps.dumps_root() / dumps.base_name(name) / "serial.log").read_text(errors="replace").splitlines()
    want = [line.strip() for line in serial if "] sched_ext:" in line]
    got = [v for d, o, k, v in _kv(name, "exit") if o == "kernel log" and k == "line"]
    assert got and [g.strip() for g in got] == want
    src = next(v for d, o, k, v in _kv(name, "exit") if o == "kernel log" and k == "source")
    n = int(src.split("(")[1].split()[0])          # "... N records (M lines), ..."
    dmesg = dumps.load_truth(name)["raw_sections"]["dmesg"].rstrip("\n").split("\n")
    assert n >= len(dmesg), (n, len(dmesg))


@pytest.mark.parametrize("name", dumps.smoke_first(DUMPS) or ["<no dumps>"])
def test_every_callback_has_run_statistics(name):
    """bpftool recorded no run_time_ns for these programs (kernel.bpf_stats_enabled=0): the
    dump says stats are off and every callback program's counts are 0."""
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    assert not any("run_time_ns" in p for p in truth["bpftool"]["prog_list"])
    so = {(k): v for d, o, k, v in _kv(name, "struct_ops")}
    assert so["bpf_stats_enabled"].startswith("no")
    cb = _kv(name, "callback")
    progs = [o for d, o, k, v in cb if k == "prog"]
    stats = {(o, k): v for d, o, k, v in cb if d == 1}
    # not counted: a run_stats row only where a count is not 0 (recursion misses count always)
    assert progs and "a callback's run_stats row only when a count is not 0" in so["bpf_stats_enabled"]
    for o in progs:
        assert (o, "run_stats") not in stats and (o, "run_cnt") not in stats, o


@pytest.mark.parametrize("name", dumps.smoke_first(LIVE) or ["<no dumps>"])
def test_watchdog_consistent_with_jiffies(name):
    _skip_without_dumps()
    wd = {(o, k): v for d, o, k, v in _kv(name, "watchdog") if d == 0}
    sched = {k: v for d, o, k, v in _kv(name, "scheduler") if d == 0}
    jiffies, stamp = int(wd[("-", "jiffies")]), int(wd[("-", "scx_watchdog_timestamp")])
    timeout = int(wd[("sdt", "timeout_jiffies")])
    assert jiffies == int(sched["jiffies"]) and timeout == int(sched["watchdog_timeout_jiffies"])
    age = int(wd[("-", "heartbeat_age_jiffies")])
    assert age == jiffies - stamp and 0 <= age <= timeout
    assert wd[("-", "heartbeat")] == f"ok: ran {age} jiffies ago (timeout {timeout})"
    if ("-", "interval_jiffies") in wd:
        assert 0 < int(wd[("-", "interval_jiffies")]) <= timeout
    assert wd[("-", "stalled_tasks")] == "0"
    # Each runnable task's wait is what scxtasks says, and within the timeout.
    tasks = {r["PID"]: r for r in rows(name, "linux.ktstr.scxtasks", "--all") if r["PID"] >= 0}
    listed = 0
    for d, o, k, v in _kv(name, "watchdog"):
        if k.startswith("runnable["):
            pid, waited = int(v.split()[0]), int(v.split(" runnable for ")[1].split()[0])
            assert tasks[pid]["RunnableForJiffies"] == waited and 0 <= waited <= timeout
            assert tasks[pid]["RunnableList"] == f"{o}[{k[9:-1]}]"
            listed += 1
    assert listed == sum(1 for r in tasks.values() if r["RunnableList"])
    for r in tasks.values():
        if r["RunnableAt"] is not None and r["RunnableForJiffies"] is not None:
            assert r["RunnableForJiffies"] == jiffies - r["RunnableAt"]


@pytest.mark.parametrize("name", ONE)
def test_stalled_filter_on_a_healthy_dump(name):
    _skip_without_dumps()
    got = rows(name, "linux.ktstr.scxtasks", "--stalled")
    # nothing starved: one row says so (what was walked), never an empty table
    assert [(r["PID"], r["Where"].split(":")[0]) for r in got] == [
        (-1, "no task in the ext class matching the filters")], got


@pytest.mark.slow
@pytest.mark.parametrize("name", dumps.smoke_first(DUMPS) or ["<no dumps>"])
def test_whole_kernel_log_equals_truth_dmesg(name):
    """Every line of the printk ring buffer read from memory is the guest's own `dmesg` (truth
    raw_sections.dmesg, read before the dump): same text, same timestamps, same order; later
    records may follow."""
    _skip_without_dumps()
    from helpers.vol_kctx import open_kctx
    from volatility3_ktstr.sched_ext import SchedExt

    log = SchedExt(open_kctx(name)).kernel_log()
    records, damage, error = log.records, log.damage, log.unavailable
    assert error is None and not damage, (error, list(damage))
    mine = [line for r in records for line in r.lines()]
    dmesg = dumps.load_truth(name)["raw_sections"]["dmesg"].rstrip("\n").split("\n")
    assert mine[:len(dmesg)] == dmesg


@pytest.mark.parametrize("name", dumps.smoke_first(DUMPS) or ["<no dumps>"])
def test_invariants_silent_on_real_dumps(name):
    """Every real dump is consistent: the invariant checks run (summary row) and find nothing."""
    _skip_without_dumps()
    inv = _kv(name, "invariants")
    assert inv[0][2] == "checked" and inv[0][3].endswith(": all hold"), inv[0]
    assert [r for r in inv[1:] if r[2] != "error"] == []


@pytest.mark.parametrize("name", dumps.smoke_first(DUMPS) or ["<no dumps>"])
def test_sched_ctx_sources_on_real_dumps(name):
    """The scheduler's per-CPU context (cpu section, Object sched_ctx): the scheduler's own
    per-CPU maps (truth maps sharing the BTF of its struct_ops map) are sources and no other
    object's (scx_sdt_zoo's PERCPU_ARRAY zoo_hits is bpf_zoo's); arena globals only where truth
    has them; every source has one child row per possible CPU; "none" said when there is none."""
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    cpu = _kv(name, "cpu")
    sources = [v for _, o, k, v in cpu if o == "sched_ctx" and k == "source"]
    assert sources, "no sched_ctx source row"
    ops_btf = {m["btf_id"] for m in truth["maps"] if m["type_name"] == "struct_ops" and m["btf_id"]}
    percpu = {m["name"] for m in truth["maps"] if m["type_name"] in ("percpu_array", "percpu_hash",
                                                                       "lru_percpu_hash")}
    mine = {m["name"] for m in truth["maps"] if m["btf_id"] in ops_btf and m["name"] in percpu}
    got_maps = {v.split(":", 1)[0][4:] for v in sources if v.startswith("map ")}
    assert mine <= got_maps and not (percpu - mine) & got_maps, (mine, got_maps)
    arena_rows = [v for v in sources if ": arena global of " in v]
    if not any(a.get("globals_addr") for a in truth.get("arenas") or []):
        assert arena_rows == []
    if sources == [s for s in sources if s.startswith("none: ")]:
        assert len(sources) == 1 and "scheduler's BPF objects: " in sources[0]
        assert not [k for _, _, k, _ in cpu if k == "sched_ctx"]
        return
    ncpu = len({o for _, o, k, _ in cpu if k == "nr_running"})
    for s in sources:
        path = s.split(":", 1)[0].removeprefix("map ")
        values = [v for d, o, k, v in cpu if k == "sched_ctx" and d == 1 and v.startswith(path + "[")]
        assert len(values) >= ncpu, (path, values)
