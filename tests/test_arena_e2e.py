"""linux.ktstr.arena against truth.json (arenas[], sdt tree addresses, raw dump bytes)."""

import json

import pytest

import dumps
from volatility3_ktstr.dumpfile import open_image
import volrun

ARENA_DUMPS = dumps.with_kdump([n for n in dumps.list_dumps() if dumps.load_truth(n).get("arenas")])
_RUNS = {}


# Every check here holds on a real vmcore too (its arena pages survive the dump level); the
# quick tier keeps the real vmcore here, so the kdump format is exercised on every run.
@pytest.fixture(params=dumps.smoke_first(ARENA_DUMPS) + dumps.vmcore_params(smoke=True) or [None])
def dump(request):
    if dumps.dumps_root() is None:
        pytest.skip("KTSTR_DUMPS is unset (real-dump tests need it)")
    if request.param is None:
        pytest.skip("no dump with truth.json 'arenas' under KTSTR_DUMPS")
    return request.param


def arena_run(dump, out):
    """(rows, dump dir) of `vol -o DIR linux.ktstr.arena --dump` on ``dump``."""
    res = volrun.run_vol(dump, "linux.ktstr.arena", "--dump", extra_global=["-o", str(out)])
    return res.check().rows, out


@pytest.fixture
def run(dump, tmp_path_factory):
    """arena_run once per dump."""
    if dump not in _RUNS:
        _RUNS[dump] = arena_run(dump, tmp_path_factory.mktemp("arena"))
    return _RUNS[dump]


def _sdt_addrs(truth):
    sdt = truth.get("sdt") or {}
    out = [d["addr"] for d in sdt.get("descs", [])] + [d["chunk"] for d in sdt.get("descs", [])]
    return out + [d["addr"] for d in sdt.get("data", [])]


def test_arena_maps_match_truth(dump, run):
    truth = dumps.load_truth(dump)
    rows, _ = run
    tops = {r["MapID"]: r for r in rows if r["__depth"] == 0 and r["MapID"] >= 0}
    assert set(tops) == {a["map_id"] for a in truth["arenas"]}
    # rows without a map: the registry's coverage (a -d 31 vmcore lost some bpf_map structs)
    assert all(r["Note"].startswith("coverage: ") for r in rows if r["MapID"] < 0)
    for a in truth["arenas"]:
        top = tops[a["map_id"]]
        assert top["UserAddr"] == a["user_vm_start"]
        assert top["Size"] == a["size"]
        assert top["KernelVA"] and top["Pages"] >= 1
        assert top["Note"].startswith("wrote ")


def test_pages_cover_the_sdt_tree(dump, run):
    truth = dumps.load_truth(dump)
    rows, _ = run
    page = truth["kernel"]["meta"]["page_size"]
    pages = {r["UserAddr"] for r in rows if r["__depth"] == 1}
    for addr in _sdt_addrs(truth):
        assert addr - addr % page in pages, f"arena address {addr:#x} not in a mapped page"


def test_image_holds_truth_bytes_and_matches_physical(dump, run):
    truth = dumps.load_truth(dump)
    rows, out = run
    sdt = truth.get("sdt")
    for a in truth["arenas"]:
        image = out / f"arena-{a['map_id']}.bin"
        index = json.loads((out / f"arena-{a['map_id']}.json").read_text())
        assert image.stat().st_size == a["size"]
        assert index["user_vm_start"] == a["user_vm_start"]
        with open(image, "rb") as f:
            if sdt and sdt["allocator"]["arena_map_id"] == a["map_id"]:
                for d in sdt["data"]:
                    f.seek(d["addr"] - a["user_vm_start"])
                    raw = f.read(8 + 8)
                    # Header {idx, genn} and the payload's first 8 bytes (seq, pid) are stable.
                    assert int.from_bytes(raw[4:8], "little", signed=True) == d["tid_genn"]
                    assert raw[8:16] == bytes.fromhex(d["payload_hex"])[:8]
            # Each page in the image equals the dump's bytes at the reported physical address.
            base = truth["memory"]["dump_raw_phys_base"]
            with open_image(str(dumps.dump_path(dump)), phys_base=base) as phys:
                for r in rows:
                    if r["__depth"] != 1 or r["MapID"] != a["map_id"]:
                        continue
                    f.seek(r["UserAddr"] - a["user_vm_start"])
                    assert f.read(r["Size"]) == phys.read(r["Physical"], r["Size"])
