"""One bulk read of a kernel struct, decoded by member path.

Walkers read a struct once (``reader.read``) and take members out of the bytes; the width and
signedness of every member come from the layout (:class:`Field`), never from the walker.
"""

import builtins
from typing import Optional, overload

from .layout import LayoutError


def read_int(reader, layout, struct: str, addr: int, path: str) -> int:
    """Member ``path`` of the ``struct`` at ``addr`` read on its own (one member of a struct
    that is not otherwise read); width and signedness from the layout."""
    f = layout.field(struct, path)
    return f.decode(reader.read(addr + f.offset, f.size), f.offset)


class Record:
    """The bytes of ``struct`` at ``addr`` (all of it, or the span covering ``paths``)."""

    __slots__ = ("layout", "struct", "addr", "lo", "data")

    def __init__(self, reader, layout, struct, addr, paths=None):
        self.layout = layout
        self.struct = struct
        self.addr = addr
        if paths is None:
            self.lo, hi = 0, layout.size(struct)
        else:
            fields = [layout.field(struct, p) for p in paths if layout.has(struct, p)]
            self.lo = min((f.offset for f in fields), default=0)
            hi = max((f.end for f in fields), default=0)
        self.data = reader.read(addr + self.lo, hi - self.lo)

    @classmethod
    def of(cls, layout, struct, addr, data, lo=0):
        """A Record over bytes already read (one element of a bulk-read array)."""
        r = cls.__new__(cls)
        r.layout, r.struct, r.addr, r.lo, r.data = layout, struct, addr, lo, data
        return r

    def has(self, path) -> bool:
        return self.layout.has(self.struct, path)

    def field(self, path):
        f = self.layout.field(self.struct, path)
        if f.offset < self.lo or f.end - self.lo > len(self.data):
            raise LayoutError(f"struct {self.struct}.{path} is outside the bytes read")
        return f

    def int(self, path, default=None):
        """The integer (or pointer, enum, bool) at ``path``; ``default`` when this kernel's
        struct has no such member."""
        if not self.layout.has(self.struct, path):
            return default
        return self.field(path).decode(self.data, self.lo)

    def first_int(self, *paths, default=None):
        """The first of ``paths`` this kernel has (members renamed across versions)."""
        for p in paths:
            if self.layout.has(self.struct, p):
                return self.int(p)
        return default

    def bytes(self, path) -> builtins.bytes:
        f = self.field(path)
        return self.data[f.offset - self.lo:f.end - self.lo]

    @overload
    def str(self, path: builtins.str) -> Optional[builtins.str]: ...

    @overload
    def str(self, path: builtins.str, default: builtins.str) -> builtins.str: ...

    def str(self, path, default=None):
        """A char array member up to its first NUL."""
        if not self.layout.has(self.struct, path):
            return default
        return self.bytes(path).split(b"\0", 1)[0].decode("utf-8", "replace")

    def addr_of(self, path) -> builtins.int:
        """Kernel address of member ``path`` (for embedded list heads and the like)."""
        return self.addr + self.layout.offset(self.struct, path)
