"""Program BTF as a run-time Volatility symbol table: typed objects over a buffer layer."""

import struct

from volatility3.framework import contexts
from volatility3.framework.layers.physical import BufferDataLayer

from test_render import BtfBuilder
from volatility3_ktstr import symtab


def _prog_btf():
    b = BtfBuilder()
    i = b.int("int", 4, signed=True)
    u = b.int("unsigned int", 4)
    c = b.int("char", 1, signed=True)
    arr = b.array(c, 8, i)
    inner = b.struct("", 8, [("idx", u, 0, 20), ("genn", u, 20, 12), ("pad", u, 32, 32)], kflag=1)
    un = b.struct("sdt_id", 8, [("", inner, 0), ("val", b.int("long unsigned int", 8), 0)], union=True)
    st = b.struct("task_ctx", 32, [("tid", un, 0), ("pid", i, 64), ("comm", arr, 96), ("next", b.ptr(0), 192)])
    return b.btf(), st


def test_typed_object_through_program_table():
    btf, _ = _prog_btf()
    ctx = contexts.Context()
    data = bytearray(1 << 16)   # Volatility masks pointers to the layer's address width
    struct.pack_into("<Q", data, 0, 5 | (3 << 20))
    struct.pack_into("<i8s", data, 8, 4242, b"labweb\0\0")
    struct.pack_into("<Q", data, 24, 0x1234)
    ctx.add_layer(BufferDataLayer(ctx, "test.layer", "mem", bytes(data)))
    name = symtab.program_symbol_table(ctx, btf, hint="scx_sdt")
    assert symtab.program_symbol_table(ctx, btf, hint="scx_sdt") == name   # cached
    obj = ctx.object(symtab.type_name(name, "task_ctx"), layer_name="mem", offset=0)
    assert int(obj.pid) == 4242
    assert obj.comm.cast("string", max_length=8, encoding="utf-8") == "labweb"
    assert int(obj.tid.idx) == 5 and int(obj.tid.genn) == 3
    assert int(obj.next) == 0x1234
    assert ctx.symbol_space.get_type(symtab.type_name(name, "task_ctx")).size == 32


def test_real_program_btf_table(tmp_path):
    """The generator copes with a full scheduler-like BTF (anonymous unions, DATASECs, FUNCs)."""
    btf, _ = _prog_btf()
    d = symtab.isf_dict(btf)
    assert "task_ctx" in d["user_types"] and "sdt_id" in d["user_types"]
