"""linux.ktstr.bpffds: every fd of every process whose file is a BPF object (bpftool's ``pids``).

One row per (process, fd) on a BPF map, program, link or BTF object, recognised by the file's
``f_op`` address (``bpf_map_fops``, ``bpf_prog_fops``, ``bpf_link_fops``, ``btf_fops``), not
by its name: pid, comm, fd, kind, object id, name and type.
"""

from volatility3.framework import interfaces

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import bpffds as view


class BpfFds(interfaces.plugins.PluginInterface):
    """Lists every process's fds on BPF maps, programs, links and BTF objects (bpftool's pids)."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement()]

    def run(self):
        return ps.tree_grid("linux.ktstr.bpffds", view.GRID, view.rows(KernelContext.from_plugin(self)))
