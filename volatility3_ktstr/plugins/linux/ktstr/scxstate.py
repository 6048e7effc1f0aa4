"""linux.ktstr.scxstate: a sched_ext post-mortem: why the scheduler exited (every place the exit
information survives), the scheduler(s), event counters, the watchdog's view, callbacks with their
BPF programs and run statistics, run queues and dispatch queues. Rows: views/scxstate.py."""

from volatility3.framework import interfaces
from volatility3.framework.configuration import requirements

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import scxstate as view


class ScxState(interfaces.plugins.PluginInterface):
    """sched_ext post-mortem: exit verdict and exit info (kernel, the scheduler's user_exit_info,
    kernel log), scheduler state, SCX_EV_* event counters, watchdog and runnable lists,
    callbacks -> BPF programs with run counts/times, per-CPU run queues and every dispatch
    queue with its queued tasks.

    Rows are Section / Object / Key / Value; children (backtrace, dump lines, per-CPU counters,
    queued tasks) follow their parent row. What the kernel does not have is N/A."""

    _required_framework_version = (2, 0, 0)
    _version = (2, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement(),
                requirements.BooleanRequirement(name="no_tasks", default=False, optional=True,
                                                description="Do not list the tasks queued on DSQs"),
                requirements.ListRequirement(name="pid", element_type=int, optional=True,
                                             description="The stall chain of these PIDs too")]

    def run(self):
        kctx = KernelContext.from_plugin(self)
        return ps.tree_grid("linux.ktstr.scxstate", view.GRID,
                            view.rows(kctx, walk_tasks=not self.config.get("no_tasks", False),
                                      pids=self.config.get("pid") or ()))
