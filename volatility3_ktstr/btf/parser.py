"""Parse BTF blobs (kernel, module or BPF program BTF) into :class:`Btf`.

Format: include/uapi/linux/btf.h. A split BTF (module or program BTF on top of the kernel's)
continues the base's type ids and string offsets; pass the base to :meth:`Btf.parse`.
Every read is bounds-checked; bad input raises :class:`BtfError` with the byte offset.
"""

import array
import contextlib
import gc
import struct
import sys

from .lazy import EXTRA, EXTRA_BY_KIND, PER_VLEN, PER_VLEN_BY_KIND, SIZED, SIZED_BY_KIND, LazyTypes
from .types import TRANSPARENT, BtfError, BtfType, Kind, Member

MAGIC = 0xEB9F
HEADER = struct.Struct("<HBBIIIII")
MAX_RESOLVE_DEPTH = 32

@contextlib.contextmanager
def paused_gc():
    """Pause the cyclic GC while building many small containers: a kernel BTF makes ~500k of
    them and the collector's generational passes cost a third of the time. Nothing built here
    is garbage, so there is nothing for it to find."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _StringTable(dict):
    __slots__ = ("slow",)

    def __missing__(self, name_off):
        return self.slow(name_off, None)


class Btf:
    """A parsed BTF: ``types[i]`` is type id ``start_id + i``; id 0 is void (None)."""

    def __init__(self, types, start_id, str_base, strings, base=None, source=None, endian="<"):
        self._types = types
        self.start_id = start_id
        self.str_base = str_base
        self._strings = strings
        self.base = base
        self.source = source
        self.endian = endian
        self.pointer_size = 8
        self._by_name = None

    # --- construction -------------------------------------------------------------------

    @classmethod
    def parse(cls, data, base=None, source=None, lazy=False) -> "Btf":
        """Parse a BTF blob. ``base`` is the Btf this one is split on (ids continue after it).

        ``lazy`` (a base BTF only): check every record as the full parse does, but build each
        type object on first use (:class:`LazyTypes`). A kernel BTF has 125k types and a
        plugin usually reads a few dozen: 0.07 s and 10 MB instead of 0.35 s and 70 MB. Any
        record the check does not pass (or a legacy bitfield encoding) gets the full parse, so
        errors are the same."""
        data = bytes(data)
        if len(data) < HEADER.size:
            raise BtfError(f"{len(data)} bytes is shorter than the {HEADER.size}-byte header", 0, source)
        magic_le = struct.unpack_from("<H", data, 0)[0]
        if magic_le == MAGIC:
            endian = "<"
        elif magic_le == 0x9FEB:
            endian = ">"
        else:
            raise BtfError(f"bad magic {magic_le:#06x} (expected 0xeb9f)", 0, source)
        _, version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            endian + "HBBIIIII", data, 0)
        if version != 1:
            raise BtfError(f"unsupported version {version}", 2, source)
        if hdr_len < HEADER.size or hdr_len > len(data):
            raise BtfError(f"header length {hdr_len} out of range", 4, source)
        body = len(data) - hdr_len
        for what, off, length, at in (("type", type_off, type_len, 8), ("string", str_off, str_len, 16)):
            if off + length > body:
                raise BtfError(f"{what} section [{off:#x}+{length:#x}] runs past the end "
                               f"({body:#x} bytes after the header)", at, source)
        tstart = hdr_len + type_off
        sstart = hdr_len + str_off
        strings = data[sstart:sstart + str_len]
        if base is None:
            if str_len and strings[0] != 0:
                raise BtfError("string section does not start with an empty string", sstart, source)
            start_id, str_base = 1, 0
        else:
            start_id = base.start_id + len(base._types)
            str_base = base.str_base + len(base._strings)
        btf = cls([], start_id, str_base, strings, base, source, endian)
        if lazy and base is None:
            index = btf._index_types(data, tstart, tstart + type_len)
            if index is not None:
                btf._types = LazyTypes(btf, data, index, btf._name_reader(sstart))
                btf._has_odd_ints = False
                return btf
        with paused_gc():
            btf._parse_types(data, tstart, tstart + type_len, sstart)
        return btf

    def _index_types(self, data, off, end):
        """Offsets of every type record, or None when a record is not one the full parse
        accepts as is (bad kind, bounds, name offset or type reference; a legacy bitfield)."""
        if self.endian != "<" or sys.byteorder != "little":
            return None  # array("I") reads native order
        rec = struct.Struct("<III").unpack_from
        u32 = struct.Struct("<I").unpack_from
        strings = self._strings
        name_limit = strings.rfind(b"\0") + 1  # an offset past the last NUL has no end
        extra, per_vlen, sized = EXTRA_BY_KIND, PER_VLEN_BY_KIND, SIZED_BY_KIND
        # Where, in a record's vlen entries (u32 words), names and type references sit.
        names_at = {4: (0, 3), 5: (0, 3), 6: (0, 2), 19: (0, 3), 13: (0, 2)}
        refs_at = {4: (1, 3), 5: (1, 3), 13: (1, 2), 15: (0, 3)}
        offsets = array.array("I")
        name_offs = array.array("I")
        add = offsets.append
        add_name = name_offs.append
        max_ref = max_name = 0
        count = 0
        while off < end:
            if off + 12 > end:
                return None
            name_off, info, size_type = rec(data, off)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            if kind == 0 or kind > 19:
                return None
            p = off + 12
            nxt = p + extra[kind] + per_vlen[kind] * vlen
            if nxt > end:
                return None
            add(off)
            add_name(name_off)
            if name_off > max_name:
                max_name = name_off
            if not sized[kind]:
                if size_type > max_ref:
                    max_ref = size_type
            elif kind == 1:
                word = u32(data, p)[0]
                if (word >> 16) & 0xFF or (word & 0xFF) != size_type * 8:
                    return None  # legacy bitfields: the full parse folds them into members
            if vlen and kind in names_at:
                words = array.array("I", data[p + extra[kind]:nxt])
                start, step = names_at[kind]
                top = max(words[start::step])
                if top > max_name:
                    max_name = top
                if kind in refs_at:
                    start, step = refs_at[kind]
                    top = max(words[start::step])
                    if top > max_ref:
                        max_ref = top
            elif vlen and kind == 15:
                top = max(array.array("I", data[p:nxt])[0::3])
                if top > max_ref:
                    max_ref = top
            elif kind == 3:
                t, idx, _n = struct.unpack_from("<III", data, p)
                max_ref = max(max_ref, t, idx)
            off = nxt
            count += 1
        if max_name >= name_limit and max_name != 0:
            return None
        if max_ref >= self.start_id + count:
            return None
        return offsets, name_offs

    def _parse_types(self, data, off, end, sstart):
        # The hot loop of every kernel load (~130k records): locals only, one dict lookup per
        # name, tuples for members, and the common kinds (FUNC, FUNC_PROTO, PTR) first.
        e = self.endian
        rec = struct.Struct(e + "III").unpack_from
        u32 = struct.Struct(e + "I").unpack_from
        i32 = struct.Struct(e + "i").unpack_from
        triple = struct.Struct(e + "III")
        triple_iter = triple.iter_unpack
        triple_at = triple.unpack_from
        pair_ii_iter = struct.Struct(e + "Ii").iter_unpack
        pair_iter = struct.Struct(e + "II").iter_unpack
        name_of = self._name_reader(sstart)
        names = self._string_table(name_of)
        start = off
        types = self._types
        append = types.append
        next_id = self.start_id
        max_ref = 0
        source = self.source
        new_member = tuple.__new__
        T = BtfType
        M = Member
        K_INT, K_PTR, K_ARRAY, K_STRUCT, K_UNION, K_ENUM, K_ENUM64 = 1, 2, 3, 4, 5, 6, 19
        K_FUNC, K_FUNC_PROTO, K_VAR, K_DATASEC, K_DECL_TAG, K_FWD = 12, 13, 14, 15, 17, 7
        # Record length by kind: 12 + fixed extra + per-vlen-entry bytes (kind 0 and >19: invalid).
        extra, per_vlen, sized = EXTRA_BY_KIND, PER_VLEN_BY_KIND, SIZED_BY_KIND
        rec_off = off
        try:
            while off < end:
                rec_off = off
                if off + 12 > end:
                    raise BtfError(f"type #{next_id}: record truncated", off, source)
                name_off, info, size_type = rec(data, off)
                kind = (info >> 24) & 0x1F
                vlen = info & 0xFFFF
                if kind == 0 or kind > K_ENUM64:
                    raise BtfError(f"type #{next_id}: unknown kind {kind}", off, source)
                p = off + 12
                off = p + extra[kind] + per_vlen[kind] * vlen
                if off > end:
                    raise BtfError(f"type #{next_id} ({Kind(kind).name}): {off - p + 12} bytes run "
                                   f"past the type section", p - 12, source)
                if sized[kind]:
                    t = T(next_id, kind, names[name_off], info >> 31, vlen, size_type, 0)
                else:
                    t = T(next_id, kind, names[name_off], info >> 31, vlen, 0, size_type)
                    if size_type > max_ref:
                        max_ref = size_type
                if kind == K_FUNC:
                    t.linkage = vlen
                elif kind == K_PTR or K_FWD <= kind < K_FUNC or kind == 18:
                    pass                              # FWD, TYPEDEF, modifiers, TYPE_TAG: no payload
                elif kind == K_FUNC_PROTO:
                    if vlen:
                        params = [(names[n], ty) for n, ty in pair_iter(data[p:off])]
                        top = max([ty for _n, ty in params])
                        if top > max_ref:
                            max_ref = top
                        t.params = tuple(params)
                elif kind == K_STRUCT or kind == K_UNION:
                    if vlen:
                        if info >> 31:
                            members = [new_member(M, (names[n], ty, mo & 0xFFFFFF, mo >> 24))
                                       for n, ty, mo in triple_iter(data[p:off])]
                        else:
                            members = [new_member(M, (names[n], ty, mo, 0))
                                       for n, ty, mo in triple_iter(data[p:off])]
                        top = max([m[1] for m in members])
                        if top > max_ref:
                            max_ref = top
                        t.members = tuple(members)
                elif kind == K_INT:
                    word = u32(data, p)[0]
                    t.encoding = (word >> 24) & 0x0F
                    t.int_offset = (word >> 16) & 0xFF
                    t.bits = word & 0xFF
                elif kind == K_ARRAY:
                    t.type, t.index_type, t.nelems = triple_at(data, p)
                    if t.type > max_ref:
                        max_ref = t.type
                    if t.index_type > max_ref:
                        max_ref = t.index_type
                elif kind == K_ENUM:
                    t.values = tuple([(names[n], v) for n, v in pair_ii_iter(data[p:off])])
                elif kind == K_ENUM64:
                    vals = []
                    for n, lo, hi in triple_iter(data[p:off]):
                        v = (hi << 32) | lo
                        if info >> 31 and v >= 1 << 63:
                            v -= 1 << 64
                        vals.append((names[n], v))
                    t.values = tuple(vals)
                elif kind == K_VAR:
                    t.linkage = u32(data, p)[0]
                elif kind == K_DATASEC:
                    t.vars = tuple(triple_iter(data[p:off]))
                    for v in t.vars:
                        if v[0] > max_ref:
                            max_ref = v[0]
                elif kind == K_DECL_TAG:
                    t.component_idx = i32(data, p)[0]
                append(t)
                next_id += 1
        except BtfError as e:
            # Names are looked up without their record's offset (one dict lookup each); add it.
            if e.offset is None:
                raise BtfError(f"type #{next_id}: {e.reason}", rec_off, source) from None
            raise
        if max_ref >= next_id:
            self._report_bad_ref(next_id, data, start)
        self._normalize_legacy_bitfields()

    def _string_table(self, name_of):
        """{absolute string offset: str} of every string start of this blob's section, built in
        one pass, so that a name is one dict lookup. Offsets into the middle of a string, into
        the base's strings, and bad offsets miss and go through ``name_of`` (checked)."""
        table = _StringTable()
        table.slow = name_of
        table[0] = ""
        strings = self._strings
        if strings:
            pieces = strings.split(b"\0")
            pieces.pop()        # after the last NUL: empty, or a string with no terminator
            pos = self.str_base
            for raw in pieces:
                table[pos] = raw.decode("utf-8", "replace")
                pos += len(raw) + 1
        return table

    def _report_bad_ref(self, limit, data, tstart):
        for t in self._types:
            refs = [t.type] if t.kind not in SIZED and t.kind != Kind.FWD else []
            if t.kind == Kind.ARRAY:
                refs.append(t.index_type)
            refs.extend(m.type for m in t.members)
            refs.extend(ty for _, ty in t.params)
            refs.extend(v[0] for v in t.vars)
            for r in refs:
                if r >= limit:
                    raise BtfError(f"type #{t.id} ({Kind(t.kind).name} {t.name!r}) refers to "
                                   f"missing type #{r} (last id {limit - 1})",
                                   self._record_offset(data, tstart, t.id), self.source)

    def _record_offset(self, data, off, type_id):
        """Byte offset of type ``type_id``'s record (error path only: records are re-walked
        rather than remembering 130k offsets on every parse)."""
        rec = struct.Struct(self.endian + "III")
        for t in self._types:
            if t.id == type_id:
                return off
            _, info, _ = rec.unpack_from(data, off)
            kind = (info >> 24) & 0x1F
            off += 12 + EXTRA.get(kind, 0) + PER_VLEN.get(kind, 0) * (info & 0xFFFF)
        return None

    def _normalize_legacy_bitfields(self):
        """Without kind_flag, a bitfield is a member whose INT type has fewer bits than its size
        (or a bit offset): fold that into the member so both encodings read the same."""
        odd_ints = {t.id for t in self._types
                    if t.kind == Kind.INT and (t.int_offset or t.bits != t.size * 8)}
        if not odd_ints and (self.base is None or not getattr(self.base, "_has_odd_ints", False)):
            self._has_odd_ints = False
            return
        self._has_odd_ints = True
        for t in self._types:
            if t.kind_flag or t.kind not in (Kind.STRUCT, Kind.UNION):
                continue
            members = list(t.members)
            for i, m in enumerate(members):
                it = self.resolve(m.type)
                if it is not None and it.kind == Kind.INT and (it.int_offset or it.bits != it.size * 8):
                    members[i] = m._replace(bit_offset=m.bit_offset + it.int_offset, bit_size=it.bits)
            t.members = tuple(members)

    def _name_reader(self, sstart):
        strings = self._strings
        cache = {}
        base = self.base
        str_base = self.str_base

        def name_of(name_off, at):
            s = cache.get(name_off)
            if s is not None:
                return s
            if name_off < str_base:
                s = base.string(name_off)
            else:
                rel = name_off - str_base
                stop = strings.find(b"\0", rel)
                if rel >= len(strings) or stop < 0:
                    raise BtfError(f"name offset {name_off:#x} outside the string section", at, self.source)
                s = strings[rel:stop].decode("utf-8", "replace")
            cache[name_off] = s
            return s

        self.string = lambda off: name_of(off, None)
        return name_of

    # --- access -------------------------------------------------------------------------

    @property
    def own_types(self):
        """Types defined by this blob (not its base)."""
        return self._types

    @property
    def end_id(self) -> int:
        """One past the last type id."""
        return self.start_id + len(self._types)

    def __len__(self):
        return self.end_id

    def __getitem__(self, type_id) -> BtfType:
        return self.type(type_id)

    def type(self, type_id):
        """The BtfType for ``type_id``; None for id 0 (void). KeyError if out of range."""
        if type_id >= self.start_id:
            i = type_id - self.start_id
            if i < len(self._types):
                return self._types[i]
            raise KeyError(f"BTF type id {type_id} out of range (last {self.end_id - 1})")
        if type_id == 0:
            return None
        if self.base is None:
            raise KeyError(f"BTF type id {type_id} out of range")
        return self.base.type(type_id)

    def all_types(self):
        """Every type, base first."""
        if self.base is not None:
            yield from self.base.all_types()
        yield from self._types

    def datasec_vars(self, datasec_id):
        """[(name, type id, offset, size)] of the VARs of a DATASEC (``.bss`` and friends);
        empty for any other type."""
        sec = self.type(datasec_id)
        if sec is None or sec.kind != Kind.DATASEC:
            return []
        out = []
        for var_id, offset, size in sec.vars:
            var = self.type(var_id)
            if var is not None and var.kind == Kind.VAR:
                out.append((var.name, var.type, offset, size))
        return out

    def find(self, name, kind=None):
        """All types named ``name`` (optionally of ``kind``), base types first."""
        if self._by_name is None:
            idx = {}
            types = self._types
            if isinstance(types, LazyTypes):
                for i, tname in types.names():
                    if tname:
                        idx.setdefault(tname, []).append(i)
            else:
                for i, t in enumerate(types):
                    if t.name:
                        idx.setdefault(t.name, []).append(i)
            self._by_name = idx
        found = self.base.find(name, kind) if self.base is not None else []
        own = [self._types[i] for i in self._by_name.get(name, ())]
        return found + [t for t in own if kind is None or t.kind == kind]

    def struct(self, name, own_only=False) -> BtfType:
        """The complete struct or union named ``name`` (a definition, not a FWD)."""
        cands = self.find(name)
        if own_only:
            cands = [t for t in cands if t.id >= self.start_id]
        for t in cands:
            if t.kind in (Kind.STRUCT, Kind.UNION):
                return t
        raise KeyError(f"no struct {name!r} in BTF" + (f" ({self.source})" if self.source else ""))

    def resolve(self, type_id) -> BtfType:
        """Peel typedefs and modifiers; None for void."""
        t = self.type(type_id)
        for _ in range(MAX_RESOLVE_DEPTH):
            if t is None or t.kind not in TRANSPARENT:
                return t
            t = self.type(t.type)
        raise BtfError(f"type chain from #{type_id} deeper than {MAX_RESOLVE_DEPTH}", None, self.source)

    def size_of(self, type_id, _depth=0) -> int:
        if _depth > MAX_RESOLVE_DEPTH:
            return 0   # an array of itself (corrupt input): no size rather than a recursion
        t = self.resolve(type_id)
        for _ in range(MAX_RESOLVE_DEPTH):
            if t is None:
                return 0
            if t.kind == Kind.PTR:
                return self.pointer_size
            if t.kind == Kind.ARRAY:
                return t.nelems * self.size_of(t.type, _depth + 1)
            if t.kind in SIZED:
                return t.size
            if t.kind == Kind.VAR:
                t = self.resolve(t.type)
                continue
            return 0
        return 0

    def member_path(self, type_id, path):
        """(bit offset, Member) of a dotted member path, looking through anonymous members."""
        if isinstance(type_id, str):
            type_id = self.struct(type_id).id
        bit = 0
        member = None
        cur = type_id
        for part in path.split("."):
            st = self.resolve(cur)
            if st is None or st.kind not in (Kind.STRUCT, Kind.UNION):
                raise KeyError(f"{path!r}: {part!r} is not inside a struct")
            found = self._find_member(st, part, 0)
            if found is None:
                raise KeyError(f"no member {part!r} in {Kind(st.kind).name.lower()} {st.name or '(anonymous)'}")
            off, member = found
            bit += off
            cur = member.type
        return bit, member

    def _find_member(self, st, name, depth):
        for m in st.members:
            if m.name == name:
                return m.bit_offset, m
        if depth > 8:
            return None
        for m in st.members:
            if not m.name:
                inner = self.resolve(m.type)
                if inner is not None and inner.kind in (Kind.STRUCT, Kind.UNION):
                    found = self._find_member(inner, name, depth + 1)
                    if found is not None:
                        return m.bit_offset + found[0], found[1]
        return None

    def offsetof(self, struct_name, path) -> int:
        """Byte offset of ``path`` in struct ``struct_name`` (or a type id)."""
        bit, _ = self.member_path(struct_name, path)
        return bit // 8

    def type_name(self, type_id, _depth=0) -> str:
        """C-like spelling of a type, for messages and column values."""
        t = self.type(type_id)
        for _ in range(MAX_RESOLVE_DEPTH):
            if t is None:
                return "void"
            if _depth > MAX_RESOLVE_DEPTH:
                return "?"   # pointer/array cycle in corrupt input
            k = t.kind
            if k == Kind.PTR:
                return self.type_name(t.type, _depth + 1) + " *"
            if k in (Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG):
                t = self.type(t.type)
                continue
            if k == Kind.ARRAY:
                return f"{self.type_name(t.type, _depth + 1)}[{t.nelems}]"
            if k in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FWD):
                tag = {Kind.STRUCT: "struct", Kind.UNION: "union", Kind.FWD: "union" if t.kind_flag else "struct"}
                return f"{tag.get(k, 'enum')} {t.name or '(anonymous)'}"
            if k == Kind.FUNC_PROTO:
                return "func"
            return t.name or Kind(k).name.lower()
        return "?"
