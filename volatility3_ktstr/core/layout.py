"""Structure layouts: sizes, member offsets and member fields by name, resolved once and cached.

Walkers never hard-code an offset or a width: they ask a :class:`Layout`. :class:`BtfLayout`
answers from a parsed BTF; the Volatility-backed one (``volatility3_ktstr.kernel.IsfLayout``)
from the kernel ISF. Both give the same answers for an ISF generated from the same BTF.
"""

from dataclasses import dataclass

from ..btf.types import INT_BOOL, INT_CHAR, Kind


class LayoutError(KeyError):
    """A type or member the walker needs is missing; the message names it."""

    def __str__(self):
        return self.args[0] if self.args else "missing type"


@dataclass(frozen=True)
class Field:
    """Where a member lives and how to decode it.

    ``kind`` is one of ``int``, ``bool``, ``char``, ``enum``, ``pointer``, ``array``, ``struct``,
    ``union``, ``float``, ``function``, ``other``. For arrays ``count``/``elem_size`` describe the
    elements; bitfields have ``bit_size`` > 0 and ``bit_offset`` counted from ``offset``.
    """

    offset: int
    size: int
    signed: bool = False
    kind: str = "int"
    type_name: str = ""
    count: int = 0
    elem_size: int = 0
    bit_offset: int = 0
    bit_size: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.size

    def decode(self, data: bytes, base: int = 0) -> int:
        """The member's integer value out of ``data`` holding the struct from offset ``base``."""
        start = self.offset - base
        raw = int.from_bytes(data[start:start + self.size], "little", signed=False)
        if self.bit_size:
            raw = (raw >> self.bit_offset) & ((1 << self.bit_size) - 1)
            if self.signed and raw >> (self.bit_size - 1):
                raw -= 1 << self.bit_size
            return raw
        if self.signed and self.size and raw >> (8 * self.size - 1):
            raw -= 1 << (8 * self.size)
        return raw


class Layout:
    """Interface: ``size(struct)``, ``offset(struct, 'a.b')``, ``field(struct, 'a.b')``,
    ``has(struct, path)``, ``first(struct, *paths)``, ``variants(struct)``."""

    def __init__(self):
        self._cache = {}

    def size(self, struct: str) -> int:
        key = (struct, None)
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = self._size(struct)
        return v

    def offset(self, struct: str, path: str) -> int:
        return self.field(struct, path).offset

    def field(self, struct: str, path: str) -> Field:
        key = (struct, path)
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = self._field(struct, path)
        return v

    def has(self, struct: str, path: str = None) -> bool:
        try:
            if path is None:
                self.size(struct)
            else:
                self.field(struct, path)
            return True
        except LayoutError:
            return False

    def first(self, struct: str, *paths) -> int:
        """Offset of the first of ``paths`` that exists (members renamed across kernel versions)."""
        return self.first_field(struct, *paths).offset

    def first_field(self, struct: str, *paths) -> Field:
        for p in paths:
            if self.has(struct, p):
                return self.field(struct, p)
        raise LayoutError(f"struct {struct} has none of the members {', '.join(paths)}")

    def members(self, struct: str):
        """[(name, Field)] of every named member of ``struct`` in offset order, members of
        anonymous structs/unions flattened in (cached)."""
        key = (struct, "*members")
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = sorted(
                ((n, self.field(struct, n)) for n in self._member_names(struct)),
                key=lambda nf: (nf[1].offset, nf[1].bit_offset))
        return v

    def _member_names(self, struct):
        raise NotImplementedError

    def variants(self, struct: str):
        """Names under which every struct called ``struct`` can be asked for (a kernel may have
        several structs of one name, e.g. ``bucket``); the first is ``struct`` itself."""
        return [struct] if self.has(struct) else []

    def _size(self, struct):
        raise NotImplementedError

    def _field(self, struct, path):
        raise NotImplementedError


class BtfLayout(Layout):
    """Layout from a parsed :class:`volatility3_ktstr.btf.Btf`. Extra structs of one name are
    asked for as ``name#<type id>`` (see :meth:`variants`)."""

    def __init__(self, btf):
        super().__init__()
        self.btf = btf

    def _type(self, struct):
        name, _, tid = struct.partition("#")
        try:
            if tid:
                t = self.btf.type(int(tid))
                if t is None or t.name != name or t.kind not in (Kind.STRUCT, Kind.UNION):
                    raise KeyError(struct)
                return t
            return self.btf.struct(name)
        except (KeyError, ValueError):
            if tid:
                raise LayoutError(f"type 'struct {struct}' is not in the BTF") from None
        # A typedef of an anonymous struct (atomic_t, atomic64_t) goes by the typedef's name,
        # as the ISF names it.
        for t in self.btf.find(name):
            inner = self.btf.resolve(t.id) if t.kind == Kind.TYPEDEF else None
            if inner is not None and inner.kind in (Kind.STRUCT, Kind.UNION):
                return inner
        raise LayoutError(f"type 'struct {struct}' is not in the BTF")

    def variants(self, struct):
        found = [t for t in self.btf.find(struct) if t.kind in (Kind.STRUCT, Kind.UNION)]
        if not found:
            return []
        first = self._type(struct).id
        return [struct] + [f"{struct}#{t.id}" for t in found if t.id != first]

    def _size(self, struct):
        return self._type(struct).size

    def _member_names(self, struct):
        out = []

        def collect(t, depth):
            for m in t.members:
                if m.name:
                    out.append(m.name)
                elif depth < 8:
                    inner = self.btf.resolve(m.type)
                    if inner is not None and inner.kind in (Kind.STRUCT, Kind.UNION):
                        collect(inner, depth + 1)

        collect(self._type(struct), 0)
        return list(dict.fromkeys(out))

    def _field(self, struct, path):
        t = self._type(struct)
        try:
            bit, member = self.btf.member_path(t.id, path)
        except KeyError:
            raise LayoutError(f"type 'struct {struct}' has no member '{path}'") from None
        return btf_field(self.btf, member.type, bit, member.bit_size)


def btf_field(btf, type_id, bit, bit_size=0) -> Field:
    """The :class:`Field` of a member of BTF type ``type_id`` at bit offset ``bit``."""
    t = btf.resolve(type_id)
    size = btf.size_of(type_id)
    name = btf.type_name(type_id)
    if bit_size:
        start = (bit // 8)
        width = (bit % 8 + bit_size + 7) // 8
        width = 1 << (width - 1).bit_length()
        return Field(offset=start, size=width, signed=bool(t is not None and t.is_signed),
                     kind="int", type_name=name, bit_offset=bit - 8 * start, bit_size=bit_size)
    kind, signed, count, elem = "other", False, 0, 0
    if t is not None:
        k = t.kind
        if k == Kind.INT:
            enc = t.encoding
            kind = "bool" if enc & INT_BOOL else "char" if enc & INT_CHAR else "int"
            signed = t.is_signed
        elif k in (Kind.ENUM, Kind.ENUM64):
            kind, signed = "enum", t.is_signed
        elif k == Kind.PTR:
            pointee = btf.resolve(t.type)
            kind = "function" if pointee is not None and pointee.kind == Kind.FUNC_PROTO else "pointer"
        elif k == Kind.ARRAY:
            kind, count = "array", t.nelems
            elem = btf.size_of(t.type)
        elif k == Kind.STRUCT:
            kind = "struct"
        elif k == Kind.UNION:
            kind = "union"
        elif k == Kind.FLOAT:
            kind = "float"
    return Field(offset=bit // 8, size=size, signed=signed, kind=kind, type_name=name,
                 count=count, elem_size=elem)
