"""The kernel ISF as a :class:`Layout`: :class:`IsfLayout` answers sizes, offsets and fields
from a Volatility symbol table's ISF dictionary (:func:`isf_json`), falling back to Volatility's
type templates."""

from volatility3.framework import constants, exceptions, objects
from volatility3.framework.objects import templates

from .core import Layout, LayoutError
from .core.layout import Field


def isf_json(context, table_name):
    """The decoded ISF dict behind a Volatility symbol table, or None.

    An IntermediateSymbolTable keeps it in its format delegate (``_delegate._json_object``, a
    private attribute of Volatility 2.28; tests/test_volpatches.py checks it is there). Read
    only: the dict is shared by every table loaded from the same file."""
    try:
        table = context.symbol_space[table_name]
    except (KeyError, exceptions.SymbolSpaceError):
        return None
    isf = getattr(getattr(table, "_delegate", table), "_json_object", None)
    if isinstance(isf, dict) and isinstance(isf.get("user_types"), dict):
        return isf
    return None


class IsfLayout(Layout):
    """Layout from a Volatility symbol table (the kernel ISF).

    The fields of ``user_types`` are read from the table's ISF dict: asking Volatility for a
    type template resolves every type it reaches (1,405 templates, 0.75 s, for ``struct
    bpf_map``) when a walker only needs numbers. Anything else (base types, a table without an
    ISF dict, ``raw=False``) goes through the templates; both give the same answers (tested).
    Anonymous members are looked through, as Volatility flattens them. Extra structs of one
    name (BTF may hold several) are ``name__<8 hex>`` in our ISFs (see :meth:`variants`)."""

    _AGGREGATES = ("struct", "union", "class")

    def __init__(self, context, table_name, raw=True):
        super().__init__()
        self.context = context
        self.table = table_name
        isf = isf_json(context, table_name) if raw else None
        self._types = isf["user_types"] if isf is not None else None
        self._base = (isf.get("base_types") or {}) if isf is not None else {}
        self._enums = (isf.get("enums") or {}) if isf is not None else {}
        self._flat = {}

    # --- the ISF dict ---------------------------------------------------------------------

    def _raw(self, name):
        return self._types is not None and isinstance(self._types.get(name), dict) and "!" not in name

    def _members(self, name):
        """{member: (offset, type descriptor)} of a user type, anonymous members flattened into
        their parent (as intermed.Version8Format does)."""
        flat = self._flat.get(name)
        if flat is None:
            flat = {}
            self._flatten(self._types[name].get("fields") or {}, 0, flat, 0)
            self._flat[name] = flat
        return flat

    def _flatten(self, fields, base, out, depth):
        if depth > 64:  # a self-containing anonymous member (corrupt ISF)
            raise LayoutError("anonymous members nested more than 64 deep")
        for member, value in fields.items():
            off = base + value.get("offset", 0)
            if value.get("anonymous", False):
                sub = self._types.get(value["type"]["name"], {})
                self._flatten(sub.get("fields") or {}, off, out, depth + 1)
            else:
                out[member] = (off, value.get("type"))

    def _type_size(self, desc, depth=0):
        kind = desc.get("kind")
        if depth > 32:
            return 0
        if kind == "base":
            return int((self._base.get(desc.get("name")) or {}).get("size", 0))
        if kind == "pointer":
            return int((self._base.get("pointer") or {}).get("size", 8))
        if kind == "array":
            return int(desc.get("count", 0)) * self._type_size(desc.get("subtype") or {}, depth + 1)
        if kind in self._AGGREGATES:
            return int((self._types.get(desc.get("name")) or {}).get("size", 0))
        if kind == "enum":
            return int((self._enums.get(desc.get("name")) or {}).get("size", 0))
        if kind == "bitfield":
            return self._type_size(desc.get("type") or {}, depth + 1)
        return 0

    def _describe(self, desc, offset):
        """The Field of a member whose ISF type descriptor is ``desc``."""
        kind = desc.get("kind")
        name = desc.get("name", "")
        size = self._type_size(desc)
        if kind == "base":
            base = self._base.get(name) or {}
            return Field(offset, size, bool(base.get("signed")),
                         {"int": "int", "char": "char", "bool": "bool", "float": "float"}.get(
                             base.get("kind", "int"), "other"), name)
        if kind == "pointer":
            sub = desc.get("subtype") or {}
            return Field(offset, size, False, "function" if sub.get("kind") == "function" else "pointer",
                         (sub.get("name") or sub.get("kind", "")) + " *")
        if kind == "array":
            sub = desc.get("subtype") or {}
            return Field(offset, size, False, "array", sub.get("name", sub.get("kind", "")),
                         count=int(desc.get("count", 0)), elem_size=self._type_size(sub))
        if kind in self._AGGREGATES:
            return Field(offset, size, False, "union" if kind == "union" else "struct", name)
        if kind == "enum":
            base = self._base.get((self._enums.get(name) or {}).get("base")) or {}
            return Field(offset, size, bool(base.get("signed")), "enum", name)
        if kind == "bitfield":
            inner = self._describe(desc.get("type") or {}, offset)
            return Field(offset, inner.size, inner.signed, "int", inner.type_name,
                         bit_offset=int(desc.get("bit_position", 0)),
                         bit_size=int(desc.get("bit_length", 0)))
        return Field(offset, size, False, "function" if kind == "function" else "other", name)

    # --- Layout ---------------------------------------------------------------------------

    def _size(self, struct):
        if self._raw(struct):
            return int(self._types[struct].get("size", 0))
        return self._template(struct).size

    def _member_names(self, struct):
        if self._raw(struct):
            return list(self._members(struct))
        return list(getattr(self._template(struct).vol, "members", None) or {})

    def _field(self, struct, path):
        if not self._raw(struct):
            return self._template_field(struct, path)
        name, total, desc = struct, 0, None
        for part in path.split("."):
            if name is None:
                raise LayoutError(f"type 'struct {struct}' has no member '{path}'")
            members = self._members(name)
            if part not in members:
                raise LayoutError(f"type 'struct {struct}' has no member '{path}'")
            off, desc = members[part]
            desc = desc if isinstance(desc, dict) else {}
            total += off
            name = None
            if desc.get("kind") in self._AGGREGATES:
                name = desc.get("name")
                if not self._raw(name):
                    # Not a plain user type of this table: let the templates decide the rest.
                    return self._template_field(struct, path)
        return self._describe(desc, total)

    def variants(self, struct):
        types = self._types if self._types is not None else self.context.symbol_space[self.table].types
        prefix = struct + "__"
        return [struct] * self.has(struct) + sorted(
            n for n in types if n.startswith(prefix) and len(n) == len(prefix) + 8)

    # --- Volatility's templates (fallback) ----------------------------------------------------

    def _template(self, name):
        try:
            return self.context.symbol_space.get_type(self.table + constants.BANG + name)
        except (exceptions.SymbolError, exceptions.SymbolSpaceError):
            raise LayoutError(f"type 'struct {name}' is not in the kernel symbol table") from None

    def _template_field(self, struct, path):
        tmpl = self._template(struct)
        total = 0
        for part in path.split("."):
            members = getattr(tmpl.vol, "members", None) or {}
            if part not in members:
                raise LayoutError(f"type 'struct {struct}' has no member '{path}'")
            off, sub = members[part]
            total += off
            if isinstance(sub, templates.ReferenceTemplate):
                sub = self.context.symbol_space.get_type(sub.vol.type_name)
            tmpl = sub
        vol = tmpl.vol
        cls = getattr(vol, "object_class", None)
        kind = {objects.Pointer: "pointer", objects.Array: "array", objects.Enumeration: "enum",
                objects.Boolean: "bool", objects.Char: "char", objects.Float: "float",
                objects.Integer: "int", objects.BitField: "int"}.get(cls, "struct")
        if cls is objects.BitField:
            base = vol.get("base_type")
            bfmt = base.vol.get("data_format") if base is not None else None
            start = vol.get("start_bit", 0)
            return Field(total, base.size if base is not None else 0, bool(getattr(bfmt, "signed", False)),
                         "int", bit_offset=start, bit_size=vol.get("end_bit", 0) - start)
        if kind == "pointer":
            target = vol.get("subtype")
            if target is not None and getattr(target.vol, "object_class", None) is objects.Function:
                kind = "function"
        fmt = vol.get("data_format")
        return Field(total, tmpl.size, bool(getattr(fmt, "signed", False)), kind,
                     str(vol.get("type_name", "")).split(constants.BANG)[-1],
                     count=vol.get("count", 0) if kind == "array" else 0)
