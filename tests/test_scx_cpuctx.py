"""The scheduler's own per-CPU context (sched_ext/cpuctx.py) and its rows in scxstate's cpu
section, on synthetic kernel memory laid out from the synthetic and the real kernel BTF
(tests/helpers/scxmem.py) with a scheduler program BTF made here: a PERCPU_ARRAY map, a
CPU-indexed ARRAY map, CPU-indexed arrays among the .bss globals (one a struct member) and the
arena globals, and the decoys the shape rule must leave out (a per-CPU map of another BPF
object, arrays of scalars, counts that are no CPU maximum, an array whose slots past the
possible CPUs are in use, a CPU-looking variable name on a small array). Discovery is by shape:
the variable names here are chosen to say nothing."""

import struct

import pytest

from helpers.bpf import BPF_DECLS, PCPU, ELEMS, htab
from helpers.btf import BtfBuilder
from helpers.scxmem import kernel, real, synth, w  # noqa: F401 (fixtures)
from helpers.scxmem import scx_kernel
from helpers.synth import SynthKernel
from volatility3_ktstr.btf import Btf
from volatility3_ktstr.kernel_model import Kernel
from volatility3_ktstr.sched_ext import SchedExt
from volatility3_ktstr.sched_ext import cpuctx
from volatility3_ktstr.sched_ext.cpuctx import find_cpu_contexts, is_cpu_cap
from volatility3_ktstr.views import scxstate

PROG = 0xFFFF_8880_7700_0000
OTHER = 0xFFFF_8880_7800_0000
ARENA_PAGES = 16
USER = 1 << 32
CTX = struct.Struct("<QII")        # struct ctx_t {u64 a; u32 b; u32 c;}


def program_btf():
    """(btf, ids): the scheduler's program BTF."""
    b = BtfBuilder()
    u64 = b.int("unsigned long long", 8)
    u32 = b.int("unsigned int", 4)
    ctx = b.struct("ctx_t", 16, [("a", u64, 0), ("b", u32, 64), ("c", u32, 96)])
    small = b.struct("pair", 8, [("x", u32, 0), ("y", u32, 32)])
    ids = {"ctx": ctx, "small": small}
    # .bss: [0] ctx_t zz[64] (taken), [1024] u32 lut[128] (scalars), [1536] pair used[64] with
    # slot 63 in use (rejected), [2048] ctx_t odd[48] (no power of two), [2816] struct holder
    # {u64 n; ctx_t inner[64];} (member taken), [3848] ctx_t cpu_ctxs[4] (a name, no shape)
    arr = lambda t, n: b.array(t, u32, n)   # noqa: E731
    holder = b.struct("holder", 8 + 16 * 64, [("n", u64, 0), ("inner", arr(ctx, 64), 64)])
    bss_vars = [("zz", arr(ctx, 64), 0, 1024), ("lut", arr(u32, 128), 1024, 512),
                ("used", arr(small, 64), 1536, 512), ("odd", arr(ctx, 48), 2048, 768),
                ("hh", holder, 2816, 1032), ("cpu_ctxs", arr(ctx, 4), 3848, 64)]
    ids["bss"] = b.datasec(".bss", 3912, [(b.var(n, t), off, size) for n, t, off, size in bss_vars])
    # arena globals: struct glob {u64 n; ctx_t q[128]; pair f[5];} g
    glob_size = 8 + 16 * 128 + 8 * 5
    glob = b.struct("glob", glob_size, [("n", u64, 0), ("q", arr(ctx, 128), 64),
                                         ("f", arr(small, 5), (8 + 16 * 128) * 8)])
    ids["arena_sec"] = b.datasec(".addr_space.1", glob_size, [(b.var("g", glob), 0, glob_size)])
    ids["glob_size"] = glob_size
    return Btf.parse(b.build(), source="scheduler program"), ids


def ctx_bytes(cpu, tag):
    return CTX.pack(tag + cpu, 100 + cpu, 7)


@pytest.fixture
def world(w):
    """A scheduler (struct_ops map of program PROG) with every source and decoy, on 2 CPUs."""
    btf, ids = program_btf()
    w.btfs[PROG] = btf
    sch = w.sched("qq")
    w.set_root(sch)
    w.link_all(sch)
    w.struct_ops_map(sch, map_id=20, name="qq_ops", btf_kva=PROG)
    ctx = ids["ctx"]
    # PERCPU_ARRAY of ctx_t, one element
    w.percpu_array_map(21, "pcpu_thing", PROG, ctx, [[ctx_bytes(c, 0x10) for c in range(w.ncpu)]])
    # ARRAY of ctx_t with 64 entries: CPU-indexed (slots past the CPUs zero)
    w.array_map(22, "by_index", PROG, ctx, [ctx_bytes(c, 0x20) for c in range(w.ncpu)], max_entries=64)
    # ARRAY of ctx_t with 64 entries whose slot 40 is in use: not by CPU
    w.array_map(23, "by_other", PROG, ctx, [ctx_bytes(0, 1)] * 41, max_entries=64)
    bss = bytearray(3912)
    for c in range(w.ncpu):
        bss[16 * c:16 * c + 16] = ctx_bytes(c, 0x30)                     # zz[c]
        bss[2816 + 8 + 16 * c:2816 + 8 + 16 * c + 16] = ctx_bytes(c, 0x40)  # hh.inner[c]
    bss[1536 + 63 * 8:1536 + 64 * 8] = struct.pack("<II", 5, 5)          # used[63]
    w.section_map(24, "qq.bss", PROG, ids["bss"], bytes(bss))
    # the arena and its globals at its end
    _, window = w.arena_map(25, ARENA_PAGES, user_vm_start=USER)
    span = ARENA_PAGES * 4096
    globals_off = span - (ids["glob_size"] + 4095) // 4096 * 4096
    for c in range(w.ncpu):
        w.mem.write(window + globals_off + 8 + 16 * c, ctx_bytes(c, 0x50))
    # another BPF object's per-CPU map (no struct_ops): not the scheduler's
    w.btfs[OTHER] = btf
    w.percpu_array_map(26, "not_mine", OTHER, ctx, [[ctx_bytes(c, 0x60) for c in range(w.ncpu)]])
    return w, ids, window + globals_off


def contexts(w):
    return SchedExt(scx_kernel(w)).cpu_contexts()


def sources(ctx):
    return {s.name: s for s in ctx.sources}


def test_cpu_cap_rule():
    assert is_cpu_cap(64, 2) and is_cpu_cap(1024, 2) and is_cpu_cap(128, 128)
    assert not is_cpu_cap(48, 2) and not is_cpu_cap(32, 2) and not is_cpu_cap(64, 65)


def test_sources_found_by_shape(world):
    w, ids, glob_kva = world
    ctx = contexts(w)
    got = sources(ctx)
    assert set(got) == {"map pcpu_thing", "map by_index", "zz", "hh.inner", "g.q"}, set(got)
    assert got["map pcpu_thing"].kind == "per-CPU map"
    assert "BPF_MAP_TYPE_PERCPU_ARRAY" in got["map pcpu_thing"].why
    assert got["map by_index"].kind == "array map" and "elements 2..63 all zero" in got["map by_index"].why
    assert got["zz"].kind == "global" and "in map qq.bss" in got["zz"].why
    assert got["g.q"].kind == "arena global" and "ctx_t[128]" in got["g.q"].why
    assert "elements 2..127 all zero" in got["g.q"].why
    assert all(s.owner.startswith("qq (struct_ops qq_ops)") for s in ctx.sources), ctx.sources
    rejected = dict(ctx.rejected)
    assert "element 63 differs" in rejected["used"] and "not indexed by CPU" in rejected["used"]
    assert "element 41 differs" in rejected["map by_other"]   # 2..40 in use, 41 not
    assert "odd" not in rejected and "lut" not in rejected and "cpu_ctxs" not in rejected
    # each CPU's value of each source, at its address
    for name, tag in (("map pcpu_thing", 0x10), ("map by_index", 0x20), ("zz", 0x30),
                      ("hh.inner", 0x40), ("g.q", 0x50)):
        vals = {v.cpu: v for v in got[name].values}
        assert sorted(vals) == list(range(w.ncpu)), name
        for c, v in vals.items():
            assert v.error is None and v.raw == ctx_bytes(c, tag), (name, c)
    q = {v.cpu: v for v in got["g.q"].values}
    assert q[1].addr == glob_kva + 8 + 16 and q[1].label == "g.q[1]"


def test_scxstate_rows(world):
    w, ids, _ = world
    rows = [(d, dict(zip(scxstate.GRID.names(), r))) for d, r in scxstate.rows(scx_kernel(w))]
    cpu = [(d, r["Object"], r["Key"], r["Value"]) for d, r in rows if r["Section"] == "cpu"]
    src = [v for _, o, k, v in cpu if o == "sched_ctx" and k == "source"]
    assert len(src) == 5 and any(v.startswith("g.q: arena global of qq") for v in src), src
    rej = [v for _, o, k, v in cpu if o == "sched_ctx" and k == "rejected"]
    assert len(rej) == 2
    mine = {(o, v.split(" ", 1)[0]): (d, v) for d, o, k, v in cpu if k == "sched_ctx"}
    d, text = mine[("cpu1", "g.q[1]")]
    assert d == 1 and text == "g.q[1] (struct ctx_t): {a=81 b=101 c=7}"
    d, text = mine[("cpu0", "pcpu_thing[0]")]
    assert text == "pcpu_thing[0] (struct ctx_t): {a=16 b=100 c=7}"
    assert ("cpu1", "not_mine[0]") not in mine
    # the per-CPU child rows come after that CPU's own rows
    order = [(o, k) for _, o, k, _ in cpu]
    assert order.index(("cpu0", "sched_ctx")) < order.index(("cpu1", "nr_running"))


def test_unreadable_values_and_no_arena_window(world):
    w, ids, glob_kva = world
    # the arena page holding g.q[1] unreadable: that value says so, the others stay
    k = scx_kernel(w)
    holey = Kernel(w.mem.with_holes([(glob_kva + 8 + 16, 16)]), w.L, k.symbol_table, btf=w.btf,
                   btf_cache=dict(w.btfs))
    got = sources(SchedExt(holey).cpu_contexts())
    q = {v.cpu: v for v in got["g.q"].values}
    assert q[0].raw == ctx_bytes(0, 0x50) and q[1].raw is None and "unreadable" in q[1].error
    text = scxstate.sched_ctx_text(got["g.q"], q[1])
    assert text.startswith("g.q[1] (struct ctx_t): unreadable at ")


def test_no_scheduler_object_says_none(w):
    sch = w.sched("qq")
    w.set_root(sch)
    rows = [dict(zip(scxstate.GRID.names(), r)) for _, r in scxstate.rows(scx_kernel(w))]
    (none,) = [r["Value"] for r in rows if r["Object"] == "sched_ctx" and r["Key"] == "source"]
    assert none.startswith("none: no per-CPU map") and "no struct_ops map holds a sched_ext_ops" in none


def test_percpu_hash_values_per_key_and_cpu():
    """PERCPU_HASH values through bpf/values.py's hash walk: one value per key and CPU."""
    layout = SynthKernel(BPF_DECLS).layout
    btf, ids = program_btf()
    mem, m = htab(layout, chains={1: [(ELEMS, struct.pack("<I", 9), PCPU)]}, percpu=True,
                  value_size=16)
    offsets = [0, 0x100]
    for c, off in enumerate(offsets):
        mem.write(PCPU + off, ctx_bytes(c, 0x70))
    m.btf_kva, m.btf_value_type_id, m.name = PROG, ids["ctx"], "keyed"

    class Ops:
        btf_kva, name, kva = PROG, "qq_ops", 0
    ctx = find_cpu_contexts(mem, layout, [m], lambda kva: btf, [Ops], offsets)
    (src,) = ctx.sources
    assert "BPF_MAP_TYPE_PERCPU_HASH" in src.why
    assert [(v.cpu, v.label, v.raw) for v in src.values] == [
        (0, "keyed[9]", ctx_bytes(0, 0x70)), (1, "keyed[9]", ctx_bytes(1, 0x70))]
    # bounded: never more than MAX_MAP_KEYS elements of one map
    assert cpuctx.MAX_MAP_KEYS <= 16
