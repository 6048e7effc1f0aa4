"""kdump-compressed files (volatility3_ktstr.dumpfile.kdump) on synthetic files: every
compression, excluded/zero/absent pages, the flattened form, old and odd headers, split parts,
incomplete dumps, and damage of every kind -> a one-line error or a PageError, never a traceback."""

import base64
import random
import resource
import struct
import zlib

import pytest

from helpers import kdump as kb
from volatility3_ktstr import dumpfile, vmcoreinfo
from volatility3_ktstr.core.reader import ReadError
from volatility3_ktstr.dumpfile import codecs, kdump, lzo1x
from volatility3_ktstr.dumpfile.errors import CorruptPage, DumpError, ExcludedPage, PageError

BS = 4096
CODECS = ["none", "zlib", "zstd", "snappy", "lzo"]


def page_of(seed, kind="mixed"):
    """A deterministic page: kernel-like (runs of zeros, pointers, text), or random bytes."""
    rng = random.Random(seed)
    if kind == "random":
        return bytes(rng.randrange(256) for _ in range(BS))
    out = bytearray()
    while len(out) < BS:
        r = rng.random()
        if r < 0.3:
            out += bytes(rng.randrange(1, 300))
        elif r < 0.55:
            out += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        elif r < 0.85 and len(out) > 10:
            d, n = rng.randrange(1, min(len(out), 49000)), rng.randrange(1, 300)
            for _ in range(n):
                out.append(out[-d])
        else:
            out += rng.choice([b"\xff" * 8, b"\x00\x01\x02\x03" * 4, b"Linux version "])
    return bytes(out[:BS])


def sample(max_mapnr=200, codec="zstd", **kw):
    """pfns 10..59 dumped (one all-zero, one random), 60..99 excluded, 150.. absent (no RAM)."""
    pages = {p: page_of(p) for p in range(10, 60)}
    pages[20] = bytes(BS)
    pages[21] = page_of(21, "random")
    ram = set(range(0, 150))
    blob = kb.build(pages, max_mapnr=max_mapnr, ram=ram, codec=codec, **kw)
    return blob, pages


def open_blob(tmp_path, blob, name="vmcore"):
    path = tmp_path / name
    path.write_bytes(blob)
    return dumpfile.open_image(str(path))


@pytest.mark.parametrize("codec", CODECS)
def test_every_compression_reads_back(tmp_path, codec):
    blob, pages = sample(codec=codec, vmcoreinfo=b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\n")
    with open_blob(tmp_path, blob) as img:
        assert img.format == "kdump" and img.compression == (codec if codec != "none" else "none")
        assert img.dump_level == 31 and img.block_size == BS and img.max_mapnr == 200
        for pfn, page in pages.items():
            assert img.read(pfn * BS, BS, pad=False) == page
        # Reads across pages and at odd offsets.
        assert img.read(12 * BS + 100, 3 * BS, pad=False) == b"".join(pages[p] for p in (12, 13, 14, 15))[100:100 + 3 * BS]
        assert img.read_page(20) == bytes(BS)          # a zero page (shared zero block)
        assert img.page_state(20) == "dumped" and img.page_state(70) == "excluded"
        assert img.page_state(170) == "absent" and img.page_state(10**9) == "absent"
        with pytest.raises(ExcludedPage) as e:
            img.read(70 * BS + 8, 8, pad=False)
        assert e.value.dump_level == 31 and "excluded from the dump (makedumpfile dump level 31)" in str(e.value)
        assert isinstance(e.value, ReadError)
        with pytest.raises(PageError, match="not in the dump"):
            img.read(170 * BS, 8, pad=False)
        # Padded reads: excluded/absent pages read as zeros.
        assert img.read(59 * BS, 2 * BS) == pages[59] + bytes(BS)
        assert img.is_dumped(10 * BS, 50 * BS) and not img.is_dumped(10 * BS, 51 * BS)
        assert vmcoreinfo.parse(img.vmcoreinfo_texts()[0]).osrelease == "6.1.0-test"


def test_ranges_cover_the_dumped_pages(tmp_path):
    blob, pages = sample()
    with open_blob(tmp_path, blob) as img:
        assert img.ranges == [(10 * BS, 50 * BS)]
        assert list(img.dumped_runs()) == [(10, 50)]


def test_lzo_streams_from_liblzo2_decode():
    # Pages compressed by liblzo2's lzo1x_1 / lzo1x_999 (python-lzo, header=False): the decoder
    # must agree with the reference implementation, not just with our own literal-only writer.
    vectors = {
        (1, 1): "AgAAAAAAIAAAAIERAOQgsHwOILFEAyA2iAYAMf13sHZw65QL1TNflz2q2GGbkf/JEfV8ztRYu78sN1PJvfoP8BadyVdWdAZmds+wtOuJAsRCadoc9rpm0/i2qXVaAADEEyBEyAUPf4k4XrCUI1VRglaLluik/vI61A8gnhgACYQ3gWvdCnMJy0oSUiBEIAUgVrwEAAHmcg/KpNoemEBsGJwkJ54AAQIDKwwAIFZYAiD+2AEAHkxpbnV4IHZlcnNpb24gE8FmsTJp3WP8NceX/wimzZAJUGanRa3bbYgxwrD4eCEUACD+OAUg8HgEIIFUEAWVePpFNaQU0CDw6AYgAF1ABC30HCyYFgjqjTcXlwYHLmB61yBLkAYNAAAAAAAAAAAAAAAAAAAAABEAAA==",
        (2, 9): "Ev/BAAAglwAAIJzwAiB/pAQAHUxpbnV4IHZlcnNpb24gvuOJEg667qPC2FRaeHYMWqZYRbhd5NS6tbnkUszsf/qOLLgAAAXo7LPp+XGmVYn1npvQn2r6uyauBGE2HiBryAAgFiQFIGssAiBM+AhjAB25uCAaFAEOUF4AxRZ+TRICkqz6D53lF4cg0ugE+AEgVgADAAj5p0muhIbWCUcdgRFDUlcx6HYQfnfjJYApdCAABhwVIAAUAAAFLHs0MwpddjUg6kgEIH4MHQAHbGve2Qoa1lww9bsJPLuUvp0J0zM1nGUI5yDYwAYAFCUCkQy+nCdw+2I7v8jtR7DKPoI+PimryGw1DPAW/pS36ki/iff0IAA30BogAGQAACDnGCMgq1Q0EQAA",
        (3, 1): "AgAAAAAAIADtEAABAQIDACoMACAASHAIACDzy012TccHIFEVmg+J8sbayuNEuzESRf1vhN+a18Wz0HasDo9MaW51eCB2ZXJzaW9uICCHZAYgldQCP3QFILnABj/oAyCcgAAKCpba1DwWF8Gpjp4DJyCcJAMgnPACKowZbAE0MANkAykMAAAJwcDrxTSK3Hmam60F1KEKwEQequ60tI76Cx//wAAr7BpkBzRcASATVAAglxwTAAaHmcE1DUOecYl6p1/eMTSkqnLgViisb+YgEwwEIEvMAAAUXY6uK7BC15WK7bHVlNbREtNPZgL03nEQ6ZOudCKSPX0XEWXcGQAgS0QCIFWsAQAJGzquQIH0H7RxZT49V3qMQQP5zBmKf4nYGvKlOxwAIFW0AiCh1AEgl5wPIDfkBQihJLPFx5u4h2Go2yA3iAEgAExcAQoAAAAAAAAAAAAAAAAAEQAA",
    }
    for (seed, _level), text in vectors.items():
        assert lzo1x.decompress(base64.b64decode(text), BS) == page_of(seed)
    for n in (4, 5, 238, 239, 300, BS):
        data = bytes(range(256)) * 16
        assert lzo1x.decompress(kb.lzo_literal_stream(data[:n]), BS) == data[:n]


def test_lzo_agrees_with_python_lzo_when_installed():
    lzo = pytest.importorskip("lzo", reason="python-lzo (the 'lzo' extra) is not installed")
    for seed in range(200):
        page = page_of(seed, "random" if seed % 7 == 0 else "mixed")
        for level in (1, 9):
            assert lzo1x.decompress(lzo.compress(page, level, False), BS) == page


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x16abc", b"\x00\x00\x00",
                                  b"\x15abcd\x20\x00\x00\x11\x00\x00", b"\x15abcd\x11\x00\x00extra",
                                  b"\x15abcd" + b"\x40\xff" + b"\x11\x00\x00"])
def test_lzo_bad_streams_are_errors(data):
    with pytest.raises(lzo1x.LzoError):
        lzo1x.decompress(data, BS)


def test_lzo_output_is_bounded():
    # A match that would write past the page: refused, not allocated.
    stream = b"\x15abcd" + b"\x20" + bytes(200) + b"\x01" + b"\x00\x00" + b"\x11\x00\x00"
    with pytest.raises(lzo1x.LzoError, match="larger than"):
        lzo1x.decompress(stream, BS)


@pytest.mark.parametrize("record, shuffle, split_header", [(65536, None, False), (1000, 7, True),
                                                           (4096, 3, False)])
def test_flattened_reads_like_the_plain_file(tmp_path, record, shuffle, split_header):
    blob, pages = sample(codec=lambda p: CODECS[p % len(CODECS)], vmcoreinfo=b"OSRELEASE=6.1.0-f\n")
    flat = kb.flatten(blob, record=record, shuffle_seed=shuffle, split_header=split_header)
    with open_blob(tmp_path, flat, "flat") as img:
        assert img.flattened and not img.warnings
        assert img.source.size == len(blob)
        assert img.read(0, 10 * BS) == bytes(10 * BS)
        for pfn, page in pages.items():
            assert img.read_page(pfn) == page
        with pytest.raises(ExcludedPage):
            img.read_page(99)
        assert img.vmcoreinfo_texts() == [b"OSRELEASE=6.1.0-f\n"]
    assert dumpfile.sniff(flat[:64]) == "kdump-flat"


def test_flattened_overlapping_records_later_wins(tmp_path):
    blob, pages = sample(codec="zlib")
    flat = bytearray(kb.flatten(blob))
    # Append a record (before the end marker) that overwrites pfn 11's data with pfn 12's page.
    img = kdump.KdumpFile(kdump.FlatSource(_BytesSource(bytes(flat))))
    rank = img._rank(11)
    desc = struct.unpack_from("<qIIQ", blob, kb.layout(blob)["data_offset"] + 24 * rank)
    raw12 = pages[12]
    patch = struct.pack("<qIIQ", desc[0], BS, 0, 0)
    end = flat[-16:]
    del flat[-16:]
    flat += struct.pack(">qq", kb.layout(blob)["data_offset"] + 24 * rank, 24) + patch
    flat += struct.pack(">qq", desc[0], BS) + raw12 + end
    with open_blob(tmp_path, bytes(flat), "flat2") as img:
        assert img.read_page(11) == raw12
        assert img.read_page(59) == pages[59]       # data far from the overwritten range


class _BytesSource:
    def __init__(self, data, name="mem"):
        self.data, self.size, self.name = data, len(data), name
        self.reads = []

    def read(self, offset, size):
        self.reads.append((offset, size))
        return self.data[offset:offset + size] if size > 0 else b""

    def close(self):
        pass


@pytest.mark.parametrize("block", [8192, 65536])
def test_other_block_sizes(tmp_path, block):
    pages = {p: (page_of(p) * (block // BS)) for p in range(3, 9)}
    blob = kb.build(pages, max_mapnr=40, ram=range(0, 20), codec="zlib", block_size=block)
    with open_blob(tmp_path, blob) as img:
        assert img.block_size == block and img.page_shift == block.bit_length() - 1
        assert img.read(5 * block + 4096, 16, pad=False) == pages[5][4096:4112]
        with pytest.raises(ExcludedPage):
            img.read(12 * block, 1, pad=False)


def test_old_header_versions_and_one_bitmap(tmp_path):
    blob, pages = sample(version=5, vmcoreinfo=b"OSRELEASE=6.1.0-v5\n")
    with open_blob(tmp_path, blob, "v5") as img:
        assert img.header_version == 5 and img.max_mapnr == 200   # the 32-bit header field
        assert img.read_page(30) == pages[30]
        assert img.vmcoreinfo_texts()
    blob, pages = sample(version=2, vmcoreinfo=b"OSRELEASE=6.1.0-v2\n")
    with open_blob(tmp_path, blob, "v2") as img:
        assert img.read_page(30) == pages[30]
        assert img.vmcoreinfo is None                               # v3 added the VMCOREINFO fields
    blob, pages = sample(one_bitmap=True)
    with open_blob(tmp_path, blob, "one") as img:
        assert not img.two_bitmaps
        assert img.read_page(30) == pages[30]
        assert img.page_state(70) == "absent"      # one bitmap: nothing is known as excluded
    blob, pages = sample(extra_sub_blocks=3)
    with open_blob(tmp_path, blob, "sub") as img:
        assert img.sub_hdr_size == 4 and img.read_page(59) == pages[59]


def test_split_part(tmp_path):
    blob, pages = sample(split=(30, 80))
    with open_blob(tmp_path, blob) as img:
        assert img.split and (img.start_pfn, img.end_pfn) == (30, 80)
        assert img.read_page(30) == pages[30] and img.read_page(59) == pages[59]
        with pytest.raises(PageError, match="another part of a split dump"):
            img.read_page(12)
        assert img.describe().endswith("split part pfn 0x1e-0x50")


def test_incomplete_dump(tmp_path):
    blob, pages = sample(incomplete={40, 41})
    with open_blob(tmp_path, blob) as img:
        assert img.incomplete and img.warnings
        assert img.read_page(39) == pages[39]
        with pytest.raises(PageError, match="incomplete dump") as e:
            img.read_page(40)
        assert not isinstance(e.value, CorruptPage)
        assert img.read_page(42) == pages[42]


def test_page_cache_is_bounded(tmp_path):
    pages = {p: page_of(p % 50) for p in range(0, 600)}
    blob = kb.build(pages, max_mapnr=600, codec="zlib")
    path = tmp_path / "big"
    path.write_bytes(blob)
    img = kdump.open_kdump(str(path), cache_bytes=64 * BS)
    for p in range(600):
        assert img.read(p * BS + 8, 8) == pages[p][8:16]
    assert len(img._page_cache) <= 64
    big = img.read(0, 600 * BS)          # a scan-sized read goes around the cache
    assert big == b"".join(pages[p] for p in range(600)) and len(img._page_cache) <= 64
    img.close()


def test_opening_reads_headers_only_whatever_the_memory_size():
    """64 GiB of page frames: opening reads the header blocks and VMCOREINFO, not the 4 MiB of
    bitmaps; a page at the top costs the bitmap counts once (bulk reads), then a section."""
    mapnr = (64 << 30) // BS
    pages = {mapnr - 5: page_of(1), 7: page_of(2)}
    blob = kb.build(pages, max_mapnr=mapnr, ram=set(pages), codec="zstd", vmcoreinfo=b"OSRELEASE=x\n")
    src = _BytesSource(blob)
    img = kdump.KdumpFile(src)
    assert sum(n for _o, n in src.reads) <= 3 * BS
    assert img.read_page(mapnr - 5) == page_of(1) and img.read_page(7) == page_of(2)
    assert len(src.reads) < 64


# --- damage ---------------------------------------------------------------------------------------


def _check_damaged(tmp_path, blob, name="bad"):
    """Open and read every page of a damaged file: a one-line DumpError at open, or per page
    bytes of the right size / a PageError; nothing else. Returns ("open", msg) or the outcomes."""
    path = tmp_path / name
    path.write_bytes(blob)
    try:
        img = kdump.open_kdump(str(path))
    except DumpError as e:
        assert "\n" not in str(e) and str(path) in str(e) or "vmcore" in str(e) or name in str(e)
        return ("open", str(e))
    outcomes = []
    with img:
        for pfn in range(0, min(img.max_mapnr, 220)):
            try:
                data = img.read_page(pfn)
                assert len(data) == img.block_size
                outcomes.append("ok")
            except PageError as e:
                assert "\n" not in str(e)
                outcomes.append(e.reason)
        assert len(img.read(0, 220 * img.block_size)) == 220 * img.block_size   # padded
    return outcomes


@pytest.mark.parametrize("cut", [0, 7, 100, 463, 4096, 4096 + 50, 3 * BS, 5 * BS + 10, -1000, -1])
def test_truncated_files(tmp_path, cut):
    blob, pages = sample(codec="zlib", vmcoreinfo=b"OSRELEASE=6.1.0-t\n")
    cut = cut % len(blob)
    out = _check_damaged(tmp_path, blob[:cut])
    if cut < kb.layout(blob)["data_offset"]:
        assert out[0] == "open"
        assert any(w in out[1] for w in ("truncated", "cut short", "not a kdump")), out
        return
    # Pages whose descriptor or data were cut say so, with both sizes; the others still read.
    for pfn, o in enumerate(out):
        if pfn in pages:
            assert o == "ok" or o.startswith("beyond the end of a truncated file (expected "), (pfn, o)
            assert o == "ok" or f"file has {cut})" in o, o
        else:
            assert o != "ok"
    if cut > len(blob) - 1000:
        assert out.count("ok") >= 45
        assert f"(expected {len(blob)} bytes, file has {cut})" in next(o for o in out if o.startswith("beyond"))


@pytest.mark.parametrize("field, value, message", [
    (0, b"KDUMPX  ", "not a kdump-compressed file"),
    (0, b"DISKDUMP", "DISKDUMP"),
    (8, struct.pack("<i", -3), "header version"),
    (428, struct.pack("<i", 3), "block size"),          # status at 424, block_size at 428
])
def test_corrupt_header_fields(tmp_path, field, value, message):
    blob, _ = sample()
    bad = bytearray(blob)
    bad[field:field + len(value)] = value
    out = _check_damaged(tmp_path, bytes(bad))
    assert out[0] == "open" and message in out[1], out


def test_corrupt_header_numbers(tmp_path):
    blob, _ = sample()
    bs_at, sub_at, bm_at = 428, 432, 436   # block_size, sub_hdr_size, bitmap_blocks
    cases = {
        "block size": (bs_at, struct.pack("<i", 1 << 30)),
        "sub-header": (sub_at, struct.pack("<i", 0)),
        "past the end": (bm_at, struct.pack("<I", 0xFFFFFFFF)),
        "max_mapnr": (BS + 104 - 8, struct.pack("<Q", 0)),
        "cannot cover": (BS + 104 - 8, struct.pack("<Q", 1 << 40)),
        "machine": (12 + 4 * 65, b"sparc64\0"),
    }
    for message, (at, value) in cases.items():
        bad = bytearray(blob)
        bad[at:at + len(value)] = value
        out = _check_damaged(tmp_path, bytes(bad))
        assert out[0] == "open" and message in out[1], (message, out)


def test_corrupt_bitmap_and_descriptors(tmp_path):
    blob, pages = sample(codec="zlib")
    lay = kb.layout(blob)
    rng = random.Random(5)
    for trial in range(40):
        bad = bytearray(blob)
        where = rng.choice(["bitmap1", "bitmap2", "desc", "data"])
        if where.startswith("bitmap"):
            at = lay[where] + rng.randrange(0, 30)
        elif where == "desc":
            at = lay["data_offset"] + rng.randrange(0, 24 * 50)
        else:
            at = lay["data_offset"] + 24 * 50 + rng.randrange(0, len(blob) - lay["data_offset"] - 24 * 50)
        bad[at] ^= 1 << rng.randrange(8)
        out = _check_damaged(tmp_path, bytes(bad), f"bad{trial}")
        assert out[0] != "open"


@pytest.mark.parametrize("patch, message", [
    (lambda d: (1 << 40, d[1], d[2]), "outside the page data"),
    (lambda d: (d[0], 0, d[2]), "size 0"),
    (lambda d: (d[0], BS + 1, d[2]), "size 4097"),
    (lambda d: (d[0], d[1], 0x1 | 0x20), "several compressions"),
    (lambda d: (-5, d[1], d[2]), "outside the page data"),
    (lambda d: (d[0], d[1] - 1, d[2]), "zlib"),
])
def test_descriptor_damage_names_it(tmp_path, patch, message):
    blob, pages = sample(codec="zlib")
    lay = kb.layout(blob)
    img = kdump.KdumpFile(_BytesSource(blob))
    at = lay["data_offset"] + 24 * img._rank(30)
    bad = bytearray(blob)
    d = struct.unpack_from("<qIIQ", bad, at)
    struct.pack_into("<qIIQ", bad, at, *patch(d[:3]), d[3])
    img = kdump.KdumpFile(_BytesSource(bytes(bad)))
    with pytest.raises(CorruptPage, match=message):
        img.read_page(30)
    assert img.read_page(31) == pages[31]


def _with_page(blob, pfn, data, flags):
    """``blob`` with pfn's descriptor pointing at ``data`` appended to the file."""
    img = kdump.KdumpFile(_BytesSource(blob))
    at = kb.layout(blob)["data_offset"] + 24 * img._rank(pfn)
    bad = bytearray(blob)
    struct.pack_into("<qIIQ", bad, at, len(bad), len(data), flags, 0)
    return bytes(bad + data)


@pytest.mark.parametrize("codec, data", [
    ("zlib", zlib.compress(bytes(BS // 2))),
    ("zlib", zlib.compress(bytes(2 * BS))),
    ("zlib", zlib.compress(bytes(BS))[:-3]),
    ("zstd", None),     # built below: wrong sizes, declared and undeclared
    ("snappy", None),
    ("lzo", kb.lzo_literal_stream(bytes(100))),
])
def test_page_that_inflates_to_the_wrong_size(codec, data):
    blob, _ = sample(codec="zlib")
    datas = [data] if data is not None else []
    if codec == "zstd":
        import zstandard
        datas = [zstandard.ZstdCompressor().compress(bytes(BS * 3)),
                 zstandard.ZstdCompressor(write_content_size=False).compress(bytes(BS * 3)),
                 zstandard.ZstdCompressor().compress(bytes(100)), b"\x28\xb5\x2f\xfdgarbage"]
    if codec == "snappy":
        import cramjam
        datas = [bytes(cramjam.snappy.compress_raw(bytes(2 * BS))),
                 bytes(cramjam.snappy.compress_raw(bytes(10))), b"\xff\xff\xff\xff\x0f"]
    for d in datas:
        img = kdump.KdumpFile(_BytesSource(_with_page(blob, 30, d, kb.FLAGS[codec])))
        with pytest.raises(CorruptPage) as e:
            img.read_page(30)
        assert codec in str(e.value) and "\n" not in str(e.value)


def test_decompression_bombs_stay_small():
    """Compressed data that claims or makes far more than a page (zstd frame header saying 1 TiB,
    zstd RLE blocks, zlib of megabytes of zeros, snappy preamble of 4 GiB, LZO long matches):
    refused after at most one page of output; memory does not grow."""
    import cramjam
    import zstandard

    blob, _ = sample(codec="zlib")
    frame = bytearray(zstandard.ZstdCompressor().compress(bytes(BS)))
    bombs = {
        "zstd": [zstandard.ZstdCompressor(write_content_size=False).compress(bytes(64 << 20))[:BS],
                 bytes(frame[:4]) + b"\xe0" + struct.pack("<Q", 1 << 40) + bytes(frame[13:])],
        "zlib": [zlib.compress(bytes(16 << 20), 9)[:BS]],
        "snappy": [b"\x80\x80\x80\x80\x10" + bytes(cramjam.snappy.compress_raw(bytes(BS)))[2:]],
        "lzo": [b"\x15abcd" + b"\x20" + bytes(15) + b"\x01" + b"\x04\x00" + b"\x11\x00\x00"],
    }
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for codec, datas in bombs.items():
        for d in datas:
            d = d[:BS]
            img = kdump.KdumpFile(_BytesSource(_with_page(blob, 30, d, kb.FLAGS[codec])))
            with pytest.raises(CorruptPage):
                img.read_page(30)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 64, grown_mb


def test_missing_codec_is_one_line(monkeypatch):
    blob, _ = sample(codec="zstd")
    monkeypatch.setattr(codecs, "_zstd", None)
    import builtins

    real_import = builtins.__import__

    def no_zstd(name, *a, **k):
        if name == "zstandard":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_zstd)
    img = kdump.KdumpFile(_BytesSource(blob))
    with pytest.raises(dumpfile.MissingCodec, match="'zstandard' is not installed"):
        img.read_page(30)
    assert img.read_page(20) == bytes(BS)    # the zero page is stored uncompressed


def test_flattened_damage(tmp_path):
    blob, pages = sample(codec="zlib")
    flat = kb.flatten(blob, record=4096)
    # Cut inside a record, drop the end marker, break a record header: readable up to there.
    for bad in (flat[:len(flat) // 2 + 100], flat[:-16], flat[:-16] + b"\x01\x02",
                flat[:4096 + 16 + 4096] + struct.pack(">qq", -7, 5) + flat[4096 + 16 + 4096 + 16:]):
        out = _check_damaged(tmp_path, bad, "flatbad")
        assert out[0] == "open" or all(o == "ok" or "excluded" in o or "not in the dump" in o
                                       or o.startswith("beyond the end of a truncated file")
                                       for o in out), out
    # A header claiming an absurd record stops indexing there.
    src = kdump.FlatSource(_BytesSource(flat[:4096] + struct.pack(">qq", 0, 1 << 50)))
    assert src.damage and "bad flattened record" in src.damage and src.size == 0


# --- the VMCOREINFO parser -------------------------------------------------------------------------


def test_vmcoreinfo_value_formats():
    info = vmcoreinfo.parse(b"OSRELEASE=6.1\nPAGESIZE=4096\nSYMBOL(init_uts_ns)=ffffffff82a0c6a0\n"
                            b"NUMBER(phys_base)=-320864256\nNUMBER(kimage_voffset)=0xffff800070000000\n"
                            b"NUMBER(VA_BITS)=48\nOFFSET(uts_namespace.name)=4\nSIZE(page)=64\n"
                            b"LENGTH(zone.free_area)=11\nKERNELOFFSET=36800000\nBUILD-ID=abc\n\0junk")
    assert info.symbol("init_uts_ns") == 0xFFFFFFFF82A0C6A0
    assert info.number("phys_base") == -320864256
    assert info.number("kimage_voffset") == 0xFFFF800070000000
    assert info.offset("uts_namespace.name") == 4 and info["SIZE(page)"] == 64
    assert info.kernel_offset == 0x36800000 and info["BUILD-ID"] == "abc" and info.page_size == 4096
    assert vmcoreinfo.x86_kernel_pa(info, 0xFFFFFFFFB9D00CC0) == 0x26B00CC0
    assert vmcoreinfo.parse(b"OSRELEASE=%s\n") is None and vmcoreinfo.parse(b"PAGESIZE=4096\n") is None
    assert vmcoreinfo.best([b"OSRELEASE=a\n", b"OSRELEASE=a\nKERNELOFFSET=0\n"]).kernel_offset == 0


def test_banner_matches_release_and_version():
    banner = (b"Linux version 7.2.13+deb14-amd64 (debian-kernel@lists.debian.org) (gcc 16) "
              b"#1 SMP PREEMPT_DYNAMIC Debian 7.2.13-1 (2026-10-28)\n\0")
    assert vmcoreinfo.banner_matches(banner, "7.2.13+deb14-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 7.2.13-1 (2026-10-28)")
    assert not vmcoreinfo.banner_matches(banner, "7.2.13+deb14-amd64", "#2 SMP PREEMPT_DYNAMIC Debian 7.2.13-1 (2026-10-28)")
    assert not vmcoreinfo.banner_matches(banner, "7.2.13", None)
