"""Who a slot belongs to and how it is shown (library helpers the plugin uses; no dump)."""

import struct
from types import SimpleNamespace as NS

from helpers.btf import BtfBuilder
from helpers.sdt import sdt_program_btf
from helpers.synth import Memory
from volatility3_ktstr.core import Field
from volatility3_ktstr.walkers import sdtalloc, sdtpayload

PID = Field(offset=2808, size=4, signed=True)   # task_struct.pid as a layout gives it


def _entry(payload, idx=1):
    return sdtalloc.SdtEntry(idx, 0, idx, 0x1000_0000_4000, payload)


def _pids(pids):
    """Memory holding an s32 pid at each address of ``pids`` and nothing else."""
    mem = Memory.sparse_pages()
    for addr, pid in pids.items():
        mem.write(addr, struct.pack("<i", pid))
    return mem


def test_pointer_members_of_task_storage_value():
    w = BtfBuilder()
    s32 = w.int("int", 4, signed=True)
    u64 = w.int("long long unsigned int", 8)
    fwd = w.fwd("sdt_data")
    ptr = w.ptr(w.type_tag("arena", fwd))
    val = w.struct("scx_task_map_val", 24, [("tid", u64, 0), ("tptr", u64, 64), ("data", ptr, 128)])
    btf = w.btf()
    assert [off for _, off in sdtpayload.pointer_members(btf, val, 24)] == [16]
    assert sdtpayload.pointer_members(btf, val, 20) == ()       # value too short for the member
    assert sdtpayload.pointer_members(btf, s32, 4) == ()
    assert sdtpayload.pointer_members(btf, 0, 24) == ()


def test_who_prefers_owner_and_flags_disagreement():
    btf, _, info = sdt_program_btf()
    ident = sdtpayload.payload_identity(btf, info["scx_stats"])
    payload = struct.pack("<ii40x", 0, 42)
    kctx = NS(reader=_pids({}))
    owner = NS(pid=42, comm="labweb")
    assert sdtpayload.slot_task(kctx.reader, ident, _entry(payload), owner, PID) == (42, "labweb", "")
    assert sdtpayload.slot_task(kctx.reader, ident, _entry(payload), None, PID) == (42, "", "")
    pid, comm, note = sdtpayload.slot_task(kctx.reader, ident, _entry(payload), NS(pid=7, comm="x"), PID)
    assert (pid, comm) == (7, "x") and "payload pid 42 but owned by pid 7" in note
    assert sdtpayload.slot_task(kctx.reader, None, _entry(payload), None, PID) == (None, "", "")


def test_who_follows_a_task_pointer():
    w = BtfBuilder()
    task = w.fwd("task_struct")
    ctx = w.struct("task_ctx", 16, [("task", w.ptr(task), 0), ("x", w.int("long", 8), 64)])
    btf = w.btf()
    ident = sdtpayload.payload_identity(btf, ctx)
    assert ident.kind == "task"
    kctx = NS(reader=_pids({0xFFFF_8880_0000_1000 + 2808: 99}))
    payload = (0xFFFF_8880_0000_1000).to_bytes(8, "little") + bytes(8)
    assert sdtpayload.slot_task(kctx.reader, ident, _entry(payload), None, PID) == (99, "", "")
    payload = (0xFFFF_8880_0000_2000).to_bytes(8, "little") + bytes(8)
    pid, _, note = sdtpayload.slot_task(kctx.reader, ident, _entry(payload), None, PID)
    assert pid is None and "unreadable" in note


def test_type_label_and_payload_text():
    btf, _, info = sdt_program_btf()
    assert sdtpayload.type_label(btf, 0, "no struct of 48 bytes") == "hex (no struct of 48 bytes)"
    assert sdtpayload.type_label(btf, info["scx_stats"], "") == "struct scx_stats"
    payload = struct.pack("<iiQQQQQ", 1, 42, 3, 4, 5, 6, 7)
    assert sdtpayload.payload_text(btf, 0, payload) == payload.hex()
    assert sdtpayload.payload_text(btf, info["scx_stats"], payload).startswith("{seq=1 pid=42 enqueue=3")
