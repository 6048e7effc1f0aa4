"""linux.ktstr.heaps against truth.json 'alloc' (the scx library's buddy, bump and stack
allocators driven in a real guest): the live set block for block, no freed block listed live,
no broken invariant on the clean allocators, the sdt_alloc slots beside them."""

import functools

import pytest

import dumps
import volrun
from volatility3_ktstr.core import Reader

ALLOC_DUMPS = [n for n in dumps.list_dumps() if dumps.load_truth(n).get("alloc")]


@functools.lru_cache(maxsize=None)
def _rows(name):
    return volrun.run_vol(name, "linux.ktstr.heaps", "--freed").check().rows


@pytest.fixture(params=dumps.smoke_first(ALLOC_DUMPS) or [None])
def dump(request):
    if dumps.dumps_root() is None:
        pytest.skip("KTSTR_DUMPS is unset (real-dump tests need it)")
    if request.param is None:
        pytest.skip("no dump with truth.json 'alloc' under KTSTR_DUMPS")
    return request.param


def _blocks(truth, kind, live):
    return {b["addr"]: b for b in truth["blocks"] if b["allocator"] == kind and b["live"] == live}


def test_live_blocks_match_truth(dump):
    truth = dumps.load_truth(dump)["alloc"]
    rows = _rows(dump)
    assert not [r for r in rows if r["State"] == "damage"], [r["Note"] for r in rows if r["State"] == "damage"]
    for kind in truth["allocators"]:
        want = _blocks(truth, kind, True)
        got = {r["Address"]: r for r in rows if r["Kind"] == kind and r["State"] == "live"}
        assert set(got) == set(want), kind
        for addr, b in want.items():
            r = got[addr]
            if kind == "buddy":
                assert (r["Order"], r["Size"]) == (b["order"], b["block_bytes"]), addr
            elif kind == "stack":
                assert r["Size"] == truth["stack"]["value"]["data_size"]
            else:   # bump: the extent to the next referenced block, the requested size rounded up
                assert b["size"] <= r["Size"] <= (b["size"] + 7) // 8 * 8, addr
            assert r["KernelVA"] and r["Physical"] is not None
            assert "lab_alloc_block[" in r["ReferencedFrom"], r
        freed = set(_blocks(truth, kind, False))
        assert not freed & set(got) - set(want)


def test_freed_blocks_and_allocator_rows(dump):
    truth = dumps.load_truth(dump)["alloc"]
    rows = _rows(dump)
    free = {r["Address"] for r in rows if r["Kind"] == "buddy" and r["State"] == "free"}
    live = {r["Address"] for r in rows if r["Kind"] == "buddy" and r["State"] == "live"}
    assert free and not free & live
    # A freed block not reused starts a free block or lies inside one.
    starts = sorted(free)
    sizes = {r["Address"]: r["Size"] for r in rows if r["Kind"] == "buddy" and r["State"] == "free"}
    for addr, b in _blocks(truth, "buddy", False).items():
        if not b.get("reused_by"):
            assert any(s <= addr < s + sizes[s] for s in starts), hex(addr)
    summary = {r["Kind"]: r for r in rows if r["State"] == "allocator"}
    for kind in ("buddy", "stack", "bump"):
        var = truth[kind]
        r = summary[kind]
        assert r["KernelVA"] == var["kaddr"] and r["Allocator"].startswith(var["var"])
    assert summary["buddy"]["Chunk"] == truth["buddy"]["value"]["first_chunk"]


def test_sdt_alloc_slots_listed(dump):
    truth = dumps.load_truth(dump)
    if not truth.get("sdt"):
        pytest.skip("no sdt_alloc scheduler in this dump")
    rows = _rows(dump)
    live = {r["Address"] for r in rows if r["Kind"] == "sdt_alloc" and r["State"] == "live"}
    want = {d["addr"] for d in truth["sdt"]["data"] if d["live"]}
    assert live == want


class _Patched(Reader):
    """A reader over another with some bytes replaced (guest memory corrupted in place)."""

    def __init__(self, inner, patches):
        self.inner, self.patches = inner, patches

    def read(self, addr, size):
        raw = bytearray(self.inner.read(addr, size))
        for at, data in self.patches:
            lo, hi = max(at, addr), min(at + len(data), addr + size)
            if lo < hi:
                raw[lo - addr:hi - addr] = data[lo - at:hi - at]
        return bytes(raw)


@pytest.mark.slow
def test_corrupted_chunk_on_the_real_dump_loses_nothing_else(dump):
    """The real allocators with one buddy chunk's metadata damaged (its order-15 free-list head
    pointed into its header, as the unfixed library leaves it, and a stretch of orders[]
    overwritten): that chunk is reported, every other block is still listed."""
    from helpers.vol_kctx import open_kctx
    from volatility3_ktstr.views import heaps

    truth = dumps.load_truth(dump)["alloc"]
    kctx = open_kctx(dump)
    progs, _ = heaps.programs(kctx, ("buddy",))
    prog = next(p for p in progs if p.walks)
    arena = prog.arena
    chunks = [c["addr"] for c in truth["buddy"]["chunks"]]
    victim = chunks[1]
    from volatility3_ktstr.core import BtfLayout

    lay = BtfLayout(prog.btf)
    fl = lay.field("buddy_chunk", "freelists")
    orders = lay.field("buddy_chunk", "orders")
    patches = [(arena.to_kernel(victim) + fl.offset + 15 * fl.elem_size, bytes(fl.elem_size)),
               (arena.to_kernel(victim) + orders.offset + 2600 // 2, b"\xff" * 64)]
    bad = kctx.with_reader(_Patched(kctx.reader, patches))
    rows = list(heaps.rows(bad, "buddy"))
    cols = heaps.GRID.index
    damage = [r[cols["Note"]] for _, r in rows if r[cols["State"]] == "damage"]
    assert any(f"chunk {victim:#x}" in d and "metadata" in d for d in damage), damage
    assert any(f"chunk {victim:#x}" in d and "do not tile" in d for d in damage), damage
    assert all(f"chunk {victim:#x}" in d for d in damage), damage
    live = {r[cols["Address"]] for _, r in rows if r[cols["State"]] == "live"}
    want = {b["addr"] for b in truth["blocks"] if b["allocator"] == "buddy" and b["live"]}
    mask = ~((1 << 20) - 1)
    assert {a for a in want if a & mask != victim} <= live
    assert not live - want


@pytest.mark.slow
def test_fuzzed_allocator_metadata_on_the_real_dump(dump):
    """Random bytes of the real allocators' metadata (buddy chunk headers and free headers,
    the stack segment, the allocator variables) changed, 40 mutants: heaps never raises or
    hangs, and the buddy chunks it does not report keep every live block."""
    import random
    import time

    from helpers.vol_kctx import open_kctx
    from volatility3_ktstr.core import BtfLayout
    from volatility3_ktstr.views import heaps

    truth = dumps.load_truth(dump)["alloc"]
    kctx = open_kctx(dump)
    progs, _ = heaps.programs(kctx, ("buddy",))
    prog = next(p for p in progs if p.walks)
    arena = prog.arena
    size = BtfLayout(prog.btf).size("buddy_chunk")
    chunks = [c["addr"] for c in truth["buddy"]["chunks"]]
    targets = [(arena.to_kernel(c), size) for c in chunks]
    targets.append((arena.to_kernel(truth["stack"]["value"]["first"]), 4096))
    targets += [(truth[k]["kaddr"], 24) for k in ("buddy", "bump", "stack")]
    want = {b["addr"] for b in truth["blocks"] if b["allocator"] == "buddy" and b["live"]}
    cols = heaps.GRID.index
    rng = random.Random(20261207)
    for _ in range(40):
        patches = []
        for _ in range(rng.randint(1, 6)):
            base, n = rng.choice(targets)
            at = base + rng.randrange(n)
            patches.append((at, bytes(rng.randrange(256) for _ in range(rng.choice((1, 4, 8))))))
        bad = kctx.with_reader(_Patched(kctx.reader, patches))
        t0 = time.monotonic()
        rows = [r for _, r in heaps.rows(bad, freed=True)]
        assert time.monotonic() - t0 < 60
        damaged = " ".join(str(r[cols["Note"]]) for r in rows if r[cols["State"]] == "damage")
        if "lab_buddy" in " ".join(str(r[cols["Allocator"]]) for r in rows if r[cols["State"]] == "damage"
                                    and "chunk" not in str(r[cols["Note"]])):
            continue    # the variable itself was hit: everything behind it may be gone
        live = {r[cols["Address"]] for r in rows if r[cols["Kind"]] == "buddy" and r[cols["State"]] == "live"}
        kept = {a for a in want if f"{a & ~((1 << 20) - 1):#x}" not in damaged}
        assert kept <= live, damaged[:2000]
