"""Who a slot belongs to and how it is shown (library helpers the plugin uses; no dump)."""

import struct
from types import SimpleNamespace as NS

from test_sdtalloc_support import BtfWriter, sdt_program_btf
from volatility3_ktstr.core import ReadError
from volatility3_ktstr.walkers import sdtalloc

def _entry(payload, idx=1):
    return sdtalloc.SdtEntry(idx, 0, idx, 0x1000_0000_4000, payload)


class _Reader:
    def __init__(self, pids):
        self.pids = pids

    def s32(self, addr):
        if addr not in self.pids:
            raise ReadError(addr, 4)
        return self.pids[addr]


def test_pointer_members_of_task_storage_value():
    w = BtfWriter()
    s32 = w.int("int", 4, signed=True)
    u64 = w.int("long long unsigned int", 8)
    fwd = w.fwd("sdt_data")
    ptr = w.ptr(w.type_tag("arena", fwd))
    val = w.struct("scx_task_map_val", 24, [("tid", u64, 0), ("tptr", u64, 8), ("data", ptr, 16)])
    btf = w.btf()
    assert [off for _, off in sdtalloc.pointer_members(btf, val, 24)] == [16]
    assert sdtalloc.pointer_members(btf, val, 20) == ()       # value too short for the member
    assert sdtalloc.pointer_members(btf, s32, 4) == ()
    assert sdtalloc.pointer_members(btf, 0, 24) == ()


def test_who_prefers_owner_and_flags_disagreement():
    btf, _, info = sdt_program_btf()
    ident = sdtalloc.payload_identity(btf, info["scx_stats"])
    payload = struct.pack("<ii40x", 0, 42)
    kctx = NS(reader=_Reader({}))
    owner = NS(pid=42, comm="labweb")
    assert sdtalloc.slot_task(kctx.reader, ident, _entry(payload), owner, 2808) == (42, "labweb", "")
    assert sdtalloc.slot_task(kctx.reader, ident, _entry(payload), None, 2808) == (42, "", "")
    pid, comm, note = sdtalloc.slot_task(kctx.reader, ident, _entry(payload), NS(pid=7, comm="x"), 2808)
    assert (pid, comm) == (7, "x") and "payload pid 42 but owned by pid 7" in note
    assert sdtalloc.slot_task(kctx.reader, None, _entry(payload), None, 2808) == (None, "", "")


def test_who_follows_a_task_pointer():
    w = BtfWriter()
    task = w.fwd("task_struct")
    ctx = w.struct("task_ctx", 16, [("task", w.ptr(task), 0), ("x", w.int("long", 8), 8)])
    btf = w.btf()
    ident = sdtalloc.payload_identity(btf, ctx)
    assert ident.kind == "task"
    kctx = NS(reader=_Reader({0xFFFF_8880_0000_1000 + 2808: 99}))
    payload = (0xFFFF_8880_0000_1000).to_bytes(8, "little") + bytes(8)
    assert sdtalloc.slot_task(kctx.reader, ident, _entry(payload), None, 2808) == (99, "", "")
    payload = (0xFFFF_8880_0000_2000).to_bytes(8, "little") + bytes(8)
    pid, _, note = sdtalloc.slot_task(kctx.reader, ident, _entry(payload), None, 2808)
    assert pid is None and "unreadable" in note


def test_type_label_and_payload_text():
    btf, _, info = sdt_program_btf()
    assert sdtalloc.type_label(btf, 0, "no struct of 48 bytes") == "hex (no struct of 48 bytes)"
    assert sdtalloc.type_label(btf, info["scx_stats"], "") == "struct scx_stats"
    payload = struct.pack("<iiQQQQQ", 1, 42, 3, 4, 5, 6, 7)
    assert sdtalloc.payload_text(btf, 0, payload) == payload.hex()
    assert sdtalloc.payload_text(btf, info["scx_stats"], payload).startswith("{seq=1 pid=42 enqueue=3")
