"""BTF -> ISF on real kernels: the dumps' 7.2 kernels and this machine's 6.18 BTF.

Checks the ISF against the BTF it came from (sizes, every member offset through anonymous
members, bitfields), against Volatility's schema, and as Volatility loads it."""

import hashlib
import json
import os
import re
import time
from pathlib import Path

import pytest

import dumps
from helpers.isf import schema, volatility_table
from volatility3_ktstr import btf as btfmod
from volatility3_ktstr.btf import Kind
from volatility3_ktstr.isf import generate
from volatility3_ktstr.isf.banner import banner_bytes
from volatility3_ktstr.isf.symbols import load_symbol_file

AGGREGATE = (Kind.STRUCT, Kind.UNION)


def truth_banner(kdir):
    for n in dumps.list_dumps():
        if dumps.kernel_dir(n) == kdir:
            return dumps.load_truth(n)["kernel"]["banner"]
    return f"Linux version {kdir.name} (no dump)"


def _kernel_params():
    """The x86-64 kernel in the quick tier, the others slow."""
    kdirs = dumps.kernel_dirs()
    quick = next((k for k in kdirs if k.name.endswith("-amd64")), kdirs[0] if kdirs else None)
    return [pytest.param(k, id=k.name, marks=() if k == quick else pytest.mark.slow) for k in kdirs]


@pytest.fixture(scope="module", params=_kernel_params())
def kernel(request):
    kdir = request.param
    arch = "arm64" if kdir.name.endswith("arm64") else "x86_64"
    k = btfmod.load(kdir / "btf.raw")
    syms = load_symbol_file(kdir / "System.map")
    isf = generate(k, syms, banner_bytes(truth_banner(kdir)), arch, [])
    return kdir, arch, k, syms, isf


@pytest.fixture(scope="module")
def machine_isf(machine_btf):
    arch = btfmod.guess_arch(machine_btf) or "x86_64"
    return generate(machine_btf, {}, None, arch, [])


# --- round trip --------------------------------------------------------------------------


class RoundTrip:
    """Compares a BTF struct with an ISF user type, recursively through member structs."""

    def __init__(self, btf, isf):
        self.btf = btf
        self.types = isf["user_types"]
        self.ok = set()
        self.checked_members = 0
        self.suffixed = {}
        for n in self.types:
            m = re.fullmatch(r"(.+)__[0-9a-f]{8}", n)
            if m:
                self.suffixed.setdefault(m.group(1), []).append(n)

    def candidates(self, name):
        """ISF names a BTF struct called ``name`` may have (same-named BTF types get a suffix)."""
        return [name] + self.suffixed.get(name, [])

    def same(self, t, isf_name):
        key = (t.id, isf_name)
        if key in self.ok:
            return None
        self.ok.add(key)                      # optimistic for recursive types; undone on mismatch
        problem = self._compare(t, isf_name)
        if problem:
            self.ok.discard(key)
        return problem

    def _compare(self, t, isf_name):
        it = self.types.get(isf_name)
        kind = "struct" if t.kind == Kind.STRUCT else "union"
        if it is None:
            return f"{isf_name}: missing"
        if (it["kind"], it["size"]) != (kind, t.size):
            return f"{isf_name}: {it['kind']} size {it['size']} != BTF {kind} {t.size}"
        fields = it["fields"]
        if len(fields) != len(t.members):
            return f"{isf_name}: {len(fields)} fields != {len(t.members)} BTF members"
        anon = 0
        for m in t.members:
            if m.name:
                fname = m.name
            else:
                fname = f"unnamed_field_{anon:x}"
                anon += 1
            f = fields.get(fname)
            if f is None:
                return f"{isf_name}.{fname}: missing"
            if bool(f.get("anonymous")) == bool(m.name):
                return f"{isf_name}.{fname}: anonymous flag"
            desc = f["type"]
            bit = f["offset"] * 8
            if m.bit_size:
                if desc["kind"] != "bitfield" or desc["bit_length"] != m.bit_size:
                    return f"{isf_name}.{fname}: bitfield {desc} != {m.bit_size} bits"
                bit += desc["bit_position"]
            if bit != m.bit_offset:
                return f"{isf_name}.{fname}: bit offset {bit} != BTF {m.bit_offset}"
            self.checked_members += 1
            inner = self.btf.resolve(m.type)
            while inner is not None and inner.kind == Kind.ARRAY and desc.get("kind") == "array":
                if desc["count"] != inner.nelems:
                    return f"{isf_name}.{fname}: array count {desc['count']} != {inner.nelems}"
                inner, desc = self.btf.resolve(inner.type), desc["subtype"]
            if inner is not None and inner.kind in AGGREGATE and not m.bit_size:
                if desc.get("kind") not in ("struct", "union"):
                    return f"{isf_name}.{fname}: {desc} is not a struct"
                problem = self.same(inner, desc["name"])
                if problem:
                    return problem
        return None

    def check_all(self):
        """Every named struct/union of the BTF matches one of its ISF candidates."""
        problems = []
        n = 0
        for t in self.btf.all_types():
            if t.kind in AGGREGATE and t.name:
                n += 1
                results = [self.same(t, c) for c in self.candidates(t.name)]
                if all(results):
                    problems.append(results[0])
        return n, problems


def test_machine_btf_round_trip(machine_btf, machine_isf):
    rt = RoundTrip(machine_btf, machine_isf)
    n, problems = rt.check_all()
    assert not problems, problems[:10]
    named = sum(1 for t in machine_btf.all_types() if t.kind in AGGREGATE and t.name)
    assert n == named and rt.checked_members > 5 * n
    # Anonymous aggregates were reached through their members, not skipped.
    assert any(name.startswith("unnamed_") for _tid, name in rt.ok)


def test_round_trip_detects_a_wrong_offset(machine_btf, machine_isf):
    """The comparison is live: one moved member is reported."""
    isf = json.loads(json.dumps(machine_isf))
    isf["user_types"]["task_struct"]["fields"]["comm"]["offset"] += 8
    rt = RoundTrip(machine_btf, isf)
    problem = rt.same(machine_btf.struct("task_struct"), "task_struct")
    assert problem and "task_struct.comm" in problem


def test_machine_isf_in_volatility(machine_btf, machine_isf):
    """Volatility's view (anonymous members flattened) of the structs plugins use."""
    _ctx, table = volatility_table(machine_isf, "m")
    checked = 0
    for name in ("task_struct", "mm_struct", "bpf_map", "bpf_prog", "sched_ext_entity", "rq",
                 "file", "cgroup", "idr", "xarray", "xa_node", "btf"):
        if not machine_btf.find(name, Kind.STRUCT):
            continue
        st = machine_btf.struct(name)
        vt = table.get_type(name)
        assert vt.size == st.size
        for member in _member_names(machine_btf, st):
            assert vt.relative_child_offset(member) == machine_btf.offsetof(name, member), (name, member)
            checked += 1
    assert checked > 100


def _member_names(btf, st, depth=0):
    """Names reachable from ``st`` directly or through anonymous members."""
    for m in st.members:
        if m.name:
            yield m.name
        elif depth < 8:
            inner = btf.resolve(m.type)
            if inner is not None and inner.kind in AGGREGATE:
                yield from _member_names(btf, inner, depth + 1)


# --- the dumps' kernels --------------------------------------------------------------------


def test_kernel_round_trip(kernel):
    _kdir, _arch, k, _syms, isf = kernel
    n, problems = RoundTrip(k, isf).check_all()
    assert not problems, problems[:10]


def test_kernel_isf_loads_in_volatility(kernel):
    kdir, arch, k, syms, isf = kernel
    _ctx, table = volatility_table(isf, "k")
    task = table.get_type("task_struct")
    assert task.relative_child_offset("comm") == k.offsetof("task_struct", "comm")
    assert task.relative_child_offset("tasks") == k.offsetof("task_struct", "tasks")
    assert task.size == k.struct("task_struct").size
    assert table.get_symbol("init_task").address == syms["init_task"][0]
    assert table.get_symbol("init_task").type.vol.type_name.endswith("task_struct")
    banner = table.get_symbol("linux_banner")
    assert banner.constant_data == truth_banner(kdir).encode() + b"\n\0"
    assert isf["base_types"]["char"]["signed"] is (arch == "x86_64")
    # Per-CPU variables come from the BTF DATASEC (System.map has them too: same address).
    runqueues = isf["symbols"]["runqueues"]
    assert runqueues["type"] == {"kind": "struct", "name": "rq"}
    assert runqueues["address"] == syms["runqueues"][0]


def subset(isf, stride=97):
    """A deterministic sample of the ISF: every table's shape, ~1/stride of the big ones,
    plus the types Linux plugins read most."""
    keep = {"task_struct", "mm_struct", "list_head", "pid", "bpf_map", "bpf_prog"}

    def sample(table):
        return {n: v for n, v in table.items()
                if n in keep or int(hashlib.sha1(n.encode()).hexdigest()[:8], 16) % stride == 0}

    return {"metadata": isf["metadata"], "base_types": isf["base_types"],
            "user_types": sample(isf["user_types"]), "enums": sample(isf["enums"]),
            "symbols": sample(isf["symbols"])}


def test_kernel_isf_schema(kernel):
    """Full validation of a kernel ISF takes minutes with jsonschema (vol itself validates the
    whole file in the e2e tests); here a deterministic sample plus 60 types with bitfields or
    anonymous members, or everything with KTSTR_FULL_SCHEMA=1."""
    import jsonschema

    isf = kernel[4]
    doc = isf if os.environ.get("KTSTR_FULL_SCHEMA") else subset(isf)
    special = sorted((hashlib.sha1(n.encode()).hexdigest(), n) for n, t in isf["user_types"].items()
                     if any(f["type"]["kind"] == "bitfield" or f.get("anonymous")
                            for f in t["fields"].values()))
    doc["user_types"] = {**doc["user_types"], **{n: isf["user_types"][n] for _h, n in special[:60]}}
    assert len(doc["user_types"]) > 100 and len(doc["symbols"]) > 100
    t0 = time.time()
    jsonschema.Draft4Validator(schema()).validate(doc)
    print(f"validated {len(doc['user_types'])} types, {len(doc['symbols'])} symbols "
          f"in {time.time() - t0:.1f} s")
