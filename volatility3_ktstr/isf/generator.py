"""BTF (+ symbol addresses + banner) -> Volatility 3 ISF (format 6.2.0).

Follows dwarf2json's conventions so Volatility's own Linux plugins work unchanged:
- base types carry DWARF names (BTF copies them); ``void`` and ``pointer`` are always present;
  ``char`` is signed on x86 and unsigned on arm64 (BTF does not record it);
- typedefs are chased to what they name, except typedefs of anonymous structs/unions/enums,
  which give the anonymous type its name;
- other anonymous types are ``unnamed_<16 hex>`` from a hash of their definition (stable across
  runs), anonymous members ``unnamed_field_<hex>`` with ``"anonymous": true``;
- bitfields ``{offset: bit // 8, bit_position: bit % 8}``; enums name a ``base``;
- ``linux_banner`` has ``constant_data`` = the exact banner bytes (Volatility keys ISFs by it).
Symbols get the types ``symtypes`` can know without DWARF (BTF variables, a documented table,
section bounds, names kernel macros make; ``metadata.producer.symbol_type_sources`` says which
for each), else ``void`` as dwarf2json gives a symbol it has no type for. The producer is
:data:`PRODUCER_COMPAT` (what Volatility's plugins check), with this package as ``generator``.
"""

import base64
import hashlib

from .. import __version__
from ..btf import INT_BOOL, INT_CHAR, INT_SIGNED, Btf, Kind
from ..btf.parser import paused_gc
from . import symtypes

ISF_FORMAT = "6.2.0"
SIGNED_CHAR_ARCHES = {"x86_64", "x86"}

# The producer Volatility's plugins check. linux.malware.hidden_modules refuses a kernel table
# unless some table's producer is dwarf2json >= 0.8.0 (linux.kmsg wants > 0.4.1); the versions
# mark ISF conventions, which this generator follows as dwarf2json 0.9.0 writes them (names of
# anonymous types from typedefs and anonymous members, 0.7/0.8; DWARF4 data bit offsets of
# bitfields, 0.8; no Rust compilation units, 0.9: BTF has none). ``generator`` says what made
# the file.
PRODUCER_COMPAT = {"name": "dwarf2json", "version": "0.9.0"}


_NAMED_KINDS = frozenset({int(Kind.STRUCT), int(Kind.UNION), int(Kind.ENUM), int(Kind.ENUM64)})
_UNSIGNED_INT_NAMES = {1: "unsigned char", 2: "short unsigned int", 4: "unsigned int", 8: "long unsigned int"}
_SIGNED_INT_NAMES = {1: "signed char", 2: "short int", 4: "int", 8: "long int"}


class IsfGenerator:
    """Turns one Btf (kernel BTF, or a program BTF split on it) into an ISF dict."""

    def __init__(self, btf: Btf, arch: str = "x86_64", types_only_from=None):
        self.btf = btf
        self.arch = arch
        self.char_signed = arch in SIGNED_CHAR_ARCHES
        self._names = {}          # type id -> ISF name of a struct/union/enum
        self._desc_cache = {}     # type id -> type descriptor
        self._hash_cache = {}
        self._anon_fields = {}
        self.base_types = {}
        self.user_types = {}
        self.enums = {}
        self._types_from = types_only_from   # restrict user_types to ids >= this (program BTF)
        self._types = None

    # --- names ---------------------------------------------------------------------------

    def _all_types(self):
        if self._types is None:
            self._types = list(self.btf.all_types())
        return self._types

    def _assign_names(self):
        btf = self.btf
        first_def = {}
        typedef_of_anon = {}
        types = self._all_types()
        aggregates = _NAMED_KINDS
        for t in types:
            if t.kind == Kind.TYPEDEF:
                target = btf.type(t.type)
                # Only a bare typedef names an anonymous aggregate (not through modifiers).
                if target is not None and not target.name and target.kind in (
                        Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64):
                    typedef_of_anon.setdefault(target.id, t.name)
        taken = set()
        for t in types:
            if t.kind not in aggregates:
                continue
            if t.name:
                name = t.name
                if name in taken:
                    # BTF keeps same-named distinct types (e.g. several `struct bucket`); the
                    # first keeps the plain name, the others get a stable suffix.
                    name = f"{t.name}__{self._def_hash(t)[:8]}"
            elif t.id in typedef_of_anon:
                name = typedef_of_anon[t.id]
                if name in taken:
                    name = "unnamed_" + self._def_hash(t)
            else:
                name = "unnamed_" + self._def_hash(t)
            taken.add(name)
            self._names[t.id] = name
            first_def.setdefault(t.name, t.id)
        # A FWD refers to the definition of the same name when there is one.
        for t in types:
            if t.kind == Kind.FWD:
                self._names[t.id] = t.name if t.name in first_def else t.name

    def _def_hash(self, t, _stack=()):
        h = self._hash_cache.get(t.id)
        if h is not None:
            return h
        if t.id in _stack:
            return "cycle"
        parts = [str(int(t.kind)), str(t.size), t.name]
        stack = _stack + (t.id,)
        for m in t.members:
            parts.append(f"{m.name}:{m.bit_offset}:{m.bit_size}:{self._shape(m.type, stack)}")
        for n, v in t.values:
            parts.append(f"{n}={v}")
        h = hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]
        self._hash_cache[t.id] = h
        return h

    def _shape(self, type_id, stack):
        """A structural spelling of a type for hashing (anonymous parts by their own hash)."""
        btf = self.btf
        out = []
        t = btf.type(type_id)
        for _ in range(32):
            if t is None:
                out.append("void")
                break
            if t.kind in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64) and not t.name:
                out.append(self._def_hash(t, stack))
                break
            if t.kind == Kind.PTR:
                out.append("*")
            elif t.kind == Kind.ARRAY:
                out.append(f"[{t.nelems}]")
            elif t.kind == Kind.FUNC_PROTO:
                out.append("fn")
                break
            elif t.name:
                out.append(t.name)
                break
            t = btf.type(t.type)
        return "".join(out)

    # --- descriptors ---------------------------------------------------------------------

    def _base_name(self, t):
        name = t.name
        if name not in self.base_types:
            if t.kind == Kind.FLOAT:
                kind, signed = "float", True
            elif name == "char":
                kind, signed = "char", self.char_signed
            elif t.encoding & INT_BOOL or name == "_Bool":
                kind, signed = "bool", False
            elif t.encoding & INT_CHAR or "char" in name:
                kind, signed = "char", bool(t.encoding & INT_SIGNED)
            else:
                kind, signed = "int", bool(t.encoding & INT_SIGNED)
            self.base_types[name] = {"size": t.size, "signed": signed, "kind": kind, "endian": "little"}
        return name

    def descriptor(self, type_id):
        d = self._desc_cache.get(type_id)
        if d is None:
            d = self._descriptor(type_id, 0)
            self._desc_cache[type_id] = d
        return d

    def _descriptor(self, type_id, depth):
        btf = self.btf
        t = btf.type(type_id)
        if depth > 40:
            return {"kind": "base", "name": "void"}
        if t is None:
            return {"kind": "base", "name": "void"}
        k = t.kind
        if k in (Kind.INT, Kind.FLOAT):
            return {"kind": "base", "name": self._base_name(t)}
        if k == Kind.PTR:
            return {"kind": "pointer", "subtype": self._descriptor(t.type, depth + 1)}
        if k == Kind.ARRAY:
            return {"kind": "array", "count": t.nelems, "subtype": self._descriptor(t.type, depth + 1)}
        if k in (Kind.STRUCT, Kind.UNION):
            return {"kind": "struct" if k == Kind.STRUCT else "union", "name": self._names[t.id]}
        if k == Kind.FWD:
            return {"kind": "union" if t.kind_flag else "struct", "name": t.name}
        if k in (Kind.ENUM, Kind.ENUM64):
            return {"kind": "enum", "name": self._names[t.id]}
        if k == Kind.TYPEDEF:
            target = btf.type(t.type)
            if target is not None and not target.name and target.id in self._names:
                return self._descriptor(t.type, depth + 1)
            return self._descriptor(t.type, depth + 1)
        if k in (Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG, Kind.VAR):
            return self._descriptor(t.type, depth + 1)
        if k in (Kind.FUNC_PROTO, Kind.FUNC):
            return {"kind": "function"}
        return {"kind": "base", "name": "void"}

    def _field(self, member, counter):
        btf = self.btf
        field = {}
        if member.bit_size:
            inner = self.descriptor(member.type)
            if inner["kind"] not in ("base", "enum"):
                inner = {"kind": "base", "name": self._int_name(btf.size_of(member.type))}
            field["type"] = {"kind": "bitfield", "bit_length": member.bit_size,
                             "bit_position": member.bit_offset % 8, "type": inner}
        else:
            field["type"] = self.descriptor(member.type)
        field["offset"] = member.bit_offset // 8
        name = member.name
        if not name:
            name = f"unnamed_field_{counter:x}"
            field["anonymous"] = True
        return name, field

    def _int_name(self, size, signed=False):
        for name, bt in sorted(self.base_types.items()):
            if bt["kind"] == "int" and bt["size"] == size and bt["signed"] == signed:
                return name
        # No such integer in the BTF: add the one DWARF would name (an odd size only comes
        # from unusual or corrupt input; it still gets a distinct, valid name).
        names = _SIGNED_INT_NAMES if signed else _UNSIGNED_INT_NAMES
        name = names.get(size) or f"{'' if signed else 'unsigned '}__int{size * 8}"
        self.base_types.setdefault(name, {"size": size, "signed": signed, "kind": "int", "endian": "little"})
        return name

    # --- emit ----------------------------------------------------------------------------

    def build_types(self):
        self._assign_names()
        self.base_types["void"] = {"size": 0, "signed": False, "kind": "void", "endian": "little"}
        self.base_types["pointer"] = {"size": self.btf.pointer_size, "signed": False, "kind": "int",
                                      "endian": "little"}
        types = self._all_types()
        for t in types:
            if (t.kind == Kind.INT or t.kind == Kind.FLOAT) and t.name:
                self._base_name(t)
        start = self._types_from or 0
        pending_enums = []
        names = self._names
        user_types = self.user_types
        desc_cache = self._desc_cache
        descriptor = self.descriptor
        field = self._field
        K_STRUCT, K_UNION, K_ENUM, K_ENUM64 = Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64
        for t in types:
            k = t.kind
            if k == K_STRUCT or k == K_UNION:
                if t.id < start:
                    continue
                # Inline fast path of _field for plain members (~70k in a kernel); bitfields and
                # anonymous members go through _field.
                fields = {}
                anon = 0
                for m in t.members:
                    name = m[0]
                    if name and not m[3]:
                        d = desc_cache.get(m[1])
                        if d is None:
                            d = descriptor(m[1])
                        fields[name] = {"type": d, "offset": m[2] >> 3}
                        continue
                    fname, fdict = field(m, anon)
                    if not name:
                        anon += 1
                    fields[fname] = fdict
                user_types[names[t.id]] = {"kind": "struct" if k == K_STRUCT else "union",
                                           "size": t.size, "fields": fields}
            elif k == K_ENUM or k == K_ENUM64:
                if t.id >= start:
                    pending_enums.append(t)
        for t in pending_enums:
            signed = bool(t.kind_flag) or any(v < 0 for _, v in t.values)
            self.enums[names[t.id]] = {
                "size": t.size, "base": self._int_name(t.size, signed),
                "constants": {n: v for n, v in t.values},
            }
        # Forward declarations with no definition anywhere: empty placeholders keep lookups sane.
        for t in types:
            if t.kind == Kind.FWD and t.name not in user_types and t.id >= start:
                user_types[t.name] = {"kind": "union" if t.kind_flag else "struct", "size": 0, "fields": {}}


def generate(btf: Btf, symbols=None, banner: bytes = None, arch: str = "x86_64",
             sources=None) -> dict:
    """Build the ISF dict.

    ``symbols``: name -> (address, type letter), link-time addresses. ``banner``: exact bytes of
    ``linux_banner`` including the trailing newline and NUL. ``sources``: metadata entries
    (``[{kind, name, hash_type, hash_value}]``) for the symbol and type inputs.
    """
    with paused_gc():
        return _generate(btf, symbols, banner, arch, sources)


def _generate(btf, symbols, banner, arch, sources):
    gen = IsfGenerator(btf, arch)
    gen.build_types()
    out_symbols = {}
    symbols = symbols or {}
    for name, (addr, _kind) in symbols.items():
        out_symbols[name] = {"address": addr}
    type_sources = {}
    symtypes.type_symbols(gen, symbols, out_symbols, type_sources)
    if banner is not None:
        entry = out_symbols.setdefault("linux_banner", {"address": symbols.get("linux_banner", (0, ""))[0]})
        entry["constant_data"] = base64.b64encode(banner).decode()
        entry["type"] = {"kind": "array", "count": len(banner), "subtype": {"kind": "base", "name": "char"}}
        type_sources["linux_banner"] = "banner"
        gen.base_types.setdefault("char", {"size": 1, "signed": gen.char_signed, "kind": "char", "endian": "little"})
    for entry in out_symbols.values():
        entry.setdefault("type", {"kind": "base", "name": "void"})
    linux_meta = {"symbols": [], "types": []}
    for src in sources or ():
        (linux_meta["types"] if src.get("kind") == "dwarf" else linux_meta["symbols"]).append(src)
    return {
        "metadata": {
            "format": ISF_FORMAT,
            # No timestamp: identical inputs give identical files, so Volatility's validation
            # cache (keyed by content hash) is reused across regenerations.
            "producer": dict(PRODUCER_COMPAT, generator={"name": "volatility3-ktstr", "version": __version__},
                             symbol_type_sources=dict(sorted(type_sources.items()))),
            "linux": linux_meta,
        },
        "base_types": gen.base_types,
        "user_types": gen.user_types,
        "enums": gen.enums,
        "symbols": out_symbols,
    }


def generate_types_only(btf: Btf, arch: str = "x86_64", own_only: bool = True) -> dict:
    """An ISF with just the types of ``btf`` (for a program BTF: its own types only, plus what
    they reference being resolvable through the names). Used for run-time symbol tables."""
    gen = IsfGenerator(btf, arch, types_only_from=btf.start_id if own_only else None)
    with paused_gc():
        gen.build_types()
    return {
        "metadata": {"format": ISF_FORMAT,
                     "producer": {"name": "volatility3-ktstr", "version": __version__}},
        "base_types": gen.base_types,
        "user_types": gen.user_types,
        "enums": gen.enums,
        "symbols": {},
    }


def file_source(kind, path, data=None):
    """A metadata source entry with the file's sha256."""
    import os
    h = hashlib.sha256()
    if data is not None:
        h.update(data)
    else:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return {"kind": kind, "name": os.path.basename(path), "hash_type": "sha256", "hash_value": h.hexdigest()}
