"""Symbols from System.map and kallsyms text: module lines, duplicates, __pfx_, KASLR."""

import collections

import pytest

import dumps
from volatility3_ktstr.isf.symbols import (DEFAULT_TEXT, SymbolFileError, load_symbol_file,
                                           parse_symbol_lines, unrelocate)

KALLSYMS = """\
ffffffffa1000000 T _text
ffffffffa1000000 T _stext
ffffffffa1001000 t __pfx_do_thing
ffffffffa1001010 t do_thing
ffffffffa1002000 t do_thing
ffffffffa1003000 D linux_banner
0000000000001000 A fixed_percpu_data
ffffffffc0203000 t ftrace_trampoline\t[__builtin__ftrace]
ffffffffc0400000 T mod_init\t[mymod]
"""


def test_system_map_and_kallsyms_lines():
    syms = parse_symbol_lines(KALLSYMS.splitlines())
    assert syms["_text"] == (0xFFFFFFFFA1000000, "T")
    assert syms["do_thing"] == (0xFFFFFFFFA1001010, "t")         # the first definition wins
    assert "__pfx_do_thing" not in syms                           # padding labels dropped
    assert "mod_init" not in syms and "ftrace_trampoline" not in syms   # module symbols dropped
    assert syms["fixed_percpu_data"] == (0x1000, "A")


def test_bad_lines_are_skipped_and_empty_is_an_error(tmp_path):
    syms = parse_symbol_lines(["", "garbage", "zzzz T bad_hex", "ffffffff81000000 T ok"])
    assert list(syms) == ["ok"]
    with pytest.raises(SymbolFileError, match="no symbols"):
        parse_symbol_lines(["hello world", ""], "f.map")
    with pytest.raises(SymbolFileError, match="cannot read symbol file"):
        load_symbol_file(tmp_path / "missing.map")


def test_kaslr_unrelocation():
    syms = parse_symbol_lines(KALLSYMS.splitlines())
    out, shift = unrelocate(syms, "x86_64")
    assert shift == 0xFFFFFFFFA1000000 - DEFAULT_TEXT["x86_64"]
    assert out["_text"][0] == DEFAULT_TEXT["x86_64"]
    assert out["linux_banner"][0] == syms["linux_banner"][0] - shift
    assert out["fixed_percpu_data"] == syms["fixed_percpu_data"]      # absolute: not moved
    same, zero = unrelocate(out, "x86_64")
    assert zero == 0 and same == out
    custom, s2 = unrelocate(syms, "x86_64", text_base=0xFFFFFFFF80000000)
    assert custom["_text"][0] == 0xFFFFFFFF80000000 and s2 == shift + 0x1000000


def test_unprivileged_kallsyms_is_an_error():
    zeros = parse_symbol_lines(["0000000000000000 T _text", "0000000000000000 D linux_banner"])
    with pytest.raises(SymbolFileError, match="as root"):
        unrelocate(zeros, "x86_64")


def test_machine_kallsyms():
    """This machine's /proc/kallsyms (module lines, duplicates, __pfx_) parses and unrelocates."""
    try:
        with open("/proc/kallsyms") as f:
            lines = f.read().splitlines()
    except OSError:
        pytest.skip("/proc/kallsyms is not readable")
    syms = parse_symbol_lines(lines)
    if syms.get("_text", (0,))[0] == 0:
        pytest.skip("/proc/kallsyms addresses are hidden (not root)")
    names = collections.Counter(l.split()[2] for l in lines if len(l.split()) == 3)
    kernel_names = {n for n in names if not n.startswith("__pfx_")}
    assert set(syms) == kernel_names
    out, shift = unrelocate(syms, "x86_64" if syms["_text"][0] >> 63 else "arm64")
    assert out["_text"][0] in DEFAULT_TEXT.values()
    assert out["_stext"][0] - out["_text"][0] == syms["_stext"][0] - syms["_text"][0]


@pytest.mark.parametrize("name", dumps.smoke_first(dumps.list_dumps()), ids=str)
def test_kaslr_shift_matches_the_dump_kernel(name):
    """Runtime addresses recorded in the guest, unrelocated, are System.map's addresses."""
    truth = dumps.load_truth(name)
    k = truth["kernel"]
    lines = [f"{addr:016x} D {sym}" for sym, addr in k["kallsyms_runtime"].items()]
    lines += truth["raw_sections"].get("kallsyms_bpf_scx", "").splitlines()
    syms = parse_symbol_lines(lines)
    out, shift = unrelocate(syms, truth["run"]["arch"])
    assert shift == k["kaslr"]["kaslr_offset"]
    system_map = load_symbol_file(dumps.kernel_dir(name) / "System.map")
    with open(dumps.kernel_dir(name) / "System.map") as f:
        counts = collections.Counter(l.split()[2] for l in f if len(l.split()) >= 3)
    checked = 0
    for sym, (addr, _kind) in out.items():
        if counts.get(sym) == 1:
            assert addr == system_map[sym][0], sym
            checked += 1
    assert checked >= len(k["kallsyms_runtime"]) // 2
    for sym, addr in k["system_map_static"].items():
        assert system_map[sym][0] == addr, sym
