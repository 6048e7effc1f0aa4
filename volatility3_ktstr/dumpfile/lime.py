"""LiME files: a sequence of (32-byte header, data) ranges; header = magic ``EMiL``, version,
first and last physical address (inclusive)."""

import struct

from .errors import DumpError
from .image import FileImage

LIME_MAGIC = 0x4C694D45
MAX_SEGMENTS = 4096


def is_lime(head: bytes) -> bool:
    return len(head) >= 4 and struct.unpack_from("<I", head)[0] == LIME_MAGIC


def open_lime(path, size):
    segments = []
    with open(path, "rb") as f:
        off = 0
        for _ in range(MAX_SEGMENTS):
            if off + 32 > size:
                break
            f.seek(off)
            magic, _ver, start, end = struct.unpack("<IIQQ", f.read(24))
            if magic != LIME_MAGIC or end < start:
                raise DumpError(f"{path}: bad LiME segment header at file offset {off:#x}")
            length = end - start + 1
            segments.append((start, off + 32, min(length, size - off - 32)))
            off += 32 + length
    return FileImage(path, segments, "lime")
