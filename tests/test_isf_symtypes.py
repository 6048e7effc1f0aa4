"""Symbol types without DWARF (isf/symtypes.py): each source on a hand-built BTF, the producer
metadata Volatility's plugins check, and on the dumps' real kernels every symbol Volatility's
own Linux plugins read with a type."""

import pytest

import dumps
from helpers.btf import BtfBuilder
from helpers.isf import validate, volatility_table
from volatility3_ktstr import btf as btfmod
from volatility3_ktstr.btf import Btf
from volatility3_ktstr.isf import generate, symtypes
from volatility3_ktstr.isf.banner import banner_bytes
from volatility3_ktstr.isf.symbols import load_symbol_file

BANNER = banner_bytes("Linux version 9.9.9-test (t@example) (gcc 1.0) #1 SMP")
BASE = 0xFFFFFFFF82000000


def world(global_vars=True):
    """A small kernel BTF: a few structs, typedefs, a per-CPU and (optionally) .data/.bss
    DATASECs as pahole's global_var encoding writes them."""
    b = BtfBuilder()
    i = b.int("int", 4, signed=True)
    u = b.int("unsigned int", 4)
    ul = b.int("long unsigned int", 8)
    ch = b.int("char", 1, signed=True)
    u8 = b.typedef("u8", b.int("unsigned char", 1))
    b.typedef("u16", b.int("short unsigned int", 2))
    b.typedef("tracepoint_ptr_t", i)
    lh = b.struct("list_head", 16, [])
    plh = b.ptr(lh)
    b.replace(lh, "struct", "list_head", 16, [("next", plh, 0), ("prev", plh, 64)])
    tp = b.struct("tracepoint", 72, [("name", b.ptr(ch), 0), ("key", ul, 64)])
    ops = b.struct("ftrace_ops", 200, [("func", ul, 0)])
    b.struct("tk_data", 640, [("seq", u, 0)])
    b.enum("timekeeper_ids", 4, [("TIMEKEEPER_CORE", 0), ("TIMEKEEPERS_MAX", 1)])
    b.struct("kernel_symbol", 12, [("value_offset", i, 0), ("name_offset", i, 32), ("ns", i, 64)])
    task = b.struct("task_struct", 64, [("pid", i, 0), ("tasks", lh, 64)])
    rq = b.var("runqueues", task)
    b.datasec(".data..percpu", 64, [(rq, 0, 64)])
    if global_vars:
        a = b.var("answer", i)
        counter = b.var("counter_list", lh)
        hidden = b.var("not_in_map", ops)
        static = b.var("same_name", u8)
        b.datasec(".data", 4096, [(a, 0, 4), (counter, 16, 16), (hidden, 256, 200), (static, 512, 1)])
    return Btf.parse(b.build())


SYMS = {
    "linux_banner": (BASE - 0x100000, "D"),
    "__per_cpu_start": (0, "D"),
    # .data at BASE: placed by the BTF variables' offsets
    "answer": (BASE + 0, "D"),
    "counter_list": (BASE + 16, "D"),
    "same_name": (BASE + 0x9000, "d"),          # another object of that name (a static)
    # the documented table
    "init_task": (BASE + 0x1000, "D"),          # 64 bytes of room: typed
    "ftrace_ops_list": (BASE + 0x1040, "D"),    # a pointer
    "ftrace_list_end": (BASE + 0x1048, "D"),    # 0x10 bytes of room for a 200-byte struct: not typed
    "kallsyms_num_syms": (BASE + 0x1058, "D"),
    "kallsyms_names": (BASE + 0x105C, "D"),     # u8[] up to the next symbol
    "timekeeper_data": (BASE + 0x2000, "b"),
    # section bounds: 5 ints
    "__start___tracepoints_ptrs": (BASE + 0x3000, "D"),
    "__stop___tracepoints_ptrs": (BASE + 0x3014, "D"),
    # names macros make
    "__tracepoint_sched_switch": (BASE + 0x4000, "D"),
    "__tracepoint_tiny": (BASE + 0x4048, "D"),  # 8 bytes of room: not a struct tracepoint
    "__tracepoint_": (BASE + 0x4050, "D"),     # the bare prefix names nothing
    "__ksymtab_printk": (BASE + 0x5000, "r"),
    "_end": (BASE + 0x8000, "B"),
    "zz_last": (BASE + 0x10000, "B"),
}


@pytest.fixture(scope="module")
def isf():
    return generate(world(), SYMS, BANNER, "x86_64", [])


def _sym(isf, name):
    return isf["symbols"][name]


def _src(isf, name):
    return isf["metadata"]["producer"]["symbol_type_sources"].get(name)


def test_schema_valid_with_sources(isf):
    validate(isf)


def test_btf_variables_placed_and_typed(isf):
    assert _sym(isf, "answer")["type"] == {"kind": "base", "name": "int"}
    assert _src(isf, "answer") == "btf-var .data"
    assert _sym(isf, "counter_list")["type"] == {"kind": "struct", "name": "list_head"}
    # absent from the symbol file: placed by the section's other variables
    assert _sym(isf, "not_in_map") == {"address": BASE + 256, "type": {"kind": "struct", "name": "ftrace_ops"}}
    # the symbol file's object of that name is elsewhere: not this variable, no type
    assert _sym(isf, "same_name")["type"] == {"kind": "base", "name": "void"}
    assert _src(isf, "same_name") is None
    assert _sym(isf, "runqueues")["type"] == {"kind": "struct", "name": "task_struct"}
    assert _src(isf, "runqueues") == "btf-var .data..percpu"


def test_table_types_fit_their_room(isf):
    assert _sym(isf, "init_task")["type"] == {"kind": "struct", "name": "task_struct"}
    assert _src(isf, "init_task") == "table"
    assert _sym(isf, "ftrace_ops_list")["type"] == {
        "kind": "pointer", "subtype": {"kind": "struct", "name": "ftrace_ops"}}
    assert _sym(isf, "ftrace_list_end")["type"] == {"kind": "base", "name": "void"}
    assert _src(isf, "ftrace_list_end") is None
    assert _sym(isf, "kallsyms_num_syms")["type"] == {"kind": "base", "name": "unsigned int"}
    assert _sym(isf, "kallsyms_names")["type"] == {
        "kind": "array", "count": 0x2000 - 0x105C, "subtype": {"kind": "base", "name": "unsigned char"}}


def test_section_bounds(isf):
    assert _sym(isf, "__start___tracepoints_ptrs")["type"] == {
        "kind": "array", "count": 5, "subtype": {"kind": "base", "name": "int"}}
    assert _sym(isf, "__stop___tracepoints_ptrs")["type"]["count"] == 0
    assert _src(isf, "__start___tracepoints_ptrs") == "section __tracepoints_ptrs"


def test_name_patterns(isf):
    assert _sym(isf, "__tracepoint_sched_switch")["type"] == {"kind": "struct", "name": "tracepoint"}
    assert _src(isf, "__tracepoint_sched_switch") == "pattern __tracepoint_*"
    for name in ("__tracepoint_tiny", "__tracepoint_"):
        assert _sym(isf, name)["type"] == {"kind": "base", "name": "void"}, name
    assert _sym(isf, "__ksymtab_printk")["type"] == {"kind": "struct", "name": "kernel_symbol"}


def test_alias_of_a_macro(isf):
    assert _sym(isf, "timekeeper_data")["type"]["subtype"] == {"kind": "struct", "name": "tk_data"}
    assert _sym(isf, "tk_core") == {"address": BASE + 0x2000, "type": {"kind": "struct", "name": "tk_data"}}
    assert _src(isf, "tk_core") == "alias timekeeper_data[TIMEKEEPER_CORE]"


def test_without_global_vars_the_rest_still_types():
    isf = generate(world(global_vars=False), SYMS, BANNER, "x86_64", [])
    assert _sym(isf, "answer")["type"] == {"kind": "base", "name": "void"}
    assert "not_in_map" not in isf["symbols"]
    assert _sym(isf, "init_task")["type"] == {"kind": "struct", "name": "task_struct"}


def test_every_source_tag_is_documented(isf):
    tags = set(isf["metadata"]["producer"]["symbol_type_sources"].values())
    assert {t.split(" ")[0] for t in tags} <= {"btf-var", "table", "section", "pattern", "alias", "banner"}
    assert symtypes.TypeSpec("struct list_head[][4]").dims == ["", "4"]
    with pytest.raises(ValueError):
        symtypes.TypeSpec("struct (*fn)(void)")


def test_every_declared_spec_parses():
    for table in (symtypes.DECLARED, symtypes.SECTION_ELEMENTS):
        for name, (text, where) in table.items():
            assert symtypes.TypeSpec(text).base and where, name
    for prefix, text, where in symtypes.NAME_PATTERNS:
        assert symtypes.TypeSpec(text).base and where and prefix.startswith("__")


def test_producer_passes_the_checks_of_volatility_plugins(isf):
    """linux.malware.hidden_modules raises unless a table's producer is dwarf2json >= 0.8.0;
    linux.kmsg returns nothing unless it is > 0.4.1 (or another producer)."""
    ctx, _table = volatility_table(isf)
    space = ctx.symbol_space
    assert not space.verify_table_versions("dwarf2json", lambda v, _: (not v) or v < (0, 8, 0))
    assert space.verify_table_versions("dwarf2json", lambda v, _: (not v) or v > (0, 4, 1))
    gen = isf["metadata"]["producer"]["generator"]
    assert gen["name"] == "volatility3-ktstr" and gen["version"]


def test_typed_symbols_read_through_volatility(isf):
    _ctx, table = volatility_table(isf)
    assert table.get_symbol("kallsyms_num_syms").type.size == 4
    assert table.get_symbol("tk_core").type.vol.type_name.endswith("tk_data")
    sub = table.get_symbol("__start___tracepoints_ptrs").type.vol.subtype
    assert sub.vol.type_name.endswith("!int")


# --- the dumps' kernels ---------------------------------------------------------------------

# What Volatility 2.28's Linux plugins read with object_from_symbol / get_symbol().type on a
# current kernel, and the type kind each must have.
STOCK_NEEDS = {
    "init_task": "struct", "init_pid_ns": "struct", "modules": "struct", "module_kset": "pointer",
    "mod_tree": "struct", "net_namespace_list": "struct", "socket_file_ops": "struct",
    "sockfs_dentry_operations": "struct", "prog_idr": "struct", "prb": "pointer",
    "log_buf_len": "base", "cap_last_cap": "base", "mem_section": "pointer",
    "iomem_resource": "struct", "taint_flags": "array", "tty_drivers": "struct",
    "keyboard_notifier_list": "struct", "kallsyms_num_syms": "base", "kallsyms_names": "array",
    "kallsyms_token_table": "array", "kallsyms_token_index": "array", "kallsyms_offsets": "array",
    "kallsyms_markers": "array", "kallsyms_seqs_of_names": "array", "ftrace_ops_list": "pointer",
    "ftrace_list_end": "struct", "ftrace_mod_maps": "struct", "ftrace_ops_trampoline_list": "struct",
    "bpf_kallsyms": "struct", "bpf_tree": "struct", "__start___tracepoints_ptrs": "array",
    "tk_core": "struct", "raw_seq_ops": "struct", "udp_seq_ops": "struct", "tcp4_seq_ops": "struct",
    "unix_seq_ops": "struct", "packet_seq_ops": "struct", "arp_seq_ops": "struct",
}
X86_ONLY = {"idt_table": "array", "vmemmap_base": "base"}


def _kernel_params():
    kdirs = dumps.kernel_dirs()
    quick = next((k for k in kdirs if k.name.endswith("-amd64")), kdirs[0] if kdirs else None)
    return [pytest.param(k, id=k.name, marks=() if k == quick else pytest.mark.slow) for k in kdirs]


@pytest.fixture(scope="module", params=_kernel_params() or [None])
def kernel(request):
    if request.param is None:
        pytest.skip("no dumps (KTSTR_DUMPS unset or empty)")
    kdir = request.param
    arch = "arm64" if kdir.name.endswith("arm64") else "x86_64"
    syms = load_symbol_file(kdir / "System.map")
    return arch, syms, generate(btfmod.load(kdir / "btf.raw"), syms, BANNER, arch, [])


def test_real_kernel_symbols_stock_plugins_read_are_typed(kernel):
    arch, syms, isf = kernel
    needs = dict(STOCK_NEEDS, **(X86_ONLY if arch == "x86_64" else {}))
    wrong = {name: isf["symbols"].get(name, {}).get("type") for name, kind in needs.items()
             if isf["symbols"].get(name, {}).get("type", {}).get("kind") != kind}
    assert not wrong, wrong
    sources = isf["metadata"]["producer"]["symbol_type_sources"]
    typed = [n for n, e in isf["symbols"].items() if e["type"] != {"kind": "base", "name": "void"}]
    assert set(typed) == set(sources)
    # tracepoint_ptr_t from BTF (an int offset on both arches here); the array spans the section
    start, stop = (syms[f"__{s}___tracepoints_ptrs"][0] for s in ("start", "stop"))
    ptrs = isf["symbols"]["__start___tracepoints_ptrs"]["type"]
    assert ptrs["subtype"] == {"kind": "base", "name": "int"} and ptrs["count"] * 4 == stop - start
    tracepoints = [n for n in syms if n.startswith("__tracepoint_") and sources.get(n)]
    assert len(tracepoints) >= ptrs["count"] > 100
    assert isf["symbols"]["tk_core"]["address"] == syms["timekeeper_data"][0]
