"""linux.ktstr.bpfsockets: BPF on sockets.

Every socket of every process (any task list) carrying a socket filter (classic BPF decoded and
disassembled, or an eBPF program: the BPFDoor pattern), a reuseport program, or held by a
sockmap/sockhash (with the map's verdict programs); each with its owner, family and addresses.
"""

from volatility3.framework import interfaces

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import bpfsockets as view


class BpfSockets(interfaces.plugins.PluginInterface):
    """Lists socket filters, reuseport programs and sockmap members with their sockets."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement()]

    def run(self):
        return ps.tree_grid("linux.ktstr.bpfsockets", view.GRID, view.rows(KernelContext.from_plugin(self)))
