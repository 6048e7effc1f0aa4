"""linux.ktstr.localstorage on the real dumps against truth.json.

For every task/cgroup storage map truth.json lists: the set of owners found equals the truth's
exactly, pid/tgid/comm (task_struct.comm) or cgroup path/id equal the guest's, and values equal
``value_hex``. Cgroup and inode naming are also checked on real kernel objects (the dumps
hold no cgroup/inode storage). Skips without KTSTR_DUMPS.
"""

import functools
import json

import pytest

import dumps
import volrun
from helpers.vol_kctx import open_kctx

PLUGIN = "linux.ktstr.localstorage"
DUMPS = dumps.with_kdump(dumps.list_dumps())
# Option tests need one dump; an x86-64 one needs no extra translation layer.
ONE = dumps.one_dump()


@functools.lru_cache(maxsize=None)
def plugin_rows(name, *args):
    res = volrun.run_vol(name, PLUGIN, *args).check()
    return res.rows


def _skip_without_dumps():
    if dumps.dumps_root() is None:
        pytest.skip("KTSTR_DUMPS is unset (real-dump tests need it)")


def _by_map(rows, kind):
    out = {}
    for r in rows:
        if r["OwnerKind"] == kind:
            out.setdefault(r["MapId"], []).append(r)
    return out


@pytest.mark.parametrize("name", dumps.smoke_first(DUMPS) or ["<no dumps>"])
def test_task_storage_matches_truth(name):
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    rows = plugin_rows(name)
    tasks = {t["tid"]: t for t in truth["tasks"]}
    found = _by_map(rows, "task")
    summaries = {r["MapId"]: r for r in rows if r["OwnerKind"] == "summary"}
    assert truth["task_storage_expected_owners"], "truth lists no task storage map"
    for key, tids in truth["task_storage_expected_owners"].items():
        map_id = int(key.split(":", 1)[0])
        got = found.get(map_id, [])
        assert sorted(r["PID"] for r in got) == sorted(tids), f"map {key}: owners differ"
        for r in got:
            t = tasks[r["PID"]]
            assert r["TGID"] == t["tgid"], r
            if "task_comm" in t:
                assert r["Comm"] == t["task_comm"], r
            else:   # older truth: only /proc's comm (kworker suffixes, full kthread names)
                assert r["Comm"] and t["comm"].startswith(r["Comm"]), r
            assert r["Note"] == "", r
        s = summaries[map_id]
        assert s["Note"].startswith(f"{len(tids)} elements in "), s
        assert ";" not in s["Note"], f"walk reported problems: {s['Note']}"
    slots = {d["addr"]: d for d in (truth.get("sdt") or {}).get("data") or []}
    for entry in truth["task_storage"]:
        (row,) = [r for r in found[entry["map_id"]] if r["PID"] == entry["tid"]]
        assert row["ValueHex"] == entry["value_hex"], entry
        ptr = (entry.get("decoded") or {}).get("data_arena_ptr")
        if ptr in slots:   # scx_sdt: the value's arena pointer leads to the task's live slot
            _check_slot(json.loads(row["Formatted"]), ptr, slots[ptr], entry["tid"])


def _check_slot(formatted, ptr, truth_slot, tid):
    hits = [v for v in formatted["formatted"]["value"].values()
            if isinstance(v, dict) and v.get("ptr") == f"{ptr:#x}"]
    assert len(hits) == 1, formatted
    slot = hits[0]
    assert (slot["slot"]["idx"], slot["slot"]["genn"]) == (truth_slot["idx"], truth_slot["tid_genn"])
    payload = slot["payload"]
    if "hex" in payload:   # no payload type in the program BTF: raw bytes
        raw = bytes(int(x, 16) for x in payload["hex"])
        assert len(raw) == len(truth_slot["payload_hex"]) // 2
        # Counters move between the truth snapshot and the dump; scx_stats{u32 seq; u32 pid}
        # starts with the owner's pid (TRUTH.md), which does not.
        assert int.from_bytes(raw[4:8], "little") == truth_slot["scx_stats"]["pid"] == tid
    else:
        assert payload.get("pid") == tid, payload


@pytest.mark.parametrize("name", dumps.smoke_first(DUMPS) or ["<no dumps>"])
def test_cgroup_storage_matches_truth(name):
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    expected = truth.get("cgrp_storage_expected_owners") or {}
    rows = plugin_rows(name)
    found = _by_map(rows, "cgroup")
    cgrp_maps = {m["id"] for m in truth["maps"] if m["type_name"] == "cgrp_storage"}
    assert set(found) <= cgrp_maps
    for key, owners in expected.items():
        map_id = int(key.split(":", 1)[0])
        got = sorted((r["OwnerName"], r["OwnerId"]) for r in found.get(map_id, []))
        assert got == sorted((o["cgroup"], o["cgroup_id"]) for o in owners), key
    for entry in truth.get("cgrp_storage") or []:
        (row,) = [r for r in found[entry["map_id"]] if r["OwnerId"] == entry["cgroup_id"]]
        assert row["ValueHex"] == entry["value_hex"], entry


@pytest.mark.parametrize("name", ONE)
def test_filters(name):
    _skip_without_dumps()
    truth = dumps.load_truth(name)
    key, tids = next(iter(truth["task_storage_expected_owners"].items()))
    map_id, map_name = key.split(":", 1)
    pid = max(tids)
    rows = plugin_rows(name, "--pid", pid, "--name", map_name)
    data = [r for r in rows if r["OwnerKind"] == "task"]
    assert [r["PID"] for r in data] == [pid]
    assert [r["MapId"] for r in rows if r["OwnerKind"] == "summary"] == [int(map_id)]
    res = volrun.run_vol(name, PLUGIN, "--id", 99999)
    assert res.rc == 2 and "no BPF map matches id 99999" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("name", ONE)
def test_rows_sorted_and_formatted(name):
    _skip_without_dumps()
    rows = [r for r in plugin_rows(name) if r["OwnerKind"] == "task"]
    keys = [(r["MapId"], r["PID"]) for r in rows]
    assert keys == sorted(keys)
    for r in rows:
        value = json.loads(r["Formatted"])
        assert isinstance(value, dict) and r["Value"].startswith("{")


# Full dumps: a minimized one keeps no css_set/cgroup pages (no plugin reads a task's cgroup).
@pytest.mark.parametrize("name", dumps.smoke_first(dumps.full_dumps()) or ["<no dumps>"])
def test_cgroup_naming_on_real_tasks(name):
    """The dumps hold no cgroup storage, so name real cgroups instead: each task storage
    owner's default-hierarchy cgroup (task->cgroups->dfl_cgrp) must have truth's path and id."""
    from volatility3_ktstr.walkers import localstorage as ls
    from volatility3_ktstr.walkers.owners import OwnerResolver

    _skip_without_dumps()
    truth = dumps.load_truth(name)
    kctx = open_kctx(name)
    lay, rd = kctx.layout, kctx.reader
    ids = {c["path"]: c["id"] for c in truth["cgroups"]}
    tasks = {t["tid"]: t for t in truth["tasks"]}
    resolver = OwnerResolver(rd, lay)
    checked = 0
    for m in kctx.maps():
        if m.type_name != "task_storage":
            continue
        for e in ls.walk_map(rd, lay, m.kva, m.value_size)[0]:
            task = resolver.resolve("task", e.owner, e.storage)
            cgrp = rd.u64(rd.u64(e.owner + lay.offset("task_struct", "cgroups"))
                          + lay.offset("css_set", "dfl_cgrp"))
            owner = resolver.resolve("cgroup", cgrp)
            want = tasks[task.pid]["cgroup"]
            assert (owner.name, owner.ident, owner.error) == (want, ids[want], None), task
            checked += 1
    assert checked == sum(len(v) for v in truth["task_storage_expected_owners"].values())


@pytest.mark.parametrize("name", ONE)
def test_inode_naming_on_real_files(name):
    """No inode storage in the dumps either: name the executables of the task storage owners
    (task->mm->exe_file->f_inode). The scheduler's loader runs a file named after it."""
    from volatility3_ktstr.walkers import localstorage as ls
    from volatility3_ktstr.walkers.owners import OwnerResolver

    _skip_without_dumps()
    truth = dumps.load_truth(name)
    kctx = open_kctx(name)
    lay, rd = kctx.layout, kctx.reader
    resolver = OwnerResolver(rd, lay)
    exes = {}
    for m in kctx.maps():
        if m.type_name != "task_storage":
            continue
        for e in ls.walk_map(rd, lay, m.kva, m.value_size)[0]:
            mm = rd.u64(e.owner + lay.offset("task_struct", "mm"))
            if not mm:   # kernel threads
                continue
            f = rd.u64(mm + lay.offset("mm_struct", "exe_file"))
            ino = resolver.resolve("inode", rd.u64(f + lay.offset("file", "f_inode")))
            assert ino.error is None and ino.ident and ino.name.startswith("/"), ino
            exes[resolver.resolve("task", e.owner).comm] = ino.name.split(" on ")[0]
    sched = truth["scheduler"]["name"]
    assert exes[sched].rsplit("/", 1)[1] == sched, exes
