"""The smaller dump a minimization writes: where a dump's pages sit in physical memory
(:class:`Source`: raw with a physical base, ELF cores and the other formats of ``dumpfile``)
and the writers (an ELF64 core with one PT_LOAD per run, or a raw image with other pages
zeroed). Used by :mod:`volatility3_ktstr.minimize` (``ktstr-minimize``)."""

import dataclasses
import lzma
import os
import struct
from typing import Iterable, List, Sequence, Set, Tuple

PAGE = 4096
MAX_SEGMENTS = 0xFFF0  # e_phnum is 16 bits (no PN_XNUM: Volatility does not read it)
EM_BY_ARCH = {"x86_64": 62, "arm64": 183}
PT_LOAD, PT_NOTE = 1, 4


class MinimizeError(Exception):
    """A one-line, user-facing failure."""


# --- dump geometry -------------------------------------------------------------------------

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")


@dataclasses.dataclass
class Source:
    """Where the pages of a dump file sit in physical memory."""

    path: str
    size: int
    # (file offset, physical address, length) of each loadable range.
    loads: List[Tuple[int, int, int]]
    notes: List[Tuple[int, int]]  # (file offset, length) of PT_NOTE segments
    machine: int


def open_source(path: str, phys_base: int = 0, arch: str = "x86_64") -> Source:
    from .dumpfile import DumpError, elf, sniff

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(64)
        kind = sniff(head)
        if kind.startswith("kdump"):
            raise MinimizeError(f"{path}: a kdump-compressed file; minimize records pages of raw or "
                                f"ELF dumps only (its output is already a small ELF core)")
        if kind != "elf":
            return Source(path, size, [(0, phys_base, size)], [], EM_BY_ARCH[arch])

        def read(off, n):
            f.seek(off)
            return f.read(n)

        try:
            core = elf.parse_core(read, path)
        except DumpError as e:
            raise MinimizeError(str(e)) from None
    loads = [(off, pa, filesz) for pa, off, filesz, memsz in core.loads if filesz == memsz]
    return Source(path, size, sorted(loads), list(core.note_segments), core.machine)


def page_runs(pages: Iterable[int], gap: int = 0) -> List[Tuple[int, int]]:
    """Sorted page numbers -> [(first page, page count)], merging runs at most ``gap`` apart."""
    runs: List[List[int]] = []
    for p in sorted(pages):
        if runs and p <= runs[-1][0] + runs[-1][1] + gap:
            runs[-1][1] = p - runs[-1][0] + 1
        else:
            runs.append([p, 1])
    return [(a, n) for a, n in runs]


def physical_runs(src: Source, pages: Iterable[int], gap: int = 0) -> List[Tuple[int, int, int]]:
    """Kept file pages -> [(file offset, physical address, length)], clipped to loadable data."""
    out = []
    for first, count in page_runs(pages, gap):
        start, end = first * PAGE, (first + count) * PAGE
        for off, paddr, length in src.loads:
            lo, hi = max(start, off), min(end, off + length)
            if lo < hi:
                out.append((lo, paddr + (lo - off), hi - lo))
    out.sort(key=lambda r: r[1])
    return out


def edge_pages(src: Source) -> Set[int]:
    """File pages holding the lowest and highest physical page: kept so that the minimized
    dump spans the same physical address range (layers' minimum/maximum_address)."""
    if not src.loads:
        return set()
    lo = min(src.loads, key=lambda r: r[1])
    hi = max(src.loads, key=lambda r: r[1] + r[2])
    return {lo[0] // PAGE, (hi[0] + hi[2] - 1) // PAGE}


def _merge_until_fits(src: Source, pages: Set[int], gap: int) -> Tuple[List[Tuple[int, int, int]], int]:
    for _ in range(24):  # gap doubles each round: a bounded search
        runs = physical_runs(src, pages, gap)
        if len(runs) <= MAX_SEGMENTS:
            return runs, gap
        gap = gap * 2 + 1
    raise MinimizeError(f"too many segments ({len(runs)}) even with --merge-gap {gap}")


# --- writers -------------------------------------------------------------------------------


def _open_out(path: str):
    if path.endswith(".xz"):
        return lzma.open(path, "wb", preset=9 | lzma.PRESET_EXTREME)
    return open(path, "wb")


def write_elf_core(src: Source, runs: Sequence[Tuple[int, int, int]], out: str) -> int:
    """Writes an ELF64 core with one PT_LOAD per run (plus the source's PT_NOTEs); returns the
    uncompressed size."""
    notes = [(off, n) for off, n in src.notes]
    nph = len(notes) + len(runs)
    offset = _EHDR.size + nph * _PHDR.size
    layout = []
    for off, n in notes:
        layout.append((PT_NOTE, off, 0, n, offset))
        offset += n
    offset = -(-offset // PAGE) * PAGE
    for off, paddr, n in runs:
        layout.append((PT_LOAD, off, paddr, n, offset))
        offset += n
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr = _EHDR.pack(ident, 4, src.machine, 1, 0, _EHDR.size, 0, 0, _EHDR.size, _PHDR.size, nph,
                      0, 0, 0)
    with open(src.path, "rb") as fin, _open_out(out) as fout:
        fout.write(ehdr)
        for p_type, _, paddr, n, pos in layout:
            flags, align = (0, 0) if p_type == PT_NOTE else (7, PAGE)
            fout.write(_PHDR.pack(p_type, flags, pos, 0, paddr, n, n, align))
        written = _EHDR.size + nph * _PHDR.size
        for p_type, off, _, n, pos in layout:
            fout.write(bytes(pos - written))
            fin.seek(off)
            data = fin.read(n)
            if len(data) != n:
                raise MinimizeError(f"{src.path}: short read at file offset {off:#x}")
            fout.write(data)
            written = pos + n
    return written


def write_raw(src: Source, runs: Sequence[Tuple[int, int, int]], out: str) -> int:
    """Writes a raw image (byte 0 = lowest physical address of the source) with every page
    that was not kept zeroed; sparse on disk unless compressed."""
    if not src.loads:
        raise MinimizeError(f"{src.path}: no loadable memory")
    base = min(p for _, p, _ in src.loads)
    size = max(p + n for _, p, n in src.loads) - base
    with open(src.path, "rb") as fin, _open_out(out) as fout:
        pos = 0
        for off, paddr, n in runs:
            gap = paddr - base - pos
            if gap and out.endswith(".xz"):
                for _ in range(gap // (1 << 24) + 1):  # zeros in bounded pieces
                    piece = min(gap, 1 << 24)
                    fout.write(bytes(piece))
                    gap -= piece
            elif gap:
                fout.seek(paddr - base)
            fin.seek(off)
            fout.write(fin.read(n))
            pos = paddr - base + n
        if out.endswith(".xz"):
            rest = size - pos
            for _ in range(rest // (1 << 24) + 1):
                piece = min(rest, 1 << 24)
                fout.write(bytes(piece))
                rest -= piece
        else:
            fout.truncate(size)
    return size
