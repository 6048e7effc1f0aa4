"""The kernel of a Volatility run as a :class:`kernel_model.Kernel`.

:class:`KernelContext` builds the Volatility-free kernel type from a Volatility kernel module:
a :class:`LayerReader` over the kernel's virtual layer, an :class:`IsfLayout` over its ISF, the
table's symbols (link-time addresses; the module offset is the KASLR slide) and enums. Results
are shared by every KernelContext of one Volatility context (a vol run has one).
"""

import logging
import weakref
from typing import Any, Dict, List, Optional, Tuple

from volatility3.framework import exceptions

from .core import ReadError, Reader
from .dumpfile.errors import ExcludedPage
from .isflayout import IsfLayout, isf_json  # noqa: F401  (IsfLayout, isf_json: public here too)
from .kernel_model import LAZY_BTF_BYTES, MAX_CPUS, EnumSource, Kernel  # noqa: F401

vollog = logging.getLogger(__name__)

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


class IsfSymbols:
    """Link-time symbol addresses of a Volatility symbol table (``get``/``items``, as a dict)."""

    def __init__(self, context, table_name: str) -> None:
        self.context = context
        self.table_name = table_name

    def get(self, name: str, default: Optional[int] = None) -> Optional[int]:
        # The table's own get_symbol, not the module's: the symbol space's resolves the
        # symbol's type into templates first (1,400 of them for a `struct rq` variable).
        try:
            return self.context.symbol_space[self.table_name].get_symbol(name).address
        except (exceptions.SymbolError, exceptions.SymbolSpaceError, KeyError):
            return default

    def items(self) -> List[Tuple[str, Optional[int]]]:
        """Every symbol, from the table's ISF dictionary (asking the table symbol by symbol
        costs seconds on 130k)."""
        isf = isf_json(self.context, self.table_name) or {}
        return [(name, sym.get("address")) for name, sym in (isf.get("symbols") or {}).items()
                if isinstance(sym, dict)]


class IsfEnums(EnumSource):
    """Enums of a Volatility kernel module's symbol table."""

    def __init__(self, module, context) -> None:
        self.module = module
        self.context = context

    def enum(self, name: str) -> Optional[List[Tuple[str, int]]]:
        try:
            return list(self.module.get_enumeration(name).choices.items())
        except Exception:  # not in the ISF (SymbolError and friends)
            return None

    def enumerators(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        isf = isf_json(self.context, self.module.symbol_table_name) or {}
        for enum in (isf.get("enums") or {}).values():
            for const, value in ((enum or {}).get("constants") or {}).items():
                out.setdefault(const, value)
        return out


class KernelContext(Kernel):
    """A :class:`Kernel` built from a Volatility kernel module (what every plugin runs on).

    Symbols are returned canonical (as the kernel's own pointers hold them); enums come from the
    ISF or, failing that, the kernel's BTF read from the dump; the memo and parsed BTF objects
    are shared per Volatility context."""

    # Per Volatility context (a vol run has one; tests may have many): memos, parsed BTF.
    _caches: "weakref.WeakKeyDictionary[Any, Dict[Any, Any]]" = weakref.WeakKeyDictionary()

    def __init__(self, context, module_name: str = "kernel") -> None:
        self.context = context
        self.module = context.modules[module_name]
        self.layer_name = self.module.layer_name
        self.layer = context.layers[self.layer_name]
        arch = self.layer.metadata.get("architecture", "Intel64")
        try:
            cache = self._caches.setdefault(context, {})
        except TypeError:  # a context that cannot be weakly referenced: cache per instance
            cache = {}
        super().__init__(
            LayerReader(context, self.layer_name), IsfLayout(context, self.module.symbol_table_name),
            IsfSymbols(context, self.module.symbol_table_name), slide=self.module.offset,
            arch="arm64" if arch == "AArch64" else "x86_64",
            page_size=int(getattr(self.layer, "page_size", 4096) or 4096),
            address_mask=getattr(self.layer, "address_mask", (1 << 64) - 1),
            enums=IsfEnums(self.module, context),
            memo=cache.setdefault((module_name, self.layer_name), {}),
            btf_cache=cache.setdefault(("btf", self.layer_name), {}))

    def mapping(self, offset, length):
        return self.layer.mapping(offset, length, ignore_errors=True)

    def cpu_states(self) -> list:
        """Each CPU's registers from the notes of the file under the kernel's layer (kdump
        sub-header, ELF core PT_NOTEs); [] for raw dumps and LiME. Read once."""

        def read():
            from .dumpfile.notes import cpu_states
            from .layers.fileinfo import layer_notes

            names = [self.layer.config.get("memory_layer")] + list(getattr(self.layer, "dependencies", []))
            for name in names:
                if name and name in self.context.layers:
                    states = cpu_states(layer_notes(self.context, name))
                    if states:
                        return states
            return []

        return self.memo("cpu_states", read)

    @classmethod
    def from_plugin(cls, plugin, requirement: str = "kernel") -> "KernelContext":
        return cls(plugin.context, plugin.config[requirement])

    def sdt_programs(self, type_name=None, walk=True, **kwargs):
        """The loaded BPF objects declaring ``struct scx_allocator`` variables (the sdtalloc
        view's cache, ``views.sdtalloc.sdt_programs``)."""
        from .views import sdtalloc

        return sdtalloc.sdt_programs(self, type_name=type_name, walk=walk, **kwargs)
