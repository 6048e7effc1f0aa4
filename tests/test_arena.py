"""Arena window and pointer translation on synthetic memory (no dump needed).

Two layouts: a synthetic kernel with every member off its kernel offset, and the real x86-64
kernel BTF when KTSTR_DUMPS is set. Memory is written through the layout only."""

import pytest

from helpers.synth import Memory, SynthKernel, layout_fixture
from volatility3_ktstr.core import ReadError
from volatility3_ktstr.walkers import arena

MAP_KVA = 0xFFFF_8880_0100_0000
VM_KVA = 0xFFFF_8880_0200_0000
VM_ADDR = 0xFFFF_C900_0000_0000
USER = 0x1000_0000_0000

ARENA_DECLS = """
struct vm_struct { struct vm_struct *next; void *addr; unsigned long size; };
struct bpf_arena { u64 user_vm_start; u64 user_vm_end; struct vm_struct *kern_vm; };
struct task_struct { int pid; };
"""


layout = layout_fixture(lambda: SynthKernel(ARENA_DECLS).layout)


def make_arena(layout, user=USER, user_end=None, kern_vm=VM_KVA, vm_addr=VM_ADDR):
    mem = Memory.sparse_pages(layout)
    mem.write(MAP_KVA, bytes(layout.size("bpf_arena")))
    mem.put("bpf_arena", MAP_KVA, user_vm_start=user, kern_vm=kern_vm,
            user_vm_end=user_end if user_end is not None else user + (1 << 32))
    mem.write(VM_KVA, bytes(layout.size("vm_struct")))
    mem.set("vm_struct", VM_KVA, "addr", vm_addr)
    info = arena.read_arena_info(mem, layout, MAP_KVA, 3, 4096, max_entries=1 << 20, name="arena")
    return mem, layout, info


@pytest.mark.parametrize("page,half", [(4096, 32768), (16384, 32768), (65536, 65536)])
def test_guard_half_by_page_size(page, half):
    assert arena.guard_half(page) == half


def test_read_info_and_window(layout):
    _, _, info = make_arena(layout)
    assert info.error is None and info.usable
    assert info.user_vm_start == USER
    assert info.size == 1 << 32
    assert info.kern_vm_start == VM_ADDR + 32768
    assert arena.arena_to_kernel(info, USER + 0x4010) == VM_ADDR + 32768 + 0x4010
    # A bare 32-bit offset translates the same.
    assert info.to_kernel(0x4010) == info.to_kernel(USER + 0x4010)


def test_read_arena_through_window(layout):
    mem, _, info = make_arena(layout)
    mem.write(info.kern_vm_start + 0x8000, b"hello arena")
    assert arena.read_arena(mem, info, USER + 0x8000, 11) == b"hello arena"
    with pytest.raises(ReadError):
        arena.read_arena(mem, info, USER + 0x20000, 8)


def test_owns_checks_upper_bits_and_span(layout):
    _, _, info = make_arena(layout, user_end=USER + 0x10_0000)
    assert info.owns(USER + 0x10)
    assert info.owns(0x10)
    assert not info.owns(USER + 0x10_0000)
    assert not info.owns(0x2000_0000_0010)


def test_size_falls_back_to_max_entries_when_end_is_bogus(layout):
    _, _, info = make_arena(layout, user_end=0)
    assert info.size == min((1 << 20) * 4096, 1 << 32)


def test_null_kern_vm_and_unreadable_vm_struct(layout):
    _, _, info = make_arena(layout, kern_vm=0)
    assert not info.usable and "kern_vm is NULL" in info.error
    assert info.user_vm_start == USER
    _, _, info = make_arena(layout, kern_vm=0xFFFF_8880_0300_0000)
    assert not info.usable and "unreadable" in info.error
    with pytest.raises(ReadError):
        arena.read_arena(Memory.sparse_pages(), info, USER, 8)


def test_unreadable_arena_struct(layout):
    info = arena.read_arena_info(Memory.sparse_pages(), layout, MAP_KVA, 7, 4096, max_entries=16)
    assert info.error and "bpf_arena" in info.error and info.size == 16 * 4096


def test_mapped_pages_splits_runs_into_pages(layout):
    _, _, info = make_arena(layout, user_end=USER + 16 * 4096)
    k = info.kern_vm_start
    runs = [(k + 0x1000, 0x2000, 0x5000, 0x2000, "memory_layer"),
            (k + 0x8000, 0x1000, 0x9000, 0x1000, "memory_layer")]
    seen = []

    def mapping(offset, length):
        seen.append((offset, length))
        return iter(runs)

    pages = list(arena.mapped_pages(info, mapping))
    assert seen == [(k, 16 * 4096)]
    assert [(p.user_addr - USER, p.phys) for p in pages] == [(0x1000, 0x5000), (0x2000, 0x6000),
                                                            (0x8000, 0x9000)]
    assert len(list(arena.mapped_pages(info, mapping, limit=2))) == 2


def test_arena_infos_picks_arena_maps_only(layout):
    from volatility3_ktstr.bpf.maps import BpfMap

    mem, layout, _ = make_arena(layout)
    maps = [BpfMap(kva=MAP_KVA, id=3, type_name="arena", name="arena", max_entries=1 << 20),
            BpfMap(kva=0x1234, id=4, type_name="array", name="x.bss")]
    infos = arena.arena_infos(mem, layout, maps, 4096)
    assert [i.map_id for i in infos] == [3] and infos[0].usable


def test_arena_for_program_attribution_order():
    from types import SimpleNamespace as NS

    a1 = arena.ArenaInfo(map_id=3, map_kva=0xA1, user_vm_start=USER, size=1 << 32)
    a2 = arena.ArenaInfo(map_id=5, map_kva=0xA2, user_vm_start=2 * USER, size=1 << 32)
    bss = 0xB55
    p1 = NS(kva=0x1, btf_kva=0xBF1, used_map_kvas=[bss, 0xA2], name="sched_enqueue")
    p2 = NS(kva=0x2, btf_kva=0xBF2, used_map_kvas=[0xA1], name="other")
    # aux->arena wins over used_maps.
    got, how = arena.arena_for_program([a1, a2], [p1, p2], 0xBF1, (bss,), None, {0x1: 0xA1})
    assert got is a1 and how.startswith("bpf_prog_aux.arena of sched_enqueue")
    got, how = arena.arena_for_program([a1, a2], [p1, p2], 0xBF1, (bss,))
    assert got is a2 and how.startswith("bpf_prog_aux.used_maps")
    # No program info: the pointer's upper bits decide.
    got, how = arena.arena_for_program([a1, a2], [], 0xBF1, (bss,), 2 * USER + 0x4000)
    assert got is a2 and "range" in how
    got, how = arena.arena_for_program([a1, a2], [], 0xBF1, (bss,), 0x4000)
    assert got is None and "cannot tell which of 2" in how
    got, how = arena.arena_for_program([a1], [], 0xBF1)
    assert got is a1 and how == "the only arena map"


def test_prog_arena_kva_reads_aux():
    k = SynthKernel(ARENA_DECLS + "struct bpf_prog_aux { u64 id; struct bpf_arena *arena; };")
    mem = Memory.sparse_pages(k.layout)
    mem.write(0xFFFF_8880_0000_1000, bytes(k.layout.size("bpf_prog_aux")))
    mem.set("bpf_prog_aux", 0xFFFF_8880_0000_1000, "arena", 0xA1)
    assert arena.prog_arena_kva(mem, k.layout, 0xFFFF_8880_0000_1000) == 0xA1
    assert arena.prog_arena_kva(mem, k.layout, 0xFFFF_8880_0009_0000) == 0
    # a kernel without bpf_prog_aux.arena (before 6.9): no arena from the aux
    assert arena.prog_arena_kva(mem, SynthKernel(ARENA_DECLS).layout, 0xFFFF_8880_0000_1000) == 0
