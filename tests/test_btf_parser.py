"""BTF parser on hand-built blobs: every kind, bitfields (both encodings), split BTF, accessors."""

import struct

import pytest

from helpers.btf import BOOL, KINDS, BtfBuilder, all_kinds_blob
from volatility3_ktstr.btf import Btf, BtfError, Kind


@pytest.fixture(scope="module", params=["<", ">"], ids=["le", "be"])
def parsed(request):
    blob, ids = all_kinds_blob(request.param)
    return Btf.parse(blob, source="t.btf"), ids


def test_every_kind_is_built_and_parsed(parsed):
    btf, ids = parsed
    kinds = {t.kind for t in btf.own_types}
    assert kinds == {int(Kind[k]) for k in KINDS}, "the builder or parser skipped a kind"
    assert btf.start_id == 1 and btf.end_id == 1 + len(ids) and len(btf.own_types) == len(ids)
    for label, type_id in ids.items():
        assert btf.type(type_id).id == type_id, label
    assert btf.type(0) is None


def test_int_payloads(parsed):
    btf, ids = parsed
    i = btf.type(ids["int"])
    assert (i.kind, i.name, i.size, i.bits, i.int_offset, i.is_signed) == (Kind.INT, "int", 4, 32, 0, True)
    assert btf.type(ids["uint"]).is_signed is False
    assert btf.type(ids["bool"]).encoding == BOOL


def test_ptr_array_fwd(parsed):
    btf, ids = parsed
    assert btf.type(ids["ptr_int"]).type == ids["int"]
    a = btf.type(ids["arr"])
    assert (a.type, a.index_type, a.nelems) == (ids["char"], ids["uint"], 16)
    assert btf.size_of(ids["arr"]) == 16
    assert btf.type(ids["fwd_s"]).kind_flag == 0 and btf.type(ids["fwd_u"]).kind_flag == 1
    assert btf.type_name(ids["fwd_u"]) == "union opaque_u"


def test_struct_union_members(parsed):
    btf, ids = parsed
    node = btf.struct("node")
    assert node.id == ids["node"] and node.size == 40 and node.kind_flag == 1
    names = [m.name for m in node.members]
    assert names == ["id", "flag", "mode", "", "name", "next"]
    flag, mode = node.member("flag"), node.member("mode")
    assert (flag.bit_offset, flag.bit_size) == (32, 1)
    assert (mode.bit_offset, mode.bit_size) == (33, 3)
    assert node.member("id").bit_size == 0
    u = btf.type(ids["anon_u"])
    assert u.kind == Kind.UNION and u.name == "" and [m.bit_offset for m in u.members] == [0, 0]
    assert node.member("next").type == ids["ptr_node"]


def test_enums(parsed):
    btf, ids = parsed
    e = btf.type(ids["enum"])
    assert e.values == (("RED", 0), ("GREEN", 1), ("NEG", -2)) and e.is_signed
    e64 = btf.type(ids["enum64"])
    assert e64.values == (("SMALL", 1), ("HUGE", 1 << 63)) and not e64.is_signed and e64.size == 8


def test_signed_enum64_wraps_negative():
    b = BtfBuilder()
    t = b.enum64("s64", 8, [("MINUS_ONE", -1), ("MIN", -(1 << 63))], signed=True)
    btf = Btf.parse(b.build())
    assert btf.type(t).values == (("MINUS_ONE", -1), ("MIN", -(1 << 63)))


def test_modifiers_typedef_resolve(parsed):
    btf, ids = parsed
    assert btf.resolve(ids["const"]).id == ids["int"]            # const -> volatile -> int
    assert btf.resolve(ids["typedef"]).id == ids["node"]
    assert btf.resolve(ids["type_tag"]).id == ids["int"]
    assert btf.resolve(ids["restrict"]).id == ids["ptr_int"]
    assert btf.size_of(ids["typedef"]) == 40 and btf.size_of(ids["const"]) == 4
    assert btf.size_of(ids["ptr_node"]) == 8
    assert btf.type_name(ids["ptr_tag"]) == "int *"
    assert btf.type_name(ids["typedef"]) == "node_t"
    assert btf.type_name(ids["ptr_node"]) == "struct node *"


def test_func_proto_var_datasec_tags(parsed):
    btf, ids = parsed
    p = btf.type(ids["proto"])
    assert p.type == ids["int"] and p.params == (("a", ids["int"]), ("", ids["ptr_node"]))
    f = btf.type(ids["func"])
    assert (f.name, f.type, f.linkage) == ("do_thing", ids["proto"], 1)
    v = btf.type(ids["var"])
    assert (v.name, v.type, v.linkage) == ("counter", ids["ulong"], 1)
    assert btf.size_of(ids["var"]) == 8
    d = btf.type(ids["datasec"])
    assert (d.name, d.size, d.vars) == (".data..percpu", 16, ((ids["var"], 8, 8),))
    dt = btf.type(ids["decl_tag"])
    assert (dt.name, dt.type, dt.component_idx) == ("tagged", ids["node"], 1)
    assert btf.type(ids["float"]).size == 8 and btf.type(ids["float"]).kind == Kind.FLOAT


def test_find_and_lookups(parsed):
    btf, ids = parsed
    assert [t.id for t in btf.find("node")] == [ids["node"]]
    assert [t.id for t in btf.find("node", Kind.TYPEDEF)] == []
    assert [t.id for t in btf.find("node_t", Kind.TYPEDEF)] == [ids["typedef"]]
    assert btf.find("nope") == []
    with pytest.raises(KeyError):
        btf.struct("color")                                    # an enum, not a struct
    with pytest.raises(KeyError):
        btf.type(btf.end_id)
    assert [t.id for t in btf.all_types()] == list(range(1, btf.end_id))


def test_member_path_through_anonymous_and_pointers(parsed):
    btf, ids = parsed
    assert btf.offsetof("node", "l") == 8 and btf.offsetof("node", "i") == 8
    assert btf.offsetof("node", "name") == 16 and btf.offsetof("node", "next") == 32
    assert btf.offsetof(ids["typedef"], "next") == 32              # by id, through the typedef
    bit, m = btf.member_path("node", "mode")
    assert (bit, m.bit_size) == (33, 3)
    with pytest.raises(KeyError):
        btf.member_path("node", "missing")
    with pytest.raises(KeyError):
        btf.member_path("node", "id.x")                            # int has no members


def test_nested_member_path_adds_offsets():
    b = BtfBuilder()
    i = b.int("int", 4, signed=True)
    inner = b.struct("inner", 8, [("a", i, 0), ("b", i, 32)])
    mid = b.struct("", 16, [("pad", i, 0), ("in", inner, 64)])
    outer = b.struct("outer", 24, [("x", i, 0), ("", mid, 64)])
    btf = Btf.parse(b.build())
    assert btf.offsetof("outer", "in.b") == 8 + 8 + 4
    assert btf.member_path(outer, "in")[0] == 128


def test_legacy_int_bitfields_match_kind_flag_encoding():
    """Old BTF (no kind_flag) puts the bit size and an extra bit offset in the member's INT."""
    legacy = BtfBuilder()
    u32 = legacy.int("unsigned int", 4)
    bf3 = legacy.int("unsigned int", 4, bits=3)                    # `unsigned int x:3`
    bf5 = legacy.int("unsigned int", 4, bits=5, offset=2)          # INT offset adds to the member's
    legacy.struct("flags", 8, [("whole", u32, 0), ("x", bf3, 32), ("y", bf5, 33)], kflag=False)
    modern = BtfBuilder()
    u32m = modern.int("unsigned int", 4)
    modern.struct("flags", 8, [("whole", u32m, 0), ("x", u32m, 32, 3), ("y", u32m, 35, 5)])
    got = {}
    for label, b in (("legacy", legacy), ("modern", modern)):
        btf = Btf.parse(b.build())
        st = btf.struct("flags")
        got[label] = [(m.name, m.bit_offset, m.bit_size) for m in st.members]
    assert got["legacy"] == got["modern"] == [("whole", 0, 0), ("x", 32, 3), ("y", 35, 5)]


def test_legacy_bitfield_through_typedef_in_split_btf():
    """A split BTF whose struct uses a legacy bitfield INT defined in the base."""
    base = BtfBuilder()
    bf = base.int("unsigned char", 1, bits=2)
    base_btf = Btf.parse(base.build())
    split = BtfBuilder(base=base)
    td = split.typedef("u2", bf)
    split.struct("s", 1, [("a", td, 0), ("b", td, 2)], kflag=False)
    btf = Btf.parse(split.build(), base=base_btf)
    assert [(m.bit_offset, m.bit_size) for m in btf.struct("s").members] == [(0, 2), (2, 2)]


def test_split_btf_continues_ids_and_strings():
    base = BtfBuilder()
    i = base.int("int", 4, signed=True)
    task = base.struct("task", 16, [("pid", i, 0), ("tgid", i, 32)])
    base_btf = Btf.parse(base.build(), source="base")
    split = BtfBuilder(base=base)
    p = split.ptr(task)
    # "pid" reuses the base's string offset; "owner" and "prog_ctx" are new strings.
    ctx = split.struct("prog_ctx", 16, [("owner", p, 0), ("pid", i, 64)])
    blob = split.build()
    btf = Btf.parse(blob, base=base_btf, source="prog")
    assert btf.start_id == base_btf.end_id == p and btf.end_id == ctx + 1
    assert btf.str_base == len(base.strings)
    assert [t.id for t in btf.own_types] == [p, ctx]
    assert [t.id for t in btf.all_types()] == list(range(1, ctx + 1))
    assert btf.type(task) is base_btf.type(task)
    assert btf.struct("prog_ctx").member("owner").type == p
    assert btf.type_name(p) == "struct task *"
    assert btf.offsetof("prog_ctx", "pid") == 8
    assert btf.struct("task").id == task
    with pytest.raises(KeyError):
        btf.struct("task", own_only=True)
    # Without its base, the split blob's ids and strings do not resolve.
    with pytest.raises(BtfError):
        Btf.parse(blob)


def test_split_btf_bad_reference_is_reported():
    base = BtfBuilder()
    base.int("int", 4)
    base_btf = Btf.parse(base.build())
    split = BtfBuilder(base=base)
    split.ptr(99)
    split.int("x", 4)
    with pytest.raises(BtfError, match="missing type #99") as e:
        Btf.parse(split.build(), base=base_btf)
    assert e.value.offset == 24                                   # the PTR record, first in the section


def test_header_len_larger_than_24_is_honoured():
    b = BtfBuilder()
    b.int("int", 4)
    btf = Btf.parse(b.build(hdr_len=32))
    assert btf.type(1).name == "int"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"\x00\x00" + d[2:], "bad magic"),
    (lambda d: d[:2] + b"\x02" + d[3:], "unsupported version"),
    (lambda d: d[:4] + struct.pack("<I", 8) + d[8:], "header length"),
    (lambda d: d[:4] + struct.pack("<I", 1 << 20) + d[8:], "header length"),
    (lambda d: d[:12] + struct.pack("<I", 1 << 20) + d[16:], "type section"),
    (lambda d: d[:20] + struct.pack("<I", 1 << 20) + d[24:], "string section"),
    (lambda d: d[:5], "shorter than"),
])
def test_header_errors(mutate, message):
    b = BtfBuilder()
    b.int("int", 4)
    with pytest.raises(BtfError, match=message) as e:
        Btf.parse(mutate(b.build()), source="x.btf")
    assert e.value.offset is not None
    assert str(e.value).startswith("x.btf: corrupt BTF at byte ")


def test_record_errors_name_the_type_and_offset():
    b = BtfBuilder()
    b.int("int", 4)
    b.raw(struct.pack("<III", 0, 25 << 24, 0))                    # kind 25 does not exist
    with pytest.raises(BtfError, match=r"type #2: unknown kind 25") as e:
        Btf.parse(b.build())
    assert e.value.offset == 24 + 16                               # header + the INT record
    b = BtfBuilder()
    b.raw(struct.pack("<III", 999, 1 << 24, 4) + struct.pack("<I", 32))
    with pytest.raises(BtfError, match="name offset 0x3e7 outside the string section"):
        Btf.parse(b.build())


def test_reference_cycles_do_not_hang():
    """A corrupt blob can make modifiers/pointers/arrays point at themselves."""
    b = BtfBuilder()
    b.typedef("loop", 1)                                           # typedef -> itself
    b.ptr(2)                                                       # pointer -> itself
    b.array(3, 3, 2)                                               # array of itself
    btf = Btf.parse(b.build())
    with pytest.raises(BtfError, match="deeper than"):
        btf.resolve(1)
    assert isinstance(btf.type_name(2), str)
    assert isinstance(btf.type_name(3), str)
    assert isinstance(btf.size_of(3), int)
    with pytest.raises(BtfError):
        btf.size_of(1)
