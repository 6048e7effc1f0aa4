"""Reading a physical image for the stackers: bounded reads and the scan for kernel banners
and VMCOREINFO text (the path of dumps that do not say where their kernel is)."""

import struct
from typing import Iterable, Iterator, List, Optional, Tuple

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


def read_window(layer, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` (zeros where nothing is mapped), past Volatility's read
    cache: LinearlyMappedLayer.read (ELF, LiME, translation layers) keeps its last 512 answers
    whatever their size, so 16 MiB scan windows read through it stay alive, 8 GiB of them.
    InvalidAddressException as ``layer.read`` raises it."""
    uncached = getattr(type(layer).read, "__wrapped__", None)
    if uncached is not None:
        return uncached(layer, offset, length, True)
    return layer.read(offset, length, pad=True)


def data_ranges(layer) -> Iterator[Tuple[int, int]]:
    """[start, end) of the addresses a physical layer holds data for, ascending: an ELF or
    LiME file's segments, a kdump file's runs of dumped pages (streamed from its bitmap), else
    the whole layer. Gaps (holes between RAM ranges, pages a kdump file left out) are not
    read."""
    segments = getattr(layer, "_segments", None)
    runs = getattr(layer, "data_runs", None)
    if segments:
        spans: Iterable[Tuple[int, int]] = sorted((s[0], s[0] + s[2]) for s in segments)
    elif runs is not None:
        shift = layer.kdump.page_shift
        spans = ((pfn << shift, (pfn + n) << shift) for pfn, n in runs())
    else:
        yield layer.minimum_address, layer.maximum_address + 1
        return
    last = None
    for a, b in spans:
        if last is not None and a <= last[1]:
            last = (last[0], max(last[1], b))
            continue
        if last is not None:
            yield last
        last = (a, b)
    if last is not None:
        yield last


def scan_image(context, layer_name: str, progress_callback=None,
               limit: Optional[int] = None) -> Iterator[Tuple[str, int, bytes]]:
    """Yields ("banner"|"vmcoreinfo", offset, text) for kernel banners and VMCOREINFO blocks.

    Streams: one window of SCAN_CHUNK bytes (plus a short overlap) at a time, read and
    searched with bytes.find and dropped, so memory stays at one window whatever the dump's
    size; low addresses first (where kernel images sit), only the ranges the file holds data
    for (:func:`data_ranges`), the caller stopping as soon as it has what it needs. Progress
    (the position in the layer) goes to ``progress_callback`` (Volatility's progress bar)
    once per window. ``limit``: stop after reading that many bytes (benchmarks). Hit counts
    are capped.
    """
    layer = context.layers[layer_name]
    lo, hi = layer.minimum_address, layer.maximum_address + 1
    overlap = MAX_VMCOREINFO_BYTES
    nbanner = nvmci = 0
    done = 0
    for start, end in data_ranges(layer):
        for chunk_start in range(start, end, SCAN_CHUNK):
            if limit is not None and done >= limit:
                return
            size = min(SCAN_CHUNK + overlap, end - chunk_start)
            if progress_callback:
                progress_callback((chunk_start - lo) * 100 / max(1, hi - lo), "ktstr: scanning for the kernel")
            limit_in = min(SCAN_CHUNK, size)
            done += limit_in
            try:
                data = read_window(layer, chunk_start, size)
            except exceptions.InvalidAddressException:
                continue
            for magic, kind, maxlen in ((_BANNER_MAGIC, "banner", MAX_BANNER_LEN),
                                        (_VMCI_MAGIC, "vmcoreinfo", MAX_VMCOREINFO_BYTES)):
                pos = data.find(magic)
                while 0 <= pos < limit_in:
                    text = data[pos:pos + maxlen]
                    if kind == "banner" and nbanner < MAX_BANNER_HITS:
                        nbanner += 1
                        yield kind, chunk_start + pos, text
                    elif kind == "vmcoreinfo" and nvmci < MAX_VMCOREINFO_HITS:
                        nvmci += 1
                        yield kind, chunk_start + pos, text
                    pos = data.find(magic, pos + 1)
            del data


def banner_keys(text: bytes) -> List[bytes]:
    """Possible identifier-cache keys for an in-memory banner (with and without the NUL)."""
    end = text.find(b"\0")
    if end < 0:
        return []
    return [text[: end + 1], text[:end]]
