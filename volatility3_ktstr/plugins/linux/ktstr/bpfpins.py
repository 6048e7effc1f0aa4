"""linux.ktstr.bpfpins: every map, program and link pinned in every mounted bpffs instance.

One row per pinned file: path (under the instance's mount point), kind (from the inode's
``i_op``: ``bpf_map_iops``/``bpf_prog_iops``/``bpf_link_iops``), object id and name, inode.
"""

from volatility3.framework import interfaces

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import bpfpins as view


class BpfPins(interfaces.plugins.PluginInterface):
    """Lists every map, program and link pinned in bpffs."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement()]

    def run(self):
        return ps.tree_grid("linux.ktstr.bpfpins", view.GRID, view.rows(KernelContext.from_plugin(self)))
