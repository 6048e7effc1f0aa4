"""Carve the kernel's own BTF, banner, VMCOREINFO and kallsyms out of physical memory.

Works on any object with ``ranges`` (list of (physical start, length)) and
``read(phys, size)`` (bytes, zero-padded where nothing is mapped): a raw/ELF/LiME file
(:mod:`.fromdump`) or a Volatility physical layer (:mod:`volatility3_ktstr.layers.autoisf`). No page tables needed:
the kernel image is physically contiguous, so distances between kernel symbols are the same
in physical memory as in virtual memory.

One pass over the image (:func:`scan`) collects the candidates with ``bytes.find`` over large
chunks; the candidates are then checked one by one, most plausible first.
"""

import re
import struct

from .. import btf as btfmod
from .. import vmcoreinfo
from . import kallsyms as ksmod
from .banner import BANNER_RE

SCAN_CHUNK = 32 << 20
OVERLAP = 8192                  # longest record looked at across a chunk boundary
BTF_MAGIC = b"\x9f\xeb\x01\x00"  # magic 0xeb9f (little endian), version 1, flags 0
BANNER_MAGIC = b"Linux version "
VMCI_MAGIC = b"OSRELEASE="
MAX_HITS = {"btf": 256, "banner": 64, "kallsyms": 64}
MIN_VMLINUX_BTF = 64 << 10       # module and program BTFs are smaller than this
MAX_VMLINUX_BTF = 512 << 20
CORE_TYPES = ("task_struct", "mm_struct", "list_head")
# How far the kallsyms tables may reach from the token-table anchor.
KALLSYMS_BEFORE = 48 << 20
KALLSYMS_AFTER = 24 << 20


class CarveError(ValueError):
    """Something the ISF needs is not in the image; the message says what and what to pass."""


NEAR_BANNER = 64 << 20           # the tables and .BTF sit within this of linux_banner
FIND_RE = {k: re.compile(re.escape(v)) for k, v in (("btf", BTF_MAGIC), ("kallsyms", ksmod.ANCHOR))}


class ScanResult:
    def __init__(self):
        self.hits = {k: [] for k in MAX_HITS}
        self.full = set()          # kinds searched over the whole image (not only near banners)

    def add(self, kind, phys, info=None):
        lst = self.hits[kind]
        if len(lst) < MAX_HITS[kind]:
            lst.append((phys, info))

    def __repr__(self):
        return "ScanResult(" + ", ".join(f"{k}={len(v)}" for k, v in self.hits.items()) + ")"


def _chunks(image, start, length, chunk=SCAN_CHUNK, overlap=OVERLAP):
    """(phys of buf[0], buf, lo, hi) over [start, start+length): hits count in buf[lo:hi]."""
    if hasattr(image, "chunks"):
        yield from image.chunks(start, length, chunk, overlap)
        return
    end = start + length
    for off in range(start, end, chunk):
        size = min(chunk, end - off)
        yield off, image.read(off, min(size + overlap, end - off)), 0, size


def scan(image, progress=None):
    """Find banners over the whole image (a fast search: the needle has no NUL byte), then
    the BTF headers and kallsyms anchors near them, where the kernel image is. Searching the
    NUL-rich needles over a whole GiB costs seconds; :func:`scan_full` does it when needed."""
    res = ScanResult()
    total = sum(length for _s, length in image.ranges) or 1
    done = 0
    for start, length in image.ranges:
        for base, buf, lo, hi in _chunks(image, start, length):
            pos = buf.find(BANNER_MAGIC, lo, hi)
            while pos >= 0:
                m = BANNER_RE.match(buf, pos, pos + 512)
                if m:
                    res.add("banner", base + pos, m.group(0))
                pos = buf.find(BANNER_MAGIC, pos + 1, hi)
            done += hi - lo
            if progress:
                progress(100.0 * done / total)
    res.full.add("banner")
    windows = []
    for phys, _text in res.hits["banner"]:
        rng = _range_of(image, phys)
        if rng is not None:
            windows.append((max(rng[0], phys - NEAR_BANNER), min(rng[0] + rng[1], phys + NEAR_BANNER)))
    for a, b in _merge(windows):
        _scan_kinds(image, a, b - a, ("btf", "kallsyms"), res)
    return res


def scan_full(image, res, kinds):
    """Search ``kinds`` ("btf", "kallsyms") over the whole image (after :func:`scan` found
    nothing usable near the banners)."""
    kinds = [k for k in kinds if k not in res.full]
    for k in kinds:
        res.hits[k] = []
    for start, length in image.ranges:
        _scan_kinds(image, start, length, kinds, res)
    res.full.update(kinds)


def _merge(windows):
    out = []
    for a, b in sorted(windows):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _scan_kinds(image, start, length, kinds, res):
    for base, buf, lo, hi in _chunks(image, start, length):
        if "btf" in kinds:
            for m in FIND_RE["btf"].finditer(buf, lo, hi):
                pos = m.start()
                if pos + 24 > len(buf):
                    continue
                hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<IIIII", buf, pos + 4)
                if 24 <= hdr_len <= 64 and hdr_len % 4 == 0:
                    total = hdr_len + max(type_off + type_len, str_off + str_len)
                    if MIN_VMLINUX_BTF <= total <= MAX_VMLINUX_BTF:
                        res.add("btf", base + pos, total)
        if "kallsyms" in kinds:
            for m in FIND_RE["kallsyms"].finditer(buf, lo, hi):
                res.add("kallsyms", base + m.start())


# --- VMCOREINFO ------------------------------------------------------------------------------

# One parser for the whole package (volatility3_ktstr.vmcoreinfo); these names stay for callers.
parse_vmcoreinfo = vmcoreinfo.parse
best_vmcoreinfo = vmcoreinfo.best


# --- kallsyms --------------------------------------------------------------------------------


def carve_kallsyms(image, anchors, accept=None):
    """Decode the kallsyms tables at the first anchor that has them and that ``accept(ks)``
    (default: :func:`consistent`) agrees with. (Kallsyms, errors)."""
    accept = accept or (lambda ks: consistent(image, ks))
    errors = []
    seen = set()
    for phys in anchors:
        if phys in seen:
            continue
        seen.add(phys)
        rng = _range_of(image, phys)
        if rng is None:
            continue
        # Cheap check first: the token table, its index and the markers sit within a few
        # hundred KiB of the anchor; they bound how much more the names/offsets need.
        lo = max(rng[0], (phys - (1 << 20)) & ~0xFFF)
        small = image.read(lo, min(phys + 16384, rng[0] + rng[1]) - lo)
        tt = ksmod.find_token_table(small, phys - lo)
        if tt is None:
            continue
        cands = [c for c in ksmod.markers_at_table(small, tt[0]) if c[2][-1] < KALLSYMS_BEFORE]
        if cands:
            most = max(256 * len(m) for _s, _w, m in cands)        # symbols, at most
            before = (max(m[-1] for _s, _w, m in cands) + 256 * (ksmod.MAX_ENTRY + 2) + 8 * most
                      + (64 << 10))
            after = 512 + 8 * most + (64 << 10)
        else:       # markers elsewhere (seqs_of_names in between): the whole reach
            before, after = KALLSYMS_BEFORE, KALLSYMS_AFTER
        lo = max(rng[0], (lo + tt[0] - before) & ~0xFFF)
        hi = min(rng[0] + rng[1], phys + after)
        if hi - lo > KALLSYMS_BEFORE + KALLSYMS_AFTER:
            errors.append(f"{phys:#x}: kallsyms tables would span {(hi - lo) >> 20} MiB")
            continue
        window = image.read(lo, hi - lo)
        try:
            ks = ksmod.decode_at(window, phys - lo, lo)
        except ksmod.KallsymsError as e:
            errors.append(f"{phys:#x}: {e}")
            continue
        finally:
            del window
        if accept(ks):
            return ks, errors
        errors.append(f"{phys:#x}: tables decode but linux_banner is not where they say (a stale copy?)")
    return None, errors


def consistent(image, ks):
    """True when the tables belong to the image they sit in: linux_banner is at the place
    they give (kallsyms without data symbols cannot tell: accepted)."""
    addr = ks.value("linux_banner")
    phys = phys_of(ks, addr) if addr is not None else None
    if phys is None:
        return True
    return BANNER_RE.match(image.read(phys, 1024)) is not None


def _range_of(image, phys):
    for start, length in image.ranges:
        if start <= phys < start + length:
            return start, length
    return None


def phys_of(ks, addr):
    """Physical address of the kernel-image address ``addr`` (same units as ``ks.addrs``),
    from the tables' own physical location; None when no table symbol anchors it."""
    if ks.layout == "pcrel":
        return ks.phys["kallsyms_offsets"] + addr
    for table, phys in ks.phys.items():
        v = ks.value(table)
        if v is not None:
            return phys + (addr - v)
    return None


def _u64(image, phys):
    return int.from_bytes(image.read(phys, 8), "little")


def vmcoreinfo_in_memory(image, ks, arch):
    """VMCOREINFO text found through the kernel's ``vmcoreinfo_data`` pointer (a direct-map
    address), or None. Cheaper than searching the whole image for it."""
    at = ks.value("vmcoreinfo_data")
    at = phys_of(ks, at) if at is not None else None
    if at is None:
        return None
    va = _u64(image, at)
    pas = []
    if arch == "arm64":
        ms = ks.value("memstart_addr")
        ms = phys_of(ks, ms) if ms is not None else None
        memstart = _u64(image, ms) if ms is not None else 0
        for bits in (52, 48, 47, 42, 39):       # linear map: PA = VA - PAGE_OFFSET + memstart
            page_offset = (1 << 64) - (1 << bits)
            if va >= page_offset:
                for base in {0, memstart}:
                    pas.append(va - page_offset + memstart - base)
    else:
        po = ks.value("page_offset_base")
        po = phys_of(ks, po) if po is not None else None
        bases = [_u64(image, po)] if po is not None else []
        for base in bases + [0xFFFF888000000000, 0xFF11000000000000]:
            if va >= base:
                pas.append(va - base)
    for pa in pas:
        if _range_of(image, pa) is None:
            continue
        text = image.read(pa, 4096)
        if text.startswith(VMCI_MAGIC):
            end = text.find(b"\0")
            return text[:end if end >= 0 else len(text)]
    return None


# --- BTF -------------------------------------------------------------------------------------


def _check_btf(blob):
    """Parsed Btf if ``blob`` is a kernel (vmlinux) BTF, else None."""
    try:
        parsed = btfmod.Btf.parse(blob)
    except btfmod.BtfError:
        return None
    if not all(parsed.find(name) for name in CORE_TYPES):
        return None
    # A BPF object's BTF (an scx scheduler's, from vmlinux.h) holds task_struct too, but always
    # has DATASECs of its own (.maps, license, .bss, ...); vmlinux BTF has only .data..percpu
    # (or no DATASEC at all with a pahole older than per-CPU variable support).
    secs = {t.name for t in parsed.own_types if t.kind == btfmod.Kind.DATASEC}
    if secs and ".data..percpu" not in secs:
        return None
    return parsed


def carve_btf(image, scan_res, ks=None):
    """(Btf, blob, physical address) of the kernel BTF, or None.

    With kallsyms, __start_BTF/__stop_BTF give the exact place; otherwise the 0xEB9F
    headers found by the scan are tried, largest first (module/program BTFs are split
    and smaller; stale page-cache copies are usually not contiguous and fail to parse).
    """
    if ks is not None:
        start, stop = ks.value("__start_BTF"), ks.value("__stop_BTF")
        if start is not None and stop is not None and 0 < stop - start <= MAX_VMLINUX_BTF:
            phys = phys_of(ks, start)
            if phys is not None:
                blob = image.read(phys, stop - start)
                if blob[:4] == BTF_MAGIC:
                    parsed = _check_btf(blob)
                    if parsed is not None:
                        return parsed, blob, phys
    tried = set()
    for phys, total in sorted(scan_res.hits["btf"], key=lambda h: -h[1]):
        if total in tried:
            continue
        blob = image.read(phys, total)
        hdr_len, _to, _tl, str_off = struct.unpack_from("<IIII", blob, 4)
        if blob[hdr_len + str_off:hdr_len + str_off + 1] != b"\0":
            continue
        parsed = _check_btf(blob)
        if parsed is not None:
            return parsed, blob, phys
        tried.add(total)
    return None


# --- banner ----------------------------------------------------------------------------------


def carve_banner(image, scan_res, ks=None, release=None):
    """Exact linux_banner bytes (with "\\n\\0"), or None.

    With kallsyms the banner is read at linux_banner's own place; otherwise the scanned
    banners are voted on (the kernel's release from VMCOREINFO first, then the most frequent).
    """
    if ks is not None:
        addr = ks.value("linux_banner")
        phys = phys_of(ks, addr) if addr is not None else None
        if phys is not None:
            data = image.read(phys, 1024)
            m = BANNER_RE.match(data)
            if m:
                return m.group(0)
    counts = {}
    for _phys, text in scan_res.hits["banner"]:
        counts[text] = counts.get(text, 0) + 1
    if not counts:
        return None

    def key(item):
        text, n = item
        parts = text.split()
        rel_ok = release is not None and len(parts) > 2 and parts[2].decode("ascii", "replace") == release
        return (rel_ok, n)

    return max(counts.items(), key=key)[0]
