"""IsfLayout (answers from the ISF dictionary) agrees with Volatility's own templates and with
BtfLayout over the same kernel's BTF: offsets, sizes, signedness, bitfields, anonymous members."""

import json
import lzma
from pathlib import Path

import pytest

from volatility3_ktstr.core import BtfLayout, LayoutError

REPO = Path(__file__).resolve().parents[1]
SAMPLE_ISF = sorted((REPO / "symbols" / "linux").glob("*-amd64.json.xz"))

PATHS = [
    ("task_struct", "pid"), ("task_struct", "comm"), ("task_struct", "tasks"), ("task_struct", "tasks.prev"),
    ("task_struct", "scx.dsq_list.node"), ("task_struct", "scx.flags"), ("task_struct", "se.vruntime"),
    ("task_struct", "__state"), ("bpf_map", "map_type"), ("bpf_map", "name"), ("bpf_map", "btf"),
    ("bpf_prog", "jited"), ("bpf_prog", "aux"), ("bpf_prog", "len"), ("bpf_prog_aux", "used_maps"),
    ("sched_ext_ops", "dispatch"), ("xa_node", "slots"), ("idr", "idr_rt.xa_head"),
    ("sk_buff", "pkt_type"), ("file", "f_op"), ("cgroup", "kn"), ("dentry", "d_name.name"),
    ("scx_dispatch_q", "list"), ("bpf_local_storage_elem", "map_node"), ("rq", "scx.nr_running"),
]


@pytest.fixture(scope="module")
def isf_layout():
    if not SAMPLE_ISF:
        pytest.skip("no bundled amd64 ISF under symbols/linux")
    from volatility3.framework import contexts
    from volatility3.framework.symbols import intermed

    from volatility3_ktstr.kernel import IsfLayout

    with lzma.open(SAMPLE_ISF[0]) as f:
        isf = json.load(f)
    ctx = contexts.Context()
    table = intermed.Version8Format(ctx, "t", "kt", isf)
    ctx.symbol_space.append(table)
    return ctx, IsfLayout(ctx, "kt")


def test_isf_layout_matches_volatility_templates(isf_layout):
    ctx, L = isf_layout
    for struct, path in PATHS:
        f = L.field(struct, path)
        tmpl = ctx.symbol_space.get_type("kt!" + struct)
        off = 0
        for part in path.split("."):
            o, sub = tmpl.vol.members[part]
            off += o
            # members of struct type are references until resolved by name
            tmpl = ctx.symbol_space.get_type(sub.vol.type_name) if type(sub).__name__ == "ReferenceTemplate" else sub
        assert f.offset == off, (struct, path)
        if not f.bit_size:
            assert f.size == tmpl.size, (struct, path)
    assert L.size("task_struct") == ctx.symbol_space.get_type("kt!task_struct").size
    with pytest.raises(LayoutError):
        L.field("task_struct", "no_such_member")
    assert not L.has("no_such_struct")


def test_isf_layout_matches_btf_layout(isf_layout, amd64_kernel_btf):
    _, L = isf_layout
    B = BtfLayout(amd64_kernel_btf)
    for struct, path in PATHS:
        a, b = L.field(struct, path), B.field(struct, path)
        assert (a.offset * 8 + a.bit_offset, a.bit_size, a.signed, a.kind) == \
               (b.offset * 8 + b.bit_offset, b.bit_size, b.signed, b.kind), (struct, path)
        if not a.bit_size:
            assert (a.size, a.count, a.elem_size) == (b.size, b.count, b.elem_size), (struct, path)


def test_members_and_function_pointers_agree(isf_layout, amd64_kernel_btf):
    _, L = isf_layout
    B = BtfLayout(amd64_kernel_btf)
    for struct in ("sched_ext_ops", "bpf_map", "task_struct"):
        assert [n for n, _ in L.members(struct)] == [n for n, _ in B.members(struct)], struct
    isf_cb = [n for n, f in L.members("sched_ext_ops") if f.kind == "function"]
    assert isf_cb[:3] == ["select_cpu", "enqueue", "dequeue"] and "dispatch" in isf_cb
    assert isf_cb == [n for n, f in B.members("sched_ext_ops") if f.kind == "function"]
