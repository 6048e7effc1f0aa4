"""BTF kinds and the parsed type record.

One :class:`BtfType` per type id. Kind-specific payloads live in a few shared slots so that
parsing a 130k-type vmlinux BTF stays cheap (one small object per type, tuples inside).
"""

import collections
import enum


class BtfError(ValueError):
    """BTF input that cannot be parsed: says where (byte offset) and what was wrong."""

    def __init__(self, message: str, offset: int = None, source: str = None):
        where = f" at byte {offset:#x}" if offset is not None else ""
        origin = f"{source}: " if source else ""
        super().__init__(f"{origin}corrupt BTF{where}: {message}")
        self.offset = offset
        self.reason = message


class Kind(enum.IntEnum):
    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# BTF_INT_ENCODING bits
INT_SIGNED = 1
INT_CHAR = 2
INT_BOOL = 4

# Kinds that only qualify another type; peeled when resolving.
MODIFIERS = frozenset({Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG})
TRANSPARENT = MODIFIERS | {Kind.TYPEDEF}


_MemberBase = collections.namedtuple("Member", "name type bit_offset bit_size")


class Member(_MemberBase):
    """A struct/union member. ``bit_offset`` is from the start of the enclosing type;
    ``bit_size`` is non-zero only for bitfields (either BTF encoding).

    A tuple: a kernel BTF has ~70k members, and tuples are built and read much faster than
    objects with attributes."""

    __slots__ = ()

    def __repr__(self):
        bf = f":{self.bit_size}" if self.bit_size else ""
        return f"Member({self.name!r}, type={self.type}, bit_offset={self.bit_offset}{bf})"


class BtfType:
    """One BTF type.

    Common fields: ``id``, ``kind``, ``name`` ('' when anonymous), ``kind_flag``, ``vlen``.
    ``size`` for INT/STRUCT/UNION/ENUM/ENUM64/FLOAT/DATASEC; ``type`` (referenced id) for
    PTR/TYPEDEF/modifiers/FUNC/VAR/DECL_TAG and the element type of ARRAY and the return type
    of FUNC_PROTO. Kind payloads:

    - INT: ``encoding``, ``int_offset``, ``bits``
    - ARRAY: ``nelems``, ``index_type``
    - STRUCT/UNION: ``members`` (tuple of :class:`Member`)
    - ENUM/ENUM64: ``values`` (tuple of (name, int)); ``kind_flag`` set means signed
    - FUNC_PROTO: ``params`` (tuple of (name, type id))
    - FUNC: ``linkage``; VAR: ``linkage``
    - DATASEC: ``vars`` (tuple of (var type id, offset, size))
    - DECL_TAG: ``component_idx``
    - FWD: ``kind_flag`` set means union
    """

    __slots__ = (
        "id", "kind", "name", "kind_flag", "vlen", "size", "type",
        "encoding", "int_offset", "bits", "nelems", "index_type",
        "members", "values", "params", "vars", "linkage", "component_idx",
    )

    def __init__(self, type_id, kind, name, kind_flag, vlen, size=0, type_=0):
        self.id = type_id
        self.kind = kind
        self.name = name
        self.kind_flag = kind_flag
        self.vlen = vlen
        self.size = size
        self.type = type_
        self.members = ()
        self.values = ()
        self.params = ()
        self.vars = ()

    @property
    def is_struct(self) -> bool:
        return self.kind in (Kind.STRUCT, Kind.UNION)

    @property
    def is_signed(self) -> bool:
        if self.kind == Kind.INT:
            return bool(self.encoding & INT_SIGNED)
        if self.kind in (Kind.ENUM, Kind.ENUM64):
            return bool(self.kind_flag)
        return False

    def member(self, name):
        for m in self.members:
            if m.name == name:
                return m
        return None

    def __repr__(self):
        return f"<BtfType #{self.id} {Kind(self.kind).name} {self.name!r}>"
