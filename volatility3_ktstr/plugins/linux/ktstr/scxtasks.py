"""linux.ktstr.scxtasks: one row per task under sched_ext, with where it waits and since when.
Rows: views/scxtasks.py."""

from volatility3.framework import interfaces
from volatility3.framework.configuration import requirements

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import scxtasks as view


class ScxTasks(interfaces.plugins.PluginInterface):
    """Tasks under sched_ext (the scx_tasks list, sched class ext): DSQ or CPU, slice, vtime,
    weight, flags, ops_state, how long runnable (jiffies) and the position on the CPU's
    runnable_list, sticky CPU; flags a task runnable for longer than its scheduler's watchdog
    timeout (STARVED); --stalled lists only those."""

    _required_framework_version = (2, 0, 0)
    _version = (2, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement(),
                requirements.ListRequirement(name="pid", element_type=int, optional=True,
                                             description="Only these PIDs (thread ids)"),
                requirements.BooleanRequirement(
                    name="all", default=False, optional=True,
                    description="Also tasks on scx_tasks that run in another sched class"),
                requirements.BooleanRequirement(
                    name="stalled", default=False, optional=True,
                    description="Only tasks runnable for longer than the watchdog timeout"),
                requirements.BooleanRequirement(
                    name="stacks", default=False, optional=True,
                    description="Add each task's kernel stack (as linux.ktstr.stacks unwinds it)")]

    def run(self):
        kctx = KernelContext.from_plugin(self)
        return ps.tree_grid("linux.ktstr.scxtasks", view.GRID,
                            view.rows(kctx, pids=self.config.get("pid") or (),
                                      show_all=self.config.get("all", False),
                                      stalled=self.config.get("stalled", False),
                                      stacks=self.config.get("stacks", False)))
