"""Lazily decoded BTF type records: ``Btf._types`` of a BTF parsed with ``lazy=True``.

The record format (include/uapi/linux/btf.h) is described here once: the bytes each kind
carries after the 12-byte common record; :mod:`.parser` indexes records with the same tables.
"""

import struct

from .types import BtfType, Kind, Member

# Bytes after the 12-byte common record, per kind, and per vlen entry.
EXTRA = {Kind.INT: 4, Kind.ARRAY: 12, Kind.VAR: 4, Kind.DECL_TAG: 4}
PER_VLEN = {
    Kind.STRUCT: 12, Kind.UNION: 12, Kind.ENUM: 8, Kind.ENUM64: 12,
    Kind.FUNC_PROTO: 8, Kind.DATASEC: 12,
}
SIZED = frozenset({Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FLOAT, Kind.DATASEC})
# The same, indexed by the 5-bit kind for the hot parsing loops (unknown kinds: 0 / False).
EXTRA_BY_KIND = tuple(EXTRA.get(k, 0) for k in range(32))
PER_VLEN_BY_KIND = tuple(PER_VLEN.get(k, 0) for k in range(32))
SIZED_BY_KIND = tuple(k in SIZED for k in range(32))


class LazyTypes:
    """``Btf._types`` of a lazily parsed BTF: record ``i`` becomes a BtfType on first access
    (decoded exactly as ``Btf._parse_types`` does; tests compare every type of a kernel)."""

    __slots__ = ("_btf", "_data", "_offsets", "_name_offs", "_cache", "_name_of", "_decoded")

    def __init__(self, btf, data, index, name_of):
        self._btf = btf
        self._data = data
        self._offsets, self._name_offs = index
        self._cache = [None] * len(self._offsets)
        self._name_of = name_of
        self._decoded = 0

    def __len__(self):
        return len(self._offsets)

    def __getitem__(self, i):
        if i < 0:
            i += len(self._offsets)
        t = self._cache[i]
        if t is None:
            t = self._cache[i] = self._decode(i)
        return t

    def __iter__(self):
        for i in range(len(self._offsets)):
            yield self[i]

    def names(self):
        """(index, name) of every record, without building the types."""
        table = self._btf._string_table(self._name_of)
        return enumerate([table[n] for n in self._name_offs])

    def _decode(self, i):
        data = self._data
        off = self._offsets[i]
        name_of = self._name_of
        name_off, info, size_type = struct.unpack_from("<III", data, off)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = info >> 31
        p = off + 12
        end = p + EXTRA.get(kind, 0) + PER_VLEN.get(kind, 0) * vlen
        type_id = self._btf.start_id + i
        name = name_of(name_off, off)
        if kind in SIZED:
            t = BtfType(type_id, kind, name, kflag, vlen, size_type, 0)
        else:
            t = BtfType(type_id, kind, name, kflag, vlen, 0, size_type)
        if kind == Kind.FUNC:
            t.linkage = vlen
        elif kind == Kind.FUNC_PROTO:
            if vlen:
                t.params = tuple((name_of(n, off), ty) for n, ty in struct.iter_unpack("<II", data[p:end]))
        elif kind in (Kind.STRUCT, Kind.UNION):
            if vlen:
                if kflag:
                    t.members = tuple(tuple.__new__(Member, (name_of(n, off), ty, mo & 0xFFFFFF, mo >> 24))
                                      for n, ty, mo in struct.iter_unpack("<III", data[p:end]))
                else:
                    t.members = tuple(tuple.__new__(Member, (name_of(n, off), ty, mo, 0))
                                      for n, ty, mo in struct.iter_unpack("<III", data[p:end]))
        elif kind == Kind.INT:
            word = struct.unpack_from("<I", data, p)[0]
            t.encoding = (word >> 24) & 0x0F
            t.int_offset = (word >> 16) & 0xFF
            t.bits = word & 0xFF
        elif kind == Kind.ARRAY:
            t.type, t.index_type, t.nelems = struct.unpack_from("<III", data, p)
        elif kind == Kind.ENUM:
            t.values = tuple((name_of(n, off), v) for n, v in struct.iter_unpack("<Ii", data[p:end]))
        elif kind == Kind.ENUM64:
            vals = []
            for n, lo, hi in struct.iter_unpack("<III", data[p:end]):
                v = (hi << 32) | lo
                if kflag and v >= 1 << 63:
                    v -= 1 << 64
                vals.append((name_of(n, off), v))
            t.values = tuple(vals)
        elif kind == Kind.VAR:
            t.linkage = struct.unpack_from("<I", data, p)[0]
        elif kind == Kind.DATASEC:
            t.vars = tuple(struct.iter_unpack("<III", data[p:end]))
        elif kind == Kind.DECL_TAG:
            t.component_idx = struct.unpack_from("<i", data, p)[0]
        self._decoded += 1
        return t
