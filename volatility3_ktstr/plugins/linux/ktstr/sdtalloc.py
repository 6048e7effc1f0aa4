"""linux.ktstr.sdtalloc: every live allocation of every sched_ext scheduler's scx_allocator."""

from volatility3.framework import interfaces
from volatility3.framework.configuration import requirements

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import sdtalloc as view


class SdtAlloc(interfaces.plugins.PluginInterface):
    """Lists live sdt_alloc (scx_allocator) slots: scheduler, allocator, idx, genn, address,
    owning task and the payload rendered with the scheduler's BTF.

    The payload type is --type NAME, else the one struct of the payload's size that the program
    itself defines (see the Type column for why a payload is shown as hex). The PID/Comm of a
    slot come from the task whose BPF task storage points at it, else from a pid/task pointer
    field of the payload."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [
            ps.kernel_requirement(),
            requirements.StringRequirement(name="type", optional=True, default=None,
                                           description="payload BTF type name (struct NAME)"),
            requirements.IntRequirement(name="max_entries", optional=True, default=None,
                                        description="stop each allocator after N live slots"),
            requirements.IntRequirement(name="header_size", optional=True, default=None,
                                        description="bytes of struct sdt_data before the payload "
                                                    "(default: from BTF)"),
        ]

    def run(self):
        return ps.tree_grid("linux.ktstr.sdtalloc", view.GRID, view.rows(
            KernelContext.from_plugin(self), self.config.get("type"),
            self.config.get("max_entries"), self.config.get("header_size")))
