"""Fuzzing the dump containers themselves (the file formats, not the memory in them).

The memory fuzzer (tests/fuzzlib.py) damages what plugins read; this damages the files:
kdump header and sub-header fields, both bitmaps, page descriptors (offsets and sizes past the
end, overlapping, unknown compression flags), page data that inflates past the block size
(decompression bombs) or does not decompress (zstd, LZO, zlib, snappy garbage), truncation at
every structure boundary, flattened streams with bad record headers, ELF cores with lying
program headers and notes, LiME files with overlapping or lying ranges.

A mutant (:func:`mutants`, deterministic per seed) is a damaged copy of a base file plus the
file ranges it changed. :func:`check` opens it the way `vol` does -- the dumpfile reader and
our Volatility layers (KdumpStacker, TruncatedCoreStacker, Volatility's own ELF/LiME stackers
when ours decline) -- reads every page, and judges:

- *crash*: any exception but the documented ones (DumpError at open: one line; a PageError /
  InvalidAddressException per page, whose reason is one line);
- *hang*: past the time bound; *memory*: the process grew by more than the bound;
- *lost*: a page whose own bytes in the file (its descriptor and data; for ELF/LiME its
  segment bytes) and the structures before them were not damaged, yet does not read back as
  in the intact file.

Used by tests/test_fuzz_files.py (a few seeds per kind) and tools/fuzz_dumps.py
(``--containers N``: N mutants per kind, a table; README's robustness figures).
"""

import dataclasses
import os
import random
import resource
import signal
import struct
import time
import traceback
import zlib
from typing import Dict, List, Optional, Tuple

from helpers import kdump as kb

KDUMP_KINDS = ("header_field", "sub_header_field", "bitmap1", "bitmap2", "desc_offset_past_end",
               "desc_size", "desc_overlap", "desc_flags", "page_garbage", "bomb", "truncate",
               "flat_record", "notes")
ELF_KINDS = ("phdr_offset", "phdr_size", "phdr_overlap", "phnum", "elf_notes", "elf_truncate")
LIME_KINDS = ("lime_overlap", "lime_range", "lime_magic", "lime_truncate")
KINDS = KDUMP_KINDS + ELF_KINDS + LIME_KINDS
TIME_BOUND = 20.0          # seconds to open a mutant and read every page
RSS_BOUND_MB = 512.0
_DESC = kb.DESC


class Hang(BaseException):
    pass


@dataclasses.dataclass
class Base:
    """An intact file: its bytes, format, and what each page reads as."""

    name: str
    fmt: str                        # "kdump", "kdump-flat", "elf", "lime"
    blob: bytes
    pages: Dict[int, bytes]         # physical address -> block
    block: int
    codecs: Dict[int, str] = dataclasses.field(default_factory=dict)     # kdump pfn -> codec


@dataclasses.dataclass
class Mutant:
    seed: int
    kind: str
    base: Base
    blob: bytes
    damaged: List[Tuple[int, int]]  # file ranges changed (offset, length); (cut, huge) for cuts
    what: str = ""

    def describe(self) -> str:
        return f"{self.base.name} seed {self.seed} {self.kind}: {self.what}"


@dataclasses.dataclass
class Result:
    status: str                     # "opened", "refused" (one-line DumpError), "crash", "hang"
    pages_read: int = 0
    pages_named: int = 0            # pages that raised a documented error with a reason
    lost: List[int] = dataclasses.field(default_factory=list)
    message: str = ""
    seconds: float = 0.0


# --- base files ---------------------------------------------------------------------------------


def _page(seed: int, block: int) -> bytes:
    rng = random.Random(seed)
    words = [rng.choice((0, 0, 0xFFFFFFFF81000000 + rng.randrange(1 << 20) * 8, rng.randrange(1 << 32)))
             for _ in range(block // 8)]
    return struct.pack(f"<{len(words)}Q", *words)


def synthetic_bases(block: int = 4096) -> List[Base]:
    """A kdump file per codec mix (plain and flattened), an ELF core and a LiME file of the
    same pages, and a QEMU-shaped aarch64 kdump (64 KiB blocks, notes, utsname "Unknown")."""
    pages = {p: _page(p, block) for p in range(8, 40)}
    pages[12] = bytes(block)
    codec_of = {p: ("zstd", "zlib", "snappy", "lzo", "none")[p % 5] for p in pages}
    blob = kb.build(pages, max_mapnr=64, ram=range(0, 48), codec=lambda p: codec_of[p], block_size=block,
                    vmcoreinfo=b"OSRELEASE=6.1.0-fuzz\nPAGESIZE=4096\n",
                    cpu_notes=kb.qemu_notes("x86_64", [{"cr3": 0x9000}, {"cr3": 0xA000}]))
    by_addr = {p * block: d for p, d in pages.items()}
    out = [Base("kdump", "kdump", blob, by_addr, block, codec_of),
           Base("kdump-flat", "kdump-flat", kb.flatten(blob, record=5000, shuffle_seed=3), by_addr, block,
                codec_of)]
    arm_block = 65536
    arm_pages = {p: _page(p, arm_block) for p in range(0x4000, 0x4006)}
    arm = kb.build(arm_pages, max_mapnr=0x4008, ram=range(0x4000, 0x4008), codec="zlib", block_size=arm_block,
                   qemu=True, cpu_notes=kb.qemu_notes("aarch64", [{}, {}]), dump_level=1, phys_base=0x40000000)
    out.append(Base("kdump-qemu-arm64", "kdump", arm, {p * arm_block: d for p, d in arm_pages.items()},
                    arm_block, {p: "zlib" for p in arm_pages}))
    core_pages = {p: pages.get(p, bytes(block)) for p in range(0, 48)}
    out.append(Base("elf", "elf", kb.elf_core(core_pages, 48, kb.note(b"VMCOREINFO", b"OSRELEASE=x\n")),
                    {p * block: d for p, d in core_pages.items()}, block))
    ranges = [(8 * block, b"".join(pages[p] for p in range(8, 24))), (30 * block, b"".join(pages[p] for p in range(30, 40)))]
    lime_pages = {8 * block + i * block: pages[p] for i, p in enumerate(range(8, 24))}
    lime_pages.update({30 * block + i * block: pages[p] for i, p in enumerate(range(30, 40))})
    out.append(Base("lime", "lime", kb.lime_file(ranges), lime_pages, block))
    return out


def real_base(name: str, path, sample: int = 256, seed: int = 0) -> Base:
    """A real kdump file as a base: its bytes and ``sample`` of its pages (deterministic), read
    by the package's reader from the intact file."""
    from volatility3_ktstr.dumpfile import kdump

    with open(path, "rb") as f:
        blob = f.read()
    with kdump.open_kdump(str(path)) as img:
        pfns = [p for pfn, n in img.dumped_runs() for p in range(pfn, pfn + n)]
        pick = sorted(random.Random(seed).sample(pfns, min(sample, len(pfns))))
        pages = {}
        for p in pick:
            try:
                pages[p * img.block_size] = img.read_page(p)
            except Exception:
                continue
        fmt = "kdump-flat" if img.flattened else "kdump"
        return Base(name, fmt, blob, pages, img.block_size)


def kinds_for(base: Base) -> Tuple[str, ...]:
    if base.fmt.startswith("kdump"):
        return KDUMP_KINDS if base.fmt == "kdump-flat" else tuple(k for k in KDUMP_KINDS if k != "flat_record")
    return ELF_KINDS if base.fmt == "elf" else LIME_KINDS


# --- mutants ------------------------------------------------------------------------------------


def _plain(base: Base) -> bytes:
    """The kdump bytes the mutation works on (the flattened form is mutated after reassembly
    for every kind but its own record headers)."""
    if base.fmt != "kdump-flat":
        return base.blob
    return _reassemble(base.blob)


def _reassemble(flat: bytes) -> bytes:
    pos, out = 4096, bytearray()
    while pos + 16 <= len(flat):
        off, size = struct.unpack_from(">qq", flat, pos)
        if off < 0:
            break
        data = flat[pos + 16:pos + 16 + size]
        if len(out) < off + size:
            out.extend(bytes(off + size - len(out)))
        out[off:off + size] = data
        pos += 16 + size
    return bytes(out)


def _kdump_layout(blob: bytes):
    lay = kb.layout(blob)
    n_desc = sum(bin(b).count("1") for b in blob[lay["bitmap2"]:lay["bitmap2"] + lay["bitmap_len"]])
    lay["n_desc"] = n_desc
    lay["descs"] = [_DESC.unpack_from(blob, lay["data_offset"] + i * 24) for i in range(n_desc)]
    return lay


_VALUES = (0, 1, -1, 7, 4095, 4097, 1 << 31, (1 << 31) - 1, 1 << 40, 0x7FFFFFFFFFFFFFFF)


def _put(blob: bytearray, off: int, fmt: str, value) -> None:
    size = struct.calcsize(fmt)
    mask = (1 << (8 * size)) - 1
    v = value & mask
    if fmt[-1].islower() and v >> (8 * size - 1):
        v -= 1 << (8 * size)
    struct.pack_into(fmt, blob, off, v)


def _bomb(kind: str, size: int) -> bytes:
    data = bytes(size)
    if kind == "zlib":
        return zlib.compress(data, 9)
    import zstandard
    return zstandard.ZstdCompressor(level=19).compress(data)


def mutants(base: Base, seed: int, kind: Optional[str] = None) -> Mutant:
    """A deterministic mutant of ``base`` (``kind`` chosen by the seed unless given)."""
    rng = random.Random(seed)
    kind = kind or rng.choice(kinds_for(base))
    if base.fmt.startswith("kdump"):
        blob, damaged, what = _kdump_mutant(base, rng, kind)
    elif base.fmt == "elf":
        blob, damaged, what = _elf_mutant(base, rng, kind)
    else:
        blob, damaged, what = _lime_mutant(base, rng, kind)
    return Mutant(seed, kind, base, blob, damaged, what)


def _kdump_mutant(base, rng, kind):
    if kind == "flat_record":
        flat = bytearray(base.blob)
        # A record header at a record boundary: walk to a random one.
        pos, heads = 4096, []
        while pos + 16 <= len(flat):
            off, size = struct.unpack_from(">qq", flat, pos)
            heads.append(pos)
            if off < 0:
                break
            pos += 16 + size
        at = rng.choice(heads)
        field = rng.choice((0, 8))
        value = rng.choice((-2, -1, 1 << 62, 1 << 45, len(flat) * 4, 0, 3))
        struct.pack_into(">q", flat, at + field, value)
        return bytes(flat), [(0, 1 << 62)], f"record header at {at:#x}: field {field} = {value:#x}"
    plain = bytearray(_plain(base))
    lay = _kdump_layout(bytes(plain))
    bs = lay["block_size"]
    damaged: List[Tuple[int, int]]
    if kind == "header_field":
        off, fmt = rng.choice(((8, "<i"), (428, "<i"), (432, "<i"), (436, "<I"), (440, "<I"), (424, "<I"),
                               (460, "<i")))
        _put(plain, off, fmt, rng.choice(_VALUES))
        damaged, what = [(0, 1 << 62)], f"header offset {off}"
    elif kind == "sub_header_field":
        fields = [(bs + i, f) for i, f in ((0, "<Q"), (8, "<i"), (12, "<i"), (16, "<Q"), (24, "<Q"), (32, "<q"),
                                            (40, "<Q"), (48, "<q"), (56, "<Q"), (88, "<Q"), (96, "<Q"), (104, "<Q"))]
        off, fmt = rng.choice(fields)
        _put(plain, off, fmt, rng.choice(_VALUES + (len(plain), len(plain) - 10)))
        damaged, what = [(0, 1 << 62)], f"sub-header offset {off - bs}"
    elif kind in ("bitmap1", "bitmap2"):
        start = lay["bitmap1"] if kind == "bitmap1" else lay["bitmap2"]
        at = start + rng.randrange(lay["bitmap_len"] if rng.random() < 0.3 else max(1, 64 // 8))
        plain[at] ^= 1 << rng.randrange(8)
        damaged, what = [(0, 1 << 62)] if kind == "bitmap2" else [(at, 1)], f"bit at {at:#x}"
    elif kind.startswith("desc_") or kind in ("page_garbage", "bomb"):
        i = rng.randrange(lay["n_desc"])
        at = lay["data_offset"] + 24 * i
        off, size, flags, pflags = lay["descs"][i]
        if kind == "desc_offset_past_end":
            off = rng.choice((len(plain) + rng.randrange(1 << 20), 1 << 60, -4096, len(plain) - size // 2))
        elif kind == "desc_size":
            size = rng.choice((0, bs + 1, 1 << 31, len(plain), size + 1, max(1, size - 1)))
        elif kind == "desc_overlap":
            j = rng.randrange(lay["n_desc"])
            off = lay["descs"][j][0] + rng.choice((0, 1, size // 2))
        elif kind == "desc_flags":
            flags = rng.choice((0x8, 0x10, 0x40, 0x80, 0x21, 0x3, 0xFFFFFFFF))
        elif kind == "page_garbage":
            junk = bytes(rng.randrange(256) for _ in range(min(size, 64)))
            start = off + rng.randrange(max(1, size - len(junk) + 1))
            plain[start:start + len(junk)] = junk[:max(0, len(plain) - start)]
            _DESC.pack_into(plain, at, off, size, flags, pflags)
            return bytes(plain), [(start, len(junk))], f"page data at {start:#x} ({flags:#x})"
        else:   # bomb: data that inflates to far more than a block, appended at the end
            codec = rng.choice(("zlib", "zstd"))
            data = _bomb(codec, rng.choice((bs * 2, 64 << 20)))
            off, size, flags = len(plain), len(data), kb.FLAGS[codec]
            plain += data
        _DESC.pack_into(plain, at, off, size & 0xFFFFFFFF, flags & 0xFFFFFFFF, pflags)
        damaged, what = [(at, 24)], f"descriptor {i}: ({off:#x}, {size:#x}, {flags:#x})"
        if kind == "bomb":
            damaged.append((lay["descs"][i][0], lay["descs"][i][1]))
    elif kind == "notes":
        off_note = bs + kb.SUB.size
        at = off_note + rng.randrange(64)
        plain[at:at + 4] = struct.pack("<I", rng.choice((0, 1 << 31, 0xFFFFFFFF, 392, 336, 4096)))
        damaged, what = [(at, 4)], f"note header at {at:#x}"
    elif kind == "truncate":
        bounds = [464, bs, bs + kb.SUB.size, lay["bitmap1"], lay["bitmap2"], lay["data_offset"]]
        bounds += [lay["data_offset"] + 24 * k for k in (1, lay["n_desc"] // 2, lay["n_desc"])]
        bounds += [o for o, _s, _f, _p in lay["descs"][-5:]] + [len(plain) - 1]
        cut = max(1, rng.choice(bounds) + rng.choice((0, 0, -1, 1, 7)))
        del plain[cut:]
        damaged, what = [(cut, 1 << 62)], f"cut at {cut:#x}"
    else:
        raise ValueError(kind)
    blob = bytes(plain)
    if base.fmt == "kdump-flat":
        blob = kb.flatten(blob, record=5000, shuffle_seed=3)
    return blob, damaged, what


def _elf_mutant(base, rng, kind):
    blob = bytearray(base.blob)
    phoff, phentsize, phnum = 64, 56, struct.unpack_from("<H", blob, 56)[0]
    i = rng.randrange(phnum)
    ph = phoff + i * phentsize
    if kind == "phdr_offset":
        _put(blob, ph + 8, "<Q", rng.choice((len(blob) + 4096, 1 << 62, len(blob) - 100, 0)))
    elif kind == "phdr_size":
        field = rng.choice((32, 40))
        _put(blob, ph + field, "<Q", rng.choice((1 << 40, len(blob) * 2, 0, 1)))
    elif kind == "phdr_overlap":
        _put(blob, ph + 24, "<Q", rng.choice((0, 4096, 8 * 4096)))
        _put(blob, ph + 16, "<Q", rng.choice((0, 4096)))
    elif kind == "phnum":
        _put(blob, 56, "<H", rng.choice((0, 0xFFFF, phnum + 1, 200)))
    elif kind == "elf_notes":
        note_ph = next((phoff + k * phentsize for k in range(phnum)
                        if struct.unpack_from("<I", blob, phoff + k * phentsize)[0] == 4), ph)
        note_off = struct.unpack_from("<Q", blob, note_ph + 8)[0]
        at = note_off + rng.choice((0, 4))
        if at + 4 <= len(blob):
            _put(blob, at, "<I", rng.choice((0xFFFFFFFF, 1 << 30, 500)))
    elif kind == "elf_truncate":
        load_off = struct.unpack_from("<Q", blob, phoff + (phnum - 1) * phentsize + 8)[0]
        cut = rng.choice((10, 64, 64 + 20, phoff + phnum * phentsize, load_off, load_off + 4096 * rng.randrange(1, 40),
                          len(blob) - 1))
        del blob[cut:]
        return bytes(blob), [(cut, 1 << 62)], f"cut at {cut:#x}"
    return bytes(blob), [(0, 1 << 62)], f"program header {i}"


def _lime_mutant(base, rng, kind):
    blob = bytearray(base.blob)
    heads = []
    off = 0
    while off + 32 <= len(blob):
        _m, _v, s, e = struct.unpack_from("<IIQQ", blob, off)
        heads.append(off)
        off += 32 + e - s + 1
    at = rng.choice(heads)
    if kind == "lime_overlap":
        start = struct.unpack_from("<Q", blob, heads[0] + 8)[0]
        _put(blob, heads[-1] + 8, "<Q", start + rng.choice((0, 4096)))
        at = heads[-1]
    elif kind == "lime_range":
        _put(blob, at + 16, "<Q", rng.choice((0, 1 << 62, 0xFFFFFFFFFFFFFFFF, 5)))
    elif kind == "lime_magic":
        _put(blob, at, "<I", rng.choice((0, 0x4C694D46)))
    elif kind == "lime_truncate":
        cut = rng.choice([h + d for h in heads for d in (0, 16, 32, 4096)] + [len(blob) - 1])
        del blob[cut:]
        return bytes(blob), [(cut, 1 << 62)], f"cut at {cut:#x}"
    return bytes(blob), [(0, 1 << 62)], f"header at {at:#x}"


# --- checking -----------------------------------------------------------------------------------


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _page_ranges(base: Base, addr: int) -> List[Tuple[int, int]]:
    """File ranges an intact page depends on (headers and its own bytes)."""
    blob = _plain(base) if base.fmt.startswith("kdump") else base.blob
    if base.fmt.startswith("kdump"):
        lay = kb.layout(blob)
        pfn = addr // base.block
        bm = blob[lay["bitmap2"]:lay["bitmap2"] + lay["bitmap_len"]]
        rank = sum(bin(b).count("1") for b in bm[:pfn // 8]) + bin(bm[pfn // 8] & ((1 << (pfn % 8)) - 1)).count("1")
        at = lay["data_offset"] + 24 * rank
        off, size, _f, _p = _DESC.unpack_from(blob, at)
        return [(0, lay["data_offset"]), (at, 24), (off, size)]
    if base.fmt == "elf":
        return [(0, 4096), (addr - 0 + _elf_load_offset(blob), base.block)]
    return [(0, len(blob))]          # LiME: every header before a range moves it


def _elf_load_offset(blob):
    phnum = struct.unpack_from("<H", blob, 56)[0]
    for k in range(phnum):
        p_type, _f, off = struct.unpack_from("<IIQ", blob, 64 + 56 * k)
        if p_type == 1:
            return off
    return 0


def _overlaps(ranges, damaged) -> bool:
    return any(a < d + n and d < a + m for a, m in ranges for d, n in damaged)


def check(mutant: Mutant, tmp_dir: str, time_bound: float = TIME_BOUND) -> Result:
    """Open ``mutant`` as `vol` would and read every page (see the module documentation)."""
    path = os.path.join(tmp_dir, "mutant-" + mutant.base.name.replace("/", "_"))
    with open(path, "wb") as f:
        f.write(mutant.blob)

    def alarm(signum, frame):
        raise Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, time_bound)
    t0 = time.perf_counter()
    try:
        result = _check(mutant, path)
    except Hang:
        result = Result("hang", message=f"over {time_bound:.0f} s")
    except Exception:      # anything undocumented is a finding
        result = Result("crash", message=traceback.format_exc(limit=8))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    result.seconds = time.perf_counter() - t0
    return result


def _check(mutant: Mutant, path: str) -> Result:
    from volatility3.framework import contexts, exceptions
    from volatility3.framework.layers import elf as vol_elf
    from volatility3.framework.layers import lime as vol_lime
    from volatility3.framework.layers import physical

    from volatility3_ktstr import dumpfile
    from volatility3_ktstr.dumpfile.errors import DumpError, PageError
    from volatility3_ktstr.layers import kdump as kdump_layer
    from volatility3_ktstr.layers import truncated

    base = mutant.base
    # 1. The reader of the package (ktstr-isf --from-dump, ktstr-minimize, the layers).
    try:
        img = dumpfile.open_image(path)
    except DumpError as e:
        if "\n" in str(e):
            return Result("crash", message=f"multi-line DumpError: {e!r}")
        img = None
        refused = str(e)
    result = Result("opened" if img is not None else "refused", message="" if img else refused)
    if img is not None:
        with img:
            _read_all(img, base, mutant, result, lambda a, n: img.read(a, n, pad=False)
                      if hasattr(img, "block_size") else _strict(img, a, n), (PageError,))
    # 2. The Volatility layers `vol` stacks on the same file.
    ctx = contexts.Context()
    ctx.config["file.location"] = "file://" + os.path.abspath(path)
    ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
    layer = None
    for stacker in (kdump_layer.KdumpStacker, truncated.TruncatedCoreStacker):
        layer = stacker.stack(ctx, "file")
        if layer is not None:
            break
    if layer is None and base.fmt in ("elf", "lime"):
        stock = vol_elf.Elf64Stacker if base.fmt == "elf" else vol_lime.LimeStacker
        try:
            layer = stock.stack(ctx, "file")
        except exceptions.LayerException:
            layer = None          # Volatility's own refusal (e.g. overlapping LiME ranges)
    if layer is not None:
        ctx.add_layer(layer)
        vresult = Result("opened")
        _read_all(None, base, mutant, vresult, lambda a, n: layer.read(a, n),
                  (exceptions.InvalidAddressException,))
        result.lost += [a for a in vresult.lost if a not in result.lost]
        result.pages_read += vresult.pages_read
        result.pages_named += vresult.pages_named
        if result.status == "refused" and vresult.pages_read:
            result.status = "opened"
    return result


def _strict(img, addr, size):
    """FileImage reads are zero-padded: a page outside every segment is 'not in the file'."""
    from volatility3_ktstr.dumpfile.errors import PageError

    if not any(p <= addr and addr + size <= p + n for p, n in img.ranges):
        raise PageError(addr, size, "not in the file")
    return img.read(addr, size)


def _read_all(img, base, mutant, result, read, documented):
    for addr, want in base.pages.items():
        try:
            got = read(addr, base.block)
        except documented as e:
            reason = getattr(e, "reason", None) or getattr(e, "ktstr_reason", None) or str(e)
            if "\n" in str(reason):
                raise AssertionError(f"multi-line page error: {reason!r}")
            result.pages_named += 1
            got = None
        if got is not None:
            result.pages_read += 1
        if got != want and not _overlaps(_page_ranges(base, addr), mutant.damaged):
            result.lost.append(addr)


@dataclasses.dataclass
class Tally:
    mutants: int = 0
    opened: int = 0
    refused: int = 0
    crash: int = 0
    hang: int = 0
    lost: int = 0
    pages_read: int = 0
    pages_named: int = 0
    max_seconds: float = 0.0


def run(bases: List[Base], per_kind: int, seed: int, tmp_dir: str, on_finding=None) -> Dict[str, Tally]:
    """``per_kind`` mutants of every kind on every base; tallies per kind. Findings (crash,
    hang, lost pages, memory past the bound) go to ``on_finding(mutant, result, what)``."""
    tallies: Dict[str, Tally] = {}
    rss0 = _rss_mb()
    for base in bases:
        for kind in kinds_for(base):
            tally = tallies.setdefault(kind, Tally())
            for k in range(per_kind):
                mutant = mutants(base, seed + k, kind)
                res = check(mutant, tmp_dir)
                tally.mutants += 1
                tally.max_seconds = max(tally.max_seconds, res.seconds)
                tally.pages_read += res.pages_read
                tally.pages_named += res.pages_named
                if res.status in ("crash", "hang"):
                    setattr(tally, res.status, getattr(tally, res.status) + 1)
                else:
                    setattr(tally, res.status, getattr(tally, res.status) + 1)
                if res.lost:
                    tally.lost += 1
                findings = []
                if res.status in ("crash", "hang"):
                    findings.append(f"{res.status}: {res.message.strip().splitlines()[-1] if res.message else ''}")
                if res.lost:
                    findings.append(f"lost {len(res.lost)} pages outside the damage: {[hex(a) for a in res.lost[:4]]}")
                if _rss_mb() - rss0 > RSS_BOUND_MB:
                    findings.append(f"memory: process grew by {_rss_mb() - rss0:.0f} MB")
                for f in findings:
                    if on_finding:
                        on_finding(mutant, res, f)
    return tallies


def table(tallies: Dict[str, Tally]) -> str:
    head = f"{'damage':22} {'mutants':>7} {'opened':>6} {'refused':>7} {'crash':>5} {'hang':>4} {'lost':>4} " \
           f"{'pages ok':>8} {'named':>6} {'max s':>6}"
    lines = [head]
    for kind, t in tallies.items():
        lines.append(f"{kind:22} {t.mutants:7} {t.opened:6} {t.refused:7} {t.crash:5} {t.hang:4} {t.lost:4} "
                     f"{t.pages_read:8} {t.pages_named:6} {t.max_seconds:6.2f}")
    return "\n".join(lines)
