"""Acceptance: an ISF made by `ktstr-isf` from the dump kernel's BTF + System.map lets the stock
`vol linux.pslist` list exactly the processes of truth.json, on the raw dump and on an ELF core
of the same memory. x86-64 4-level dumps only (LA57 and arm64 have their own tests)."""

import subprocess

import pytest

import dumps
from helpers.truth import expected_processes, listed_processes
import volrun


def four_level_x86_dumps():
    out = []
    for name in dumps.list_dumps():
        truth = dumps.load_truth(name)
        if truth["run"]["arch"] == "x86_64" and truth["paging"].get("levels") == 4:
            out.append(name)
    return out


DUMPS = dumps.with_kdump(four_level_x86_dumps())


@pytest.fixture(scope="module", params=dumps.smoke_first(DUMPS) or [None], ids=lambda n: n or "none")
def dump(request, tmp_path_factory):
    name = request.param
    if name is None:
        pytest.skip("no x86-64 4-level dump under KTSTR_DUMPS" if dumps.dumps_root()
                    else "KTSTR_DUMPS is unset")
    btf_path, sysmap, banner, arch = volrun.kernel_inputs(name)
    sym_dir = tmp_path_factory.mktemp("isf")
    out = sym_dir / "linux" / "kernel.json.xz"
    proc = subprocess.run([volrun.venv_bin("ktstr-isf"), str(btf_path), "--system-map", str(sysmap),
                           "--banner", banner, "-o", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"banner: {banner}\n" in proc.stdout
    return name, sym_dir


def test_pslist_raw(dump):
    name, sym_dir = dump
    truth = dumps.load_truth(name)
    result = volrun.run_vol(dumps.dump_path(name), "linux.pslist", symbol_dirs=[sym_dir])
    expected = expected_processes(truth)
    assert len(expected) > 10
    assert listed_processes(result) == expected
    # Parents as recorded by the guest (pslist's PPID is the real parent's tgid).
    ppid = {t["tgid"]: t["ppid"] for t in truth["tasks"] if t["tid"] == t["tgid"]}
    assert {row["PID"]: row["PPID"] for row in result.rows} == ppid


def test_pslist_elf_core(dump):
    name, sym_dir = dump
    if name.endswith(dumps.KDUMP_SUFFIX):
        pytest.skip("ELF core of the raw dump: not a kdump check")
    core = volrun.elf_core_of(name)
    result = volrun.run_vol(core, "linux.pslist", symbol_dirs=[sym_dir])
    assert listed_processes(result) == expected_processes(dumps.load_truth(name))


def test_elf_core_maps_raw_bytes(dump):
    """The helper's core holds the raw image's bytes at their physical addresses."""
    from elftools.elf.elffile import ELFFile

    name, _ = dump
    if name.endswith(dumps.KDUMP_SUFFIX):
        pytest.skip("ELF core of the raw dump: not a kdump check")
    truth = dumps.load_truth(name)
    raw = dumps.dump_path(name)
    base = truth["memory"]["dump_raw_phys_base"]
    with open(volrun.elf_core_of(name), "rb") as f, open(raw, "rb") as r:
        segs = [s for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_LOAD"]
        assert [(s["p_paddr"], s["p_paddr"] + s["p_memsz"]) for s in segs] == dumps.ram_ranges(truth)
        code = truth["memory"]["kernel_image"]["kernel_code_phys"]
        seg = next(s for s in segs if s["p_paddr"] <= code < s["p_paddr"] + s["p_filesz"])
        f.seek(seg["p_offset"] + code - seg["p_paddr"])
        r.seek(code - base)
        assert f.read(4096) == r.read(4096)
