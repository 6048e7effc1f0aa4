"""Renderer on hand-built BTF (every kind the renderer handles) and on the real kernel BTF."""

import json
import struct

import pytest

from helpers.btf import BOOL, BtfBuilder
from volatility3_ktstr.render import CpuList, EnumName, Hex, hex_list, render, render_text


@pytest.fixture(scope="module")
def sample():
    b = BtfBuilder()
    ids = {}
    ids["int"] = b.int("int", 4, signed=True)
    ids["u32"] = b.int("unsigned int", 4)
    ids["u64"] = b.int("long unsigned int", 8)
    ids["s8"] = b.int("signed char", 1, signed=True)
    ids["char"] = b.int("char", 1, signed=True)
    ids["bool"] = b.int("_Bool", 1, encoding=BOOL)
    ids["u8"] = b.int("unsigned char", 1)
    ids["__u8"] = b.typedef("__u8", ids["u8"])
    ids["dbl"] = b.float("double", 8)
    ids["e"] = b.enum("color", 4, [("RED", 0), ("GREEN", 1), ("BIG", -1)])
    ids["e64"] = b.enum64("big", 8, [("HUGE", 1 << 40)])
    ids["se"] = b.enum("sgn", 4, [("NEG", -2)], signed=True)
    ids["comm"] = b.array(ids["char"], ids["int"], 8)
    ids["bytes"] = b.array(ids["__u8"], ids["int"], 4)
    ids["ints"] = b.array(ids["int"], ids["int"], 3)
    ids["pint"] = b.ptr(ids["int"])
    ids["cint"] = b.const(ids["int"])
    ids["words"] = b.array(ids["u64"], ids["int"], 2)
    ids["cpumask"] = b.struct("cpumask", 16, [("bits", ids["words"], 0)])
    ids["inner"] = b.struct("", 8, [("a", ids["int"], 0), ("b", ids["u32"], 32)])
    ids["un"] = b.union("", 4, [("x", ids["u32"], 0), ("y", ids["int"], 0)])
    ids["task"] = b.struct("task", 64, [
        ("pid", ids["int"], 0),
        ("comm", ids["comm"], 32),
        ("flag", ids["bool"], 96),
        ("color", ids["e"], 128),
        ("next", ids["pint"], 192),
        ("", ids["inner"], 256),
        ("", ids["un"], 320),
        ("mask", ids["cpumask"], 384),
    ])
    ids["bf"] = b.struct("bits", 8, [
        ("lo", ids["u32"], 0, 3), ("neg", ids["int"], 3, 5), ("col", ids["e"], 8, 2),
        ("on", ids["bool"], 10, 1), ("hi", ids["u64"], 32, 32),
    ], kflag=1)
    ids["misc"] = b.struct("misc", 32, [
        ("d", ids["dbl"], 0), ("h", ids["e64"], 64), ("s", ids["se"], 128), ("raw", ids["bytes"], 160),
        ("c", ids["cint"], 192),
    ])
    ids["v_x"] = b.var("x", ids["int"])
    ids["v_t"] = b.var("name", ids["comm"])
    ids["sec"] = b.datasec(".bss", 16, [(ids["v_x"], 0, 4), (ids["v_t"], 8, 8)])
    ids["fwd"] = b.fwd("opaque")
    ids["pfwd"] = b.ptr(ids["fwd"])
    ids["node"] = b.struct("node", 16, [("val", ids["int"], 0)])   # patched below: next
    return b.btf(), ids


def task_bytes(pid=12, comm=b"x\0", flag=1, color=1, nxt=0xFFFF888000001000, a=-5, b=7, x=3, mask=0b101111):
    data = bytearray(64)
    struct.pack_into("<i", data, 0, pid)
    data[4:4 + len(comm)] = comm
    data[12] = flag
    struct.pack_into("<I", data, 16, color)
    struct.pack_into("<Q", data, 24, nxt)
    struct.pack_into("<iI", data, 32, a, b)
    struct.pack_into("<I", data, 40, x)
    struct.pack_into("<QQ", data, 48, mask & (2**64 - 1), mask >> 64)
    return bytes(data)


def test_struct_scalars_strings_enums_pointers(sample):
    btf, ids = sample
    v = render(btf, ids["task"], task_bytes())
    assert v == {"pid": 12, "comm": "x", "flag": True, "color": "GREEN", "next": "0xffff888000001000",
                 "a": -5, "b": 7, "x": 3, "y": 3, "mask": "0-3,5"}
    assert list(v) == ["pid", "comm", "flag", "color", "next", "a", "b", "x", "y", "mask"]
    assert isinstance(v["next"], Hex) and isinstance(v["color"], EnumName) and isinstance(v["mask"], CpuList)
    json.dumps(v)
    # unknown enumerator value -> int; unsigned enum value -1 -> its name
    assert render(btf, ids["task"], task_bytes(color=7))["color"] == 7
    assert render(btf, ids["task"], task_bytes(color=0xFFFFFFFF))["color"] == "BIG"


def test_char_array_escapes_and_typedef_u8_is_not_a_string(sample):
    btf, ids = sample
    assert render(btf, ids["comm"], b"ab\x01\xffcd\0z") == "ab\\x01\\xffcd"
    assert render(btf, ids["comm"], b"12345678") == "12345678"
    assert render(btf, ids["bytes"], b"ab\0\0") == [97, 98, 0, 0]


def test_bitfields_sign_enum_bool(sample):
    btf, ids = sample
    word = 5 | (0b10110 << 3) | (1 << 8) | (1 << 10)
    data = struct.pack("<II", word, 0xDEADBEEF)
    assert render(btf, ids["bf"], data) == {"lo": 5, "neg": -10, "col": "GREEN", "on": True, "hi": 0xDEADBEEF}


def test_legacy_bitfield_encoding(sample):
    b = BtfBuilder()
    i3 = b.int("int", 4, signed=True, bits=3)   # legacy: the INT itself has 3 bits
    u = b.int("unsigned int", 4)
    sid = b.struct("s", 4, [("f", i3, 0), ("g", u, 3)])
    btf = b.btf()
    assert render(btf, sid, struct.pack("<I", 0b111 | (1 << 3)))["f"] == -1


def test_misc_float_enum64_signed_enum_const(sample):
    btf, ids = sample
    data = struct.pack("<dQi4si4x", 1.5, 1 << 40, -2, b"\1\2\3\4", -9)
    assert render(btf, ids["misc"], data) == {"d": 1.5, "h": "HUGE", "s": "NEG", "raw": [1, 2, 3, 4], "c": -9}


def test_datasec_by_variable(sample):
    btf, ids = sample
    data = struct.pack("<i4x8s", 42, b"hello\0\0\0")
    assert render(btf, ids["sec"], data) == {"x": 42, "name": "hello"}


def test_truncated(sample):
    btf, ids = sample
    v = render(btf, ids["task"], task_bytes()[:14])
    assert v["pid"] == 12 and v["comm"] == "x" and v["flag"] is True and "color" not in v
    assert v["__truncated__"] == {"needed": 64, "had": 14}
    v = render(btf, ids["ints"], struct.pack("<ii", 1, 2) + b"\0")
    assert v == {"__truncated__": {"needed": 12, "had": 9}, "partial": [1, 2, {"__truncated__": {"needed": 4, "had": 1}, "partial": ["0x00"]}]}
    assert render(btf, ids["int"], b"") == {"__truncated__": {"needed": 4, "had": 0}, "partial": []}


def test_max_elems_marker(sample):
    btf, ids = sample
    assert render(btf, ids["ints"], struct.pack("<iii", 1, 2, 3), max_elems=2) == [1, 2, "...(+1)"]


def test_pointer_chase_and_cycle(sample):
    btf, ids = sample
    mem = {0x1000: task_bytes(pid=1, nxt=0x2000), 0x2000: task_bytes(pid=2, nxt=0x1000)}
    pint_mem = {0x1000: struct.pack("<i", 77)}
    # pointer to int: chased
    v = render(btf, ids["pint"], struct.pack("<Q", 0x1000), chase=lambda a, n, t: pint_mem.get(a))
    assert v == {"ptr": "0x1000", "target": 77}
    # unreadable target: stays hex; exceptions in the chaser are contained
    assert render(btf, ids["pint"], struct.pack("<Q", 0x3000), chase=lambda a, n, t: None) == "0x3000"

    def boom(a, n, t):
        raise OSError("no")
    assert render(btf, ids["pint"], struct.pack("<Q", 0x3000), chase=boom) == "0x3000"
    # depth limit
    assert render(btf, ids["pint"], struct.pack("<Q", 0x1000), chase=lambda a, n, t: pint_mem.get(a),
                  max_depth=0) == "0x1000"
    # forward-declared pointee is never chased
    assert render(btf, ids["pfwd"], struct.pack("<Q", 0x1000), chase=lambda a, n, t: b"x" * 64) == "0x1000"
    assert mem  # (task.next points at int, so struct cycles are tested with node below)


def test_struct_pointer_cycle():
    b = BtfBuilder()
    i = b.int("int", 4, signed=True)
    # struct node { int val; struct node *next; } : the PTR refers forward to the struct (id 4)
    p = b.ptr(4)
    b.typedef("pad", i)
    node = b.struct("node", 16, [("val", i, 0), ("next", p, 64)])
    assert node == 4
    btf = b.btf()
    mem = {0x10: struct.pack("<i4xQ", 1, 0x20), 0x20: struct.pack("<i4xQ", 2, 0x10)}
    v = render(btf, node, mem[0x10], chase=lambda a, n, t: mem.get(a))
    assert v["val"] == 1
    assert v["next"]["target"]["val"] == 2
    # back at 0x10? the top-level value was not read through a pointer, so 0x10 is chased once
    inner = v["next"]["target"]["next"]
    assert inner["target"]["val"] == 1
    assert inner["target"]["next"] == {"ptr": "0x20", "cycle": True}


def test_fwd_and_void(sample):
    btf, ids = sample
    assert render(btf, ids["fwd"], b"ab")["__unrendered__"].startswith("forward declaration")
    assert render(btf, 0, b"ab") == []


def test_hex_list_and_text(sample):
    btf, ids = sample
    assert hex_list(b"\x00\x2a\xff") == ["0x00", "0x2a", "0xff"]
    v = render(btf, ids["task"], task_bytes())
    text = render_text(v)
    assert text == ('{pid=12 comm="x" flag=true color=GREEN next=0xffff888000001000 a=-5 b=7 x=3 y=3 '
                    'mask=0-3,5}')
    assert render_text(v, max_len=20) == text[:17] + "..."
    assert render_text([1, {"a": None}, 1.5]) == "[1,{a=null},1.5]"


def test_kernel_btf_types_render(amd64_kernel_btf):
    """Every struct of the real kernel BTF compiles and renders from zeros (no exceptions)."""
    btf = amd64_kernel_btf
    n = 0
    for t in btf.own_types:
        if t.kind == 4 and t.name and 0 < t.size <= 1 << 16:
            v = render(btf, t.id, bytes(t.size))
            assert isinstance(v, (dict, str))
            n += 1
            if n >= 3000:
                break
    assert n > 1000
    ts = btf.struct("task_struct")
    v = render(btf, ts.id, bytes(ts.size))
    assert v["pid"] == 0 and v["comm"] == "" and "__truncated__" not in v
    assert render(btf, btf.struct("cpumask").id, b"\x0f" + bytes(btf.struct("cpumask").size - 1)) == "0-3"


def test_fuzz_kernel_types_random_bytes_and_lengths(amd64_kernel_btf):
    """Random contents and truncation points never raise and always give JSON-able values."""
    import random

    btf = amd64_kernel_btf
    rng = random.Random(4)
    types = [t for t in btf.own_types if t.kind in (4, 5) and 0 < t.size <= 4096]
    for t in rng.sample(types, 400):
        data = rng.randbytes(t.size)
        cut = data[:rng.randrange(t.size + 1)]
        for d in (data, cut):
            v = render(btf, t.id, d, max_elems=64)
            json.dumps(v)
            render_text(v, 512)
        v = render(btf, t.id, data, chase=lambda a, n, tid: rng.randbytes(n) if rng.random() < 0.3 else None,
                   max_depth=3, max_elems=16)
        json.dumps(v)
