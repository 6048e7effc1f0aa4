"""linux.ktstr.scxstate and linux.ktstr.scxtasks on the real dumps against truth.json.

scxstate: scheduler name (/sys/kernel/sched_ext/root/ops), enable state, switch_all,
nr_rejected, enable_seq and hotplug_seq equal the guest's sysfs; every callback maps to a program
truth lists under the same id and name, through a struct_ops map truth lists; DSQ walks agree
with their ``nr`` counters.

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

PLUGIN_DIRS = ("-p", str(volrun.REPO / "volatility3_ktstr" / "plugins"))
DUMPS = dumps.with_kdump(dumps.list_dumps())
ONE = ([d for d in dumps.list_dumps() if d.startswith("x86_64/")] or dumps.list_dumps())[:1] or ["<no dumps>"]
# Kernel threads that set a non-fair policy for themselves (so switch_all does not move them).
OTHER_CLASS = re.compile(r"^(migration/\d+|idle_inject/\d+|irq/.*|watchdogd|scx_enable_help.*|sched_ext_helpe.*)$")


@functools.lru_cache(maxsize=None)
def rows(name, plugin, *args):
    return volrun.run_vol(name, plugin, *args, extra_global=PLUGIN_DIRS).check().rows


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


@pytest.mark.parametrize("name", DUMPS or ["<no dumps>"])
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


@pytest.mark.parametrize("name", DUMPS or ["<no dumps>"])
def test_callbacks_map_to_truth_programs(name):
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    progs = {p["id"]: p["name"] for p in truth["progs"]}
    maps = {m["id"]: m for m in truth["maps"]}
    rs = rows(name, "linux.ktstr.scxstate")
    so = [r for r in rs if r["Section"] == "struct_ops"]
    assert len(so) == 1 and so[0]["Key"] == "map", so
    map_id = int(so[0]["Value"].split()[1])
    assert maps[map_id]["type_name"] == "struct_ops" and maps[map_id]["name"] == so[0]["Object"]
    cbs = [r for r in rs if r["Section"] == "callback"]
    assert cbs, "no callbacks"
    for r in cbs:
        m = re.fullmatch(r"(\S+) \(id (\d+)\)", r["Value"] or "")
        assert m, r
        assert progs[int(m.group(2))] == m.group(1), r
        assert r["Address"], r
    # scx_sdt implements at least these.
    assert {"enqueue", "dispatch", "init"} <= {r["Object"] for r in cbs}


@pytest.mark.parametrize("name", DUMPS or ["<no dumps>"])
def test_cpus_and_dsqs_consistent(name):
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    rs = rows(name, "linux.ktstr.scxstate")
    cpus = {r["Object"] for r in rs if r["Section"] == "cpu"}
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


@pytest.mark.parametrize("name", DUMPS or ["<no dumps>"])
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


@pytest.mark.parametrize("name", DUMPS or ["<no dumps>"])
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


@pytest.mark.parametrize("name", DUMPS or ["<no dumps>"])
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
