"""walkers/scxalloc.py on synthetic arenas that the scx library's own algorithms (replayed in
tests/helpers/scxalloc.py) filled: the live set equals the model's, invariants hold on clean
allocators, the unfixed buddy (chunk filled, header handed out) is reported, corrupt metadata
never raises or hangs and loses nothing outside the damaged chunk."""

import os
import random
import time
from pathlib import Path

import pytest

from helpers.scxalloc import DECLS, Arena, Buddy, Bump, Stack
from helpers.synth import SynthKernel
from volatility3_ktstr.btf import Btf, elf_section
from volatility3_ktstr.walkers import scxalloc


def _btfs():
    out = [pytest.param(lambda: SynthKernel(DECLS, pad=0).btf, id="synthetic")]
    obj = Path(os.environ.get("KTSTR_DUMPS", "/nonexistent")) / "x86_64/scx_sdt_alloc/lab_alloc.bpf.o"

    def real():
        if not obj.exists():
            pytest.skip("KTSTR_DUMPS unset or lab_alloc.bpf.o absent")
        return Btf.parse(elf_section(str(obj), ".BTF"))

    out.append(pytest.param(real, id="lab_alloc.bpf.o"))
    return out


@pytest.fixture(params=_btfs())
def btf(request):
    return request.param()


def _buddy_world(btf, buggy=False, seed=7, n=300):
    arena = Arena()
    b = Buddy(arena, btf, buggy=buggy)
    rng = random.Random(seed)
    addrs = []
    for i in range(n):
        a = b.alloc(rng.randint(3, 16000))
        if a:
            addrs.append(a)
        if i % 3 == 2 and addrs:
            b.free(addrs.pop(rng.randrange(len(addrs))))
    return arena, b


def _walk(arena, model, name, **kw):
    var = model.var.allocator_var(model.btf, name)
    return scxalloc.walk(arena.mem, arena.info, var, **kw)


def test_buddy_live_set_equals_library(btf):
    arena, b = _buddy_world(btf)
    w = _walk(arena, b, "lab_buddy", freed=True)
    assert w.error is None and not list(w.damage), list(w.damage)
    got = {blk.addr: (blk.size, blk.order) for blk in w.blocks}
    assert got == b.live and len(got) > 100
    assert len(w.chunks) == len(b.chunk_list()) >= 2
    live = set(got)
    assert w.freed and not live & {f.addr for f in w.freed}
    # Live and free blocks tile every chunk's data part exactly.
    for c in w.chunks:
        spans = sorted((x.addr, x.size) for x in w.blocks + w.freed if x.chunk == c)
        for (a, s), (a2, _) in zip(spans, spans[1:]):
            assert a + s == a2
        assert spans[-1][0] + spans[-1][1] == c + b.chunk_bytes


def test_buddy_max_blocks_bounds_the_walk(btf):
    arena, b = _buddy_world(btf, n=60)
    w = _walk(arena, b, "lab_buddy", max_blocks=5)
    assert len(w.blocks) == 5 and w.truncated


def _fill_then_overflow(btf, buggy):
    arena = Arena()
    b = Buddy(arena, btf, buggy=buggy)
    first = b.alloc(16000)
    while b.alloc(16000) and len(b.chunk_list()) == 1:
        pass
    # The first chunk has no order >= 10 block left; two 512 KiB requests exhaust the second.
    b.alloc(500_000)
    hdr = b.alloc(500_000)
    if hdr:
        arena.put(hdr, 8, 0xA110C0DE00000001)      # the caller writes into its "block"
    return arena, b, first & ~(b.chunk_bytes - 1), hdr


def test_unfixed_buddy_handing_out_its_header_is_reported(btf):
    arena, b, chunk1, hdr = _fill_then_overflow(btf, buggy=True)
    assert hdr == chunk1            # the library returned the chunk's own header
    w = _walk(arena, b, "lab_buddy")
    texts = [d.reason for d in w.damage]
    assert any(f"chunk {chunk1:#x}" in t and "metadata" in t for t in texts), texts
    assert all(d.kind == "corrupt" for d in w.damage)
    assert hdr not in {blk.addr for blk in w.blocks}


def test_fixed_buddy_same_sequence_is_clean(btf):
    arena, b, _chunk1, hdr = _fill_then_overflow(btf, buggy=False)
    assert hdr != _chunk1
    w = _walk(arena, b, "lab_buddy")
    assert not list(w.damage), list(w.damage)
    assert {blk.addr: (blk.size, blk.order) for blk in w.blocks} == b.live


def test_buddy_link_damage(btf):
    arena, b = _buddy_world(btf, n=90)
    chunks = b.chunk_list()
    c = chunks[-1]
    # A free-list cycle: the order's head points back at itself through its successor.
    order = next(o for o in range(16) if b.chunk.elem(c, "freelists", o) != b.items)
    head = b.chunk.elem(c, "freelists", order)
    b.hset(b.header(c, head), "next_index", head)
    # A chunk-list cycle.
    b.chunk.set(c, "next", chunks[0])
    w = _walk(arena, b, "lab_buddy")
    texts = " | ".join(d.reason for d in w.damage)
    assert "cycle" in texts and f"chunk {c:#x} order-{order}" in texts
    assert len(w.chunks) == len(chunks)


def test_buddy_fuzzed_metadata_never_raises_and_keeps_other_chunks(btf):
    arena, b = _buddy_world(btf, n=400, seed=3)
    clean = _walk(arena, b, "lab_buddy")
    chunks = b.chunk_list()
    assert len(chunks) >= 2
    rng = random.Random(11)
    for trial in range(12):
        victim = chunks[trial % len(chunks)]
        saved = arena.read(victim, b.chunk.size)
        for _ in range(40):
            off = rng.randrange(b.chunk.size)
            arena.put(victim + off, 1, rng.randrange(256))
        t0 = time.monotonic()
        w = _walk(arena, b, "lab_buddy")
        assert time.monotonic() - t0 < 20
        others = {x.addr for x in clean.blocks if x.chunk != victim}
        assert others <= {x.addr for x in w.blocks if x.chunk != victim}
        arena.write(victim, saved)


def _stack_world(btf, seed=5, n=300):
    arena = Arena()
    s = Stack(arena, btf)
    rng = random.Random(seed)
    held = []
    for i in range(n):
        e = s.alloc()
        held.append(e)
        if i % 3 == 2:
            s.free(held.pop(rng.randrange(len(held))))
    return arena, s


def test_stack_live_set_equals_library(btf):
    arena, s = _stack_world(btf)
    w = _walk(arena, s, "lab_stack", freed=True)
    assert w.error is None and not list(w.damage), list(w.damage)
    # Exact within the page runs the free stack reveals; a run whose elements are all
    # allocated has nothing on the free stack and is not seen (the summary says so).
    runs = set(w.chunks)
    assert runs and {blk.addr for blk in w.blocks} == {e for e in s.live if e - e % 4096 in runs}
    hidden = {e - e % 4096 for e in s.live} - runs
    assert all(all(e in s.live for e in range(r, r + 4096, 64)) for r in hidden)
    assert all(blk.size == 64 for blk in w.blocks)
    assert len(w.freed) == s.var.get("available")


def test_stack_counter_and_cycle_damage(btf):
    arena, s = _stack_world(btf, n=100)
    s.var.set("available", s.var.get("available") + 3)
    w = _walk(arena, s, "lab_stack")
    assert any("available" in d.reason for d in w.damage)
    first = s.var.get("first")
    s.seg.set(first, "next", first)
    s.var.set("current", 0xDEAD)
    w = _walk(arena, s, "lab_stack")
    assert any("cycle" in d.reason for d in w.damage)
    assert any("current segment" in d.reason for d in w.damage)


def test_bump_used_range_and_split(btf):
    arena = Arena()
    bp = Bump(arena, btf, pages=2)
    rng = random.Random(1)
    for _ in range(40):
        bp.alloc(rng.randint(3, 900))
    w = _walk(arena, bp, "bump")
    assert not list(w.damage), list(w.damage)
    cur = bp.var.get("memory")
    used = [blk for blk in w.blocks if blk.chunk == cur][0]
    assert used.addr == cur + bp.ll and used.addr + used.size == cur + bp.var.get("off")
    assert len(w.chunks) >= 2           # older regions through the bump_ll chain
    inside = [a for a, _ in bp.blocks if used.addr <= a < used.addr + used.size]
    parts = scxalloc.split_used(used, inside)
    assert [p.addr for p in parts] == inside
    bp.var.set("cur_memusage", 1)
    assert any("cur_memusage" in d.reason for d in _walk(arena, bp, "bump").damage)


def test_discovery_is_by_type(btf):
    names = {t.name for t in btf.all_types() if t.name in scxalloc.STRUCTS}
    assert {"buddy", "stk", "bump"} <= names


def test_typed_pointer_renders_the_block_untyped_is_hex():
    from volatility3_ktstr.views import heaps

    k = SynthKernel(DECLS, pad=0)
    arena = Arena()
    b = Buddy(arena, k.btf)
    node, plain = b.alloc(16), b.alloc(40)
    arena.put(node, 8, 0x5A5A)
    arena.put(node + 8, 4, 7)
    w = _walk(arena, b, "lab_buddy")
    rec = k.btf.struct("lab_rec").id
    slots = heaps.pointer_slots(k.btf, rec)
    assert [(o, p, bool(t)) for o, _s, p, t in slots] == [(0, "node", True), (8, "raw", False)]
    prog = heaps.ProgramHeaps("lab", 0, k.btf, arena.info, "test", [w])
    value = node.to_bytes(8, "little") + plain.to_bytes(8, "little")
    heaps._value_refs(arena.info, slots, value, "recs[0]", prog.refs)

    class K:
        reader = arena.mem

    typed = heaps._Typed(K, prog)
    by_addr = {blk.addr: blk for blk in w.blocks}
    tname, refd, text = heaps._render(K, prog, by_addr[node], typed.block_refs(node, 16))
    assert tname == "struct lab_node" and refd == "recs[0].node" and "magic=" in text and "id=7" in text
    tname, refd, text = heaps._render(K, prog, by_addr[plain], typed.block_refs(plain, 64))
    assert tname.startswith("hex (referenced only by untyped") and refd == "recs[0].raw"


def test_typed_block_pointing_at_another_block():
    from volatility3_ktstr.views import heaps

    k = SynthKernel(DECLS + "struct lab_pair { struct lab_node *a; struct lab_pair *next; };", pad=0)
    arena = Arena()
    b = Buddy(arena, k.btf)
    p1, p2, node = b.alloc(16), b.alloc(16), b.alloc(16)
    arena.put(p1 + 8, 8, p2)            # p1->next = p2
    arena.put(p2, 8, node)              # p2->a = node
    arena.put(p2 + 8, 8, p1)            # p2->next = p1: a cycle, followed once
    prog = heaps.ProgramHeaps("lab", 0, k.btf, arena.info, "test", [])
    pair = k.btf.struct("lab_pair").id
    prog.refs[p1] = [heaps.Reference("map[0].p", pair)]

    class K:
        reader = arena.mem

    heaps._typed_block_refs(K, prog)
    assert [r.source for r in prog.refs[p2]] == [f"struct lab_pair at {p1:#x}.next"]
    assert [r.source for r in prog.refs[node]] == [f"struct lab_pair at {p2:#x}.a"]
    assert prog.refs[node][0].type_id == k.btf.struct("lab_node").id


def test_stack_runs_seen_only_through_references(btf):
    arena, s = _stack_world(btf)
    w = _walk(arena, s, "lab_stack")
    hidden = {e for e in s.live if e - e % 4096 not in set(w.chunks)}
    assert hidden
    # Another allocator's memory is never taken for a run.
    bp = Bump(arena, btf, pages=1)
    other = _walk(arena, bp, "bump")
    claimed = scxalloc.BlockIndex((a, n, None) for a, n in other.regions)
    n = scxalloc.add_referenced_runs(w, sorted(hidden) + [bp.var.get("memory") + 64], claimed)
    assert n == len({e - e % 4096 for e in hidden})
    assert {b.addr for b in w.blocks} == s.live


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_variables_and_segments_never_raise(btf, seed):
    """Random allocator variable bytes and random stack segment / free header bytes: the
    walkers themselves (not the catch-all wrapper) return, in bounded time."""
    rng = random.Random(seed)
    arena, b = _buddy_world(btf, n=120, seed=seed)
    s = Stack(arena, btf)
    arena.next_page = 12 << 20 >> 1
    for _ in range(150):
        e = s.alloc()
        if rng.random() < 0.3:
            s.free(e)
    bp = Bump(arena, btf, pages=1)
    for _ in range(30):
        bp.alloc(rng.randint(1, 300))
    models = ((b, "lab_buddy", scxalloc.walk_buddy), (s, "lab_stack", scxalloc.walk_stack),
              (bp, "bump", scxalloc.walk_bump))
    for _ in range(25):
        seg = s.var.get("first")
        for _ in range(20):
            arena.put(seg + rng.randrange(4096), 1, rng.randrange(256))
        for model, name, fn in models:
            var = model.var.allocator_var(btf, name)
            raw = bytearray(var.value)
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            var.value = bytes(raw)
            t0 = time.monotonic()
            w = fn(arena.mem, arena.info, var, freed=True)
            assert time.monotonic() - t0 < 10
            assert w.error is not None or isinstance(w.blocks, list)


SCX_BUDDY_DECLS = """
struct scx_buddy_header { u32 prev_index; u32 next_index; };
struct scx_buddy_chunk { u8 orders[32768]; u64 order_indices[16]; struct scx_buddy_chunk *prev; struct scx_buddy_chunk *next; };
struct scx_stk { u64 *lock; u64 first; u64 last; u64 current; u64 cind; u64 capacity; u64 available; u64 data_size; u64 nr_pages_per_alloc; u64 reserve; };
struct scx_buddy { struct scx_buddy_chunk *first_chunk; u64 min_alloc_bytes; struct scx_stk stack; u32 lock; };
"""


def test_scx_buddy_2025_layout():
    """The 2025 scx_buddy: order_indices[] heads, headers at the block start, no allocated
    bitmap (a block on no free list is live)."""
    from volatility3_ktstr.core import BtfLayout

    k = SynthKernel(SCX_BUDDY_DECLS, pad=0)
    lay = BtfLayout(k.btf)
    arena = Arena()
    chunk = arena.info.user_vm_start + (1 << 20)
    size = lay.size("scx_buddy_chunk")
    start = -(-size // 16)
    tiles, idx = [], start
    while idx < 65536:
        order = (idx & -idx).bit_length() - 1
        while idx + (1 << order) > 65536:
            order -= 1
        tiles.append((idx, min(order, 15)))
        idx += 1 << min(order, 15)
    orders_off = lay.offset("scx_buddy_chunk", "orders")
    heads = lay.field("scx_buddy_chunk", "order_indices")
    for o in range(16):
        arena.put(chunk + heads.offset + o * heads.elem_size, heads.elem_size, 65536)
    free = tiles[::2]
    for i, o in tiles:
        b = arena.get(chunk + orders_off + i // 2, 1)
        arena.put(chunk + orders_off + i // 2, 1, (b & 0xF0) | o if i & 1 else (o << 4) | (b & 0xF))
    nxt = lay.field("scx_buddy_header", "next_index")
    prev = lay.field("scx_buddy_header", "prev_index")
    for i, o in free:
        head_at = chunk + heads.offset + o * heads.elem_size
        arena.put(chunk + i * 16 + nxt.offset, 4, arena.get(head_at, 8))
        arena.put(chunk + i * 16 + prev.offset, 4, 65536)
        arena.put(head_at, 8, i)
    raw = bytearray(lay.size("scx_buddy"))
    f = lay.field("scx_buddy", "first_chunk")
    raw[f.offset:f.offset + f.size] = chunk.to_bytes(f.size, "little")
    var = scxalloc.AllocatorVar("sched_buddy", "scx_buddy", "buddy", 2025, ".bss", 0, 0, bytes(raw), k.btf)
    w = scxalloc.walk(arena.mem, arena.info, var, freed=True)
    assert w.error is None and not list(w.damage), list(w.damage)
    assert {b.addr for b in w.blocks} == {chunk + i * 16 for i, _ in tiles[1::2]}
    assert {b.addr for b in w.freed} == {chunk + i * 16 for i, _ in free}


def test_buddy_chunk_with_unreadable_metadata_page_keeps_the_others(btf):
    arena, b = _buddy_world(btf, n=400, seed=3)
    clean = _walk(arena, b, "lab_buddy")
    chunks = b.chunk_list()
    victim = chunks[0]
    # Drop one page of the victim's orders[] from memory: split the region around it.
    page = arena.kva(victim) + 4096
    region_base, buf = arena.mem.regions[0]
    arena.mem.regions = [(region_base, buf[:page - region_base]),
                         (page + 4096, buf[page + 4096 - region_base:])]
    w = _walk(arena, b, "lab_buddy")
    assert w.chunks == chunks
    assert any(f"chunk {victim:#x}: metadata unreadable" in d.reason for d in w.damage)
    others = {x.addr for x in clean.blocks if x.chunk != victim}
    assert {x.addr for x in w.blocks} == others


def test_scx_static_2025_layout():
    """scx_static {max_alloc_bytes, memory, off}: no region chain, the used range from 0."""
    from volatility3_ktstr.core import BtfLayout

    k = SynthKernel("struct scx_static { u64 off; u8 *memory; u64 max_alloc_bytes; };", pad=0)
    lay = BtfLayout(k.btf)
    arena = Arena()
    mem = arena.alloc_pages(4)
    raw = bytearray(lay.size("scx_static"))
    for name, v in (("off", 1000), ("memory", mem), ("max_alloc_bytes", 4 * 4096)):
        f = lay.field("scx_static", name)
        raw[f.offset:f.offset + f.size] = v.to_bytes(f.size, "little")
    var = scxalloc.AllocatorVar("scx_static", "scx_static", "bump", 2025, ".bss", 0, 0, bytes(raw), k.btf)
    w = scxalloc.walk(arena.mem, arena.info, var)
    assert not list(w.damage) and [(b.addr, b.size, b.state) for b in w.blocks] == [(mem, 1000, "used")]
    raw[lay.field("scx_static", "off").offset] = 0xFF
    raw[lay.field("scx_static", "off").offset + 2] = 0x01
    var.value = bytes(raw)
    w = scxalloc.walk(arena.mem, arena.info, var)
    assert any("beyond max_contig_bytes" in d.reason for d in w.damage)
