"""A dump file's physical memory as segments of the file (raw, ELF core, LiME).

:class:`FileImage` is the "physical memory image" interface every reader of this package
offers (kdump files have their own class with the same methods):

- ``format``: "raw", "elf", "lime", "kdump";
- ``ranges``: [(physical start, length)] where the file holds memory;
- ``read(phys, size)``: bytes, zero-padded where the file holds nothing;
- ``vmcoreinfo_texts()``: VMCOREINFO texts the file carries outside memory (ELF notes, the
  kdump sub-header);
- ``close()`` / context manager.
"""

import mmap
import os


class FileImage:
    """Physical memory of a dump file: segments (phys, file offset, length) read by pread."""

    def __init__(self, path, segments, fmt, notes=()):
        self.path = path
        self.format = fmt
        self.segments = sorted(segments)
        self.ranges = [(p, n) for p, _o, n in self.segments]
        self.notes = list(notes)          # notes.Note of the ELF PT_NOTE records
        self._fd = os.open(path, os.O_RDONLY)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read(self, phys, size):
        """``size`` bytes at ``phys``; unmapped parts read as zeros."""
        if size <= 0:
            return b""
        out = None
        end = phys + size
        for p, off, n in self.segments:
            if p + n <= phys or p >= end:
                continue
            a, b = max(p, phys), min(p + n, end)
            data = os.pread(self._fd, b - a, off + (a - p))
            if a == phys and len(data) == size:
                return data            # the common case: one segment holds it all
            if out is None:
                out = bytearray(size)
            out[a - phys:a - phys + len(data)] = data
        return bytes(out) if out is not None else bytes(size)

    def chunks(self, start, length, chunk, overlap):
        """Yield (phys of buf[0], buf, lo, hi): hits count in buf[lo:hi]; buf extends up to
        ``overlap`` bytes past hi. buf is an mmap of the file (no copy, and unmapped again
        right away so resident memory stays at one chunk)."""
        end = start + length
        for p, off, n in self.segments:
            a, b = max(p, start), min(p + n, end)
            pos = a
            while pos < b:
                foff = off + (pos - p)
                aligned = foff - foff % mmap.ALLOCATIONGRANULARITY
                delta = foff - aligned
                size = min(chunk, b - pos)
                mlen = delta + min(size + overlap, p + n - pos)
                mm = mmap.mmap(self._fd, mlen, offset=aligned, access=mmap.ACCESS_READ)
                try:
                    yield pos - delta, mm, delta, delta + size
                finally:
                    mm.close()
                pos += size

    def vmcoreinfo_texts(self):
        return [n.desc for n in self.notes if n.name == b"VMCOREINFO"]
