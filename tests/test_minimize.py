"""ktstr-minimize on synthetic images: page recording, scan handling, ELF/raw writers, CLI."""

import json
import lzma
import os
import random
import subprocess
import sys

import pytest

from volatility3_ktstr import minimize as m

PAGE = m.PAGE


def _image(tmp_path, pages=64, seed=1):
    """A raw 'dump' of random pages (no zero page, so zeroing is visible)."""
    rnd = random.Random(seed)
    data = bytearray(rnd.randbytes(pages * PAGE))
    path = tmp_path / "img.raw"
    path.write_bytes(bytes(data))
    return path, data


def _vol_layer(path):
    """Volatility FileLayer (+ Elf64Layer for ELF files) over ``path``."""
    from volatility3.framework import contexts
    from volatility3.framework.layers import elf, physical

    ctx = contexts.Context()
    ctx.config["f.location"] = path.as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "f", "f"))
    if path.read_bytes()[:4] != b"\x7fELF":
        return ctx.layers["f"]
    ctx.config["e.base_layer"] = "f"
    layer = elf.Elf64Layer(ctx, "e", "e")
    ctx.add_layer(layer)
    return layer


def test_page_runs_merge_and_gap():
    assert m.page_runs([5, 1, 2, 3, 9]) == [(1, 3), (5, 1), (9, 1)]
    assert m.page_runs([1, 3, 9], gap=1) == [(1, 3), (9, 1)]
    assert m.page_runs([]) == []


def test_recorder_plain_read_keeps_every_page_touched():
    rec = m.PageRecorder()
    rec.add_read(PAGE - 2, b"abcd", scan=False)
    rec.add_range(10 * PAGE, PAGE)
    assert rec.pages == {0, 1, 10}


def test_recorder_scan_read_keeps_only_signature_pages():
    data = bytearray(32 * PAGE)
    banner = b"Linux version 7.2.13 (x) #1 SMP\n\0"
    data[3 * PAGE + 100:3 * PAGE + 100 + len(banner)] = banner
    # a hit straddling a page boundary keeps both pages, up to its NUL
    vmci = b"OSRELEASE=7.2.13\nPAGESIZE=4096\n\0"
    start = 8 * PAGE - 10
    data[start:start + len(vmci)] = vmci
    swapper = b"swapper/0" + bytes(7)
    data[20 * PAGE + 8:20 * PAGE + 8 + len(swapper)] = swapper
    rec = m.PageRecorder()
    rec.add_read(16 * PAGE, bytes(data), scan=True)
    assert rec.pages == {16 + 3, 16 + 7, 16 + 8, 16 + 20}
    assert rec.scan_bytes == len(data)


def test_elf_core_keeps_exactly_the_recorded_pages(tmp_path):
    raw, data = _image(tmp_path)
    keep = {0, 1, 2, 7, 30, 63}
    src = m.open_source(str(raw))
    runs = m.physical_runs(src, keep)
    assert [(p // PAGE, n // PAGE) for _, p, n in runs] == [(0, 3), (7, 1), (30, 1), (63, 1)]
    out = tmp_path / "min.elf"
    m.write_elf_core(src, runs, str(out))
    layer = _vol_layer(out)
    assert (layer.minimum_address, layer.maximum_address) == (0, 64 * PAGE - 1)
    for page in range(64):
        if page in keep:
            assert layer.read(page * PAGE, PAGE) == bytes(data[page * PAGE:(page + 1) * PAGE])
        else:
            assert not layer.is_valid(page * PAGE, PAGE)


def test_elf_input_maps_through_its_own_segments(tmp_path):
    """Minimizing a minimized (ELF) dump again: physical addresses come from p_paddr."""
    raw, data = _image(tmp_path)
    src = m.open_source(str(raw), phys_base=0x40000000, arch="arm64")
    first = tmp_path / "a.elf"
    m.write_elf_core(src, m.physical_runs(src, {4, 5, 40}), str(first))
    src2 = m.open_source(str(first))
    assert src2.machine == m.EM_BY_ARCH["arm64"]
    assert sorted(p for _, p, _ in src2.loads) == [0x40000000 + 4 * PAGE, 0x40000000 + 40 * PAGE]
    # keep only the file page holding physical page 5
    off5 = next(off for off, p, _ in src2.loads if p == 0x40000000 + 4 * PAGE) + PAGE
    second = tmp_path / "b.elf.xz"
    m.write_elf_core(src2, m.physical_runs(src2, {off5 // PAGE}), str(second))
    plain = tmp_path / "b.elf"
    plain.write_bytes(lzma.decompress(second.read_bytes()))
    layer = _vol_layer(plain)
    assert layer.read(0x40000000 + 5 * PAGE, PAGE) == bytes(data[5 * PAGE:6 * PAGE])
    assert not layer.is_valid(0x40000000 + 4 * PAGE)


def test_raw_output_zeroes_the_rest(tmp_path):
    raw, data = _image(tmp_path, pages=16)
    src = m.open_source(str(raw))
    for name in ("min.raw", "min.raw.xz"):
        out = tmp_path / name
        m.write_raw(src, m.physical_runs(src, {2, 3, 15}), str(out))
        got = lzma.decompress(out.read_bytes()) if name.endswith(".xz") else out.read_bytes()
        assert len(got) == len(data)
        for page in range(16):
            chunk = got[page * PAGE:(page + 1) * PAGE]
            want = data[page * PAGE:(page + 1) * PAGE] if page in (2, 3, 15) else bytes(PAGE)
            assert chunk == want, page


def test_recorder_in_volatility_reads_validity_and_scans(tmp_path):
    """The patched FileLayer: direct reads and is_valid are recorded; a scan keeps only hits."""
    from volatility3.framework.layers import scanners

    raw, data = _image(tmp_path, pages=4096)  # 16 MiB: a scan reads it in one chunk
    banner = b"Linux version 1.2.3 (t) #1\n\0"
    with open(raw, "r+b") as f:
        f.seek(1000 * PAGE + 7)
        f.write(banner)
    rec = m.PageRecorder()
    undo = m.install_recorder(rec, str(raw))
    try:
        layer = _vol_layer(raw)
        layer.read(5 * PAGE + 10, 20)
        assert layer.is_valid(9 * PAGE, 2 * PAGE)
        hits = list(layer.scan(layer.context, scanners.BytesScanner(b"Linux version 1.2.3")))
    finally:
        undo()
    assert hits == [1000 * PAGE + 7]
    assert rec.pages == {5, 9, 10, 1000}
    assert rec.scan_bytes >= 4096 * PAGE - 1  # Volatility scans up to maximum_address


def test_compare_outputs_reports_first_difference():
    a = m.RunResult(m.Run("p"), 0, json.dumps([{"x": 1, "__children": [{"x": 2}]}]), "")
    b = m.RunResult(m.Run("p"), 0, json.dumps([{"x": 1, "__children": [{"x": 3}]}]), "")
    assert m.compare_outputs(a, a) is None
    assert "row 1 differs" in m.compare_outputs(a, b)
    c = m.RunResult(m.Run("p"), 2, "", "boom")
    assert "exit status" in m.compare_outputs(a, c)


def test_run_spec_round_trip():
    r = m.Run.parse("linux.ktstr.mapdump --name 'scx sdt.bss'")
    assert r == m.Run("linux.ktstr.mapdump", ("--name", "scx sdt.bss"))
    assert m.Run.parse(r.spec) == r


def test_cli_help_documents_the_method():
    out = subprocess.run([sys.executable, "-m", "volatility3_ktstr.minimize", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for word in ("--plugin", "--format", "scan", "PT_LOAD", "--merge-gap", "--manifest"):
        assert word in out.stdout


def test_cli_missing_dump_is_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "volatility3_ktstr.minimize",
                          str(tmp_path / "nope.raw"), "-o", str(tmp_path / "x.elf")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "error:" in out.stderr
    assert not os.path.exists(tmp_path / "x.elf")
