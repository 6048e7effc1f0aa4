"""linux.ktstr.localstorage rows on synthetic memory (no dump, no `vol`): owners, sorting,
--pid, summary and --verbose rows, hex fallback, BTF rendering, arena slot payloads.

The plugin module is loaded from its file under a private name (library code never imports
plugin modules; a test may, as long as Volatility does not also list it)."""

import json

import pytest

from helpers.btf import BtfBuilder
from helpers.localstorage import UNMAPPED, Synth, handmade_btf, val
from volatility3_ktstr.bpf.maps import BpfMap
from volatility3_ktstr.btf import Btf
from volatility3_ktstr.core import BtfLayout
from volatility3_ktstr.kernel_model import Kernel
from volatility3_ktstr.walkers import localstorage as ls
from volatility3_ktstr.walkers.owners import OwnerResolver
from volatility3_ktstr.walkers.sdtalloc import SdtEntry, SlotHit

from volatility3_ktstr.views import NA
from volatility3_ktstr.views import localstorage as view

COLUMNS = ["MapId", "MapName", "OwnerKind", "Owner", "PID", "TGID", "Comm", "OwnerId", "OwnerName",
           "Value", "ValueHex", "Formatted", "Element", "Note"]
PROG_BTF_KVA = 0xFFFF_8880_1234_0000


def prog_btf():
    """struct val { u32 a; u32 b; struct sdt_data *data; } with sdt_data forward-declared."""
    b = BtfBuilder()
    u32 = b.int("u32", 4)
    fwd = b.fwd("sdt_data")
    ptr = b.ptr(fwd)
    vid = b.struct("val", 16, [("a", u32, 0), ("b", u32, 32), ("data", ptr, 64)])
    return Btf.parse(b.build(), source="prog"), vid


def world_kernel(syn, btf=None):
    """The kernel type over a Synth world, with the program BTF at PROG_BTF_KVA when given."""
    return Kernel(syn.reader(), syn.L, btf_cache={PROG_BTF_KVA: btf} if btf is not None else {})


class NoArenas:
    def for_map(self, m):
        return None, None, None


def rows_of(kctx, m, pids=(), verbose=False, arenas=None, budget=None):
    offs = ls.LocalStorageOffsets.from_layout(kctx.layout)
    assert view.GRID.names() == COLUMNS
    gen = view._map_rows(kctx, offs, m, budget or ls.VisitBudget(),
                         OwnerResolver(kctx.reader, kctx.layout), set(pids), verbose,
                         arenas or NoArenas())
    out = []
    for level, row in gen:
        assert level == 0 and len(row) == len(COLUMNS)
        out.append(dict(zip(COLUMNS, row)))
    return out


def na(v):
    return v is NA


def task_map(syn, btf_kva=0, value_size=16, type_id=0):
    smap = syn.smap(2)
    m = BpfMap(kva=smap, id=7, type=29, type_name="task_storage", name="task_ctx",
               value_size=value_size, btf_kva=btf_kva, btf_value_type_id=type_id)
    return smap, m


@pytest.fixture(scope="module")
def layout():
    return BtfLayout(handmade_btf())


@pytest.fixture
def syn(layout):
    return Synth(layout)


def test_task_rows_sorted_with_summary(syn):
    smap, m = task_map(syn)
    for pid, bucket in ((30, 1), (10, 3), (20, 1)):
        t = syn.task(pid, 1, f"p{pid}")
        s = syn.storage(t)
        syn.field(t, "task_struct", "bpf_storage", s)
        syn.elem(smap, bucket, s, val(pid, 16))
    rows = rows_of(world_kernel(syn), m)
    data, summary = rows[:-1], rows[-1]
    assert [r["PID"] for r in data] == [10, 20, 30]
    assert [r["Comm"] for r in data] == ["p10", "p20", "p30"]
    assert all(r["OwnerKind"] == "task" and r["Note"] == "" and r["TGID"] == 1 for r in data)
    assert data[0]["ValueHex"] == val(10, 16).hex() and data[0]["Value"] == val(10, 16).hex(" ")
    f = json.loads(data[0]["Formatted"])
    assert f["value"] == ["0x0a"] * 16 and "formatted" not in f and f["owner"] == hex(data[0]["Owner"])
    assert summary["OwnerKind"] == "summary" and summary["Owner"] == smap
    assert summary["Note"] == "3 elements in 4 buckets; values as hex: map has no BTF"
    assert na(summary["PID"]) and na(summary["OwnerId"])


def test_pid_filter(syn):
    smap, m = task_map(syn)
    for pid in (5, 6, 7):
        syn.elem(smap, pid % 4, syn.storage(syn.task(pid, pid, "x")), val(pid, 16))
    rows = rows_of(world_kernel(syn), m, pids=[6])
    assert [r["PID"] for r in rows if r["OwnerKind"] == "task"] == [6]
    assert rows[-1]["Note"].startswith("3 elements")   # the summary still counts the map


def test_unresolved_owners_keep_address_and_reason(syn):
    smap, m = task_map(syn)
    syn.elem(smap, 0, 0, val(1, 16))
    syn.elem(smap, 1, 0, val(2, 16))
    syn.elem(smap, 2, syn.storage(UNMAPPED), val(3, 16))
    rows = rows_of(world_kernel(syn), m)[:-1]
    notes = sorted(r["Note"] for r in rows)
    assert notes[0].startswith("local_storage is NULL") and notes[1].startswith("local_storage is NULL")
    assert "unreadable" in notes[2]
    bad = [r for r in rows if r["Owner"] == UNMAPPED]
    assert len(bad) == 1 and na(bad[0]["PID"]) and "unreadable" in bad[0]["OwnerName"]


def test_verbose_problem_rows(syn):
    smap, m = task_map(syn)
    e = syn.elem(smap, 0, 0, val(1, 16))
    syn.set_next(e, UNMAPPED)
    quiet = rows_of(world_kernel(syn), m)
    assert [r["OwnerKind"] for r in quiet] == ["task", "summary"]
    assert "1 chains broken" in quiet[-1]["Note"] and "--verbose" in quiet[-1]["Note"]
    loud = rows_of(world_kernel(syn), m, verbose=True)
    assert [r["OwnerKind"] for r in loud] == ["task", "problem", "summary"]
    assert loud[1]["Owner"] == UNMAPPED - syn.offs.map_node and "element unreadable" in loud[1]["Note"]
    assert "--verbose" not in loud[-1]["Note"]


def test_rejected_and_unreadable_maps(syn):
    smap, m = task_map(syn)
    m.error = "struct bpf_map unreadable: unmapped"
    rows = rows_of(world_kernel(syn), m)
    assert len(rows) == 1 and rows[0]["Note"].startswith("not walked: struct bpf_map unreadable")
    m2 = BpfMap(kva=UNMAPPED, id=8, type_name="cgrp_storage", name="c", value_size=8)
    rows = rows_of(world_kernel(syn), m2)
    assert rows[0]["OwnerKind"] == "summary" and "not walked" in rows[0]["Note"]


def test_btf_rendering_and_broken_btf(syn):
    btf, vid = prog_btf()
    smap, m = task_map(syn, PROG_BTF_KVA, 16, vid)
    value = (3).to_bytes(4, "little") + (4).to_bytes(4, "little") + (0x1000_0000_4000).to_bytes(8, "little")
    syn.elem(smap, 0, syn.storage(syn.task(9, 9, "nine")), value)
    row = rows_of(world_kernel(syn, btf), m)[0]
    assert row["Value"] == "{a=3 b=4 data=0x100000004000}"
    assert json.loads(row["Formatted"])["formatted"]["value"] == {"a": 3, "b": 4, "data": "0x100000004000"}
    rows = rows_of(world_kernel(syn, None), m)   # the program BTF cannot be read: hex, said once
    assert rows[0]["Value"] == value.hex(" ")
    assert "values as hex: BTF object at" in rows[-1]["Note"]


class FakeArena:
    usable = True
    kern_vm_start = 0

    def owns(self, ptr):
        return ptr >> 32 == 0x1000


class FakeSlots:
    def __init__(self, ptr):
        self.ptr = ptr

    def lookup(self, ptr):
        if ptr != self.ptr:
            return None
        return SlotHit("task_allocator", SdtEntry(5, 2, 5, ptr, b"\x01\x02"), 0, "no type", None)

    def render(self, hit):
        return {"hex": ["0x01", "0x02"], "reason": hit.type_reason}


class SlotArenas:
    def __init__(self, ptr):
        self.ptr = ptr

    def for_map(self, m):
        return FakeArena(), FakeSlots(self.ptr), None


def test_arena_slot_payload_attached(syn):
    btf, vid = prog_btf()
    smap, m = task_map(syn, PROG_BTF_KVA, 16, vid)
    ptr = 0x1000_0000_4000
    value = bytes(8) + ptr.to_bytes(8, "little")
    syn.elem(smap, 0, syn.storage(syn.task(9, 9, "nine")), value)
    syn.elem(smap, 1, syn.storage(syn.task(10, 10, "ten")), bytes(8) + (ptr + 64).to_bytes(8, "little"))
    rows = rows_of(world_kernel(syn, btf), m, arenas=SlotArenas(ptr))
    f = json.loads(rows[0]["Formatted"])["formatted"]["value"]["data"]
    assert f == {"ptr": hex(ptr), "slot": {"allocator": "task_allocator", "idx": 5, "genn": 2},
                 "payload": {"hex": ["0x01", "0x02"], "reason": "no type"}}
    assert 'payload={hex=0102 reason="no type"}' in rows[0]["Value"]
    # not a live slot: the pointer stays a pointer
    assert json.loads(rows[1]["Formatted"])["formatted"]["value"]["data"] == hex(ptr + 64)
