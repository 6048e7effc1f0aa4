"""Per-page decompression for kdump-compressed files, bounded to one page of output.

makedumpfile compresses each page on its own (``-c`` zlib, ``-l`` LZO1X-1, ``-p`` snappy raw
format, ``-z`` zstd frame) and stores it uncompressed when compression does not make it
smaller; the page descriptor's flags say which. Every decoder here produces at most
``page_size`` bytes, whatever the compressed data claims (a decompression bomb costs one page),
and a result of another size is a :class:`CodecError`.

Packages: zlib is in Python; zstd needs ``zstandard``, snappy needs ``cramjam`` (both install
requirements); LZO uses ``python-lzo`` when installed (the ``lzo`` extra: it builds against
liblzo2) and otherwise the pure-Python decoder in :mod:`.lzo1x`.
"""

import zlib

from . import lzo1x

ZLIB, LZO, SNAPPY, ZSTD = 0x1, 0x2, 0x4, 0x20
COMPRESSION_MASK = ZLIB | LZO | SNAPPY | ZSTD
NAMES = {0: "none", ZLIB: "zlib", LZO: "lzo", SNAPPY: "snappy", ZSTD: "zstd"}
PACKAGES = {ZSTD: "zstandard", SNAPPY: "cramjam", LZO: "python-lzo"}


class CodecError(ValueError):
    """The page's data does not decompress to exactly one page (message: one line)."""


class MissingCodecError(CodecError):
    """The Python package for this compression is not installed (message names it)."""


def name_of(flags: int) -> str:
    return NAMES.get(flags & COMPRESSION_MASK, f"flags {flags:#x}")


def decompress(flags: int, data: bytes, page_size: int) -> bytes:
    """One page from ``data`` compressed as the descriptor ``flags`` say."""
    kind = flags & COMPRESSION_MASK
    if kind == 0:
        if len(data) != page_size:
            raise CodecError(f"uncompressed page of {len(data)} bytes, not {page_size}")
        return data
    if kind not in NAMES:
        raise CodecError(f"several compressions at once (descriptor flags {flags:#x})")
    try:
        out = _DECODERS[kind](data, page_size)
    except CodecError:
        raise
    except Exception as e:  # each library has its own error types; all mean "bad data"
        raise CodecError(f"{NAMES[kind]} data does not decompress ({_short(e)})") from None
    if len(out) != page_size:
        raise CodecError(f"{NAMES[kind]} data inflates to {len(out)} bytes, not one page ({page_size})")
    return out


def _short(e) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]


def _zlib(data, page_size):
    d = zlib.decompressobj()
    out = d.decompress(data, page_size)
    if d.unconsumed_tail:
        raise CodecError(f"zlib data inflates to more than one page ({page_size} bytes)")
    if not d.eof:
        raise CodecError("zlib data ends before the end of its stream")
    return out


_zstd = None


def _zstd_decompress(data, page_size):
    global _zstd
    if _zstd is None:
        try:
            import zstandard
        except ImportError:
            raise MissingCodecError("zstd-compressed page, but the Python package 'zstandard' is not "
                                    "installed (pip install zstandard)") from None
        _zstd = zstandard
    size = _zstd.frame_content_size(data)
    if size not in (-1, page_size):
        # The frame's own size field decides the allocation: refuse before decompressing.
        raise CodecError(f"zstd frame declares {size} bytes, not one page ({page_size})")
    return _zstd.ZstdDecompressor().decompress(data, max_output_size=page_size)


_snappy = None


def _snappy_decompress(data, page_size):
    global _snappy
    if _snappy is None:
        try:
            import cramjam
        except ImportError:
            raise MissingCodecError("snappy-compressed page, but the Python package 'cramjam' is not "
                                    "installed (pip install cramjam)") from None
        _snappy = cramjam.snappy
    out = bytearray(page_size)
    n = _snappy.decompress_raw_into(bytes(data), out)
    return bytes(out[:n])


_lzo = None


def _lzo_decompress(data, page_size):
    global _lzo
    if _lzo is None:
        try:
            import lzo
            _lzo = lzo
        except ImportError:
            _lzo = False
    if _lzo:
        return _lzo.decompress(bytes(data), False, page_size)
    try:
        return lzo1x.decompress(data, page_size)
    except lzo1x.LzoError as e:
        raise CodecError(f"lzo data does not decompress ({e})") from None


_DECODERS = {ZLIB: _zlib, ZSTD: _zstd_decompress, SNAPPY: _snappy_decompress, LZO: _lzo_decompress}
