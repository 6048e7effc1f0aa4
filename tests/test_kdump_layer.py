"""The kdump Volatility layer and stackers on synthetic files: KdumpStacker recognises the file
(plain and flattened), KtstrLinuxStacker stacks a 4-level x86-64 kernel from the file's
VMCOREINFO without scanning memory (and from an ELF core's VMCOREINFO note), picks the cached
banner by release and version, and an excluded page reaches walkers as ExcludedPage."""

import struct

import pytest
from volatility3.framework import contexts, exceptions
from volatility3.framework.layers import intel, physical, scanners

from helpers import kdump as kb
from volatility3_ktstr.dumpfile.errors import ExcludedPage
from volatility3_ktstr.kernel import LayerReader
from volatility3_ktstr.layers import kdump as kdump_layer
from volatility3_ktstr.layers import stackers

from helpers.kdump import BANNER, BS, KERNEL_MAP, OTHER_BUILD, PHYS_BASE, RELEASE, VERSION, x86_kernel  # noqa: F401


@pytest.fixture
def fake_cache(monkeypatch):
    def install(banners):
        class Cache:
            def get_identifier_dictionary(self, operating_system=None):
                return {b: f"file:///isf-{i}.json" for i, b in enumerate(banners)}

        monkeypatch.setattr(stackers.symbol_cache, "load_cache_manager", lambda *a, **k: Cache())
        monkeypatch.delenv(stackers.PHYS_BASE_ENV, raising=False)

        def no_scan(*a, **k):
            raise AssertionError("the image was scanned")

        monkeypatch.setattr(stackers, "scan_image", no_scan)

    return install


def file_layer(tmp_path, data, name="vmcore"):
    path = tmp_path / name
    path.write_bytes(data)
    ctx = contexts.Context()
    ctx.config["file.location"] = path.resolve().as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
    return ctx


def stack_kdump(ctx):
    layer = kdump_layer.KdumpStacker.stack(ctx, "file")
    assert isinstance(layer, kdump_layer.KdumpLayer)
    ctx.add_layer(layer)
    return layer


@pytest.mark.parametrize("flat", [False, True])
def test_kdump_stacker_and_layer(tmp_path, flat):
    pages, vmci = x86_kernel()
    blob = kb.build(pages, max_mapnr=512, ram=range(0, 400), codec="zlib", vmcoreinfo=vmci)
    ctx = file_layer(tmp_path, kb.flatten(blob, record=3000, shuffle_seed=1) if flat else blob)
    layer = stack_kdump(ctx)
    assert layer.kdump.flattened == flat
    assert layer.read(PHYS_BASE + 0x8000, 8) == b"DATAPAGE"
    assert layer.is_valid(PHYS_BASE + 0x8000, 8) and not layer.is_valid(PHYS_BASE + 0x7000)
    with pytest.raises(kdump_layer.KdumpExcludedPageException) as e:
        layer.read(PHYS_BASE + 0x7000, 8)
    assert e.value.dump_level == 31 and isinstance(e.value, exceptions.InvalidAddressException)
    assert layer.read(PHYS_BASE + 0x7000, 8, pad=True) == bytes(8)
    with pytest.raises(kdump_layer.KdumpPageException, match="not in the dump"):
        layer.read(450 * BS, 8)
    # Scans see the dumped pages (excluded ones inside a chunk scan as zeros).
    hits = list(layer.scan(ctx, scanners.BytesScanner(b"DATAPAGE")))
    assert hits == [PHYS_BASE + 0x8000]
    # Not stacked on anything else.
    assert kdump_layer.KdumpStacker.stack(ctx, layer.name) is None
    assert stackers.vmcimod.parse(layer.vmcoreinfo_texts()[0]).osrelease == RELEASE


def test_kdump_stacker_declines_other_files_and_warns_on_damage(tmp_path, caplog):
    ctx = file_layer(tmp_path, b"\x7fELF" + bytes(5000))
    assert kdump_layer.KdumpStacker.stack(ctx, "file") is None
    pages, vmci = x86_kernel()
    blob = kb.build(pages, max_mapnr=512, codec="zlib", vmcoreinfo=vmci)
    ctx = file_layer(tmp_path, blob[:6000], "cut")
    assert kdump_layer.KdumpStacker.stack(ctx, "file") is None
    assert "truncated" in caplog.text


def test_linux_stacker_uses_kdump_vmcoreinfo_for_4level(tmp_path, fake_cache):
    pages, vmci = x86_kernel()
    # QEMU 7.2 writes a wrong sub-header phys_base; VMCOREINFO's is the one to use.
    blob = kb.build(pages, max_mapnr=512, ram=range(0, 400), codec="zstd", vmcoreinfo=vmci,
                    phys_base=0x1048576)
    fake_cache([OTHER_BUILD, BANNER, b"Linux version 5.0 (x) (y) #1\n\0"])
    ctx = file_layer(tmp_path, blob)
    phys = stack_kdump(ctx)
    layer = stackers.KtstrLinuxStacker.stack(ctx, phys.name)
    assert isinstance(layer, intel.LinuxIntel32e) and not isinstance(layer, stackers.LinuxIntel32eLA57)
    assert layer.config["page_map_offset"] == PHYS_BASE + 0x1000
    assert layer.config["kernel_banner"] == BANNER.decode("latin-1")
    ctx.add_layer(layer)
    assert layer.read(KERNEL_MAP + 0x8000, 8) == b"DATAPAGE"
    reader = LayerReader(ctx, layer.name)
    with pytest.raises(ExcludedPage) as e:
        reader.read(KERNEL_MAP + 0x7010, 16)
    assert str(e.value) == (f"cannot read 16 bytes at {KERNEL_MAP + 0x7010:#x}: excluded from the "
                            f"dump (makedumpfile dump level 31)")


def test_ambiguous_banners_are_told_apart_in_the_kernel_image(tmp_path, fake_cache):
    pages, vmci = x86_kernel()
    blob = kb.build(pages, max_mapnr=512, codec="zstd", vmcoreinfo=vmci)
    twin = BANNER.replace(b"gcc 14", b"gcc 13")            # same release and version, other build
    fake_cache([twin, BANNER])
    ctx = file_layer(tmp_path, blob)
    layer = stackers.KtstrLinuxStacker.stack(ctx, stack_kdump(ctx).name)
    assert layer.config["kernel_banner"] == BANNER.decode("latin-1")


def test_wrong_vmcoreinfo_falls_back_to_searching(tmp_path, fake_cache, monkeypatch):
    pages, vmci = x86_kernel()
    vmci = vmci.replace(b"NUMBER(phys_base)=1048576", b"NUMBER(phys_base)=0")
    blob = kb.build(pages, max_mapnr=512, codec="zstd", vmcoreinfo=vmci)
    fake_cache([BANNER])
    scanned = []
    monkeypatch.setattr(stackers, "scan_image", lambda *a, **k: scanned.append(1) or iter(()))
    ctx = file_layer(tmp_path, blob)
    assert stackers.KtstrLinuxStacker.stack(ctx, stack_kdump(ctx).name) is None
    assert scanned


def elf_core(pages, vmci, max_pfn):
    """An ELF64 core of ``pages`` (one PT_LOAD over [0, max_pfn) pages) with a VMCOREINFO note."""
    note = kb.note(b"VMCOREINFO", vmci)
    ehsize, phsize = 64, 56
    note_off = ehsize + 2 * phsize
    load_off = -(-(note_off + len(note)) // BS) * BS
    size = max_pfn * BS
    ph = struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(note), len(note), 0)
    ph += struct.pack("<IIQQQQQQ", 1, 7, load_off, 0, 0, size, size, BS)
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack(
        "<HHIQQQIHHHHHH", 4, 62, 1, 0, ehsize, 0, 0, ehsize, phsize, 2, 0, 0, 0)
    mem = bytearray(size)
    for p, data in pages.items():
        mem[p * BS:(p + 1) * BS] = data
    return (ehdr + ph + note).ljust(load_off, b"\0") + bytes(mem)


def test_linux_stacker_uses_elf_vmcoreinfo_note(tmp_path, fake_cache):
    from volatility3.framework.layers import elf

    pages, vmci = x86_kernel()
    fake_cache([BANNER])
    ctx = file_layer(tmp_path, elf_core(pages, vmci, 400), "core.elf")
    phys = elf.Elf64Stacker.stack(ctx, "file")
    ctx.add_layer(phys)
    layer = stackers.KtstrLinuxStacker.stack(ctx, phys.name)
    assert isinstance(layer, intel.LinuxIntel32e)
    assert layer.read(KERNEL_MAP + 0x5000, 5) == b"Linux"
    assert layer.config["kernel_banner"] == BANNER.decode("latin-1")
