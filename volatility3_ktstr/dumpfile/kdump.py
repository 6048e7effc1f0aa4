"""kdump-compressed files (makedumpfile, QEMU ``dump-guest-memory -z``): physical memory reader.

The format (makedumpfile's diskdump_mod.h; crash's diskdump.c reads it), all little-endian
for the 64-bit machines this package supports. The file's unit is its *block*, ``block_size``
bytes: pfns, bitmaps and page descriptors count blocks, which need not be the guest's pages
(QEMU writes its target page size: 65,536 bytes for any aarch64 guest, 4 KiB for x86-64):

====================  ==========================================================================
block 0               ``disk_dump_header``: "KDUMP   ", header_version, utsname (6 x 65 bytes),
                      timestamp, status (compression, incomplete), block_size, sub_hdr_size
                      (blocks), bitmap_blocks, max_mapnr (32-bit), nr_cpus ... (QEMU: utsname
                      empty, machine "Unknown": the notes then tell the machine, ``_machine``)
block 1 ..            ``kdump_sub_header``: phys_base, dump_level, split, start/end pfn,
                      offset/size of VMCOREINFO and of the ELF notes (header v3/v4+),
                      max_mapnr_64 and 64-bit start/end pfn (v6+); the notes follow it
1 + sub_hdr_size      two bitmaps of ``bitmap_blocks / 2`` blocks each, one bit per page frame
                      (pfn = physical address / block_size, bit ``pfn % 8`` of byte ``pfn / 8``):
                      the 1st says the page exists (RAM), the 2nd that it is in the file
                      (older diskdump files have one bitmap, used for both)
then                  one ``page_desc`` (offset, size, flags, page_flags: 24 bytes) per page
                      of the 2nd bitmap, in pfn order; the n-th set bit has the n-th descriptor
page data             each page compressed on its own (flags: zlib 0x1, lzo 0x2, snappy 0x4,
                      zstd 0x20, none 0), or stored as is when that is not smaller
====================  ==========================================================================

Zero pages, with dump level bit 1, all point at one shared page of zeros, so they read as
zeros. A page in the 1st bitmap but not the 2nd was excluded by the dump level: reading it
raises :class:`~.errors.ExcludedPage` naming the level. The flattened form (``makedumpfile
-F``, QEMU's ``-z`` output) is read through :class:`.flat.FlatSource`. A file cut short keeps
what it holds: pages whose data lie past its end are named "beyond the end of a truncated
file (expected N bytes, file has M)".

Opening reads the headers and VMCOREINFO only: the bitmaps are read in 4 KiB sections when a
page needs them, with running counts of set bits kept per section, so the cost of opening
does not depend on the memory size. Decompressed pages live in a bounded LRU cache.
"""

import array
import collections
import re
import struct
from typing import Iterator, List, Optional, Tuple

from . import codecs, notes as notesmod
from .elf import parse_notes
from .errors import (CorruptPage, DumpError, ExcludedPage, MissingCodec, PageError, TruncatedPage,
                     truncated_reason)
from .flat import (FLAT_HEADER_SIZE, FLAT_RECORD, FLAT_SIGNATURE, FileSource,  # noqa: F401
                   FlatSource, is_flattened)

KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"

# disk_dump_header: signature, header_version, utsname, (pad), timeval, then 10 ints.
_HDR_HEAD = struct.Struct("<8si390s")
_HDR_TAIL = struct.Struct("<qqIiiIIIIIIi")          # at offset 408
HEADER_SIZE = 408 + _HDR_TAIL.size                   # 464
# kdump_sub_header (64-bit): phys_base, dump_level, split, start_pfn, end_pfn,
# offset_vmcoreinfo, size_vmcoreinfo, offset_note, size_note, offset_eraseinfo,
# size_eraseinfo, start_pfn_64, end_pfn_64, max_mapnr_64.
_SUB = struct.Struct("<QiiQQqQqQqQQQQ")
PAGE_DESC = struct.Struct("<qIIQ")

STATUS_INCOMPLETE = 0x8
STATUS_EXCLUDED_VMEMMAP = 0x10
MACHINES = ("x86_64", "aarch64")
UNKNOWN_MACHINES = ("", "Unknown", "unknown", "(none)")   # QEMU writes "Unknown"
MIN_BLOCK, MAX_BLOCK = 4096, 1 << 18
MAX_PFN = 1 << 52                     # 2^64 bytes of 4 KiB pages and more than any machine has
MAX_VMCOREINFO = 1 << 20
MAX_NOTES = 16 << 20
SECTION_BITS = 1 << 15                # pfns per bitmap section (4 KiB of bitmap)
SECTION_BYTES = SECTION_BITS // 8
MAX_SECTIONS_CACHED = 256             # bitmap sections kept (1 MiB)
DEFAULT_CACHE_BYTES = 32 << 20        # decompressed pages kept
BATCH_CACHE_PAGES = 16                # larger reads (scans) do not go through the cache
EXPECTED_SIZE_CHUNKS = 64             # 4096 descriptors each, read back to find the file's end
RUN_MERGE_GAP = 64                    # pages: nearby runs of dumped pages become one range


def is_kdump(head: bytes) -> bool:
    return head[:8] in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE)


if hasattr(int, "bit_count"):
    def _popcount(data: bytes) -> int:
        return int.from_bytes(data, "little").bit_count()
else:  # Python < 3.10
    def _popcount(data: bytes) -> int:
        return bin(int.from_bytes(data, "little")).count("1")


# --- the file ------------------------------------------------------------------------------------


def _cstr(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("latin-1")


class KdumpFile:
    """Physical memory of a kdump-compressed file (see the module documentation).

    ``source``: the file's bytes (:class:`FileSource`, :class:`FlatSource` or any object with
    ``read(offset, size)``, ``size``, ``name``, ``close()``). Raises DumpError (one line) when
    the headers are not those of a readable kdump file.
    """

    format = "kdump"

    def __init__(self, source, cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.source = source
        self.name = getattr(source, "name", "vmcore")
        self.flattened = isinstance(source, FlatSource)
        self.warnings: List[str] = []
        if self.flattened and source.damage:
            self.warnings.append(source.damage)
        self._parse_headers()
        self._page_cache: "collections.OrderedDict[int, bytes]" = collections.OrderedDict()
        self._cache_pages = max(16, cache_bytes // self.block_size)
        self._sections: "collections.OrderedDict[int, bytes]" = collections.OrderedDict()
        self._cum = array.array("Q", [0])   # set bits of the 2nd bitmap before section k
        self._ranges = None
        self._expected: Optional[Tuple[int, bool]] = None

    # -- headers --

    def _parse_headers(self):
        name = self.name
        size = self.source.size
        head = self.source.read(0, HEADER_SIZE)
        if head[:8] == DISKDUMP_SIGNATURE:
            raise DumpError(f"{name}: an old 'DISKDUMP' (diskdump) file; only makedumpfile's "
                            f"kdump-compressed format ('KDUMP   ') is supported")
        if head[:8] != KDUMP_SIGNATURE:
            raise DumpError(f"{name}: not a kdump-compressed file (no 'KDUMP   ' signature)")
        if len(head) < HEADER_SIZE:
            raise DumpError(f"{name}: kdump header cut short ({len(head)} of {HEADER_SIZE} bytes: "
                            f"file truncated)")
        _sig, self.header_version, uts = _HDR_HEAD.unpack_from(head)
        (_sec, _usec, self.status, self.block_size, self.sub_hdr_size, self.bitmap_blocks,
         max_mapnr32, _total, _device, _written, _cpu, self.nr_cpus) = _HDR_TAIL.unpack_from(head, 408)
        self.utsname = {k: _cstr(uts[i * 65:(i + 1) * 65]) for i, k in enumerate(
            ("sysname", "nodename", "release", "version", "machine", "domainname"))}
        if self.header_version < 1 or self.header_version > 1000:
            raise DumpError(f"{name}: kdump header version {self.header_version} (corrupt header)")
        bs = self.block_size
        if bs < MIN_BLOCK or bs > MAX_BLOCK or bs & (bs - 1):
            raise DumpError(f"{name}: kdump block size {bs} is not a power of two between "
                            f"{MIN_BLOCK} and {MAX_BLOCK} (corrupt header)")
        self.page_shift = bs.bit_length() - 1
        if self.sub_hdr_size < 1 or self.bitmap_blocks < 1:
            raise DumpError(f"{name}: kdump header says {self.sub_hdr_size} sub-header and "
                            f"{self.bitmap_blocks} bitmap blocks (corrupt header)")
        sub = self.source.read(bs, _SUB.size)
        if len(sub) < _SUB.size:
            raise DumpError(f"{name}: kdump sub-header cut short (file truncated at {size:#x})")
        (self.sub_phys_base, self.dump_level, split, start32, end32, off_vmci, size_vmci, off_note,
         size_note, _off_erase, _size_erase, start64, end64, mapnr64) = _SUB.unpack(sub)
        v = self.header_version
        self.max_mapnr = mapnr64 if v >= 6 else max_mapnr32
        self.split = bool(split) if v >= 2 else False
        if self.split:
            self.start_pfn, self.end_pfn = (start64, end64) if v >= 6 else (start32, end32)
        else:
            self.start_pfn, self.end_pfn = 0, self.max_mapnr
        if not 0 < self.max_mapnr <= MAX_PFN:
            raise DumpError(f"{name}: kdump header says max_mapnr {self.max_mapnr} (corrupt header)")
        if self.split and not 0 <= self.start_pfn < self.end_pfn <= self.max_mapnr:
            raise DumpError(f"{name}: split kdump part with pages {self.start_pfn:#x}..{self.end_pfn:#x} "
                            f"outside 0..{self.max_mapnr:#x} (corrupt header)")
        self.bitmap_offset = (1 + self.sub_hdr_size) * bs
        bitmap_len = self.bitmap_blocks * bs
        one = -(-((self.max_mapnr + 7) // 8) // bs) * bs          # one bitmap, in whole blocks
        self.two_bitmaps = self.bitmap_blocks * bs >= 2 * one
        self.bitmap_len = bitmap_len // 2 if self.two_bitmaps else bitmap_len
        if self.bitmap_len * 8 < self.max_mapnr:
            raise DumpError(f"{name}: kdump bitmaps of {bitmap_len} bytes cannot cover max_mapnr "
                            f"{self.max_mapnr} (corrupt header)")
        self.bitmap2_offset = self.bitmap_offset + (self.bitmap_len if self.two_bitmaps else 0)
        self.data_offset = self.bitmap_offset + bitmap_len
        if self.data_offset > size:
            raise DumpError(f"{name}: kdump bitmaps end at {self.data_offset:#x}, past the end of the "
                            f"file ({size:#x}): truncated")
        self.compression = codecs.name_of(self.status)
        self.incomplete = bool(self.status & STATUS_INCOMPLETE)
        if self.incomplete:
            self.warnings.append("makedumpfile marked the dump incomplete (it stopped early)")
        self.vmcoreinfo = None
        if v >= 3 and off_vmci > 0 and size_vmci:
            if size_vmci > MAX_VMCOREINFO or off_vmci + size_vmci > size:
                self.warnings.append(f"VMCOREINFO at {off_vmci:#x}+{size_vmci:#x} is outside the file")
            else:
                self.vmcoreinfo = self.source.read(off_vmci, size_vmci)
        self.notes = []
        if v >= 4 and off_note > 0 and size_note:
            if size_note > MAX_NOTES or off_note + size_note > size:
                self.warnings.append(f"ELF notes at {off_note:#x}+{size_note:#x} are outside the file")
            else:
                self.notes = parse_notes(self.source.read(off_note, size_note))
        self.machine = self._machine()

    def _machine(self) -> Optional[str]:
        """"x86_64", "aarch64", or None when nothing in the file says (the stacker then tries
        each architecture and keeps the one whose kernel it finds).

        ``utsname.machine`` first; QEMU writes "Unknown" there, so then the ELF notes
        (NT_PRSTATUS size per architecture), then the VMCOREINFO keys. DumpError when the
        file says positively that it is another machine."""
        said = self.utsname["machine"]
        if said in MACHINES:
            return said
        by_notes = notesmod.machine_of_notes(self.notes)
        if by_notes in MACHINES:
            return by_notes
        from .. import vmcoreinfo

        info = vmcoreinfo.best(self.vmcoreinfo_texts())
        by_vmci = {"arm64": "aarch64", "x86_64": "x86_64"}.get(vmcoreinfo.arch(info) if info else None)
        if by_vmci:
            return by_vmci
        prstatus = [n for n in self.notes if n.name == b"CORE" and n.type == notesmod.NT_PRSTATUS]
        if (said and said not in UNKNOWN_MACHINES) or prstatus:
            raise DumpError(f"{self.name}: kdump file of a '{said}' machine, notes: "
                            f"{notesmod.describe_notes(self.notes)}; only {', '.join(MACHINES)} "
                            f"are supported")
        return None

    def vmcoreinfo_texts(self) -> List[bytes]:
        texts = [self.vmcoreinfo] if self.vmcoreinfo else []
        texts += [n.desc for n in self.notes if n.name == b"VMCOREINFO" and n.desc not in texts]
        return texts

    def describe(self) -> str:
        """One line: what this file is."""
        form = "flattened " if self.flattened else ""
        part = f", split part pfn {self.start_pfn:#x}-{self.end_pfn:#x}" if self.split else ""
        return (f"{form}kdump-compressed file v{self.header_version}, {self.compression}, dump level "
                f"{self.dump_level}, {self.block_size}-byte blocks, max_mapnr {self.max_mapnr:#x}, "
                f"kernel {self.utsname['release'] or '?'} ({self.machine or 'machine unknown'}){part}")

    # -- lifecycle --

    def close(self):
        self.source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def reset_caches(self):
        """Forget decoded pages and bitmap sections (the file changed under us: tests, fuzzing)."""
        self._page_cache.clear()
        self._sections.clear()
        self._cum = array.array("Q", [0])
        self._ranges = None
        self._expected = None

    # -- bitmaps --

    def _section(self, k: int) -> bytes:
        """Bytes of section ``k`` of the 2nd bitmap (zeros past its end)."""
        data = self._sections.get(k)
        if data is not None:
            self._sections.move_to_end(k)
            return data
        start = k * SECTION_BYTES
        n = max(0, min(SECTION_BYTES, self.bitmap_len - start))
        data = self.source.read(self.bitmap2_offset + start, n)
        if len(data) < SECTION_BYTES:
            data = data + bytes(SECTION_BYTES - len(data))
        self._sections[k] = data
        if len(self._sections) > MAX_SECTIONS_CACHED:
            self._sections.popitem(last=False)
        return data

    def _bit2(self, pfn: int) -> bool:
        sec = self._section(pfn // SECTION_BITS)
        rel = pfn % SECTION_BITS
        return bool(sec[rel >> 3] >> (rel & 7) & 1)

    def _bit1(self, pfn: int) -> bool:
        if not self.two_bitmaps:
            return self._bit2(pfn)
        byte = self.source.read(self.bitmap_offset + (pfn >> 3), 1)
        return bool(byte and byte[0] >> (pfn & 7) & 1)

    def _count_before(self, pfn: int) -> int:
        """Set bits of the 2nd bitmap below ``pfn``."""
        k = pfn // SECTION_BITS
        cum = self._cum
        if len(cum) <= k:
            # Whole sections in bulk (1 MiB at a time), kept as running counts.
            while len(cum) <= k:
                first = len(cum) - 1
                count = min(256, k - first)
                data = self.source.read(self.bitmap2_offset + first * SECTION_BYTES, count * SECTION_BYTES)
                total = cum[-1]
                for i in range(count):
                    total += _popcount(data[i * SECTION_BYTES:(i + 1) * SECTION_BYTES])
                    cum.append(total)
        rel = pfn % SECTION_BITS
        sec = self._section(k)
        below = _popcount(sec[:rel >> 3])
        if rel & 7:
            below += bin(sec[rel >> 3] & ((1 << (rel & 7)) - 1)).count("1")
        return cum[k] + below

    def _rank(self, pfn: int) -> int:
        """Index of ``pfn``'s descriptor (pages of a split part count from its first pfn)."""
        n = self._count_before(pfn)
        if self.start_pfn:
            n -= self._count_before(self.start_pfn)
        return n

    def page_state(self, pfn: int) -> str:
        """"dumped", "excluded" (filtered by the dump level), "other-part" (in another file of
        a split dump) or "absent" (no RAM there, or past max_mapnr)."""
        if pfn < 0 or pfn >= self.max_mapnr:
            return "absent"
        if not self.start_pfn <= pfn < self.end_pfn:
            return "other-part" if self._bit1(pfn) else "absent"
        if self._bit2(pfn):
            return "dumped"
        return "excluded" if self._bit1(pfn) else "absent"

    def is_dumped(self, phys: int, size: int = 1) -> bool:
        """Whether every page of [phys, phys+size) is in the file."""
        if phys < 0 or size <= 0:
            return False
        first, last = phys >> self.page_shift, (phys + size - 1) >> self.page_shift
        if last >= self.max_mapnr or first < self.start_pfn or last >= self.end_pfn:
            return False
        if last - first > 1 << 20:
            return False
        return all(self._bit2(pfn) for pfn in range(first, last + 1))

    # -- pages --

    def _unreadable(self, pfn: int, state: str) -> PageError:
        addr = pfn << self.page_shift
        if state == "excluded":
            return ExcludedPage(addr, self.block_size, self.dump_level, pfn)
        if state == "other-part":
            return PageError(addr, self.block_size, "in another part of a split dump (makedumpfile "
                             "--split): reassemble the parts with makedumpfile --reassemble", pfn)
        return PageError(addr, self.block_size, "not in the dump (no RAM there)", pfn)

    def _descriptors(self, rank: int, count: int) -> List[Tuple[int, int, int]]:
        """(offset, size, flags) of ``count`` consecutive descriptors; short at the file's end."""
        data = self.source.read(self.data_offset + rank * PAGE_DESC.size, count * PAGE_DESC.size)
        return [PAGE_DESC.unpack_from(data, i * PAGE_DESC.size)[:3]
                for i in range(len(data) // PAGE_DESC.size)]

    def expected_size(self) -> Tuple[int, bool]:
        """(size of the complete file, whether exact): where the page data of the last
        descriptors end (makedumpfile writes data in pfn order, but the last pages may all
        share the one zero page: read back until the data offsets differ, bounded), or only
        the end of the descriptor table when those descriptors are missing too. Counts the
        2nd bitmap once; asked only when a page is missing."""
        if self._expected is None:
            total = self._count_before(self.end_pfn)
            if self.start_pfn:
                total -= self._count_before(self.start_pfn)
            table_end = self.data_offset + total * PAGE_DESC.size
            self._expected = (table_end, False)
            end, offsets = 0, set()
            hi = total
            # A complete file ends before this even with every page stored whole: descriptors
            # pointing further are damage, not data lost to truncation.
            limit = table_end + (total + 1) * self.block_size
            for _ in range(EXPECTED_SIZE_CHUNKS):
                lo = max(0, hi - 4096)
                if lo >= hi:
                    break
                for off, size, _flags in self._descriptors(lo, hi - lo):
                    if table_end <= off and 0 < size <= self.block_size and off + size <= limit:
                        end = max(end, off + size)
                        offsets.add(off)
                if len(offsets) > 1:
                    break
                hi = lo
            if end:
                self._expected = (end, True)
        return self._expected

    def truncated(self) -> bool:
        """Whether the file is shorter than its headers and descriptors say."""
        return self.expected_size()[0] > self.source.size

    def _truncated_page(self, pfn) -> PageError:
        expected, exact = self.expected_size()
        return TruncatedPage(pfn << self.page_shift, self.block_size,
                             truncated_reason(expected, self.source.size, exact), pfn)

    def _check_desc(self, pfn, desc) -> Optional[PageError]:
        """The error a descriptor stands for, or None when it looks right."""
        addr = pfn << self.page_shift
        if desc is None:
            if self.truncated():
                return self._truncated_page(pfn)
            return CorruptPage(addr, self.block_size, "its page descriptor is past the end of the "
                               "file", pfn)
        offset, size, flags = desc
        if offset == 0 and self.incomplete:
            return PageError(addr, self.block_size, "not written: makedumpfile stopped before this "
                             "page (incomplete dump)", pfn)
        why = None
        if size == 0 or size > self.block_size:
            why = f"corrupt page descriptor (size {size}, block size {self.block_size})"
        elif (self.data_offset <= offset and offset + size > self.source.size
              and offset + size <= self.expected_size()[0] and self.truncated()):
            return self._truncated_page(pfn)
        elif offset < self.data_offset or offset + size > self.source.size:
            why = (f"corrupt page descriptor: data at {offset:#x}+{size:#x} is outside the page "
                   f"data of the file (ends at {self.source.size:#x})")
        elif bin(flags & codecs.COMPRESSION_MASK).count("1") > 1:
            why = f"corrupt page descriptor (flags {flags:#x}: several compressions)"
        return CorruptPage(addr, self.block_size, why, pfn) if why else None

    def _decode(self, pfn, desc, data) -> bytes:
        addr = pfn << self.page_shift
        _offset, size, flags = desc
        if len(data) < size:
            raise self._truncated_page(pfn)
        try:
            return codecs.decompress(flags, data, self.block_size)
        except codecs.MissingCodecError as e:
            raise MissingCodec(addr, self.block_size, str(e), pfn) from None
        except codecs.CodecError as e:
            raise CorruptPage(addr, self.block_size, f"corrupt page in the dump: {e}", pfn) from None

    def read_page(self, pfn: int) -> bytes:
        """The page at ``pfn`` (cached), or a PageError saying why not."""
        page = self._page_cache.get(pfn)
        if page is not None:
            self._page_cache.move_to_end(pfn)
            return page
        page = self._load(pfn, 1)[0]
        if isinstance(page, PageError):
            raise page
        self._remember(pfn, page)
        return page

    def _remember(self, pfn, page):
        cache = self._page_cache
        cache[pfn] = page
        if len(cache) > self._cache_pages:
            cache.popitem(last=False)

    def _load(self, pfn: int, count: int) -> list:
        """Pages pfn .. pfn+count-1 (bytes or a PageError each), descriptors and contiguous
        page data read in bulk."""
        out: list = [None] * count
        states = [self.page_state(p) for p in range(pfn, pfn + count)]
        i = 0
        while i < count:
            if states[i] != "dumped":
                out[i] = self._unreadable(pfn + i, states[i])
                i += 1
                continue
            j = i
            while j < count and states[j] == "dumped":
                j += 1
            descs = self._descriptors(self._rank(pfn + i), j - i)
            descs += [None] * (j - i - len(descs))
            # Group pages whose data follow each other in the file into one read.
            k = i
            while k < j:
                desc = descs[k - i]
                bad = self._check_desc(pfn + k, desc)
                if bad is not None:
                    out[k] = bad
                    k += 1
                    continue
                start = desc[0]
                end = start + desc[1]
                m = k + 1
                while m < j and descs[m - i] is not None and descs[m - i][0] == end \
                        and self._check_desc(pfn + m, descs[m - i]) is None and end - start < (4 << 20):
                    end += descs[m - i][1]
                    m += 1
                blob = self.source.read(start, end - start)
                pos = 0
                for q in range(k, m):
                    d = descs[q - i]
                    try:
                        out[q] = self._decode(pfn + q, d, blob[pos:pos + d[1]])
                    except PageError as e:
                        out[q] = e
                    pos += d[1]
                k = m
            i = j
        return out

    def read(self, phys: int, size: int, pad: bool = True) -> bytes:
        """``size`` bytes of physical memory at ``phys``. With ``pad`` pages the file cannot
        give read as zeros; otherwise the first such page raises its PageError."""
        if size <= 0:
            return b""
        shift = self.page_shift
        bs = self.block_size
        first, last = phys >> shift, (phys + size - 1) >> shift
        off = phys - (first << shift)
        if first == last:
            page = self._page_cache.get(first)
            if page is not None:
                self._page_cache.move_to_end(first)
                return page[off:off + size]
        count = last - first + 1
        cache = self._page_cache
        pages: list = [cache.get(p) for p in range(first, last + 1)]
        missing = [i for i, p in enumerate(pages) if p is None]
        if missing:
            lo, hi = missing[0], missing[-1] + 1
            loaded = self._load(first + lo, hi - lo)
            for i, page in enumerate(loaded, lo):
                if pages[i] is None:
                    pages[i] = page
                    if count <= BATCH_CACHE_PAGES and not isinstance(page, PageError):
                        self._remember(first + i, page)
        for i, page in enumerate(pages):
            if isinstance(page, PageError):
                if not pad:
                    raise page
                pages[i] = bytes(bs)
        data = b"".join(pages)
        return data[off:off + size]

    # -- what the file holds --

    def dumped_runs(self, start_pfn: int = 0, end_pfn: Optional[int] = None) -> Iterator[Tuple[int, int]]:
        """(first pfn, count) of the runs of pages in the file: exact at both ends, but a run
        may hold pages that are not in the file (a byte of the bitmap with a gap in it)."""
        end_pfn = min(self.end_pfn if end_pfn is None else end_pfn, self.end_pfn, self.max_mapnr)
        start_pfn = max(start_pfn, self.start_pfn)
        pos = start_pfn & ~7
        while pos < end_pfn:
            n = min(8 << 20, (end_pfn - pos + 7) // 8)          # bitmap bytes per step
            data = self.source.read(self.bitmap2_offset + pos // 8, n)
            if not data:
                break
            for m in re.finditer(rb"[^\x00]+", data):
                first, last = data[m.start()], data[m.end() - 1]
                a = max(pos + m.start() * 8 + (first & -first).bit_length() - 1, start_pfn)
                b = min(pos + (m.end() - 1) * 8 + last.bit_length(), end_pfn)
                if a < b:
                    yield a, b - a
            pos += len(data) * 8

    @property
    def ranges(self) -> List[Tuple[int, int]]:
        """[(physical start, length)] of the memory in the file (runs closer than
        RUN_MERGE_GAP pages merged; excluded pages inside read as zeros)."""
        if self._ranges is None:
            merged: List[List[int]] = []
            for pfn, n in self.dumped_runs():
                if merged and pfn - (merged[-1][0] + merged[-1][1]) <= RUN_MERGE_GAP:
                    merged[-1][1] = pfn + n - merged[-1][0]
                else:
                    merged.append([pfn, n])
            shift = self.page_shift
            self._ranges = [(p << shift, n << shift) for p, n in merged]
        return self._ranges

    @property
    def maximum_address(self) -> int:
        return (min(self.end_pfn, self.max_mapnr) << self.page_shift) - 1

    @property
    def minimum_address(self) -> int:
        return self.start_pfn << self.page_shift


def open_kdump(path, cache_bytes: int = DEFAULT_CACHE_BYTES) -> KdumpFile:
    """KdumpFile of a kdump-compressed file, flattened or not."""
    src = FileSource(path)
    try:
        if is_flattened(src.read(0, 32)):
            src = FlatSource(src)
        return KdumpFile(src, cache_bytes)
    except BaseException:
        src.close()
        raise
