"""Big machines (issue #28): the scan streams (bounded memory, only the file's data, progress),
a 4-level x86 kernel is stacked from its ISF at the first banner, and a kernel found from the
CPU notes needs no translation probing. Small sparse files only: the 1 TiB cases live in
bench/bigmem_bench.py."""

import struct

import pytest

from helpers import kdump as kb

GIB = 1 << 30
HIGH = 64 << 20           # RAM above 4 GiB in the sparse test file (a hole on disk)


def _sparse_elf(path, loads):
    """An ELF64 core over ``loads`` [(physical start, length, {offset in the load: bytes})],
    written sparsely (only the given bytes are on disk)."""
    ehsize, phsize = 64, 56
    off = 0x1000
    phdrs, placed = b"", []
    for start, length, content in loads:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, off, 0, start, length, length, 0x1000)
        placed.append((off, content))
        off += length
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack(
        "<HHIQQQIHHHHHH", 4, 62, 1, 0, ehsize, 0, 0, ehsize, phsize, len(loads), 0, 0, 0)
    with open(path, "wb") as f:
        f.write(ehdr + phdrs)
        for foff, content in placed:
            for at, data in content.items():
                f.seek(foff + at)
                f.write(data)
        f.truncate(off)
    return path


def _elf_context(path):
    from volatility3.framework import contexts
    from volatility3.framework.layers import elf, physical

    ctx = contexts.Context()
    ctx.config["file.location"] = path.resolve().as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
    ctx.add_layer(elf.Elf64Stacker.stack(ctx, "file"))
    return ctx, next(n for n in ctx.layers if n != "file")


def test_scan_streams_over_sparse_ranges_without_caching_or_reading_gaps(tmp_path, monkeypatch):
    from volatility3_ktstr.layers import scan

    banner = b"Linux version 6.99.0-test (b@h) (gcc 14) #1 SMP\n\0"
    path = _sparse_elf(tmp_path / "big.elf", [
        (0, 1 << 20, {0x5000: banner}),
        (4 * GIB, HIGH, {HIGH - 4096: banner, HIGH // 2: b"OSRELEASE=6.99.0-test\n"}),
    ])
    ctx, name = _elf_context(path)
    layer = ctx.layers[name]
    assert list(scan.data_ranges(layer)) == [(0, 1 << 20), (4 * GIB, 4 * GIB + HIGH)]
    reads = []
    real = scan.read_window
    monkeypatch.setattr(scan, "read_window", lambda lay, off, n: reads.append((off, n)) or real(lay, off, n))
    cache = type(layer).read.cache_info().currsize
    progress = []
    hits = list(scan.scan_image(ctx, name, lambda pct, _msg: progress.append(pct)))
    assert [(k, o) for k, o, _t in hits] == [("banner", 0x5000), ("vmcoreinfo", 4 * GIB + HIGH // 2),
                                            ("banner", 4 * GIB + HIGH - 4096)]
    # Only the file's two ranges were read, one window at a time, none through the read cache.
    assert all(0 <= o < 1 << 20 or 4 * GIB <= o < 4 * GIB + HIGH for o, _n in reads)
    assert max(n for _o, n in reads) <= scan.SCAN_CHUNK + scan.MAX_VMCOREINFO_BYTES
    assert type(layer).read.cache_info().currsize == cache
    assert progress == sorted(progress) and len(progress) == len(reads) and progress[-1] < 100
    # limit: a benchmark's bound on the bytes read
    reads.clear()
    assert [o for _k, o, _t in scan.scan_image(ctx, name, limit=1 << 20)] == [0x5000]


class _Symbol:
    def __init__(self, address):
        self.address = address


class _Table:
    """What the stacker asks of a 4-level x86-64 kernel ISF, linked ``shift`` below where the
    synthetic kernel runs."""

    def __init__(self, shift, la57_flag_at=None):
        base = kb.KERNEL_MAP - shift
        self.addresses = {"linux_banner": base + 0x6000, "init_top_pgt": base + 0x1000,
                          "init_task": base + 0x8100, "init_files": base + 0x8800}
        if la57_flag_at is not None:
            self.addresses["__pgtable_l5_enabled"] = base + la57_flag_at
        self.symbols = list(self.addresses)

    def get_symbol(self, name):
        return _Symbol(self.addresses[name])

    def get_type(self, name):
        assert name == "task_struct"
        return type("T", (), {"relative_child_offset": staticmethod(lambda member: 0x10)})


def _synthetic_kernel_layer(shift, l5_flag=0):
    from volatility3.framework import contexts
    from volatility3.framework.layers import physical

    pages, _vmci = kb.x86_kernel(excluded_va_offset=0x100000)
    image = bytearray(kb.PHYS_BASE + 0x10000)
    for pfn, data in pages.items():
        image[pfn * kb.BS:(pfn + 1) * kb.BS] = data
    # init_task.files (member offset 0x10) = &init_files where the kernel runs
    struct.pack_into("<Q", image, kb.PHYS_BASE + 0x8100 + 0x10, kb.KERNEL_MAP + 0x8800)
    struct.pack_into("<I", image, kb.PHYS_BASE + 0x8900, l5_flag)
    ctx = contexts.Context()
    ctx.add_layer(physical.BufferDataLayer(ctx, "buf", "buf", bytes(image)))
    return ctx


@pytest.mark.parametrize("shift", [0, 0x200000])
def test_4level_x86_from_the_isf_at_the_banner(shift):
    from volatility3.framework.layers import intel

    from volatility3_ktstr.layers import stackers

    ctx = _synthetic_kernel_layer(shift)
    at = kb.PHYS_BASE + 0x6000
    layer = stackers.KtstrLinuxStacker._x86_4level_from_isf(ctx, "buf", _Table(shift, 0x8900), at, kb.BANNER)
    assert type(layer) is intel.Intel32e
    assert layer.config["page_map_offset"] == kb.PHYS_BASE + 0x1000
    assert layer.config["kernel_virtual_offset"] == shift
    ctx.add_layer(layer)
    assert layer.read(kb.KERNEL_MAP + 0x8000, 8) == b"DATAPAGE"
    # a 5-level kernel (the flag set) or a banner copy elsewhere: not this layer
    ctx5 = _synthetic_kernel_layer(shift, l5_flag=1)
    assert stackers.KtstrLinuxStacker._x86_4level_from_isf(ctx5, "buf", _Table(shift, 0x8900), at, kb.BANNER) is None
    assert stackers.KtstrLinuxStacker._x86_4level_from_isf(ctx, "buf", _Table(shift), at + 0x1000, kb.BANNER) is None


def test_scan_stops_at_the_first_banner_that_stacks(monkeypatch):
    """The scan is not read on to VMCOREINFO once a cached x86 banner gave a layer."""
    from volatility3_ktstr.layers import stackers

    ctx = _synthetic_kernel_layer(0)
    banners = {kb.BANNER: "file:///kernel.json"}
    monkeypatch.setattr(stackers.KtstrLinuxStacker, "_from_isf", classmethod(
        lambda cls, c, name, hits, b, early=False: cls._x86_4level_from_isf(c, name, _Table(0), hits[0][0], kb.BANNER)))

    def scan():
        yield "banner", kb.PHYS_BASE + 0x6000, kb.BANNER
        raise AssertionError("the scan was read past the kernel's banner")

    layer = stackers.KtstrLinuxStacker._stack_from(ctx, "buf", scan(), banners)
    assert layer.config["page_map_offset"] == kb.PHYS_BASE + 0x1000


def test_kernel_map_read_from_the_page_directory():
    """cpustack finds the kernel image from the page tables in a few reads (no probing of the
    kernel map by translation), for 4 KiB and 2 MiB mappings."""
    from volatility3_ktstr.layers import cpustack

    ctx = _synthetic_kernel_layer(0)
    assert cpustack._text_by_walk(ctx, "buf", kb.PHYS_BASE + 0x1000, False) == (kb.KERNEL_MAP, kb.PHYS_BASE)
    # The same directory with a 2 MiB page at index 3 (and index 0 cleared): the huge page.
    from volatility3.framework.layers import physical

    data = bytearray(ctx.layers["buf"].read(0, kb.PHYS_BASE + 0x10000))
    pd = kb.PHYS_BASE + 0x3000
    struct.pack_into("<Q", data, pd, 0)
    struct.pack_into("<Q", data, pd + 3 * 8, 0x4000000 | 0x83)
    ctx.add_layer(physical.BufferDataLayer(ctx, "huge", "huge", bytes(data)))
    assert cpustack._text_by_walk(ctx, "huge", kb.PHYS_BASE + 0x1000, False) == (kb.KERNEL_MAP + 3 * (2 << 20), 0x4000000)
    assert cpustack._text_by_walk(ctx, "huge", kb.PHYS_BASE + 0x1000, True) is None   # not a 5-level root


def test_scan_of_a_kdump_file_reads_only_its_pages(tmp_path):
    """A kdump file of a 16 GiB machine holding two pages: the scan reads those (runs streamed
    from the bitmap), not 16 GiB of absent memory."""
    from volatility3.framework import contexts
    from volatility3.framework.layers import physical

    from volatility3_ktstr.layers import kdump as kdump_layer
    from volatility3_ktstr.layers import scan

    banner = b"Linux version 6.99.0-test (b@h) (gcc 14) #1 SMP\n\0"
    low, high = 0x100, (12 * GIB) >> 12
    pages = {low: banner.ljust(4096, b"\0"), high: b"OSRELEASE=6.99.0-test\n".ljust(4096, b"\0")}
    path = tmp_path / "big.kdump"
    path.write_bytes(kb.build(pages, max_mapnr=(16 * GIB) >> 12, ram=[low, high]))
    ctx = contexts.Context()
    ctx.config["file.location"] = path.resolve().as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
    layer = kdump_layer.KdumpStacker.stack(ctx, "file")
    ctx.add_layer(layer)
    assert list(scan.data_ranges(layer)) == [(low << 12, (low + 1) << 12), (high << 12, (high + 1) << 12)]
    progress = []
    hits = [(k, o) for k, o, _t in scan.scan_image(ctx, layer.name, lambda pct, _m: progress.append(pct))]
    assert hits == [("banner", low << 12), ("vmcoreinfo", high << 12)]
    assert len(progress) == 2 and 70 < progress[-1] < 80


def test_the_automatic_isf_banner_search_reports_progress(tmp_path):
    from volatility3_ktstr.dumpfile import open_image
    from volatility3_ktstr.layers import autoisf

    banner = b"Linux version 6.99.0-test (b@h) (gcc 14) #1 SMP PREEMPT Mon Jan 1 00:00:00 UTC 2024\n"
    path = _sparse_elf(tmp_path / "big.elf", [(0, 1 << 20, {}), (4 * GIB, HIGH, {HIGH - 4096: banner})])
    progress = []
    with open_image(str(path)) as image:
        found = list(autoisf.iter_banners(image, progress.append))
    assert [p for p, _t in found] == [4 * GIB + HIGH - 4096]
    chunks = 1 + -(-HIGH // autoisf.SCAN_CHUNK)
    assert len(progress) == chunks and progress == sorted(progress) and progress[0] == 0 and progress[-1] < 100
