"""Errors of the dump-file readers (no Volatility import).

- :class:`DumpError`: the file cannot be opened as a dump at all (bad or truncated headers);
  the message is one line naming the file and the damage.
- :class:`ExcludedPage`: memory that existed on the machine but that makedumpfile left out of
  the file on purpose (its dump level). Not damage: walkers report it as
  ``excluded from the dump (makedumpfile dump level N)``.
- :class:`CorruptPage`: a page the file claims to hold but cannot give back (descriptor out of
  the file, data that does not decompress to one page, an unknown compression).
- :class:`MissingCodec`: a page compressed with a codec whose Python package is not installed.
- :class:`TruncatedPage`: a page whose data lie past the end of a file cut short (an
  interrupted makedumpfile, a partial copy): :func:`truncated_reason` names both sizes.

The page errors are :class:`~volatility3_ktstr.core.reader.ReadError` subclasses, the error
type of every walker, so existing ``except ReadError`` handling covers them.
"""

from ..core.reader import ReadError


class DumpError(ValueError):
    """The dump cannot be read or lacks what is needed (one line, says what to pass)."""


class PageError(ReadError):
    """A page of a dump file cannot be returned; ``reason`` says why (one line)."""

    def __init__(self, addr, size, reason, pfn=None):
        super().__init__(addr, size, reason)
        self.pfn = pfn


class ExcludedPage(PageError):
    """The page existed but was filtered out by makedumpfile's dump level (``dump_level``)."""

    def __init__(self, addr, size, dump_level, pfn=None):
        super().__init__(addr, size, excluded_reason(dump_level), pfn)
        self.dump_level = dump_level


class CorruptPage(PageError):
    """The file's record of a page is damaged (the reason names what)."""


class MissingCodec(PageError):
    """A page uses a compression whose Python package is not installed (the reason names it)."""


class TruncatedPage(PageError):
    """The page's data (or its descriptor) lie past the end of a truncated file."""


def truncated_reason(expected: int, actual: int, exact: bool = True) -> str:
    what = f"expected {expected} bytes" if exact else f"expected at least {expected} bytes"
    return f"beyond the end of a truncated file ({what}, file has {actual})"


def excluded_reason(dump_level) -> str:
    if dump_level is None:
        return "excluded from the dump"
    return f"excluded from the dump (makedumpfile dump level {dump_level})"
