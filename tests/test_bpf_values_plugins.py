"""Plugin-level robustness without a dump: corrupt/absent BTF, struct_ops slot naming."""

import importlib.util
import struct
from pathlib import Path

import pytest

from helpers.bpf import BPF_DECLS
from helpers.btf import BtfBuilder
from helpers.synth import SynthKernel, kernel_of, layout_fixture
from volatility3_ktstr.bpf.maps import BpfMap
from volatility3_ktstr.bpf.progs import BpfProg
from volatility3_ktstr.core import BufferReader
from volatility3_ktstr.errors import KtstrError
from volatility3_ktstr.kernel_model import Kernel
from volatility3_ktstr.views import mapdump as mapdump_view
from volatility3_ktstr.views import maps as maps_view

PLUGINS = Path(__file__).resolve().parents[1] / "volatility3_ktstr" / "plugins" / "linux" / "ktstr"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"ktstr_test_{name}", PLUGINS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _Kctx(btf=None, error=None):
    """The kernel type with one program BTF object at 0x1000 (parsed, or failing with ``error``)."""
    found = {0x1000: KtstrError(error)} if error else {0x1000: btf} if btf is not None else {}
    return Kernel(BufferReader({}), None, btf_cache=found)


def test_maps_row_reports_corrupt_btf():
    m = BpfMap(kva=1, id=6, type_name="array", btf_kva=0x1000, btf_value_type_id=5)
    errors = []
    key_t, value_t, _ = maps_view.type_names(_Kctx(error="BTF object at 0x1000: corrupt BTF at byte 0x0: bad magic"), m, errors)
    assert (key_t, value_t) == ("", "") and errors and "bad magic" in errors[0]


def test_maps_type_names_from_program_btf():
    b = BtfBuilder()
    i = b.int("int", 4, signed=True)
    s = b.struct("val", 4, [("x", i, 0)])
    m = BpfMap(kva=1, id=4, type_name="hash", btf_kva=0x1000, btf_key_type_id=i, btf_value_type_id=s)
    errors = []
    assert maps_view.type_names(_Kctx(b.btf()), m, errors)[:2] == ("int", "struct val") and not errors


def test_mapdump_without_btf_is_hex_only():
    m = BpfMap(kva=1, id=8, type_name="array", btf_kva=0, btf_value_type_id=0)
    assert mapdump_view.map_btf(_Kctx(), m) == (None, None)
    m = BpfMap(kva=1, id=6, type_name="array", btf_kva=0x1000, btf_value_type_id=3)
    btf, problem = mapdump_view.map_btf(_Kctx(error="unreadable"), m)
    assert btf is None and "no typed view" in problem


def test_struct_ops_slots_name_programs():
    from volatility3_ktstr.render import render

    b = BtfBuilder()
    i = b.int("int", 4, signed=True)
    proto = b.func_proto(i, [])
    fp = b.ptr(proto)
    char = b.int("char", 1, signed=True)
    name = b.array(char, i, 8)
    ops = b.struct("sched_ext_ops", 32, [("select_cpu", fp, 0), ("enqueue", fp, 64), ("tick", fp, 128),
                                         ("name", name, 192)])
    common = b.struct("bpf_struct_ops_common_value", 8, [("refcnt", i, 0), ("state", i, 32)])
    wrap = b.struct("bpf_struct_ops_sched_ext_ops", 40, [("common", common, 0), ("data", ops, 64)])
    kbtf = b.btf()
    kval = struct.pack("<iiQQQ8s", 1, 1, 0xFFFFFFFFC0001000, 0xFFFFFFFFC0002000, 0, b"sdt")
    uval = struct.pack("<iiQQQ8s", 0, 0, 7, 9, 0, b"sdt")
    value = render(kbtf, wrap, kval)

    class Namer:
        def name(self, addr):
            return f"sym@{addr:#x}"

    progs = {7: BpfProg(kva=0, id=7, name="sdt_select_cpu")}
    mapdump_view.name_ops(kbtf, wrap, kval, uval, value, Namer(), progs)
    data = value["data"]
    assert data["select_cpu"] == {"prog_id": 7, "prog": "sdt_select_cpu", "ptr": "0xffffffffc0001000"}
    # id 9 is not a known program: fall back to the symbol name of the pointer
    assert data["enqueue"] == {"prog_id": 9, "prog": "sym@0xffffffffc0002000", "ptr": "0xffffffffc0002000"}
    assert data["tick"] == "0x0" and data["name"] == "sdt"
    # without uvalue: names from addresses only
    value = render(kbtf, wrap, kval)
    mapdump_view.name_ops(kbtf, wrap, kval, None, value, Namer(), progs)
    assert value["data"]["select_cpu"] == {"prog": "sym@0xffffffffc0001000", "ptr": "0xffffffffc0001000"}


def test_struct_ops_row_survives_a_kernel_btf_without_the_wrapper(monkeypatch):
    """Fuzz finding: a damaged btf_vmlinux that lacks the struct_ops value type must cost the
    program names, not the run."""
    from volatility3_ktstr.bpf import values as bv

    b = BtfBuilder()
    b.int("int", 4, signed=True)
    kbtf = b.btf()                       # type 99 does not exist
    kval = bytes(16)
    monkeypatch.setattr(bv, "struct_ops_value", lambda reader, layout, m: (kval, kval, 0))

    m = BpfMap(kva=1, id=2, type_name="struct_ops", name="sdt_ops", btf_vmlinux_value_type_id=99)
    with pytest.raises(KeyError):
        mapdump_view.name_ops(kbtf, 99, kval, kval, {"data": {}}, None, {})
    rows = list(mapdump_view.struct_ops(Kernel(None, None, btf=kbtf), m, None, {}))
    assert len(rows) == 1 and rows[0][1][mapdump_view.GRID.index["MapName"]] == "sdt_ops"


@pytest.mark.parametrize("plugin", ["maps", "progs", "mapdump"])
def test_plugin_modules_hold_one_plugin_class(plugin):
    from volatility3.framework import interfaces

    mod = _load(plugin)
    classes = [v for v in vars(mod).values() if isinstance(v, type)
               and issubclass(v, interfaces.plugins.PluginInterface) and v.__module__ == mod.__name__]
    assert len(classes) == 1


# Kernel map structs: a synthetic kernel with other offsets, and the real BTF if present.
layout = layout_fixture(lambda: SynthKernel(BPF_DECLS).layout)


PERCPU_OFFSETS = 0xFFFFFFFF82000000


def _MemKctx(mem, layout, btf, offsets=(0,)):
    """The kernel type over a map's memory: per-CPU offsets and the program BTF at 0x1000."""
    mem.add(PERCPU_OFFSETS, bytes(0x1000))
    return kernel_of(mem, layout, {"__per_cpu_offset": PERCPU_OFFSETS, "nr_cpu_ids": PERCPU_OFFSETS + 0x800},
                     btfs={0x1000: btf}, percpu_offsets=offsets)


def _prog_btf():
    b = BtfBuilder()
    i = b.int("int", 4, signed=True)
    u64 = b.int("long long unsigned int", 8)
    val = b.struct("stats", 8, [("count", u64, 0)])
    return b.btf(), i, val


def test_mapdump_hash_rows_are_bpftool_shaped(layout):
    import json

    import helpers.bpf as tv

    chains = {1: [(tv.ELEMS, struct.pack("<i", 42), struct.pack("<Q", 7))]}
    mem, m = tv.htab(layout, chains=chains)
    btf, key_t, val_t = _prog_btf()
    m.name, m.btf_kva, m.btf_key_type_id, m.btf_value_type_id = "counts", 0x1000, key_t, val_t
    rows = list(mapdump_view.elements(_MemKctx(mem, layout, btf), m, 16))
    assert len(rows) == 1
    level, (map_id, name, mtype, index, cpu, key, value, formatted, error) = rows[0]
    assert (level, map_id, name, mtype, index, key, value, error) == (0, 3, "counts", "hash", 0, "42", "{count=7}", "")
    assert json.loads(formatted) == {"key": ["0x2a", "0x00", "0x00", "0x00"],
                                     "value": ["0x07"] + ["0x00"] * 7,
                                     "formatted": {"key": 42, "value": {"count": 7}}}


def test_mapdump_percpu_hash_rows(layout):
    import json

    import helpers.bpf as tv

    mem, m = tv.htab(layout, chains={0: [(tv.ELEMS, struct.pack("<i", 1), tv.PCPU)]}, percpu=True)
    mem.write(tv.PCPU, struct.pack("<Q", 5))
    mem.write(tv.PCPU + 0x1000, struct.pack("<Q", 6))
    btf, key_t, val_t = _prog_btf()
    m.name, m.btf_kva, m.btf_key_type_id, m.btf_value_type_id = "pc", 0x1000, key_t, val_t
    rows = list(mapdump_view.elements(_MemKctx(mem, layout, btf, [0, 0x1000]), m, 16))
    assert [r[0] for r in rows] == [0, 1, 1]
    shaped = json.loads(rows[0][1][7])
    assert shaped["formatted"] == {"key": 1, "values": [{"cpu": 0, "value": {"count": 5}},
                                                        {"cpu": 1, "value": {"count": 6}}]}
    assert shaped["values"][1] == {"cpu": 1, "value": ["0x06"] + ["0x00"] * 7}
    assert [(r[1][4], r[1][6]) for r in rows[1:]] == [(0, "{count=5}"), (1, "{count=6}")]


def test_mapdump_truncation_and_skips_are_rows(layout):
    import helpers.bpf as tv

    chains = {0: [(tv.ELEMS + 0x100 * k, struct.pack("<i", k), struct.pack("<Q", k)) for k in range(3)]}
    mem, m = tv.htab(layout, chains=chains)
    tv.set_next(mem, layout, tv.ELEMS + 0x200, 0xFFFF888077770000)   # -> unmapped
    btf, key_t, val_t = _prog_btf()
    m.name, m.btf_kva, m.btf_key_type_id, m.btf_value_type_id = "h", 0x1000, key_t, val_t
    rows = list(mapdump_view.elements(_MemKctx(mem, layout, btf), m, 2))
    errors = [r[1][8] for r in rows if r[1][3] == -1]
    assert any("unreadable" in e for e in errors) and any("not shown" in e for e in errors)


def test_mapdump_empty_hash_says_so(layout):
    import helpers.bpf as tv

    mem, m = tv.htab(layout)
    btf, key_t, val_t = _prog_btf()
    m.name, m.btf_kva, m.btf_key_type_id, m.btf_value_type_id = "empty", 0x1000, key_t, val_t
    rows = list(mapdump_view.elements(_MemKctx(mem, layout, btf), m, 16))
    assert [(r[1][3], r[1][6]) for r in rows] == [(-1, "(no elements)")]
