"""linux.ktstr.bpfhidden: BPF objects the kernel runs or holds but its ID registries do not list.

Cross-view: every program, map and link reachable from a hook (cgroups, devices, netns,
trampolines, trace/perf events, struct_ops, sockmap), a link, a process's fd, a bpffs pin, a
prog_array or map-in-map slot, a program's used maps, or the BPF kallsyms list is looked up in
``prog_idr``/``map_idr``/``link_idr``; those absent are reported with the paths by which they
were found (what ``bpftool`` cannot see). A clean dump gives one summary row.
"""

from volatility3.framework import interfaces

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import bpfhidden as view


class BpfHidden(interfaces.plugins.PluginInterface):
    """Reports BPF programs, maps and links reachable in the kernel but absent from their IDRs."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement()]

    def run(self):
        return ps.tree_grid("linux.ktstr.bpfhidden", view.GRID, view.rows(KernelContext.from_plugin(self)))
