"""linux.ktstr.bpfhooks: every (hook, program) pair, links or not: what runs where.

One row per program on a hook: from the links (``link_idr``) and from the hooks themselves
(cgroup program lists and effective arrays, device XDP and tcx entries, classic tc filters,
netns programs, trampolines: fentry/fexit/LSM/freplace, trace and perf events, struct_ops
maps, sockmap programs, prog_array tail-call slots), so programs attached without a link
(``BPF_PROG_ATTACH``) are listed too; then every loaded program attached nowhere.
"""

from volatility3.framework import interfaces

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import bpfhooks as view


class BpfHooks(interfaces.plugins.PluginInterface):
    """Lists every (hook, BPF program) pair, with or without a link, and unattached programs."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement()]

    def run(self):
        return ps.tree_grid("linux.ktstr.bpfhooks", view.GRID, view.rows(KernelContext.from_plugin(self)))
