"""Files cut short open with what they hold (issue: truncated dumps): a kdump file keeps its
header, VMCOREINFO and bitmaps, so every page whose data is in the file reads, and the others
say "beyond the end of a truncated file (expected N bytes, file has M)"; the same for ELF
cores and LiME files (layers.truncated). Synthetic files, then the real vmcore cut to 90% and
50% (copies in a tmp dir)."""

import os
import shutil

import pytest
from volatility3.framework import contexts
from volatility3.framework.layers import physical

import dumps
import volrun
from helpers import kdump as kb
from volatility3_ktstr.core.reader import ReadError
from volatility3_ktstr.dumpfile import kdump
from volatility3_ktstr.dumpfile.errors import PageError, TruncatedPage
from volatility3_ktstr.kernel import LayerReader
from volatility3_ktstr.layers import stackers, truncated

VMCORE = "vmcore/x86_64/scx_sdt"


def _file_layer(path):
    ctx = contexts.Context()
    ctx.config["file.location"] = path.resolve().as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
    return ctx


@pytest.fixture
def one_banner(monkeypatch):
    class Cache:
        def get_identifier_dictionary(self, operating_system=None):
            return {kb.BANNER: "file:///isf.json"}

    monkeypatch.setattr(stackers.symbol_cache, "load_cache_manager", lambda *a, **k: Cache())
    monkeypatch.delenv(stackers.PHYS_BASE_ENV, raising=False)


def test_elf_core_cut_short_names_the_missing_memory(tmp_path, one_banner):
    pages, vmci = kb.x86_kernel(excluded_va_offset=0x10000)
    blob = kb.elf_core(pages, 0x120, kb.note(b"VMCOREINFO", vmci))
    cut = len(blob) - (0x120 * kb.BS - (kb.PHYS_BASE + 0x8000))     # just before DATAPAGE
    path = tmp_path / "core.elf"
    path.write_bytes(blob[:cut])
    ctx = _file_layer(path)
    phys = truncated.TruncatedCoreStacker.stack(ctx, "file")
    assert isinstance(phys, truncated.TruncatedElf64Layer)
    ctx.add_layer(phys)
    assert phys.file_notes()[0].name == b"VMCOREINFO"
    kernel = stackers.KtstrLinuxStacker.stack(ctx, phys.name)
    ctx.add_layer(kernel)
    reader = LayerReader(ctx, kernel.name)
    assert reader.read(kb.KERNEL_MAP + 0x5000, 5) == b"Linux"            # before the cut: reads
    with pytest.raises(ReadError) as e:
        reader.read(kb.KERNEL_MAP + 0x8000, 8)
    assert e.value.reason == f"beyond the end of a truncated file (expected {len(blob)} bytes, file has {cut})"
    # The complete file is left to Volatility's own ELF stacker.
    path.write_bytes(blob)
    assert truncated.TruncatedCoreStacker.stack(_file_layer(path), "file") is None


def test_lime_file_cut_short(tmp_path):
    blob = kb.lime_file([(0x1000, b"A" * 0x3000), (0x10000, b"B" * 0x4000)])
    path = tmp_path / "mem.lime"
    path.write_bytes(blob[:-0x1800])
    ctx = _file_layer(path)
    layer = truncated.TruncatedCoreStacker.stack(ctx, "file")
    assert isinstance(layer, truncated.TruncatedLimeLayer)
    ctx.add_layer(layer)
    assert layer.read(0x1000, 4) == b"AAAA" and layer.read(0x12000, 4) == b"BBBB"
    assert not layer.is_valid(0x13000) and layer.explain_invalid(0x1000) is None
    why = layer.explain_invalid(0x13000)
    assert why.reason == f"beyond the end of a truncated file (expected {len(blob)} bytes, file has {len(blob) - 0x1800})"
    path.write_bytes(blob)
    assert truncated.TruncatedCoreStacker.stack(_file_layer(path), "file") is None


@pytest.mark.parametrize("headers_bad", [
    kb.lime_file([(0x10000, b"A" * 0x1000), (0x10800, b"B" * 0x1000)]),     # overlapping ranges
    b"EMiL" + bytes(4) + (5).to_bytes(8, "little") + (1).to_bytes(8, "little") + bytes(100),
])
def test_lime_headers_that_lie_are_left_alone(tmp_path, headers_bad):
    path = tmp_path / "bad.lime"
    path.write_bytes(headers_bad[:-10])
    assert truncated.TruncatedCoreStacker.stack(_file_layer(path), "file") is None


# --- the real vmcore cut short ------------------------------------------------------------------


def _vmcore():
    if dumps.dumps_root() is None or VMCORE not in dumps.list_vmcores():
        pytest.skip("KTSTR_DUMPS is not set or has no vmcore")
    return dumps.dump_path(VMCORE)


def _cut(tmp_path, src, fraction):
    out = tmp_path / f"vmcore-{int(fraction * 100)}"
    size = os.path.getsize(src)
    with open(src, "rb") as f, open(out, "wb") as g:
        shutil.copyfileobj(f, g)
    os.truncate(out, int(size * fraction))
    return out, size


@pytest.mark.parametrize("fraction", [0.9, pytest.param(0.5, marks=pytest.mark.slow)])
def test_real_vmcore_cut_short_reads_every_page_it_holds(tmp_path, fraction):
    full_path = _vmcore()
    cut_path, size = _cut(tmp_path, full_path, fraction)
    reason = f"beyond the end of a truncated file (expected {size} bytes, file has {os.path.getsize(cut_path)})"
    readable = missing = 0
    have = os.path.getsize(cut_path)
    with kdump.open_kdump(str(full_path)) as full, kdump.open_kdump(str(cut_path)) as cut:
        assert cut.truncated() and not full.truncated() and cut.vmcoreinfo_texts() == full.vmcoreinfo_texts()
        for pfn, count in full.dumped_runs():
            for p in range(pfn, pfn + count):
                try:
                    want = full.read_page(p)
                except PageError:
                    continue
                # In the cut file exactly when its descriptor and its data are before the cut.
                rank = full._rank(p)
                offset, length, _flags = full._descriptors(rank, 1)[0]
                there = (full.data_offset + (rank + 1) * kdump.PAGE_DESC.size <= have
                         and offset + length <= have)
                try:
                    got = cut.read_page(p)
                    assert there and got == want, p
                    readable += 1
                except TruncatedPage as e:
                    assert not there and e.reason == reason, p
                    missing += 1
    assert readable and missing


@pytest.mark.parametrize("fraction", [0.9, pytest.param(0.5, marks=pytest.mark.slow)])
def test_real_vmcore_cut_short_through_vol(tmp_path, fraction):
    cut_path, size = _cut(tmp_path, _vmcore(), fraction)
    res = volrun.run_vol(cut_path, "linux.ktstr.scxtasks", name=VMCORE)
    assert "Traceback" not in res.stderr and res.rc == 0, res.stderr[-2000:]
    reason = f"beyond the end of a truncated file (expected {size} bytes, file has {os.path.getsize(cut_path)})"
    assert any(reason in str(v) for r in res.rows for v in r.values()), res.stdout[-2000:]
    if fraction == 0.5:      # the page-table root is past the cut: a copy of its kernel half is used
        assert "using a copy of its kernel half" in res.stderr
    assert "unmapped" not in res.stdout
