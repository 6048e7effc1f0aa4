"""The kernel of a dump as every view and walker sees it: :class:`Kernel` (no Volatility import).

A :class:`Kernel` is a Reader and a Layout plus what the symbol table, the enums and the dump
itself say: symbol addresses (relocated by the KASLR slide, per-CPU ones as the kernel sees
them), the nearest symbol of an address, enum constants (a table's, else the kernel's own BTF),
per-CPU offsets and addresses, BTF objects read from memory, and the BPF registries (maps,
programs, links, BTF objects) with the damage met reading them. Results are kept in a public
memo (:meth:`Kernel.memo`) that features use for their own caches.

``kernel.KernelContext`` builds one from a Volatility kernel module; tests build one from a
synthetic kernel (memory, layout, a dict of symbols). It sits above ``bpf/`` (it enumerates BPF
objects) and below ``views/``; ``core/`` stays the lowest layer.
"""

import logging
from typing import Any, Callable, Dict, Hashable, Iterable, List, Optional, Tuple, Union

from .bpf import btfobj
from .bpf import maps as bpfmaps
from .bpf import progs as bpfprogs
from .btf import Btf, BtfError
from .core import Layout, LayoutError, ReadError, Reader, read_int
from .core.percpu import percpu_sum
from .core.symbols import SymbolIndex
from .errors import KtstrError
from .kds import DamageLog

vollog = logging.getLogger(__name__)

MAX_CPUS = 8192
LAZY_BTF_BYTES = 1 << 20
MASK64 = (1 << 64) - 1


class EnumSource:
    """Where a kernel's enums come from besides its BTF (a symbol table); the default has none."""

    def enum(self, name: str) -> Optional[List[Tuple[str, int]]]:
        return None

    def enumerators(self) -> Dict[str, int]:
        return {}


class BtfEnums(EnumSource):
    """Enums of a BTF (a kernel known by its BTF alone, or a synthetic one)."""

    def __init__(self, btf: Btf) -> None:
        self.btf = btf

    def enum(self, name: str) -> Optional[List[Tuple[str, int]]]:
        found = [t for t in self.btf.find(name) if t.values]
        return list(found[0].values) if found else None

    def enumerators(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for t in self.btf.all_types():
            for const, value in t.values or ():
                out.setdefault(const, value)
        return out


class Kernel:
    """The kernel of a dump: memory, types, symbols, enums, per-CPU data, BTF, BPF registries.

    ``symbols``: link-time addresses by name (a dict, or anything with ``get`` and ``items``);
    ``slide``: the KASLR displacement added to them. Per-CPU symbols of a zero-based per-CPU
    section (x86-64 before 6.15) are offsets and are not slid (:meth:`percpu_zero_based`).
    ``btf``: the kernel's BTF when known up front (else read from ``btf_vmlinux``);
    ``memo``/``btf_cache``: dicts to share results with other instances over the same dump."""

    def __init__(self, reader: Reader, layout: Layout, symbols: Any = None, *, slide: int = 0,
                 arch: str = "x86_64", page_size: int = 4096, address_mask: int = MASK64,
                 enums: Optional[EnumSource] = None, btf: Optional[Btf] = None,
                 memo: Optional[Dict[Hashable, Any]] = None,
                 btf_cache: Optional[Dict[int, Any]] = None) -> None:
        self.reader = reader
        self.layout = layout
        self.symbol_table = symbols if symbols is not None else {}
        self.slide = slide
        self.arch = arch
        self.page_size = page_size
        self.address_mask = address_mask
        self.enum_source = enums or EnumSource()
        self._btf = btf
        self.cache: Dict[Hashable, Any] = memo if memo is not None else {}
        self.btf_cache: Dict[int, Any] = btf_cache if btf_cache is not None else {}

    def with_reader(self, reader: Reader) -> "Kernel":
        """This kernel seen through another reader (memory patched or hidden): same symbols,
        enums and parsed BTF, its own memo."""
        return Kernel(reader, self.layout, self.symbol_table, slide=self.slide, arch=self.arch,
                      page_size=self.page_size, address_mask=self.address_mask,
                      enums=self.enum_source, btf=self._btf, btf_cache=self.btf_cache)

    def mapping(self, offset: int, length: int) -> Iterable[Tuple[int, int, int, int, str]]:
        """The mapped pieces of [offset, offset+length) in the kernel's address space, as
        Volatility's ``TranslationLayer.mapping(..., ignore_errors=True)`` yields them
        (offset, sublength, mapped offset, mapped length, layer name). A kernel built without
        page tables (synthetic memory) maps nothing; KernelContext answers from its layer."""
        return ()

    def cpu_states(self) -> list:
        """Each CPU's registers the dump file carries (``dumpfile.notes.CpuState``: ELF cores'
        and kdump files' NT_PRSTATUS notes); [] for raw dumps and synthetic kernels.
        KernelContext answers from its layers' files."""
        return []

    # --- the memo ------------------------------------------------------------------------

    def memo(self, key: Hashable, fn: Callable[[], Any]) -> Any:
        """``fn()``, computed once per kernel (and per dump for a KernelContext). Features key
        their caches with a tuple starting with their own name."""
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]


    # --- symbols -------------------------------------------------------------------------

    def canonical(self, addr: int) -> int:
        """``addr`` as the kernel's pointers hold it: a table may cut addresses to the address
        width (48 or 57 bits), which breaks per-CPU sums and comparisons with pointers."""
        addr &= MASK64
        mask = self.address_mask
        if mask < MASK64 and addr & ((mask + 1) >> 1):
            addr |= MASK64 & ~mask
        if addr >> 48 == 0 and addr & (1 << 47):
            addr |= 0xFFFF << 48
        return addr

    def _percpu_end(self) -> Optional[int]:
        """Link-time end of a zero-based per-CPU section, or None when per-CPU symbols are
        ordinary kernel addresses."""

        def find():
            table = self.symbol_table
            start = table.get("__per_cpu_start")
            end = table.get("__per_cpu_end")
            text = table.get("_text") or table.get("_stext")
            if start == 0 and end:
                return end
            if start is None and end and text and end < text:
                return end
            return None

        return self.memo("percpu_end", find)

    def percpu_zero_based(self) -> bool:
        """The per-CPU section is linked at 0 (x86-64 before 6.15: ``__per_cpu_start`` is 0 and
        per-CPU symbols lie below the kernel text): its symbols are offsets, never relocated."""
        return self._percpu_end() is not None

    def relocate(self, raw: int) -> int:
        """Runtime address of a symbol whose link-time address is ``raw``."""
        end = self._percpu_end()
        if end is not None and 0 <= raw < end:
            return raw
        return self.canonical(raw + self.slide)

    def symbol(self, name: str) -> Optional[int]:
        """Runtime address of a kernel symbol (canonical), or None if the table lacks it."""
        raw = self.symbol_table.get(name)
        return None if raw is None else self.relocate(raw)

    def first_symbol(self, *names: str) -> Optional[int]:
        """Address of the first of ``names`` the kernel has (symbols renamed across versions)."""
        return next((a for a in map(self.symbol, names) if a is not None), None)

    def require_symbol(self, name: str, why: str = "") -> int:
        addr = self.symbol(name)
        if addr is None:
            hint = f" ({why})" if why else ""
            raise KtstrError(f"kernel symbol '{name}' is not in the symbol table{hint}; build the "
                             f"ISF from a System.map (or kallsyms with CONFIG_KALLSYMS_ALL)")
        return addr

    def require_type(self, struct: str) -> None:
        if not self.layout.has(struct):
            raise KtstrError(f"kernel type 'struct {struct}' is not in the symbol table (kernel "
                             f"without it, or an ISF not made from this kernel's BTF)")

    def symbols(self, *names: str) -> Dict[int, str]:
        """{address: name} of those of ``names`` the kernel has."""
        return {a: n for n, a in ((n, self.symbol(n)) for n in names) if a}

    def _symbol_pairs(self) -> List[Tuple[int, str]]:
        """Sorted (runtime address, name) of every symbol: :meth:`relocate` inlined (a method
        call per symbol doubles the cost on 130k)."""
        end = self._percpu_end() or 0
        slide, mask = self.slide, self.address_mask
        top = (mask + 1) >> 1 if mask < MASK64 else 0
        high = MASK64 & ~mask
        pairs = []
        for name, raw in self.symbol_table.items():
            if not raw:
                continue
            if raw < end:
                pairs.append((raw, name))
                continue
            addr = (raw + slide) & MASK64
            if addr & top:
                addr |= high
            if addr >> 48 == 0 and addr & (1 << 47):
                addr |= 0xFFFF << 48
            pairs.append((addr, name))
        pairs.sort()
        return pairs

    def sorted_symbols(self) -> List[Tuple[int, str]]:
        """Sorted (canonical runtime address, name) of every kernel symbol, built once."""
        return self.symbol_index().pairs()

    def symbol_index(self) -> SymbolIndex:
        return self.memo("symbol_index", lambda: SymbolIndex(self._symbol_pairs))

    def symbol_at(self, addr: int) -> Optional[str]:
        """Name of the kernel symbol exactly at ``addr`` (None when there is none)."""
        return self.symbol_index().at(addr)

    def symbol_near(self, addr: int) -> str:
        """``sym`` or ``sym+0xoff`` for a code address ('' when nothing is close)."""
        return self.symbol_index().near(addr)

    def symbol_size(self, name: str) -> int:
        """Bytes from symbol ``name`` to the next symbol (the size of a static array whose
        length the kernel types do not record); 0 when unknown."""
        addr = self.symbol(name)
        if not addr:
            return 0
        nxt = self.symbol_index().next_after(addr)
        return nxt - addr if nxt is not None else 0

    # --- enums ---------------------------------------------------------------------------

    def enum(self, name: str) -> Optional[List[Tuple[str, int]]]:
        """Constants of ``enum name`` as (name, value) pairs in declaration order, or None.
        From the symbol table; failing that, from the kernel's own BTF."""

        def lookup():
            found = self.enum_source.enum(name)
            if found is not None:
                return found
            try:
                types = [t for t in self.kernel_btf().find(name) if t.values]
                if types:
                    return list(types[0].values)
            except KtstrError as e:
                vollog.debug("enum %s: %s", name, e)
            return None

        return self.memo(("enum", name), lookup)

    def enum_constants(self, name: str) -> Dict[str, int]:
        """{enumerator: value} of a kernel enum, {} when absent."""
        return self.memo(("enum_constants", name), lambda: dict(self.enum(name) or ()))

    constants = enum_constants

    def names(self, enum_name: str, prefix: str) -> Dict[int, str]:
        """{value: lower-case name without ``prefix``} (bpftool's spelling of uapi enums)."""
        return {v: k[len(prefix):].lower() for k, v in self.enum_constants(enum_name).items()
                if k.startswith(prefix) and not k.startswith("__")}

    def attach_type_names(self) -> Dict[int, str]:
        return self.names("bpf_attach_type", "BPF_")

    def link_type_names(self) -> Dict[int, str]:
        return self.names("bpf_link_type", "BPF_LINK_TYPE_")

    def enumerator(self, name: str) -> Optional[int]:
        """Value of the enum constant ``name`` of any kernel enum (anonymous ones included, e.g.
        ``TRACE_EVENT_FL_KPROBE``), or None."""

        def build():
            out = dict(self.enum_source.enumerators())
            if not out:
                try:
                    for t in self.kernel_btf().all_types():
                        for const, value in t.values or ():
                            out.setdefault(const, value)
                except KtstrError as e:
                    vollog.debug("enumerators: %s", e)
            return out

        return self.memo("enumerators", build).get(name)

    # --- per-CPU -------------------------------------------------------------------------

    def nr_cpu_ids(self) -> Optional[int]:
        addr = self.symbol("nr_cpu_ids")
        if addr is not None:
            try:
                n = self.reader.u32(addr)
                if 0 < n <= MAX_CPUS:
                    return n
            except ReadError:
                pass
        return None

    def per_cpu_offsets(self) -> List[int]:
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

        return self.memo("percpu", read)

    def percpu_address(self, what: Union[str, int], cpu: int) -> int:
        """Address of CPU ``cpu``'s copy of per-CPU data: ``what`` is a per-CPU symbol's name
        (``runqueues``) or a ``__percpu`` pointer read from memory. Raises KtstrError when the
        symbol or the CPU is unknown."""
        base = self.require_symbol(what, "per-CPU data") if isinstance(what, str) else what
        offsets = self.per_cpu_offsets()
        if not 0 <= cpu < len(offsets):
            raise KtstrError(f"cpu {cpu} has no per-CPU offset ({len(offsets)} CPUs)")
        return percpu_sum(base, offsets[cpu])

    def percpu_addresses(self, what: Union[str, int]) -> List[int]:
        """:meth:`percpu_address` of every possible CPU, in CPU order."""
        return [self.percpu_address(what, cpu) for cpu in range(len(self.per_cpu_offsets()))]

    # --- time ----------------------------------------------------------------------------

    def boot_epoch_ns(self) -> Optional[int]:
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

    # --- BPF registries ------------------------------------------------------------------

    def map_type_names(self) -> Dict[int, str]:
        """Map type numbers to bpftool names, from the kernel's enum (uapi numbering otherwise)."""
        return self.memo("map_types", lambda: bpfmaps.type_names_from_enum(
            self.enum_constants("bpf_map_type"), "BPF_MAP_TYPE_", bpfmaps.UAPI_MAP_TYPES))

    def prog_type_names(self) -> Dict[int, str]:
        return self.memo("prog_types", lambda: bpfprogs.prog_type_names(
            self.enum_constants("bpf_prog_type")))

    def maps(self, damage: Optional[DamageLog] = None) -> list:
        """All BPF maps of the dump (BpfMap records, id order); registry damage into ``damage``."""
        self.require_type("bpf_map")
        addr = self.require_symbol("map_idr", "the BPF map registry")
        return self._registry("map_idr", addr, lambda log: list(bpfmaps.iter_maps(
            self.reader, self.layout, addr, self.map_type_names(), damage=log)), damage)

    def progs(self, damage: Optional[DamageLog] = None) -> list:
        """All BPF programs of the dump (BpfProg records, id order)."""
        self.require_type("bpf_prog")
        addr = self.require_symbol("prog_idr", "the BPF program registry")
        return self._registry("prog_idr", addr, lambda log: list(bpfprogs.iter_progs(
            self.reader, self.layout, addr, self.prog_type_names(), damage=log)), damage)

    def links(self, damage: Optional[DamageLog] = None) -> list:
        """All BPF links of the dump (``link_idr``; BpfLink records, id order, targets decoded)."""
        from .bpf import links as bpflinks

        self.require_type("bpf_link")
        addr = self.require_symbol("link_idr", "the BPF link registry")
        return self._registry("link_idr", addr, lambda log: list(bpflinks.iter_links(
            self.bpf_kernel(), addr, damage=log)), damage)

    def btf_objects(self, damage: Optional[DamageLog] = None) -> Dict[int, int]:
        """{id: kernel address} of every ``struct btf`` in ``btf_idr`` (kernel, modules, programs)."""
        addr = self.symbol("btf_idr")
        if addr is None or not self.layout.has("btf"):
            return {}
        from .kds import idr_entries

        return self._registry("btf_idr", addr, lambda log: dict(idr_entries(
            self.reader, self.layout, addr, damage=log)), damage)

    def _registry(self, symbol: str, addr: int, walk: Callable[[DamageLog], Any],
                  damage: Optional[DamageLog]) -> Any:
        """``walk(log)`` over the IDR at ``symbol``, once per kernel; its damage is copied into
        ``damage`` on every call."""
        if symbol not in self.cache:
            log = DamageLog()
            try:
                self.cache[symbol] = walk(log)
            except ReadError as e:
                # The registry head lives in the kernel image: a truncated or damaged dump.
                raise KtstrError(f"kernel symbol '{symbol}' at {addr:#x} is unreadable ({e.reason}): "
                                 f"the dump is truncated or damaged there") from None
            self.cache[symbol + ":damage"] = log
        if damage is not None:
            damage.extend(self.cache[symbol + ":damage"])
        return self.cache[symbol]

    def bpf_kernel(self):
        """What the BPF forensics walkers take (``bpf.facts.BpfKernel``): this kernel with its
        program and map registries read (empty when missing)."""
        from .bpf.facts import BpfKernel

        return self.memo("bpf_kernel", lambda: BpfKernel.of(self))

    def kernel_btf_id(self) -> int:
        """The id of the kernel's own BTF in ``btf_idr`` (1 when unknown)."""

        def find():
            try:
                return self.btf_id_at(self.reader.ptr(self.require_symbol("btf_vmlinux")))
            except (KtstrError, ReadError):
                return 1

        return self.memo("kernel_btf_id", find)

    # --- features over the registries (their code lives with the feature) ------------------

    def arenas(self) -> list:
        """ArenaInfo of every BPF arena map (read once)."""
        from .walkers import arena

        return arena.kernel_arenas(self)

    def prog_arenas(self) -> Tuple[list, Dict[int, int]]:
        """(programs, {prog kva: prog->aux->arena}) for arena attribution."""
        from .walkers import arena

        return arena.kernel_prog_arenas(self)

    # --- BTF from the dump ---------------------------------------------------------------

    def kernel_btf(self) -> Btf:
        """The kernel's own BTF, read from memory (``btf_vmlinux``)."""
        if self._btf is not None:
            return self._btf
        addr = self.require_symbol("btf_vmlinux", "the kernel's BTF object")
        try:
            kva = self.reader.ptr(addr)
        except ReadError as e:
            raise KtstrError(f"cannot read btf_vmlinux: {e}") from None
        if not kva:
            raise KtstrError("btf_vmlinux is NULL: the kernel has not loaded its BTF")
        return self.btf_at(kva)

    def btf_id_at(self, kva: int) -> int:
        """The ``id`` of the ``struct btf`` at ``kva`` (0 for NULL, -1 when unreadable)."""
        if not kva:
            return 0
        try:
            return read_int(self.reader, self.layout, "btf", kva, "id")
        except (ReadError, LayoutError):
            return -1

    def btf_at(self, kva: int, _depth: int = 0) -> Btf:
        """Parse the ``struct btf`` at ``kva`` (split on its base, recursively); cached.

        Raises KtstrError with the reason when unreadable or corrupt."""
        hit = self.btf_cache.get(kva)
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
            self.btf_cache[kva] = err
            raise err from None
        self.btf_cache[kva] = btf
        return btf

    def btf_by_id(self, btf_id: int) -> Optional[Btf]:
        """The parsed BTF object with id ``btf_id`` (``btf_idr``), or None."""
        kva = self.btf_objects().get(btf_id)
        if kva is None:
            return None
        try:
            return self.btf_at(kva)
        except KtstrError:
            return None

    def btf_by_name(self, name: str) -> Optional[Btf]:
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

    def btf_type_name(self, obj_id: int, type_id: int) -> str:
        """Name of BTF type ``type_id`` of BTF object ``obj_id`` ('' when unknown)."""
        try:
            btf = self.kernel_btf() if obj_id == self.kernel_btf_id() else self.btf_by_id(obj_id)
            t = btf.type(type_id) if btf is not None else None
            return t.name if t is not None else ""
        except Exception:   # KtstrError (unreadable BTF), KeyError (id out of range)
            return ""

    def module_layout(self, name: str) -> Optional[Layout]:
        """A Layout over module ``name``'s BTF (split on the kernel's), for types a module
        defines (``cls_bpf_prog``); None when the module or its BTF is not in the dump."""

        def build():
            try:
                btf = self.btf_by_name(name)
                if btf is not None:
                    from .core import BtfLayout

                    return BtfLayout(btf)
            except Exception:   # KtstrError: unreadable module BTF
                pass
            return None

        return self.memo(("module_layout", name), build)

