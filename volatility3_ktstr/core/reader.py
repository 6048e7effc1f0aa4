"""Byte readers over guest memory.

Walkers take a :class:`Reader` so they run the same on a Volatility layer and on a synthetic
buffer in tests. Reads are all-or-nothing: a short or unmapped read raises :class:`ReadError`.
"""

import struct

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_S32 = struct.Struct("<i")


class ReadError(Exception):
    """Guest memory at ``addr`` could not be read (unmapped, out of the dump, short)."""

    def __init__(self, addr, size, reason="unreadable"):
        super().__init__(f"cannot read {size} bytes at {addr:#x}: {reason}")
        self.addr = addr
        self.size = size
        self.reason = reason


class Reader:
    """Read guest memory by (virtual) address. Subclasses implement :meth:`read`."""

    pointer_size = 8

    def read(self, addr: int, size: int) -> bytes:
        raise NotImplementedError

    def try_read(self, addr: int, size: int):
        """Bytes, or None when unreadable."""
        try:
            return self.read(addr, size)
        except ReadError:
            return None

    def u64(self, addr: int) -> int:
        return _U64.unpack(self.read(addr, 8))[0]

    def u32(self, addr: int) -> int:
        return _U32.unpack(self.read(addr, 4))[0]

    def s32(self, addr: int) -> int:
        return _S32.unpack(self.read(addr, 4))[0]

    def ptr(self, addr: int) -> int:
        return self.u64(addr)

    def cstring(self, addr: int, max_len: int = 256) -> str:
        """A NUL-terminated string of at most ``max_len`` bytes (page-safe)."""
        out = b""
        while len(out) < max_len:
            # Never read across a page boundary in one go: the next page may be unmapped.
            chunk = min(max_len - len(out), 4096 - ((addr + len(out)) & 0xFFF))
            data = self.read(addr + len(out), chunk)
            end = data.find(b"\0")
            if end >= 0:
                return (out + data[:end]).decode("utf-8", "replace")
            out += data
        return out.decode("utf-8", "replace")


class BufferReader(Reader):
    """A reader over byte regions keyed by start address (for tests and synthetic images)."""

    def __init__(self, regions=None):
        self.regions = []
        for base, data in (regions or {}).items():
            self.add(base, data)

    def add(self, base: int, data) -> None:
        self.regions.append((base, bytearray(data)))
        self.regions.sort(key=lambda r: r[0])

    def write(self, addr: int, data: bytes) -> None:
        for base, buf in self.regions:
            if base <= addr and addr + len(data) <= base + len(buf):
                buf[addr - base:addr - base + len(data)] = data
                return
        raise ReadError(addr, len(data), "write outside the synthetic regions")

    def read(self, addr: int, size: int) -> bytes:
        if size < 0:
            raise ReadError(addr, size, "negative size")
        for base, buf in self.regions:
            if base <= addr < base + len(buf):
                if addr + size > base + len(buf):
                    raise ReadError(addr, size, "short read")
                return bytes(buf[addr - base:addr - base + size])
        raise ReadError(addr, size, "unmapped")
