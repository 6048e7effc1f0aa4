"""The kernel as walkers see it, built from a Volatility kernel module.

:class:`KernelContext` bundles a :class:`Reader` over the kernel's virtual layer, an
:class:`IsfLayout` over the kernel ISF, symbol addresses (KASLR applied), per-CPU offsets and
the BTF objects found in the dump (the kernel's own BTF and each program's split BTF).
Walkers take its parts, never Volatility objects.
"""

import logging
import weakref

from volatility3.framework import constants, exceptions, objects
from volatility3.framework.objects import templates

from .bpf import btfobj
from .bpf import maps as bpfmaps
from .bpf import progs as bpfprogs
from .btf import Btf, BtfError
from .core import Layout, LayoutError, ReadError, Reader
from .core.layout import Field
from .dumpfile.errors import ExcludedPage
from .errors import KtstrError
from .kds import DamageLog
from .walkers import arena as arenaw
from .walkers import sdtalloc

vollog = logging.getLogger(__name__)

MAX_CPUS = 8192
LAZY_BTF_BYTES = 1 << 20
# Architectures our plugins accept in ModuleRequirement (AArch64 comes from our arm64 layer).
# Every walker assumes 8-byte pointers: 32-bit kernels are not accepted.
ARCHITECTURES = ["Intel64", "AArch64"]


class LayerReader(Reader):
    """Reader over a Volatility translation layer; unmapped pages raise ReadError, pages a
    kdump's dump level left out raise ExcludedPage (a ReadError whose message says so)."""

    def __init__(self, context, layer_name):
        self._context = context
        self._layer = context.layers[layer_name]
        self.layer_name = layer_name

    def read(self, addr, size):
        if size < 0 or addr < 0 or addr + size > (1 << 64):
            raise ReadError(addr, size, "address out of range")
        try:
            return self._layer.read(addr, size, pad=False)
        except exceptions.InvalidAddressException as e:
            raise self._read_error(addr, size, e) from None

    def _read_error(self, addr, size, e):
        # The page-table walk checks the physical layer's is_valid and raises its own
        # exception; a kdump layer can still say why that page is missing.
        why = getattr(e, "ktstr_reason", None)
        level = getattr(e, "dump_level", False)
        if why is None and e.layer_name in self._context.layers:
            explain = getattr(self._context.layers[e.layer_name], "explain_invalid", None)
            err = explain(e.invalid_address) if explain is not None else None
            if err is not None:
                why, level = err.reason, getattr(err, "dump_level", False)
        if level is not False:
            return ExcludedPage(addr, size, level)
        return ReadError(addr, size, why or f"unmapped at {e.invalid_address:#x}")


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


class KernelContext:
    """The kernel as walkers see it: the one adapter between a Volatility kernel module and the
    Volatility-free code (Reader, Layout, plain values).

    Symbols are returned canonical (as the kernel's own pointers hold them); enums come from the
    ISF or, failing that, the kernel's BTF read from the dump; per-CPU offsets, BTF objects and
    the map/program registries are read once per context."""

    # Per Volatility context (a vol run has one; tests may have many): parsed BTF objects,
    # the registries, enums.
    _caches = weakref.WeakKeyDictionary()

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
        self._mask = getattr(self.layer, "address_mask", (1 << 64) - 1)
        try:
            cache = self._caches.setdefault(context, {})
        except TypeError:  # a context that cannot be weakly referenced: cache per instance
            cache = {}
        self._cache = cache.setdefault((module_name, self.layer_name), {})
        self._btf_cache = cache.setdefault("btf", {})

    @classmethod
    def from_plugin(cls, plugin, requirement="kernel"):
        return cls(plugin.context, plugin.config[requirement])

    def _memo(self, key, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    # --- symbols -----------------------------------------------------------------------

    def canonical(self, addr):
        """``addr`` as the kernel's pointers hold it: Volatility may cut symbol addresses to the
        layer's address width (48 or 57 bits), which breaks per-CPU sums and comparisons with
        pointers read from memory."""
        addr &= (1 << 64) - 1
        mask = self._mask
        if mask < (1 << 64) - 1 and addr & ((mask + 1) >> 1):
            addr |= ((1 << 64) - 1) & ~mask
        # The symbol table itself may cut to 48 bits even under a wider layer.
        if addr >> 48 == 0 and addr & (1 << 47):
            addr |= 0xFFFF << 48
        return addr

    def symbol(self, name):
        """Runtime address of a kernel symbol (canonical), or None if the table lacks it."""
        # The table's own get_symbol, not the module's: the symbol space's resolves the
        # symbol's type into templates first (1,400 of them for a `struct rq` variable).
        # Same address: module offset + the table's (masked) symbol address.
        try:
            table = self.context.symbol_space[self.module.symbol_table_name]
            return self.canonical(self.module.offset + table.get_symbol(name).address)
        except (exceptions.SymbolError, exceptions.SymbolSpaceError, KeyError):
            return None

    def first_symbol(self, *names):
        """Address of the first of ``names`` the kernel has (symbols renamed across versions)."""
        return next((a for a in map(self.symbol, names) if a is not None), None)

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

    def sorted_symbols(self):
        """Sorted (canonical runtime address, name) of every kernel symbol, built once, from the
        table's ISF dictionary (asking the table symbol by symbol costs seconds on 130k)."""

        def build():
            isf = isf_json(self.context, self.module.symbol_table_name) or {}
            pairs = []
            shift = self.module.offset     # a config lookup per access: read it once
            for name, sym in (isf.get("symbols") or {}).items():
                addr = sym.get("address") if isinstance(sym, dict) else None
                if addr:
                    pairs.append((self.canonical(addr + shift), name))
            pairs.sort()
            return pairs

        return self._memo("sorted_symbols", build)

    # --- enums -------------------------------------------------------------------------

    def enum(self, name):
        """Constants of ``enum name`` as (name, value) pairs in declaration order, or None.

        From the ISF; kernels whose ISF lacks the enum (types-only tables, older generators)
        fall back to the kernel's own BTF read from the dump."""

        def lookup():
            try:
                return list(self.module.get_enumeration(name).choices.items())
            except Exception:  # not in the ISF (SymbolError and friends)
                pass
            try:
                types = self.kernel_btf().find(name)
                if types and types[0].values:
                    return list(types[0].values)
            except KtstrError as e:
                vollog.debug("enum %s: %s", name, e)
            return None

        return self._memo(("enum", name), lookup)

    def enum_constants(self, name):
        """{enumerator: value} of a kernel enum, {} when absent."""
        return dict(self.enum(name) or ())

    def enumerator(self, name):
        """Value of the enum constant ``name`` of any kernel enum (anonymous ones included, e.g.
        ``TRACE_EVENT_FL_KPROBE``), or None. From the ISF, else the kernel's BTF."""

        def build():
            out = {}
            isf = isf_json(self.context, self.module.symbol_table_name) or {}
            for enum in (isf.get("enums") or {}).values():
                for const, value in ((enum or {}).get("constants") or {}).items():
                    out.setdefault(const, value)
            if not out:
                try:
                    for t in self.kernel_btf().all_types():
                        for const, value in t.values or ():
                            out.setdefault(const, value)
                except KtstrError as e:
                    vollog.debug("enumerators: %s", e)
            return out

        return self._memo("enumerators", build).get(name)

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

        def read():
            base = self.require_symbol("__per_cpu_offset", "per-CPU data")
            n = self.nr_cpu_ids() or 64
            raw = self.reader.try_read(base, 8 * n) or b""
            offs = [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]
            # A zero offset after CPU 0 is the unused tail of the array, not a CPU.
            while len(offs) > 1 and offs[-1] == 0:
                offs.pop()
            return offs

        return self._memo("percpu", read)

    # --- time ----------------------------------------------------------------------------

    def boot_epoch_ns(self):
        """Wall-clock ns of boot from the core timekeeper (``tk_core`` or, since 6.17,
        ``timekeeper_data[0]``), or None."""
        lay = self.layout
        if not (lay.has("timekeeper", "offs_real") and lay.has("timekeeper", "offs_boot")):
            return None
        for sym in ("timekeeper_data", "tk_core"):
            addr = self.symbol(sym)
            if addr is not None and lay.has("tk_data", "timekeeper"):
                return bpfprogs.boot_epoch_ns(self.reader, lay, addr + lay.offset("tk_data", "timekeeper"))
        return None

    # --- BPF registries ---------------------------------------------------------------------

    def map_type_names(self):
        """Map type numbers to bpftool names, from the kernel's enum (uapi numbering otherwise)."""
        return self._memo("map_types", lambda: bpfmaps.type_names_from_enum(
            self.enum_constants("bpf_map_type"), "BPF_MAP_TYPE_", bpfmaps.UAPI_MAP_TYPES))

    def prog_type_names(self):
        return self._memo("prog_types", lambda: bpfprogs.prog_type_names(
            self.enum_constants("bpf_prog_type")))

    def maps(self, damage=None):
        """All BPF maps of the dump (BpfMap records, id order); registry damage into ``damage``."""
        self.require_type("bpf_map")
        addr = self.require_symbol("map_idr", "the BPF map registry")
        return self._registry("map_idr", addr, lambda log: list(bpfmaps.iter_maps(
            self.reader, self.layout, addr, self.map_type_names(), damage=log)), damage)

    def progs(self, damage=None):
        """All BPF programs of the dump (BpfProg records, id order)."""
        self.require_type("bpf_prog")
        addr = self.require_symbol("prog_idr", "the BPF program registry")
        return self._registry("prog_idr", addr, lambda log: list(bpfprogs.iter_progs(
            self.reader, self.layout, addr, self.prog_type_names(), damage=log)), damage)

    def links(self, damage=None):
        """All BPF links of the dump (``link_idr``; BpfLink records, id order, targets decoded)."""
        from .bpf import links as bpflinks

        self.require_type("bpf_link")
        addr = self.require_symbol("link_idr", "the BPF link registry")
        return self._registry("link_idr", addr, lambda log: list(bpflinks.iter_links(
            self.bpf_kernel(), addr, damage=log)), damage)

    def btf_objects(self, damage=None):
        """{id: kernel address} of every ``struct btf`` in ``btf_idr`` (kernel, modules, programs)."""
        addr = self.symbol("btf_idr")
        if addr is None or not self.layout.has("btf"):
            return {}
        from .kds import idr_entries

        return self._registry("btf_idr", addr, lambda log: dict(idr_entries(
            self.reader, self.layout, addr, damage=log)), damage)

    def btf_by_id(self, btf_id):
        """The parsed BTF object with id ``btf_id`` (``btf_idr``), or None."""
        kva = self.btf_objects().get(btf_id)
        if kva is None:
            return None
        try:
            return self.btf_at(kva)
        except KtstrError:
            return None

    def btf_by_name(self, name):
        """The parsed BTF object called ``name`` (a module's: ``struct btf.name``), or None."""
        if not self.layout.has("btf", "name"):
            return None
        off = self.layout.offset("btf", "name")
        for kva in self.btf_objects().values():
            try:
                if self.reader.read(kva + off, len(name) + 1) == name.encode() + b"\0":
                    return self.btf_at(kva)
            except (ReadError, KtstrError):
                continue
        return None

    def bpf_kernel(self):
        """The plain-value view of this kernel the BPF forensics walkers take (``BpfKernel``):
        symbols, enums, BTF, and the map/program registries (read once)."""

        def build():
            from .bpf.facts import BpfKernel

            try:
                kbtf_id = self.btf_id_at(self.reader.ptr(self.require_symbol("btf_vmlinux")))
            except (KtstrError, ReadError):
                kbtf_id = 1
            try:
                maps = self.maps()
            except KtstrError:
                maps = []
            try:
                progs = self.progs()
            except KtstrError:
                progs = []
            return BpfKernel(
                reader=self.reader, layout=self.layout, symbol=self.symbol,
                sorted_symbols=self.sorted_symbols, enum=self.enum, enumerator=self.enumerator,
                kernel_btf=self.kernel_btf, kernel_btf_id=kbtf_id, btf_by_id=self.btf_by_id,
                btf_by_name=self.btf_by_name,
                progs=progs, maps=maps, prog_type_names=self.prog_type_names(),
                map_type_names=self.map_type_names())

        return self._memo("bpf_kernel", build)

    def _registry(self, symbol, addr, walk, damage):
        """``walk(log)`` over the IDR at ``symbol``, once per context; its damage is copied into
        ``damage`` on every call."""
        if symbol not in self._cache:
            log = DamageLog()
            try:
                self._cache[symbol] = walk(log)
            except ReadError as e:
                # The registry head lives in the kernel image: a truncated or damaged dump.
                raise KtstrError(f"kernel symbol '{symbol}' at {addr:#x} is unreadable ({e.reason}): "
                                 f"the dump is truncated or damaged there") from None
            self._cache[symbol + ":damage"] = log
        if damage is not None:
            damage.extend(self._cache[symbol + ":damage"])
        return self._cache[symbol]

    # --- arenas and sched_ext allocators ----------------------------------------------------

    def arenas(self):
        """ArenaInfo of every BPF arena map (read once)."""
        from .views import inventory  # every map reachable, not only map_idr's

        return self._memo("arenas", lambda: arenaw.arena_infos(
            self.reader, self.layout, inventory.maps(self), self.page_size))

    def prog_arenas(self):
        """(programs, {prog kva: prog->aux->arena}) for arena attribution; ([], {}) when the
        program registry cannot be read (attribution then falls back to pointer ranges)."""

        def read():
            from .views import inventory

            try:
                progs = inventory.progs(self)
            except (KtstrError, LayoutError):
                return [], {}
            return progs, {p.kva: arenaw.prog_arena_kva(self.reader, self.layout, p.aux_kva)
                           for p in progs}

        return self._memo("prog_arenas", read)

    def sdt_programs(self, type_name=None, walk=True, **kwargs):
        """The loaded BPF objects that declare ``struct scx_allocator`` variables, with their
        arenas and (``walk``) live sdt_alloc slots (walkers.sdtalloc.find_programs); cached per
        set of arguments. Structs the kernel also has are not payload candidates (a scheduler's
        BTF carries vmlinux.h's types)."""
        key = ("sdt", type_name, walk, tuple(sorted(kwargs.items())))

        def find():
            from .views import inventory

            progs, prog_arenas = self.prog_arenas()
            return sdtalloc.find_programs(
                self.reader, self.layout, inventory.maps(self), self.btf_at, self.arenas(), progs,
                prog_arenas=prog_arenas, is_foreign=self.layout.has, type_name=type_name,
                walk=walk, **kwargs)

        return self._memo(key, find)

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

    def btf_id_at(self, kva):
        """The ``id`` of the ``struct btf`` at ``kva`` (0 for NULL, -1 when unreadable)."""
        if not kva:
            return 0
        try:
            return self.reader.u32(kva + self.layout.offset("btf", "id"))
        except ReadError:
            return -1

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
