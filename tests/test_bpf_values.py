"""Value walkers on synthetic kernel memory: a synthetic kernel whose map structs have no
member at its kernel offset, and the real x86-64 kernel BTF when KTSTR_DUMPS is set."""

import struct

import pytest

from helpers.bpf import BPF_DECLS, ELEMS, MAP, PCPU, htab, put, set_next
from helpers.synth import SynthKernel, layout_fixture
from volatility3_ktstr.bpf import values
from volatility3_ktstr.bpf.maps import BpfMap
from volatility3_ktstr.core import BufferReader

layout = layout_fixture(lambda: SynthKernel(BPF_DECLS).layout)


def test_synthetic_offsets_are_not_the_kernels():
    """The synthetic layout must differ where a walker could hard-code an offset."""
    L = SynthKernel(BPF_DECLS).layout
    assert L.offset("htab_elem", "hash_node") != 0 and L.offset("hlist_nulls_node", "next") != 0
    assert L.offset("bucket", "head") != 0 and L.offset("hlist_nulls_head", "first") != 0


def test_array(layout):
    vo = layout.offset("bpf_array", "value")
    mem = BufferReader({MAP: bytes(vo + 3 * 16)})
    put(mem, MAP + layout.offset("bpf_array", "elem_size"), "<I", 16)
    for i in range(3):
        put(mem, MAP + vo + 16 * i, "<Q4s", 100 + i, b"abcd")
    m = BpfMap(kva=MAP, id=1, type_name="array", key_size=4, value_size=12, max_entries=3)
    info = values.WalkInfo()
    es = list(values.iter_entries(mem, layout, m, limit=2, info=info))
    assert [e.index for e in es] == [0, 1] and info.truncated and info.total == 3
    assert es[1].key == b"\1\0\0\0" and es[1].value == struct.pack("<Q4s", 101, b"abcd")


def test_array_unreadable_tail_is_an_entry_error(layout):
    vo = layout.offset("bpf_array", "value")
    mem = BufferReader({MAP: bytes(vo + 8)})   # room for 1 of 2 elements
    m = BpfMap(kva=MAP, id=1, type_name="array", key_size=4, value_size=8, max_entries=2)
    es = list(values.iter_entries(mem, layout, m))
    assert es[0].value == bytes(8) and es[0].error is None
    assert es[1].value is None and "unreadable" in es[1].error


def test_percpu_array(layout):
    po = layout.first("bpf_array", "pptrs", "value")
    mem = BufferReader({MAP: bytes(po + 16), PCPU: bytes(0x3000)})
    put(mem, MAP + po, "<QQ", PCPU, 0)
    offsets = [0, 0x1000, 0x2000]
    for cpu, off in enumerate(offsets):
        put(mem, PCPU + off, "<Q", 7 + cpu)
    m = BpfMap(kva=MAP, id=2, type_name="percpu_array", key_size=4, value_size=8, max_entries=2)
    es = list(values.iter_entries(mem, layout, m, offsets))
    assert es[0].percpu == [(0, struct.pack("<Q", 7)), (1, struct.pack("<Q", 8)), (2, struct.pack("<Q", 9))]
    assert es[1].error == "NULL per-CPU pointer"
    # a zero offset after CPU 0 is not a CPU (would alias CPU 0)
    es = list(values.iter_entries(mem, layout, m, [0, 0]))
    assert es[0].percpu[1] == (1, None)
    with pytest.raises(values.ValueError_):
        list(values.iter_entries(mem, layout, m, []))


def test_hash_chains(layout):
    chains = {1: [(ELEMS, b"k1\0\0", b"v1v1v1v1"), (ELEMS + 0x100, b"k2\0\0", b"v2v2v2v2")],
              3: [(ELEMS + 0x200, b"k3\0\0", b"v3v3v3v3")]}
    mem, m = htab(layout, chains=chains)
    info = values.WalkInfo()
    es = list(values.iter_entries(mem, layout, m, info=info))
    assert [(e.key, e.value) for e in es] == [(b"k1\0\0", b"v1v1v1v1"), (b"k2\0\0", b"v2v2v2v2"),
                                              (b"k3\0\0", b"v3v3v3v3")]
    assert not info.skipped and info.shown == 3
    es = list(values.iter_entries(mem, layout, m, limit=2, info=(info := values.WalkInfo())))
    assert len(es) == 2 and info.truncated and info.total == 3


def test_hash_cycle_and_bad_node(layout):
    node_off = layout.offset("htab_elem", "hash_node")
    chains = {0: [(ELEMS, b"a\0\0\0", b"11111111"), (ELEMS + 0x100, b"b\0\0\0", b"22222222")],
              2: [(ELEMS + 0x200, b"c\0\0\0", b"33333333")]}
    mem, m = htab(layout, chains=chains)
    set_next(mem, layout, ELEMS + 0x100, ELEMS + node_off)                  # b -> a: a cycle
    set_next(mem, layout, ELEMS + 0x200, 0xFFFF888077770000)                # c -> unmapped
    info = values.WalkInfo()
    es = list(values.iter_entries(mem, layout, m, info=info))
    assert [e.key[:1] for e in es] == [b"a", b"b", b"c"]
    reasons = [r for _, r in info.skipped]
    assert any("cycle" in r for r in reasons) and any("unreadable" in r for r in reasons)


def test_percpu_hash(layout):
    mem, m = htab(layout, chains={0: [(ELEMS, b"kk\0\0", PCPU)]}, percpu=True)
    put(mem, PCPU, "<Q", 5)
    put(mem, PCPU + 0x1000, "<Q", 6)
    es = list(values.iter_entries(mem, layout, m, [0, 0x1000]))
    assert es[0].percpu == [(0, struct.pack("<Q", 5)), (1, struct.pack("<Q", 6))]


def test_hash_implausible_header(layout):
    mem, m = htab(layout)
    put(mem, MAP + layout.offset("bpf_htab", "n_buckets"), "<I", 3)   # not a power of two
    with pytest.raises(values.ValueError_, match="implausible"):
        list(values.iter_entries(mem, layout, m))


def test_unknown_type_says_so(layout):
    m = BpfMap(kva=MAP, id=9, type_name="bloom_filter", value_size=8)
    with pytest.raises(values.ValueError_, match="no value walker"):
        values.iter_entries(BufferReader({}), layout, m)


def test_struct_ops_value(layout):
    ko = layout.offset("bpf_struct_ops_map", "kvalue")
    uo = layout.offset("bpf_struct_ops_map", "uvalue")
    mem = BufferReader({MAP: bytes(ko + 64), ELEMS: bytes(64)})
    mem.write(MAP + ko, b"K" * 16)
    put(mem, MAP + uo, "<Q", ELEMS)
    mem.write(ELEMS, b"U" * 16)
    m = BpfMap(kva=MAP, id=4, type_name="struct_ops", value_size=16)
    k, u, addr = values.struct_ops_value(mem, layout, m)
    assert (k, u, addr) == (b"K" * 16, b"U" * 16, MAP + ko)


RECORD_DECLS = BPF_DECLS.replace(
    "struct bpf_map { u32 map_type; u32 key_size; u32 value_size; u32 max_entries; };",
    "struct btf_field { u32 offset; u32 size; u32 type; };\n"
    "struct btf_record { u32 cnt; u32 field_mask; int spin_lock_off; struct btf_field fields[0]; };\n"
    "struct bpf_map { u32 map_type; u32 key_size; u32 value_size; u32 max_entries; "
    "struct btf_record *record; };")


def test_special_fields_read_as_the_kernel_copies_them():
    """A value's bpf_timer / spin lock (map->record) reads as zeros, as bpftool shows it (the
    kernel never copies special fields out); the bytes around them are kept. A NULL or ERR_PTR
    record, or one whose count is absurd, masks nothing."""
    L = SynthKernel(RECORD_DECLS).layout
    rec = MAP + 0x8000
    vo = L.offset("bpf_array", "value")
    mem = BufferReader({MAP: bytes(0x10000)})
    put(mem, MAP + L.offset("bpf_array", "elem_size"), "<I", 24)
    value = struct.pack("<QQQ", 0x1111, 0xFFFF8880DEADBEEF, 0x3333)   # a 8-byte "timer" at 8
    put(mem, MAP + vo, "<24s", value)
    esize, fields = L.size("btf_field"), L.offset("btf_record", "fields")
    put(mem, rec + L.offset("btf_record", "cnt"), "<I", 1)
    put(mem, rec + fields + L.offset("btf_field", "offset"), "<I", 8)
    put(mem, rec + fields + L.offset("btf_field", "size"), "<I", 8)
    m = BpfMap(kva=MAP, id=1, type_name="array", key_size=4, value_size=24, max_entries=1)
    for ptr, want in ((rec, struct.pack("<QQQ", 0x1111, 0, 0x3333)), (0, value),
                      ((1 << 64) - 22, value)):
        put(mem, MAP + L.offset("bpf_map", "record"), "<Q", ptr)
        (e,) = values.iter_entries(mem, L, m)
        assert e.value == want, hex(ptr)
    put(mem, MAP + L.offset("bpf_map", "record"), "<Q", rec)
    put(mem, rec + L.offset("btf_record", "cnt"), "<I", 1 << 20)
    assert values.special_fields(mem, L, MAP) == []
    assert esize and values.as_copied(b"\1" * 4, [(2, 8)]) == b"\1\1\0\0"
