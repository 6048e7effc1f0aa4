"""linux.ktstr.sdtalloc against truth.json on every dump of a scheduler using sdt_alloc."""

import functools

import pytest

import dumps
import volrun

SDT_DUMPS = dumps.with_kdump([n for n in dumps.list_dumps() if dumps.load_truth(n).get("sdt")])


def _skip_without_dumps():
    if dumps.dumps_root() is None:
        pytest.skip("KTSTR_DUMPS is unset (real-dump tests need it)")


@functools.lru_cache(maxsize=None)
def _rows(name):
    return volrun.run_vol(name, "linux.ktstr.sdtalloc").check().rows


def _live(rows):
    # Problem rows (skips, errors) have no genn.
    return [r for r in rows if r["Genn"] is not None]


@pytest.fixture(params=dumps.smoke_first(SDT_DUMPS) or [None])
def dump(request):
    _skip_without_dumps()
    if request.param is None:
        pytest.skip("no dump with truth.json 'sdt' under KTSTR_DUMPS")
    return request.param


def test_live_allocations_match_truth(dump):
    sdt = dumps.load_truth(dump)["sdt"]
    rows = _rows(dump)
    live = _live(rows)
    assert not [r for r in rows if r["Genn"] is None], "unexpected skipped/problem rows"
    truth_live = [d for d in sdt["data"] if d["live"]]
    assert len(live) == sdt["expected_live_allocations"] == len(truth_live)
    assert {(r["Idx"], r["Genn"]) for r in live} == {(d["idx"], d["tid_genn"]) for d in truth_live}
    assert {r["Address"] for r in live} == {d["addr"] for d in truth_live}
    alloc = sdt["allocator"]["kind"] and dumps.load_truth(dump)["sdt"]["allocator"]
    assert {r["Allocator"] for r in live} == {"scx_task_allocator"}
    assert alloc["root"]  # the truth walked a real tree


def test_every_managed_task_has_one_allocation(dump):
    sdt = dumps.load_truth(dump)["sdt"]
    live = _live(_rows(dump))
    by_addr = {}
    for r in live:
        by_addr.setdefault(r["Address"], []).append(r)
    for t in sdt["per_task"]:
        hits = by_addr.get(t["data_addr"], [])
        assert len(hits) == 1, f"task {t['tid']} ({t['comm']}): {len(hits)} allocations"
        row = hits[0]
        assert (row["Idx"], row["Genn"]) == (t["tid_idx"], t["tid_genn"])
        assert row["PID"] == t["tid"]
    assert len({r["PID"] for r in live}) == len(live)


def test_payload_fields_match_truth(dump):
    sdt = dumps.load_truth(dump)["sdt"]
    live = {r["Idx"]: r for r in _live(_rows(dump))}
    for d in sdt["data"]:
        if not d["live"]:
            continue
        row = live[d["idx"]]
        payload = bytes.fromhex(row["Payload"]) if row["Type"].startswith("hex") else None
        st = d["scx_stats"]
        if payload is not None:
            # struct scx_stats {int seq; pid_t pid; u64 enqueue, exit, init, ...}: the program
            # BTF does not carry it, so the plugin shows hex; check the stable fields by hand.
            assert len(payload) == len(bytes.fromhex(d["payload_hex"]))
            assert int.from_bytes(payload[4:8], "little", signed=True) == st["pid"]
            assert int.from_bytes(payload[0:4], "little", signed=True) == st["seq"]
            assert int.from_bytes(payload[24:32], "little") == st["init"]
            # Counters keep moving until the VM stops: never below the snapshot.
            assert int.from_bytes(payload[8:16], "little") >= st["enqueue"]
        else:
            assert f"pid={st['pid']}" in row["Payload"]
        assert row["PID"] == st["pid"]


def test_type_column_says_why_hex(dump):
    live = _live(_rows(dump))
    for r in live:
        assert r["Type"] and (not r["Type"].startswith("hex") or "(" in r["Type"])


def test_options_type_and_max_entries(dump):
    if dump != dumps.smoke_dump(SDT_DUMPS):
        pytest.skip("options are checked on one dump")
    rows = volrun.run_vol(dump, "linux.ktstr.sdtalloc", "--max-entries", "5", "--type",
                          "scx_alloc_stats").check().rows
    live = _live(rows)
    assert [r["Idx"] for r in live] == sorted(r["Idx"] for r in live) and len(live) == 5
    assert all(r["Type"] == "struct scx_alloc_stats" and r["Payload"].startswith("{chunk_allocs=")
               for r in live)
    assert any("stopped at --max-entries 5" in r["Note"] for r in rows if r["Genn"] is None)
