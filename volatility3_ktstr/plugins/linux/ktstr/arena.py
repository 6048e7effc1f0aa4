"""linux.ktstr.arena: BPF arena maps, their kernel window and mapped pages; --dump writes them."""

from volatility3.framework import interfaces
from volatility3.framework.configuration import requirements

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import arena as view


class Arena(interfaces.plugins.PluginInterface):
    """Lists BPF arena maps: user_vm_start, size, the kernel window (bpf_arena.kern_vm->addr
    plus the guard half) and every mapped page (user address -> kernel VA -> physical).

    --dump writes arena-<id>.bin per arena into vol's output directory (-o DIR): a sparse image
    the size of the arena with each mapped page at its offset from user_vm_start (holes read as
    zeros), plus arena-<id>.json (addresses and the list of pages present)."""

    _required_framework_version = (2, 0, 0)
    _version = (2, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [
            ps.kernel_requirement(),
            *ps.map_selectors(),
            requirements.BooleanRequirement(name="dump", default=False, optional=True,
                                            description="write each arena's pages as a sparse "
                                                        "image (into vol's -o directory)"),
        ]

    def run(self):
        ids, names = ps.selected_maps(self.config)
        opener = self.open if self.config.get("dump") else None
        return ps.tree_grid("linux.ktstr.arena", view.GRID,
                            view.rows(KernelContext.from_plugin(self), ids, names, opener))
