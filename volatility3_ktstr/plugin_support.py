"""Pieces every linux.ktstr plugin shares: the kernel requirement, map selection, and the
views -> TreeGrid adapter.

Not a plugin base class on purpose: Volatility lists every PluginInterface subclass as a plugin.
The reusable kernel API is :class:`KtstrKernel` (versioned, for other plugins to require).
"""

from volatility3.framework import interfaces, renderers
from volatility3.framework.configuration import requirements
from volatility3.framework.renderers import format_hints

from .errors import guarded
from .kernel import ARCHITECTURES, KernelContext
from .views import HEX, NA, UNREADABLE


def kernel_requirement():
    return requirements.ModuleRequirement(name="kernel", description="Linux kernel",
                                          architectures=ARCHITECTURES)


class KtstrKernel(interfaces.configuration.VersionableInterface):
    """The project's reusable API for other plugins (``VersionRequirement(component=KtstrKernel,
    version=(1, 0, 0))``): the kernel adapter the linux.ktstr plugins run on."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def kernel(cls, context, kernel_module_name="kernel") -> KernelContext:
        """Reader, layout, symbols, enums, per-CPU offsets, BTF objects and the BPF registries
        of a kernel module."""
        return KernelContext(context, kernel_module_name)

    @classmethod
    def list_maps(cls, context, kernel_module_name="kernel", damage=None):
        """Every BPF map (``map_idr``), id order, as BpfMap records."""
        return KernelContext(context, kernel_module_name).maps(damage)

    @classmethod
    def list_progs(cls, context, kernel_module_name="kernel", damage=None):
        """Every BPF program (``prog_idr``), id order, as BpfProg records."""
        return KernelContext(context, kernel_module_name).progs(damage)


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
