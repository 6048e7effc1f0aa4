"""Kernel symbols by address: the one "symbol nearest an address" (no Volatility import)."""

import bisect
import operator
from typing import Callable, List, Optional, Sequence, Tuple, Union

MAX_SYMBOL_DISTANCE = 1 << 20
"""A code address further than this past the nearest symbol below it is not named after it."""

SymbolPairs = Sequence[Tuple[int, str]]
_address = operator.itemgetter(0)


class SymbolIndex:
    """Sorted ``(address, name)`` pairs, searched by address.

    ``pairs`` is the sorted list or a callable building it (built on the first search only:
    a kernel has 130k symbols and most runs never ask for a name)."""

    def __init__(self, pairs: Union[SymbolPairs, Callable[[], SymbolPairs]] = ()):
        self._source = pairs
        self._pairs: Optional[List[Tuple[int, str]]] = None

    def pairs(self) -> List[Tuple[int, str]]:
        if self._pairs is None:
            src = self._source() if callable(self._source) else self._source
            self._pairs = src if isinstance(src, list) else list(src or ())
        return self._pairs

    def at(self, addr: int) -> Optional[str]:
        """Name of the symbol exactly at ``addr`` (``__pfx_`` padding symbols skipped), or None."""
        syms = self.pairs()
        i = bisect.bisect_left(syms, addr, key=_address)
        while i < len(syms) and syms[i][0] == addr:
            name = syms[i][1]
            if not name.startswith("__pfx_"):
                return name
            i += 1
        return None

    def nearest(self, addr: int, limit: int = MAX_SYMBOL_DISTANCE) -> Optional[Tuple[str, int]]:
        """(name, distance) of the nearest symbol at or below ``addr`` within ``limit``, or None.
        Of several symbols at one address the last in sort order is taken."""
        syms = self.pairs()
        i = bisect.bisect_right(syms, addr, key=_address) - 1
        if i >= 0 and 0 <= addr - syms[i][0] <= limit:
            return syms[i][1], addr - syms[i][0]
        return None

    def near(self, addr: int) -> str:
        """``sym`` or ``sym+0xoff`` for a code address ('' when nothing is close)."""
        hit = self.nearest(addr)
        if hit is None:
            return ""
        name, d = hit
        return name + (f"+{d:#x}" if d else "")

    def next_after(self, addr: int) -> Optional[int]:
        """Address of the first symbol above ``addr``, or None."""
        syms = self.pairs()
        i = bisect.bisect_right(syms, addr, key=_address)
        return syms[i][0] if i < len(syms) else None

