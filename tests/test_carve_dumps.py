"""Carving on the real dumps ($KTSTR_DUMPS): BTF, banner and kallsyms against the kernel's
btf.raw, System.map and truth.json."""

import functools

import pytest

import dumps
from volatility3_ktstr.isf import fromdump
from volatility3_ktstr.isf.symbols import load_symbol_file

# Carving reads the kernel image (BTF, banner, kallsyms): minimized dumps keep none of it.
DUMPS = dumps.full_dumps()

# Data symbols Volatility and the ktstr plugins look up.
PLUGIN_SYMBOLS = (
    "_text", "_stext", "linux_banner", "init_task", "init_files", "init_mm", "init_pid_ns",
    "map_idr", "prog_idr", "btf_idr", "link_idr", "btf_vmlinux", "scx_root", "scx_tasks",
    "__per_cpu_offset", "__per_cpu_start", "runqueues", "nr_cpu_ids", "cgrp_dfl_root", "modules",
    "init_top_pgt", "swapper_pg_dir", "page_offset_base", "vmemmap_base", "memstart_addr",
    "kimage_voffset", "scx_enable_state_var",
)
pytestmark = pytest.mark.skipif(not DUMPS, reason="KTSTR_DUMPS is unset or holds no dumps")


@functools.lru_cache(maxsize=None)
def carved(name):
    with fromdump.open_image(dumps.dump_path(name)) as image:
        return fromdump.carve(image, name)


@functools.lru_cache(maxsize=None)
def system_map(name):
    return load_symbol_file(dumps.kernel_dir(name) / "System.map")


@pytest.mark.parametrize("name", dumps.smoke_first(DUMPS))
def test_btf_is_the_kernels(name):
    c = carved(name)
    assert c.blob == (dumps.kernel_dir(name) / "btf.raw").read_bytes()
    assert c.arch == ("arm64" if name.startswith("arm64/") else "x86_64")


@pytest.mark.parametrize("name", dumps.smoke_first(DUMPS))
def test_banner_is_the_kernels(name):
    truth = dumps.load_truth(name)
    assert carved(name).banner == truth["kernel"]["banner"].encode() + b"\n\0"


@pytest.mark.parametrize("name", dumps.smoke_first(DUMPS))
def test_plugin_symbols_equal_system_map(name):
    c, sm = carved(name), system_map(name)
    truth = dumps.load_truth(name)
    checked = [n for n in PLUGIN_SYMBOLS if n in sm]
    assert len(checked) >= 20
    bad = {n: (hex(c.symbols.get(n, (0,))[0]), hex(sm[n][0])) for n in checked
           if c.symbols.get(n, (None,))[0] != sm[n][0]}
    assert not bad
    for n, addr in truth["kernel"]["system_map_static"].items():
        if n in c.symbols:
            assert c.symbols[n][0] == addr, n


@pytest.mark.parametrize("name", dumps.smoke_first(DUMPS))
def test_all_kallsyms_match_system_map(name):
    c, sm = carved(name), system_map(name)
    both = [n for n in c.symbols if n in sm]
    wrong = [n for n in both if c.symbols[n][0] != sm[n][0]]
    only_sm = [n for n in sm if n not in c.symbols]
    print(f"{name}: kallsyms {len(c.kallsyms)} entries ({c.kallsyms.layout}), {len(c.symbols)} names, "
          f"{len(both)} also in System.map, {len(wrong)} differ, {len(only_sm)} only in System.map "
          f"({', '.join(sorted(only_sm)[:8])}), base: {c.how}")
    assert not wrong, wrong[:10]
    assert len(both) == len(c.symbols) > 100000
    # What kallsyms leaves out is only the absolute (A) linker symbols.
    assert all(sm[n][1] in "Aa" for n in only_sm)


@pytest.mark.parametrize("name", dumps.smoke_first(DUMPS))
def test_kaslr_offset_matches_truth(name):
    c = carved(name)
    kaslr = dumps.load_truth(name)["kernel"]["kaslr"]
    assert c.vmcoreinfo is not None and c.vmcoreinfo["KERNELOFFSET"] == kaslr["kaslr_offset"]
    assert c.symbols["_text"][0] == kaslr["text_static"]


@pytest.mark.parametrize("name", DUMPS[:1])
def test_default_base_without_vmcoreinfo(name):
    """Without VMCOREINFO the per-arch default _text gives the same addresses here."""
    from volatility3_ktstr.isf import kallsyms as ksmod
    from volatility3_ktstr.isf.symbols import DEFAULT_TEXT

    c = carved(name)
    syms, how = ksmod.link_time(c.kallsyms, DEFAULT_TEXT[c.arch], None)
    assert how == "default _text"
    assert syms == c.symbols
