"""Where a kdump file's bytes come from: a local file, or the flattened form's records.

The *flattened* form (``makedumpfile -F``, a pipe, QEMU's ``dump-guest-memory -z`` output)
is a 4 KiB "makedumpfile" header then records (big-endian file offset, size, data) ending
with (-1, -1); :class:`FlatSource` indexes the records once and reads them in place. No
Volatility import.
"""

import array
import bisect
import os
import struct

from .errors import DumpError

FLAT_SIGNATURE = b"makedumpfile"
FLAT_HEADER_SIZE = 4096
FLAT_RECORD = struct.Struct(">qq")


def is_flattened(head: bytes) -> bool:
    """makedumpfile's flattened header: signature, then type 1 and version 1 (big-endian)."""
    return (len(head) >= 32 and head[:12] == FLAT_SIGNATURE and head[12:16] == bytes(4)
            and struct.unpack_from(">qq", head, 16) == (1, 1))


class FileSource:
    """A local file read with pread."""

    def __init__(self, path):
        self.name = str(path)
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def read(self, offset: int, size: int) -> bytes:
        if size <= 0 or offset >= self.size:
            return b""
        return os.pread(self._fd, min(size, self.size - offset), offset)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FlatSource:
    """The flattened form: the records are indexed once, then read in place.

    ``raw``: the flattened file (``read(offset, size)``, ``size``, ``name``). Reads give the
    bytes of the reassembled file: where several records cover an offset the later one wins,
    offsets no record covers read as zeros, and the file ends where the last record ends.
    ``damage`` says where indexing stopped early (a bad record header, a cut-off record).
    """

    def __init__(self, raw):
        self.raw = raw
        self.name = raw.name
        self.damage = None
        head = raw.read(0, 32)
        if not is_flattened(head):
            raise DumpError(f"{raw.name}: not a flattened makedumpfile file")
        starts, lens, poss = array.array("q"), array.array("q"), array.array("q")
        pos = FLAT_HEADER_SIZE
        limit = raw.size
        ended = False
        for _ in range(max(0, (limit - pos) // FLAT_RECORD.size) + 1):
            rec = raw.read(pos, FLAT_RECORD.size)
            if len(rec) < FLAT_RECORD.size:
                break
            off, size = FLAT_RECORD.unpack(rec)
            if off == -1 and size == -1:
                ended = True
                break
            if off < 0 or size < 0 or off > (1 << 62) or size > (1 << 40):
                self.damage = f"bad flattened record header at file offset {pos:#x} ({off:#x}, {size:#x})"
                break
            avail = min(size, max(0, limit - pos - FLAT_RECORD.size))
            if size:
                starts.append(off)
                lens.append(avail)
                poss.append(pos + FLAT_RECORD.size)
            if avail < size:
                self.damage = f"flattened record at file offset {pos:#x} cut short (file truncated)"
                break
            pos += FLAT_RECORD.size + size
        if not ended and self.damage is None:
            self.damage = "no end-of-stream record (file truncated)"
        order = sorted(range(len(starts)), key=lambda i: (starts[i], i))
        self._starts = array.array("q", (starts[i] for i in order))
        self._ends = array.array("q", (starts[i] + lens[i] for i in order))
        self._pos = array.array("q", (poss[i] for i in order))
        self._seq = array.array("q", order)
        self._maxlen = max(lens) if lens else 0
        self.records = len(order)
        self.size = max(self._ends) if self._ends else 0
        # Records of makedumpfile and QEMU never overlap; when they do, reads apply them in
        # stream order (slower path).
        self._overlaps = any(self._starts[i + 1] < self._ends[i] for i in range(len(order) - 1))

    def read(self, offset: int, size: int) -> bytes:
        if size <= 0 or offset >= self.size:
            return b""
        size = min(size, self.size - offset)
        end = offset + size
        i = bisect.bisect_right(self._starts, offset) - 1
        if not self._overlaps and i >= 0 and self._ends[i] >= end:
            return self.raw.read(self._pos[i] + offset - self._starts[i], size)
        lo = bisect.bisect_left(self._starts, offset - self._maxlen)
        hi = bisect.bisect_left(self._starts, end)
        hits = [j for j in range(lo, hi) if self._ends[j] > offset]
        hits.sort(key=lambda j: self._seq[j])
        out = bytearray(size)
        for j in hits:
            a, b = max(offset, self._starts[j]), min(end, self._ends[j])
            data = self.raw.read(self._pos[j] + a - self._starts[j], b - a)
            out[a - offset:a - offset + len(data)] = data
        return bytes(out)

    def close(self):
        self.raw.close()
