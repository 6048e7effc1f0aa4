"""linux.ktstr.stacks: every task's kernel stack from the dump alone (one row per frame under
each task), each CPU's registers with --regs. Rows: views/stacks.py."""

from volatility3.framework import interfaces
from volatility3.framework.configuration import requirements

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import stacks as view


class Stacks(interfaces.plugins.PluginInterface):
    """Kernel stacks of every task (x86-64: ORC, frame pointers, pt_regs; arm64: frame
    records), named as /proc/PID/stack prints them, BPF frames with program id and source
    line; tasks running at the dump from their CPU's registers where the file has them."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement(),
                requirements.ListRequirement(name="pid", element_type=int, optional=True,
                                             description="Only these PIDs (thread or process ids)"),
                requirements.BooleanRequirement(name="regs", default=False, optional=True,
                                                description="List each CPU's registers instead"),
                requirements.BooleanRequirement(
                    name="all-frames", default=False, optional=True,
                    description="Keep scheduler/lock frames (/proc/PID/stack leaves them out)")]

    def run(self):
        kctx = KernelContext.from_plugin(self)
        return ps.tree_grid("linux.ktstr.stacks", view.GRID,
                            view.rows(kctx, pids=self.config.get("pid") or (), cpu_regs=kctx.cpu_states(),
                                      show_regs=self.config.get("regs", False),
                                      all_frames=self.config.get("all-frames", False)))
