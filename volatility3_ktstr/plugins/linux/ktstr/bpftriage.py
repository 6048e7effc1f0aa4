"""linux.ktstr.bpftriage: rootkit triage of BPF programs and of the syscall and ftrace tables.

Per program (registered or found only off-registry): dangerous helpers and kfuncs, sensitive
attach targets, hidden or held by no process, loaded without BTF/func_info; each flag with its
severity, reason and evidence. Then syscall-table entries and ftrace ops pointing outside the
kernel text or into BPF code, and a summary row.
"""

from volatility3.framework import interfaces

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import bpftriage as view


class BpfTriage(interfaces.plugins.PluginInterface):
    """Flags BPF programs a rootkit would load and checks the syscall and ftrace tables."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement()]

    def run(self):
        return ps.tree_grid("linux.ktstr.bpftriage", view.GRID, view.rows(KernelContext.from_plugin(self)))
