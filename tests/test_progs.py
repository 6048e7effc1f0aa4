"""bpf/progs on synthetic kernel memory (real x86-64 kernel BTF layout), disassembly, names."""

import struct

import pytest

from volatility3_ktstr.bpf import disasm, progs
from volatility3_ktstr.core import BtfLayout, BufferReader, ReadError

PROG = 0xFFFF888000100000
AUX = 0xFFFF888000200000
MAPS = 0xFFFF888000300000
FUNCS = 0xFFFF888000400000
SUB = 0xFFFF888000500000
NAME = 0xFFFF888000600000
JIT = 0xFFFFFFFFC0001000


@pytest.fixture(scope="module")
def layout(amd64_kernel_btf):
    return BtfLayout(amd64_kernel_btf)


def put(mem, addr, fmt, *vals):
    mem.write(addr, struct.pack(fmt, *vals))


def _prog(layout, subprogs=()):
    mem = BufferReader({PROG: bytes(layout.size("bpf_prog")), AUX: bytes(layout.size("bpf_prog_aux")),
                        MAPS: bytes(64), FUNCS: bytes(64), SUB: bytes(0x1000), NAME: bytes(0x1000),
                        JIT: bytes(0x2000)})
    P, A = "bpf_prog", "bpf_prog_aux"
    put(mem, PROG + layout.offset(P, "type"), "<I", 27)
    put(mem, PROG + layout.offset(P, "len"), "<I", 78)
    put(mem, PROG + layout.offset(P, "jited_len"), "<I", 16)
    mem.write(PROG + layout.first(P, "tag", "digest"), bytes.fromhex("073fc6f66668049b"))
    put(mem, PROG + layout.offset(P, "bpf_func"), "<Q", JIT)
    put(mem, PROG + layout.offset(P, "aux"), "<Q", AUX)
    put(mem, AUX + layout.offset(A, "id"), "<I", 7)
    mem.write(AUX + layout.offset(A, "name"), b"sdt_select_cpu\0")
    put(mem, AUX + layout.offset(A, "load_time"), "<Q", 5052535056)
    put(mem, AUX + layout.offset(A, "used_map_cnt"), "<I", 2)
    put(mem, AUX + layout.offset(A, "used_maps"), "<Q", MAPS)
    put(mem, MAPS, "<QQ", 0xFFFF888000700000, 0xFFFF888000800000)
    put(mem, AUX + layout.offset(A, "attach_func_name"), "<Q", NAME)
    mem.write(NAME, b"select_cpu\0")
    if subprogs:
        put(mem, AUX + layout.offset(A, "func_cnt"), "<I", len(subprogs))
        put(mem, AUX + layout.offset(A, "func"), "<Q", FUNCS)
        for i, (func, n) in enumerate(subprogs):
            sub = SUB + 0x100 * i
            put(mem, FUNCS + 8 * i, "<Q", sub)
            put(mem, sub + layout.offset(P, "bpf_func"), "<Q", func)
            put(mem, sub + layout.offset(P, "jited_len"), "<I", n)
    return mem


def test_read_prog(layout):
    mem = _prog(layout)
    p = progs.read_prog(mem, layout, PROG, 7)
    assert p.error is None
    assert (p.id, p.type_name, p.name, p.tag) == (7, "struct_ops", "sdt_select_cpu", "073fc6f66668049b")
    assert (p.xlated_len, p.jited_len, p.load_time_ns) == (624, 16, 5052535056)
    assert p.attach_func_name == "select_cpu"
    assert p.used_map_kvas == [0xFFFF888000700000, 0xFFFF888000800000]
    assert progs.resolve_map_ids(mem, layout, p, {0xFFFF888000700000: 6}) == [6, -1]


def test_subprograms_sum_jit_sizes(layout):
    mem = _prog(layout, [(JIT, 16), (JIT + 0x100, 32)])
    p = progs.read_prog(mem, layout, PROG, 7)
    assert p.jited_len == 48 and p.subprogs == [(JIT, 16), (JIT + 0x100, 32)]
    mem.write(JIT, b"\x55\x48\x89\xe5" + b"\x90" * 12)
    images = progs.read_jit_images(mem, p)
    assert [(a, len(b)) for a, b in images] == [(JIT, 16), (JIT + 0x100, 32)]


def test_corrupt_prog_rows(layout):
    p = progs.read_prog(BufferReader({}), layout, PROG, 3)
    assert p.error.startswith("struct bpf_prog unreadable")
    mem = _prog(layout)
    put(mem, PROG + layout.offset("bpf_prog", "aux"), "<Q", 0xDEAD0000)
    p = progs.read_prog(mem, layout, PROG, 7)
    assert "bpf_prog_aux unreadable" in p.error and p.type_name == "struct_ops"
    mem = _prog(layout)
    put(mem, AUX + layout.offset("bpf_prog_aux", "used_map_cnt"), "<I", 1 << 30)
    assert "implausible used_map_cnt" in progs.read_prog(mem, layout, PROG, 7).error
    mem = _prog(layout)
    p = progs.read_prog(mem, layout, PROG, 8)
    assert "stale or corrupt" in p.error
    p.bpf_func = 0
    p.subprogs = []
    with pytest.raises(ReadError):
        progs.read_jit_images(mem, p)


def test_boot_epoch(layout):
    tk = 0xFFFF888000900000
    mem = BufferReader({tk: bytes(layout.size("timekeeper"))})
    put(mem, tk + layout.offset("timekeeper", "offs_real"), "<q", 1795317122_000000000 + 7)
    put(mem, tk + layout.offset("timekeeper", "offs_boot"), "<q", 7)
    assert progs.boot_epoch_ns(mem, layout, tk) == 1795317122_000000000
    assert progs.boot_epoch_ns(BufferReader({}), layout, tk) is None


def test_prog_type_names_fallback():
    names = progs.prog_type_names()
    assert names[27] == "struct_ops" and names[1] == "socket_filter" and names[26] == "tracing"
    assert progs.prog_type_names({"BPF_PROG_TYPE_FOO": 99})[99] == "foo"


def test_disassemble_x86_and_arm64():
    code = b"\x55\x48\x89\xe5\xe8\x00\x00\x00\x00\xc3"   # push rbp; mov rbp,rsp; call next; ret
    insns = list(disasm.disassemble("x86_64", code, 0xFFFFFFFFC0000000))
    assert [i[2] for i in insns] == ["push", "mov", "call", "ret"]
    assert insns[2][4] == 0xFFFFFFFFC0000009
    arm = struct.pack("<II", 0x94000002, 0xD65F03C0)      # bl +8; ret
    insns = list(disasm.disassemble("arm64", arm, 0xFFFF800080000000))
    assert insns[0][2] == "bl" and insns[0][4] == 0xFFFF800080000008 and insns[1][2] == "ret"


def test_symbol_namer_programs_and_kaslr():
    shift = 0x37000000     # KASLR: the kernel adapter hands over runtime addresses
    syms = sorted((a + shift, n) for n, a in
                  {"bpf_trace_printk": 0xFFFFFFFF815966C0, "_text": 0xFFFFFFFF81000000}.items())
    p = progs.BpfProg(kva=0, id=7, name="sdt_select_cpu", bpf_func=0xFFFFFFFFC01DD648, jited_len=384)
    n = disasm.SymbolNamer(lambda: syms, [p])
    assert n.name(0xFFFFFFFFB85966C0) == "bpf_trace_printk"
    assert n.name(0xFFFFFFFFB85966C4) == "bpf_trace_printk+0x4"
    assert n.name(0xFFFFFFFFC01DD648 + 0x84) == "prog:sdt_select_cpu[7]+0x84"
    assert n.name(0xFFFF8E134197B000) == ""   # data, far from any symbol


def test_arm64_register_calls_get_targets():
    def movz(rd, imm, hw):
        return 0xD2800000 | (hw << 21) | (imm << 5) | rd

    def movk(rd, imm, hw):
        return 0xF2800000 | (hw << 21) | (imm << 5) | rd

    code = struct.pack("<7I", movz(10, 0x1234, 0), movk(10, 0x5678, 1), movk(10, 0x8000, 2),
                       movk(10, 0xFFFF, 3), 0xD63F0140,            # blr x10
                       0x91000540,                                  # add x0, x10, #1
                       0xD63F0000)                                  # blr x0: unknown
    insns = list(disasm.disassemble("arm64", code, 0xFFFF800080000000))
    assert insns[4][2] == "blr" and insns[4][4] == 0xFFFF800056781234
    assert insns[6][4] is None
