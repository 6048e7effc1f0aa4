"""sdt_alloc walk on synthetic trees (BTF built in the test, memory in a sparse Memory)."""

import struct

import pytest

from volatility3_ktstr.walkers import sdtalloc, sdtpayload
from volatility3_ktstr.walkers.arena import ArenaInfo

from helpers.btf import BtfBuilder
from helpers.sdt import TreeBuilder, allocator_bytes, sdt_program_btf
from helpers.synth import Memory, SynthKernel

USER = 0x1000_0000_0000
KBASE = 0xFFFF_C900_0000_8000
ELEM = 56


def arena_info(size=1 << 32):
    return ArenaInfo(map_id=3, map_kva=0xFFFF_8880_0100_0000, name="arena", user_vm_start=USER,
                     size=size, kern_vm_start=KBASE, vm_addr=KBASE - 0x8000, page_size=4096)


def stats(pid):
    return struct.pack("<iiQQQQQ", 0, pid, 10 * pid, 0, 1, 2, 3)


def build(live=(), freed=(), racing=(), elem=ELEM, header=8):
    mem = Memory.sparse_pages()
    tb = TreeBuilder(mem, USER, KBASE, elem, header)
    for i in live:
        tb.slot(i, genn=0, payload=stats(1000 + i))
    for i in freed:
        tb.slot(i, genn=1, live=False)
    for i in racing:
        tb.slot(i, racing=True)
    root = tb.finish()
    return mem, tb, root


def walk(mem, root, elem=ELEM, header=None, max_entries=None, btf_header=None):
    btf, _, _ = sdt_program_btf(data_header=btf_header)
    offs = sdtalloc.SdtOffsets.from_btf(btf, header)
    return sdtalloc.walk_allocator(mem, arena_info(), offs, allocator_bytes(elem, root),
                                   "scx_task_allocator", max_entries)


# --- offsets / BTF ---------------------------------------------------------------------------

def test_offsets_from_btf_with_forward_declared_data_and_chunk():
    btf, _, _ = sdt_program_btf(data_header=None, chunk_fwd=True)
    offs = sdtalloc.SdtOffsets.from_btf(btf)
    assert (offs.allocator_size, offs.pool, offs.root, offs.elem_size) == (40, 0, 32, 8)
    assert (offs.desc_size, offs.desc_allocated, offs.desc_nr_free, offs.desc_chunk) == (80, 0, 64, 72)
    assert offs.chunk_union == 0
    assert offs.data_header == 8 and "forward-declared" in offs.header_source


@pytest.mark.parametrize("header", [8, 16])
def test_header_size_comes_from_sdt_data_when_declared(header):
    btf, _, _ = sdt_program_btf(data_header=header, chunk_fwd=False)
    offs = sdtalloc.SdtOffsets.from_btf(btf)
    assert offs.data_header == header and offs.header_source == "btf"
    assert sdtalloc.SdtOffsets.from_btf(btf, header_override=24).data_header == 24


def test_missing_allocator_type_is_an_error():
    w = BtfBuilder()
    w.int("int", 4)
    with pytest.raises(sdtalloc.SdtError, match="scx_allocator"):
        sdtalloc.SdtOffsets.from_btf(w.btf())


def test_find_allocators_through_typedef_and_volatile():
    names = ("a_allocator", "b_allocator", "c_allocator")
    btf, bss, info = sdt_program_btf(allocators=names)
    found = sdtalloc.find_allocators(btf, bss)
    assert [a.name for a in found] == list(names)
    assert [a.offset for a in found] == [info["alloc_offsets"][n] for n in names]
    assert all(a.size == 40 for a in found)


# --- walk ------------------------------------------------------------------------------------

def test_walk_live_slots_and_idx_genn():
    live = [0, 1, 2, 63, 64, 511]
    mem, _, root = build(live=live)
    w = walk(mem, root)
    assert w.error is None and not w.damage
    assert [e.idx for e in w.entries] == live
    assert all(e.genn == 0 and e.hdr_idx == e.idx for e in w.entries)
    assert [struct.unpack_from("<i", e.payload, 4)[0] for e in w.entries] == [1000 + i for i in live]
    assert all(len(e.payload) == ELEM - 8 for e in w.entries)
    assert all(e.user_addr >> 32 == USER >> 32 for e in w.entries)


def test_freed_slots_are_not_live_and_racing_slots_are_silent():
    mem, _, root = build(live=[0, 2, 5], freed=[1, 3, 4], racing=[6, 7])
    w = walk(mem, root)
    assert [e.idx for e in w.entries] == [0, 2, 5]
    assert not w.damage


def test_internal_levels_descend_every_child_full_or_not():
    # pos0 0 and 1; the first leaf full (parent bit set), others partial.
    live = list(range(512)) + [(1 << 9) + 3, (1 << 18) + 7, (1 << 18) + (5 << 9) + 511]
    mem, tb, root = build(live=live)
    leaf0 = tb.descs[(2, 0)][0]
    assert tb.nr_free[leaf0] == 0
    mid0 = tb.descs[(1, 0)][0]
    assert tb.bitmaps[mid0][0] & 1     # parent bit for the full leaf
    w = walk(mem, root)
    assert [e.idx for e in w.entries] == live
    assert w.descs == 1 + 2 + 4


def test_unreadable_subtree_is_counted_and_reported():
    live = [1, (1 << 9) + 1, (2 << 9) + 1]
    mem, tb, root = build(live=live)
    leaf1, chunk1 = tb.descs[(2, 1 << 9)]
    mem.unmap(tb.kbase + (chunk1 & 0xFFFFFFFF))
    leaf2, _ = tb.descs[(2, 2 << 9)]
    mem.unmap(tb.kbase + (leaf2 & 0xFFFFFFFF))
    w = walk(mem, root)
    assert [e.idx for e in w.entries] == [1]
    assert len(w.damage) == 2
    reasons = sorted(d.reason for d in w.damage)
    assert reasons[0].startswith("chunk unreadable") and reasons[1].startswith("descriptor unreadable")
    assert {d.index for d in w.damage} == {1 << 9, 2 << 9}
    assert {d.what for d in w.damage} == {"leaf subtree"}


def test_cycle_is_detected():
    mem, tb, root = build(live=[3])
    _, chunk0 = tb.descs[(0, 0)]
    # Level-0 chunk slot 1 points back at the root descriptor.
    tb.put(chunk0 + 8, root.to_bytes(8, "little"))
    w = walk(mem, root)
    assert [e.idx for e in w.entries] == [3]
    assert len(w.damage) == 1 and "already visited" in w.damage.items[0].reason
    assert w.damage.items[0].kind == "cycle"


def test_bad_nr_free_and_foreign_pointers():
    mem, tb, root = build(live=[1, (1 << 9) + 2])
    leaf1, chunk1 = tb.descs[(2, 1 << 9)]
    tb.put(leaf1 + 64, (9999).to_bytes(8, "little"))
    _, chunk0 = tb.descs[(0, 0)]
    tb.put(chunk0 + 16, (0x7777_0000_1000).to_bytes(8, "little"))
    w = walk(mem, root)
    assert [e.idx for e in w.entries] == [1]
    reasons = sorted(d.reason for d in w.damage)
    assert any("nr_free 9999" in r for r in reasons)
    assert any("outside the arena" in r for r in reasons)


def test_unreadable_slot_is_reported():
    mem, tb, root = build(live=[0])
    leaf, chunk = tb.descs[(2, 0)]
    slot = int.from_bytes(mem.read(tb.kbase + (chunk & 0xFFFFFFFF), 8), "little")
    mem.unmap(tb.kbase + (slot & 0xFFFFFFFF))
    w = walk(mem, root)
    assert w.entries == [] and len(w.damage) == 1 and w.damage.items[0].what == "slot"


@pytest.mark.parametrize("elem,msg", [(8, "outside 16..4096"), (8192, "outside 16..4096")])
def test_bad_elem_size(elem, msg):
    mem, _, root = build(live=[0])
    w = walk(mem, root, elem=elem)
    assert w.entries == [] and msg in w.error.reason


def test_elem_smaller_than_header():
    mem, _, root = build(live=[0])
    w = walk(mem, root, elem=16, header=24)
    assert "smaller than the 24-byte header" in w.error.reason


def test_uninitialised_and_empty_allocators():
    mem = Memory.sparse_pages()
    btf, _, _ = sdt_program_btf()
    offs = sdtalloc.SdtOffsets.from_btf(btf)
    w = sdtalloc.walk_allocator(mem, arena_info(), offs, allocator_bytes(0, 0), "x")
    assert "not initialised" in w.error.reason
    w = sdtalloc.walk_allocator(mem, arena_info(), offs, allocator_bytes(56, 0), "x")
    assert w.error is None and w.entries == []


def test_no_kernel_window():
    mem, _, root = build(live=[0])
    btf, _, _ = sdt_program_btf()
    offs = sdtalloc.SdtOffsets.from_btf(btf)
    info = arena_info()
    info.kern_vm_start = 0
    info.error = "bpf_arena.kern_vm is NULL"
    w = sdtalloc.walk_allocator(mem, info, offs, allocator_bytes(56, root), "x")
    assert "no kernel window" in w.error.reason


def test_max_entries_truncates():
    mem, _, root = build(live=range(10))
    w = walk(mem, root, max_entries=4)
    assert [e.idx for e in w.entries] == [0, 1, 2, 3] and w.truncated


def test_sixteen_byte_header():
    mem = Memory.sparse_pages()
    tb = TreeBuilder(mem, USER, KBASE, 64, header=16)
    tb.slot(5, genn=2, payload=stats(42))
    root = tb.finish()
    w = walk(mem, root, elem=64, btf_header=16)
    assert [(e.idx, e.genn) for e in w.entries] == [(5, 2)]
    assert struct.unpack_from("<i", w.entries[0].payload, 4)[0] == 42
    assert len(w.entries[0].payload) == 48


# --- payload type ----------------------------------------------------------------------------

def test_discover_single_candidate():
    btf, _, info = sdt_program_btf(kernel_types=False)
    tid, reason = sdtpayload.discover_payload_type(btf, 48, "scx_task_allocator")
    assert tid == info["scx_stats"] and "scx_stats" in reason


def test_library_and_kernel_types_are_not_candidates():
    # scx_alloc_stats (library) and vtime (kernel) are 48 bytes too.
    btf, _, info = sdt_program_btf(payloads=())
    tid, reason = sdtpayload.discover_payload_type(btf, 48, "scx_task_allocator",
                                                 is_foreign={"vtime"}.__contains__)
    assert tid == 0 and "no struct of 48 bytes" in reason
    tid, _ = sdtpayload.discover_payload_type(btf, 48, "scx_task_allocator")
    assert tid == info["vtime"]   # without the kernel filter the kernel struct would win


def test_discover_prefers_stem_then_patterns():
    btf, _, info = sdt_program_btf(payloads=(("task_ctx", 32), ("foo_ctx", 32), ("bar", 32)))
    tid, reason = sdtpayload.discover_payload_type(btf, 32, "scx_task_allocator")
    assert tid == info["task_ctx"] and "task_ctx" in reason
    btf, _, info = sdt_program_btf(payloads=(("cpu", 32), ("task_ctx", 32)))
    tid, reason = sdtpayload.discover_payload_type(btf, 32, "scx_cpu_allocator")
    assert tid == info["cpu"] and "stem" in reason
    btf, _, info = sdt_program_btf(payloads=(("a", 32), ("b", 32)))
    tid, reason = sdtpayload.discover_payload_type(btf, 32, "scx_task_allocator")
    assert tid == 0 and reason.startswith("ambiguous: 2 structs")
    assert sdtpayload.discover_payload_type(btf, 0, "x") == (0, "payload size is 0")


def test_explicit_type_and_identity():
    btf, _, info = sdt_program_btf()
    tid, reason = sdtpayload.resolve_payload_type(btf, 48, "x", type_name="struct scx_stats")
    assert tid == info["scx_stats"] and reason == "--type struct scx_stats"
    tid, reason = sdtpayload.resolve_payload_type(btf, 40, "x", type_name="scx_stats")
    assert "48 bytes, payload 40" in reason
    assert sdtpayload.resolve_payload_type(btf, 48, "x", type_name="nope")[0] == 0
    ident = sdtpayload.payload_identity(btf, info["scx_stats"])
    assert (ident.kind, ident.offset, ident.size, ident.signed) == ("pid", 4, 4, True)
    assert sdtpayload.identity_value(ident, stats(77)) == 77
    assert sdtpayload.identity_value(ident, b"\0" * 6) is None


# --- slot index ------------------------------------------------------------------------------

def test_slots_lookup_and_render():
    live = [0, 1, 700]
    mem, tb, root = build(live=live, freed=[2])
    btf, bss, info = sdt_program_btf(kernel_types=False)
    bss_bytes = bytearray(info["bss_size"])
    off = info["alloc_offsets"]["scx_task_allocator"]
    bss_bytes[off:off + 40] = allocator_bytes(ELEM, root)
    slots = sdtalloc.SdtSlots.from_program(mem, btf, bss, bytes(bss_bytes), arena_info())
    assert len(slots) == 3
    e700 = next(e for w, _, _ in slots.walks for e in w.entries if e.idx == 700)
    hit = slots.lookup(e700.user_addr)
    assert hit.entry.idx == 700 and hit.allocator == "scx_task_allocator"
    assert slots.lookup(e700.user_addr + 8).entry.idx == 700      # payload pointer
    assert slots.lookup(e700.user_addr + 4) is None
    assert slots.lookup(e700.user_addr & 0xFFFFFFFF).entry.idx == 700
    value = slots.render(hit)
    assert value["pid"] == 1700
    # A freed slot is not a hit.
    _, chunk = tb.descs[(2, 0)]
    freed_ptr = int.from_bytes(mem.read(tb.kbase + (chunk & 0xFFFFFFFF) + 16, 8), "little")
    assert freed_ptr and slots.lookup(freed_ptr) is None


def test_render_payload_hex_fallback():
    btf, _, _ = sdt_program_btf()
    v = sdtpayload.render_payload(btf, 0, b"\x01\x02", "no struct of 2 bytes")
    assert v["reason"] == "no struct of 2 bytes" and len(v["hex"]) == 2


# --- programs in a dump ----------------------------------------------------------------------

def _kernel_layout():
    """bpf_array with its members off their kernel offsets (the .bss value is at ``value``)."""
    return SynthKernel("struct bpf_array { u32 pad; u32 elem_size; u64 value[0]; };").layout


def test_find_programs_attributes_and_walks():
    from volatility3_ktstr.bpf.maps import BpfMap

    mem, _, root = build(live=[0, 1, 2])
    btf, bss, info = sdt_program_btf(kernel_types=False)
    value = bytearray(info["bss_size"])
    off = info["alloc_offsets"]["scx_task_allocator"]
    value[off:off + 40] = allocator_bytes(ELEM, root)
    bss_kva = 0xFFFF_8880_0500_0000
    layout = _kernel_layout()
    mem.write(bss_kva + layout.offset("bpf_array", "value"), bytes(value))
    maps = [BpfMap(kva=bss_kva, id=6, type_name="array", name="scx_sdt.bss",
                   value_size=len(value), btf_kva=0xB7F, btf_value_type_id=bss),
            BpfMap(kva=0x1, id=7, type_name="array", name="broken.bss", value_size=8,
                   btf_kva=0xBAD, btf_value_type_id=1),
            BpfMap(kva=0x2, id=8, type_name="array", name="other.rodata", value_size=8,
                   btf_kva=0xB7F, btf_value_type_id=1)]

    def btf_at(kva):
        if kva == 0xBAD:
            raise ValueError("corrupt BTF")
        return btf

    progs = sdtalloc.find_programs(mem, layout, maps, btf_at, [arena_info()], [])
    assert [(p.scheduler, p.error is None) for p in progs] == [("scx_sdt", True), ("broken", False)]
    good = progs[0]
    assert "the only arena" in good.arena_how and len(good.slots) == 3
    assert [a.name for a in good.allocators] == ["scx_task_allocator"]
    walk, tid, reason = good.slots.walks[0]
    assert tid == info["scx_stats"] and [e.idx for e in walk.entries] == [0, 1, 2]
    assert "corrupt BTF" in progs[1].error.reason
    # No arena at all: the program is reported, not walked.
    progs = sdtalloc.find_programs(mem, layout, maps[:1], btf_at, [], [])
    assert progs[0].slots is None and "cannot tell which of 0" in progs[0].error.reason


def test_scheduler_name_falls_back_to_struct_ops():
    from volatility3_ktstr.bpf.maps import BpfMap

    bss = BpfMap(kva=1, id=1, type_name="array", name=".bss", btf_kva=0xB)
    ops = BpfMap(kva=2, id=2, type_name="struct_ops", name="sdt_ops", btf_kva=0xB)
    assert sdtalloc.scheduler_name(bss, [bss, ops]) == "sdt_ops"
    assert sdtalloc.scheduler_name(bss, [bss]) == "?"
