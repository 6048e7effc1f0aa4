"""The kernel as walkers see it, built from a Volatility kernel module.

:class:`KernelContext` bundles a :class:`Reader` over the kernel's virtual layer, an
:class:`IsfLayout` over the kernel ISF, symbol addresses (KASLR applied), per-CPU offsets and
the BTF objects found in the dump (the kernel's own BTF and each program's split BTF).
Walkers take its parts, never Volatility objects.
"""

import logging
import weakref

from volatility3.framework import constants, exceptions
from volatility3.framework.objects import templates

from .bpf import btfobj
from .btf import Btf, BtfError
from .core import Layout, LayoutError, ReadError, Reader
from .errors import KtstrError

vollog = logging.getLogger(__name__)

MAX_CPUS = 8192
LAZY_BTF_BYTES = 1 << 20
# Architectures our plugins accept in ModuleRequirement (AArch64 comes from our arm64 layer).
ARCHITECTURES = ["Intel32", "Intel64", "AArch64"]


class LayerReader(Reader):
    """Reader over a Volatility translation layer; unmapped pages raise ReadError."""

    def __init__(self, context, layer_name):
        self._layer = context.layers[layer_name]
        self.layer_name = layer_name

    def read(self, addr, size):
        if size < 0 or addr < 0 or addr + size > (1 << 64):
            raise ReadError(addr, size, "address out of range")
        try:
            return self._layer.read(addr, size, pad=False)
        except exceptions.InvalidAddressException as e:
            raise ReadError(addr, size, f"unmapped at {e.invalid_address:#x}") from None


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
    """Layout from a Volatility symbol table (the kernel ISF). Anonymous members are reachable
    directly (Volatility flattens them).

    Sizes and offsets of ``user_types`` are read from the table's ISF dict: asking Volatility
    for a type template resolves every type it reaches (1,405 templates, 0.75 s, for
    ``struct bpf_map``) when a walker only needs numbers. Anything else (base types, a table
    without an ISF dict) goes through the templates; both give the same answers (tested)."""

    _AGGREGATES = ("struct", "union", "class")

    def __init__(self, context, table_name, raw=True):
        super().__init__()
        self.context = context
        self.table = table_name
        isf = isf_json(context, table_name) if raw else None
        self._types = isf["user_types"] if isf is not None else None
        self._flat = {}

    def _members(self, name):
        """Volatility's view of a user type's members: {name: (offset, type descriptor)} with
        anonymous members flattened into their parent (as intermed.Version8Format does)."""
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
                self._flatten(sub["fields"], off, out, depth + 1)
            else:
                out[member] = (off, value.get("type"))

    def _raw(self, name):
        return self._types is not None and name in self._types and "!" not in name

    def _template(self, name):
        try:
            return self.context.symbol_space.get_type(self.table + constants.BANG + name)
        except (exceptions.SymbolError, exceptions.SymbolSpaceError):
            raise LayoutError(f"type 'struct {name}' is not in the kernel symbol table") from None

    def _size(self, struct):
        if self._raw(struct):
            return self._types[struct]["size"]
        return self._template(struct).size

    def _offset(self, struct, path):
        if self._raw(struct):
            return self._raw_offset(struct, path)
        return self._template_offset(struct, path)

    def _raw_offset(self, struct, path):
        name, total = struct, 0
        for part in path.split("."):
            members = self._members(name) if name is not None else {}
            if part not in members:
                raise LayoutError(f"type 'struct {struct}' has no member '{path}'")
            off, desc = members[part]
            total += off
            name = None
            if isinstance(desc, dict) and desc.get("kind") in self._AGGREGATES:
                name = desc.get("name")
                if not self._raw(name):
                    # Not a plain user type of this table: let the templates decide the rest.
                    return self._template_offset(struct, path)
        return total

    def _template_offset(self, struct, path):
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
        return total

    def variants(self, struct):
        """Names of every struct called ``struct`` in the ISF (BTF may hold several; extra ones
        are emitted as ``name__<hash>``)."""
        table = self.context.symbol_space[self.table]
        prefix = struct + "__"
        return [struct] * self.has(struct) + sorted(
            n for n in table.types if n.startswith(prefix) and len(n) == len(prefix) + 8)


class KernelContext:
    """Reader, layout and symbols of the kernel module ``module_name`` of a plugin's context."""

    # Parsed BTF objects per Volatility context (a vol run has one; tests may have many).
    _btf_caches = weakref.WeakKeyDictionary()

    def __init__(self, context, module_name="kernel"):
        self.context = context
        self.module = context.modules[module_name]
        self.layer_name = self.module.layer_name
        self.layer = context.layers[self.layer_name]
        self.reader = LayerReader(context, self.layer_name)
        self.layout = IsfLayout(context, self.module.symbol_table_name)
        arch = self.layer.metadata.get("architecture", "Intel64")
        self.arch = "arm64" if arch == "AArch64" else "x86_64"
        self.page_size = int(getattr(self.layer, "page_size", 4096) or 4096)
        self._percpu = None
        try:
            self._btf_cache = self._btf_caches.setdefault(context, {})
        except TypeError:  # a context that cannot be weakly referenced: cache per instance
            self._btf_cache = {}

    @classmethod
    def from_plugin(cls, plugin, requirement="kernel"):
        return cls(plugin.context, plugin.config[requirement])

    # --- symbols -----------------------------------------------------------------------

    def symbol(self, name):
        """Runtime address of a kernel symbol, or None if the symbol table lacks it."""
        # The table's own get_symbol, not the module's: the symbol space's resolves the
        # symbol's type into templates first (1,400 of them for a `struct rq` variable).
        # Same address: module offset + the table's (masked) symbol address.
        try:
            table = self.context.symbol_space[self.module.symbol_table_name]
            return self.module.offset + table.get_symbol(name).address
        except (exceptions.SymbolError, exceptions.SymbolSpaceError, KeyError):
            return None

    def require_symbol(self, name, why=""):
        addr = self.symbol(name)
        if addr is None:
            hint = f" ({why})" if why else ""
            raise KtstrError(f"kernel symbol '{name}' is not in the symbol table{hint}; build the "
                             f"ISF from a System.map (or kallsyms with CONFIG_KALLSYMS_ALL)")
        return addr

    def require_type(self, struct):
        if not self.layout.has(struct):
            raise KtstrError(f"kernel type 'struct {struct}' is not in the symbol table (kernel "
                             f"without it, or an ISF not made from this kernel's BTF)")

    # --- per-CPU -----------------------------------------------------------------------

    def nr_cpu_ids(self):
        addr = self.symbol("nr_cpu_ids")
        if addr is not None:
            try:
                n = self.reader.u32(addr)
                if 0 < n <= MAX_CPUS:
                    return n
            except ReadError:
                pass
        return None

    def per_cpu_offsets(self):
        """``__per_cpu_offset[cpu]`` for each possible CPU (zeros past the last are dropped)."""
        if self._percpu is None:
            base = self.require_symbol("__per_cpu_offset", "per-CPU data")
            n = self.nr_cpu_ids() or 64
            raw = self.reader.try_read(base, 8 * n) or b""
            offs = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]
            # A zero offset after CPU 0 is the unused tail of the array, not a CPU.
            while len(offs) > 1 and offs[-1] == 0:
                offs.pop()
            self._percpu = offs
        return self._percpu

    # --- BTF from the dump ---------------------------------------------------------------

    def kernel_btf(self) -> Btf:
        """The kernel's own BTF, read from memory (``btf_vmlinux``)."""
        addr = self.require_symbol("btf_vmlinux", "the kernel's BTF object")
        try:
            kva = self.reader.ptr(addr)
        except ReadError as e:
            raise KtstrError(f"cannot read btf_vmlinux: {e}") from None
        if not kva:
            raise KtstrError("btf_vmlinux is NULL: the kernel has not loaded its BTF")
        return self.btf_at(kva)

    def btf_at(self, kva, _depth=0) -> Btf:
        """Parse the ``struct btf`` at ``kva`` (split on its base, recursively); cached.

        Raises KtstrError with the reason when unreadable or corrupt."""
        key = (self.layer_name, kva)
        hit = self._btf_cache.get(key)
        if hit is not None:
            if isinstance(hit, Exception):
                raise hit
            return hit
        try:
            obj = btfobj.read_btf_object(self.reader, self.layout, kva)
            if _depth > 4:
                raise btfobj.BtfObjectError("chain of base BTFs deeper than 4 (corrupt base_btf)")
            base = self.btf_at(obj.base_kva, _depth + 1) if obj.base_kva else None
            blob = btfobj.read_blob(self.reader, obj)
            # A base BTF of kernel size is parsed lazily: plugins read a few of its 125k types.
            btf = Btf.parse(blob, base=base, source=f"BTF #{obj.id} {obj.name or ''} at {kva:#x}".strip(),
                            lazy=base is None and len(blob) > LAZY_BTF_BYTES)
        except (ReadError, BtfError, LayoutError, btfobj.BtfObjectError) as e:
            err = KtstrError(f"BTF object at {kva:#x}: {e}")
            self._btf_cache[key] = err
            raise err from None
        self._btf_cache[key] = btf
        return btf
