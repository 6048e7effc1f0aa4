"""linux.ktstr.links: every BPF link in the dump, like `bpftool link show`.

One row per ``link_idr`` entry: id, link type, program (id, name, type), attach type and the
attach target decoded per link type (traced function, kprobe/uprobe symbols and offsets,
tracepoint, perf event, cgroup path, network device, netns, netfilter hook, struct_ops map,
iterator target, sockmap), the processes holding an fd on the link (``Pids``), its bpffs pins,
and ``Info``: the link as ``bpftool link show -j`` prints it. Link types a kernel lacks are
recognised from its types, not its version.
"""

from volatility3.framework import interfaces

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import links as view


class Links(interfaces.plugins.PluginInterface):
    """Lists BPF links (link_idr): type, program, attach target, holders, pins."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement()]

    def run(self):
        return ps.tree_grid("linux.ktstr.links", view.GRID, view.rows(KernelContext.from_plugin(self)))
