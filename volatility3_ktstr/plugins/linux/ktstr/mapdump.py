"""linux.ktstr.mapdump: the values of BPF maps, like `bpftool map dump` (rows: views/mapdump.py)."""

from volatility3.framework import interfaces
from volatility3.framework.configuration import requirements

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import mapdump as view


class MapDump(interfaces.plugins.PluginInterface):
    """Dumps BPF map values (array, per-CPU array, hash family, struct_ops) with BTF types.

    Other map types get one row saying why they are not dumped. Select maps with --id /
    --name (either matches; all maps when neither is given). Formatted holds what
    `bpftool -j map dump` prints for each element."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [
            ps.kernel_requirement(),
            *ps.map_selectors(),
            requirements.IntRequirement(name="max_entries", optional=True, default=4096,
                                        description="At most this many elements per map"),
        ]

    def run(self):
        ids, names = ps.selected_maps(self.config)
        return ps.tree_grid("linux.ktstr.mapdump", view.GRID, view.rows(
            KernelContext.from_plugin(self), ids, names, self.config.get("max_entries") or 4096))
