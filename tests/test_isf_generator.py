"""BTF -> ISF on hand-built BTF: schema, loading in Volatility, dwarf2json conventions."""

import base64
import json
import re

import pytest

from helpers.btf import BtfBuilder, all_kinds_blob
from helpers.isf import validate, volatility_table
from volatility3_ktstr.btf import Btf
from volatility3_ktstr.isf import generate, generate_types_only
from volatility3_ktstr.isf.banner import banner_bytes

BANNER = "Linux version 9.9.9-test (t@example) (gcc 1.0) #1 SMP"


def kernel_like(prefix_types=0):
    """A small kernel-like BTF. ``prefix_types`` unrelated types first shift every id, which must
    not change any name in the ISF."""
    b = BtfBuilder()
    for n in range(prefix_types):
        b.int(f"pad{n}_t", 4)
    i = b.int("int", 4, signed=True)
    u = b.int("unsigned int", 4)
    ul = b.int("long unsigned int", 8)
    ch = b.int("char", 1)
    comm = b.array(ch, u, 16)
    lh = b.struct("list_head", 16, [])
    plh = b.ptr(lh)
    lh2 = b.struct("list_head", 16, [("next", plh, 0), ("prev", plh, 64)])      # duplicate name
    anon_s = b.struct("", 8, [("lo", u, 0), ("hi", u, 32)])
    anon_u = b.union("", 8, [("", anon_s, 0), ("whole", ul, 0)])
    anon_e = b.enum("", 4, [("TASK_A", 0), ("TASK_B", 1)])
    named_e = b.enum("pid_type", 4, [("PIDTYPE_PID", 0), ("PIDTYPE_MAX", 4)])
    neg_e = b.enum("neg", 1, [("MINUS", -1)], signed=True)
    td_anon = b.typedef("atomic_t", b.struct("", 4, [("counter", i, 0)]))
    task = b.struct("task_struct", 64, [
        ("state", u, 0),
        ("flags", u, 32, 3),
        ("prio", u, 35, 9),
        ("pid", i, 64),
        ("", anon_u, 128),
        ("tasks", lh2, 192),
        ("usage", td_anon, 320),
        ("ptype", named_e, 352),
        ("kind", anon_e, 384),
        ("comm", comm, 416),
    ])
    fwd = b.fwd("opaque")
    holder = b.struct("holder", 16, [("o", b.ptr(fwd), 0), ("n", neg_e, 64)])
    var = b.var("runqueues", task)
    b.datasec(".data..percpu", 128, [(var, 64, 64)])
    return Btf.parse(b.build()), {"task": task, "holder": holder}


SYMS = {"init_task": (0xFFFFFFFF82000000, "D"), "linux_banner": (0xFFFFFFFF81E00000, "D"),
        "__per_cpu_start": (0, "D"), "_text": (0xFFFFFFFF81000000, "T")}


@pytest.fixture(scope="module")
def small():
    btf, ids = kernel_like()
    return btf, ids, generate(btf, SYMS, banner_bytes(BANNER), "x86_64", [])


def test_schema_valid(small):
    validate(small[2])
    validate(generate_types_only(Btf.parse(all_kinds_blob()[0])))


def test_schema_rejects_a_broken_isf(small):
    """The validator is live: a known-bad document fails."""
    import jsonschema

    bad = json.loads(json.dumps(small[2]))
    bad["user_types"]["task_struct"]["fields"]["pid"]["offset"] = "eight"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)


def test_loads_in_volatility_with_btf_offsets(small):
    btf, _, isf = small
    ctx, table = volatility_table(isf)
    task = table.get_type("task_struct")
    assert task.size == btf.struct("task_struct").size
    for member in ("comm", "pid", "tasks", "usage", "whole", "lo", "hi"):
        assert task.relative_child_offset(member) == btf.offsetof("task_struct", member), member
    assert table.get_symbol("init_task").address == SYMS["init_task"][0]
    assert table.get_symbol("init_task").type.vol.type_name.endswith("task_struct")


def test_base_types(small):
    bt = small[2]["base_types"]
    assert bt["void"] == {"size": 0, "signed": False, "kind": "void", "endian": "little"}
    assert bt["pointer"]["size"] == 8 and bt["pointer"]["kind"] == "int"
    assert bt["char"]["kind"] == "char" and bt["char"]["signed"] is True
    assert bt["int"] == {"size": 4, "signed": True, "kind": "int", "endian": "little"}
    assert bt["unsigned int"]["signed"] is False


def test_char_signedness_by_architecture():
    btf, _ = kernel_like()
    assert generate(btf, SYMS, None, "x86_64")["base_types"]["char"]["signed"] is True
    assert generate(btf, SYMS, None, "arm64")["base_types"]["char"]["signed"] is False


def test_unnamed_types_are_stable_and_independent_of_ids(small):
    isf = small[2]
    names = sorted(n for n in list(isf["user_types"]) + list(isf["enums"]) if n.startswith("unnamed_"))
    assert names and all(re.fullmatch(r"unnamed_[0-9a-f]{16}", n) for n in names)
    again = generate(kernel_like()[0], SYMS, banner_bytes(BANNER), "x86_64", [])
    shifted = generate(kernel_like(prefix_types=5)[0], SYMS, banner_bytes(BANNER), "x86_64", [])
    assert json.dumps(again, sort_keys=True) == json.dumps(isf, sort_keys=True)
    assert sorted(n for n in list(shifted["user_types"]) + list(shifted["enums"])
                  if n.startswith("unnamed_")) == names


def test_anonymous_members(small):
    fields = small[2]["user_types"]["task_struct"]["fields"]
    anon = [n for n in fields if n.startswith("unnamed_field_")]
    assert anon == ["unnamed_field_0"]
    f = fields["unnamed_field_0"]
    assert f["anonymous"] is True and f["offset"] == 16 and f["type"]["kind"] == "union"
    union = small[2]["user_types"][f["type"]["name"]]
    assert union["kind"] == "union" and "unnamed_field_0" in union["fields"]
    assert union["fields"]["unnamed_field_0"]["anonymous"] is True
    assert "anonymous" not in fields["pid"]


def test_bitfields(small):
    btf, _, isf = small
    fields = isf["user_types"]["task_struct"]["fields"]
    for name in ("flags", "prio"):
        bit, m = btf.member_path("task_struct", name)
        t = fields[name]
        assert t["offset"] == bit // 8
        assert t["type"] == {"kind": "bitfield", "bit_position": bit % 8, "bit_length": m.bit_size,
                             "type": {"kind": "base", "name": "unsigned int"}}


def test_typedefs_and_enums(small):
    isf = small[2]
    fields = isf["user_types"]["task_struct"]["fields"]
    # A typedef of an anonymous struct names it (dwarf2json: atomic_t).
    assert fields["usage"]["type"] == {"kind": "struct", "name": "atomic_t"}
    assert isf["user_types"]["atomic_t"]["fields"]["counter"]["offset"] == 0
    assert fields["ptype"]["type"] == {"kind": "enum", "name": "pid_type"}
    assert fields["kind"]["type"]["name"].startswith("unnamed_")
    for name, enum in isf["enums"].items():
        base = isf["base_types"][enum["base"]]
        assert base["kind"] == "int" and base["size"] == enum["size"], name
    assert isf["enums"]["pid_type"]["constants"] == {"PIDTYPE_PID": 0, "PIDTYPE_MAX": 4}
    assert isf["base_types"][isf["enums"]["neg"]["base"]]["signed"] is True
    assert isf["base_types"][isf["enums"]["pid_type"]["base"]]["signed"] is False


def test_duplicate_struct_names_keep_both(small):
    types = small[2]["user_types"]
    dups = [n for n in types if n == "list_head" or n.startswith("list_head__")]
    assert len(dups) == 2
    assert types["list_head"]["fields"] == {}           # first definition keeps the plain name
    full = [types[n] for n in dups if types[n]["fields"]][0]
    assert full["fields"]["prev"]["offset"] == 8
    # task_struct.tasks refers to the definition it really uses.
    tasks = types["task_struct"]["fields"]["tasks"]["type"]
    assert types[tasks["name"]]["fields"]["next"]["type"]["kind"] == "pointer"


def test_forward_declaration_placeholder(small):
    types = small[2]["user_types"]
    assert types["opaque"] == {"kind": "struct", "size": 0, "fields": {}}
    assert types["holder"]["fields"]["o"]["type"] == {"kind": "pointer",
                                                      "subtype": {"kind": "struct", "name": "opaque"}}


def test_symbols_banner_and_percpu(small):
    syms = small[2]["symbols"]
    data = base64.b64decode(syms["linux_banner"]["constant_data"])
    assert data == BANNER.encode() + b"\n\0"
    assert syms["linux_banner"]["address"] == SYMS["linux_banner"][0]
    assert syms["init_task"]["type"] == {"kind": "struct", "name": "task_struct"}
    assert syms["_text"]["type"] == {"kind": "base", "name": "void"}
    assert syms["runqueues"]["address"] == SYMS["__per_cpu_start"][0] + 64
    assert syms["runqueues"]["type"] == {"kind": "struct", "name": "task_struct"}


def test_banner_bytes():
    assert banner_bytes(BANNER) == BANNER.encode() + b"\n\0"
    assert banner_bytes(BANNER + "\n") == banner_bytes(BANNER.encode() + b"\n\0")
    with pytest.raises(ValueError):
        banner_bytes("Debian 7.2")


def test_types_only_for_split_btf():
    """A program BTF on the kernel's: only its own types, named the same way."""
    base = BtfBuilder()
    i = base.int("int", 4, signed=True)
    task = base.struct("task_struct", 8, [("pid", i, 0)])
    split = BtfBuilder(base=base)
    split.struct("task_ctx", 16, [("owner", split.ptr(task), 0), ("", split.struct("", 4, [("x", i, 0)]), 64)])
    btf = Btf.parse(split.build(), base=Btf.parse(base.build()))
    isf = generate_types_only(btf)
    validate(isf)
    assert "task_struct" not in isf["user_types"] and "task_ctx" in isf["user_types"]
    owner = isf["user_types"]["task_ctx"]["fields"]["owner"]["type"]
    assert owner == {"kind": "pointer", "subtype": {"kind": "struct", "name": "task_struct"}}
