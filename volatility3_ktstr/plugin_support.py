"""Pieces every linux.ktstr plugin shares: the kernel requirement, map selection, and the
views -> TreeGrid adapter.

Not a plugin base class on purpose: Volatility lists every PluginInterface subclass as a plugin.
The reusable kernel API is :class:`KtstrKernel` (versioned, for other plugins to require).
"""

import importlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

from volatility3.framework import interfaces, renderers
from volatility3.framework.configuration import requirements
from volatility3.framework.renderers import format_hints

from .bpf.maps import BpfMap
from .bpf.progs import BpfProg
from .errors import KtstrError, guarded
from .kds import DamageLog
from .kernel import ARCHITECTURES, KernelContext
from .views import HEX, NA, UNREADABLE


def kernel_requirement() -> requirements.ModuleRequirement:
    return requirements.ModuleRequirement(name="kernel", description="Linux kernel",
                                          architectures=ARCHITECTURES)


# Views other plugins can read through KtstrKernel.rows: view name -> module (rows(kernel, ...)).
VIEWS: Dict[str, str] = {name: f"volatility3_ktstr.views.{name}" for name in (
    "arena", "bpffds", "bpfhidden", "bpfhooks", "bpfpins", "links", "localstorage", "mapdump",
    "maps", "progs", "scxstate", "scxtasks", "sdtalloc")}


class KtstrKernel(interfaces.configuration.VersionableInterface):
    """The project's API for other Volatility plugins: require it with
    ``requirements.VersionRequirement(name="ktstr", component=KtstrKernel, version=(1, 1, 0))``
    and call its class methods (docs/API.md).

    Semantic versioning: a new method or view is a minor bump, a changed signature, record
    field or removed view a major one. 1.1: the kernel is a ``kernel_model.Kernel`` (nearest
    symbol, per-CPU addresses, public memo), links, BTF objects, arenas, view rows."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 1, 0)

    @classmethod
    def kernel(cls, context: interfaces.context.ContextInterface,
               kernel_module_name: str = "kernel") -> KernelContext:
        """The kernel of a Volatility kernel module as a ``kernel_model.Kernel``: reader, layout,
        symbols (``symbol``, ``symbol_near``), enums, per-CPU offsets and addresses
        (``percpu_address``), BTF objects and the BPF registries, memoised per context."""
        return KernelContext(context, kernel_module_name)

    @classmethod
    def list_maps(cls, context: interfaces.context.ContextInterface, kernel_module_name: str = "kernel",
                  damage: Optional[DamageLog] = None) -> List[BpfMap]:
        """Every BPF map (``map_idr``), id order, as BpfMap records."""
        return KernelContext(context, kernel_module_name).maps(damage)

    @classmethod
    def list_progs(cls, context: interfaces.context.ContextInterface, kernel_module_name: str = "kernel",
                   damage: Optional[DamageLog] = None) -> List[BpfProg]:
        """Every BPF program (``prog_idr``), id order, as BpfProg records."""
        return KernelContext(context, kernel_module_name).progs(damage)

    @classmethod
    def list_links(cls, context: interfaces.context.ContextInterface, kernel_module_name: str = "kernel",
                   damage: Optional[DamageLog] = None) -> List[Any]:
        """Every BPF link (``link_idr``), id order, as BpfLink records with decoded targets."""
        return KernelContext(context, kernel_module_name).links(damage)

    @classmethod
    def list_btf_objects(cls, context: interfaces.context.ContextInterface,
                         kernel_module_name: str = "kernel",
                         damage: Optional[DamageLog] = None) -> Dict[int, int]:
        """{BTF id: ``struct btf`` address} of every BTF object (``btf_idr``); parse one with
        ``kernel(...).btf_at(address)``."""
        return KernelContext(context, kernel_module_name).btf_objects(damage)

    @classmethod
    def list_arenas(cls, context: interfaces.context.ContextInterface,
                    kernel_module_name: str = "kernel") -> List[Any]:
        """ArenaInfo of every BPF arena map (user range, kernel window)."""
        return KernelContext(context, kernel_module_name).arenas()

    @classmethod
    def columns(cls, view: str) -> List[str]:
        """Column names of ``view`` (a key of ``VIEWS``: the linux.ktstr plugin of that name)."""
        return list(cls._view(view).GRID.names())

    @classmethod
    def rows(cls, context: interfaces.context.ContextInterface, view: str,
             kernel_module_name: str = "kernel", **options: Any) -> Iterator[Tuple[int, Dict[str, Any]]]:
        """The rows of linux.ktstr.<view> as (depth, {column: value}); ``options`` are the view's
        keyword arguments (``scxtasks``: ``pids``, ``show_all``, ``stalled``; ...). A value the
        dump does not have is ``views.NA``, one it could not read ``views.UNREADABLE``; a
        missing symbol or type raises KtstrError with a one-line message."""
        mod = cls._view(view)
        names = mod.GRID.names()
        for depth, row in mod.rows(KernelContext(context, kernel_module_name), **options):
            yield depth, dict(zip(names, row))

    @staticmethod
    def _view(view: str):
        if view not in VIEWS:
            raise KtstrError(f"no linux.ktstr view '{view}' (views: {', '.join(sorted(VIEWS))})")
        return importlib.import_module(VIEWS[view])


def map_selectors():
    """``--id`` and ``--name``: the same map selection in every plugin that takes one (a map
    matching any given id or name is selected)."""
    return [requirements.ListRequirement(name="id", element_type=int, optional=True,
                                         description="Only maps with these ids"),
            requirements.ListRequirement(name="name", element_type=str, optional=True,
                                         description="Only maps with these names")]


def selected_maps(config):
    """(ids, names) given to :func:`map_selectors` (None when absent)."""
    return config.get("id") or None, config.get("name") or None


# --- views -> TreeGrid ---------------------------------------------------------------------


def _vol_value(column, value):
    if value is NA or value is None:
        return renderers.NotApplicableValue()
    if value is UNREADABLE:
        return renderers.UnreadableValue()
    if column.type is HEX:
        return format_hints.Hex(value)
    if column.type is str and not isinstance(value, str):
        return str(value)
    if column.type is int and isinstance(value, bool):
        return int(value)
    return value


def tree_grid(plugin_name, grid, rows):
    """A Volatility TreeGrid of a :class:`views.Grid` and its ``(depth, row)`` pairs; a
    KtstrError raised while rows are produced ends the run with one line (exit 2)."""
    columns = [(c.name, format_hints.Hex if c.type is HEX else c.type) for c in grid.columns]
    cols = grid.columns

    def converted():
        for depth, row in rows:
            yield depth, tuple(_vol_value(c, v) for c, v in zip(cols, row))

    return renderers.TreeGrid(columns, guarded(plugin_name, converted()))
