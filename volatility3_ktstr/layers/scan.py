"""Reading a physical image for the stackers: bounded reads and the scan for kernel banners
and VMCOREINFO text (the path of dumps that do not say where their kernel is)."""

import struct
from typing import Iterator, List, Optional, Tuple

from volatility3.framework import exceptions

# Bounds on work done over guest-controlled data.
SCAN_CHUNK = 16 << 20
MAX_BANNER_HITS = 64
MAX_VMCOREINFO_HITS = 16
MAX_VMCOREINFO_BYTES = 8192
MAX_BANNER_LEN = 512
KERNEL_IMAGE_WINDOW = 64 << 20     # where linux_banner is looked for after _stext

_BANNER_MAGIC = b"Linux version "
_VMCI_MAGIC = b"OSRELEASE="


def _read(context, layer_name: str, offset: int, length: int) -> Optional[bytes]:
    try:
        return context.layers.read(layer_name, offset, length)
    except exceptions.InvalidAddressException:
        return None


def _u64(context, layer_name: str, offset: int) -> Optional[int]:
    data = _read(context, layer_name, offset, 8)
    return None if data is None else struct.unpack("<Q", data)[0]


def scan_image(context, layer_name: str, progress_callback=None) -> Iterator[Tuple[str, int, bytes]]:
    """Yields ("banner"|"vmcoreinfo", offset, text) for kernel banners and VMCOREINFO blocks.

    Reads the layer in large chunks and searches with bytes.find (about 0.5 s per GiB);
    the caller stops early once it has what it needs.  Hit counts are capped.
    """
    layer = context.layers[layer_name]
    start, end = layer.minimum_address, layer.maximum_address + 1
    overlap = MAX_VMCOREINFO_BYTES
    nbanner = nvmci = 0
    for chunk_start in range(start, end, SCAN_CHUNK):
        size = min(SCAN_CHUNK + overlap, end - chunk_start)
        try:
            data = layer.read(chunk_start, size, pad=True)
        except exceptions.InvalidAddressException:
            continue
        if progress_callback:
            progress_callback((chunk_start - start) * 100 / max(1, end - start), "ktstr: scanning for kernel")
        limit = min(SCAN_CHUNK, size)
        for magic, kind, maxlen in ((_BANNER_MAGIC, "banner", MAX_BANNER_LEN), (_VMCI_MAGIC, "vmcoreinfo", MAX_VMCOREINFO_BYTES)):
            pos = data.find(magic)
            while 0 <= pos < limit:
                text = data[pos:pos + maxlen]
                if kind == "banner" and nbanner < MAX_BANNER_HITS:
                    nbanner += 1
                    yield kind, chunk_start + pos, text
                elif kind == "vmcoreinfo" and nvmci < MAX_VMCOREINFO_HITS:
                    nvmci += 1
                    yield kind, chunk_start + pos, text
                pos = data.find(magic, pos + 1)


def banner_keys(text: bytes) -> List[bytes]:
    """Possible identifier-cache keys for an in-memory banner (with and without the NUL)."""
    end = text.find(b"\0")
    if end < 0:
        return []
    return [text[: end + 1], text[:end]]
