"""linux.ktstr.scxtasks: one row per task under sched_ext, with where it waits and since when."""

from volatility3.framework import interfaces, renderers
from volatility3.framework.configuration import requirements
from volatility3.framework.renderers import format_hints

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.core import LayoutError, ReadError
from volatility3_ktstr.errors import KtstrError, guarded
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.scx_support import ScxKernel
from volatility3_ktstr.walkers import scx

NA = renderers.NotAvailableValue


def _v(x):
    return NA() if x is None else x


class ScxTasks(interfaces.plugins.PluginInterface):
    """Tasks under sched_ext (the scx_tasks list, sched class ext): DSQ or CPU, slice, vtime,
    weight, flags, ops_state, how long runnable (jiffies), sticky CPU; flags a task runnable for
    longer than the watchdog timeout (STARVED)."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement(),
                requirements.ListRequirement(name="pid", element_type=int, optional=True,
                                             description="Only these PIDs (thread ids)"),
                requirements.BooleanRequirement(
                    name="all", default=False, optional=True,
                    description="Also tasks on scx_tasks that run in another sched class")]

    def _generator(self):
        kctx = KernelContext.from_plugin(self)
        sk = ScxKernel(kctx)
        reader, layout = sk.reader, sk.layout
        if sk.syms.get("tasks") is None:
            raise KtstrError("kernel symbol 'scx_tasks' is not in the symbol table; build the ISF "
                             "from a System.map (or kallsyms with CONFIG_KALLSYMS_ALL)")
        st = scx.read_sched_state(reader, layout, sk.syms)
        pids = set(self.config.get("pid") or [])
        show_all = self.config.get("all", False)
        ext = sk.syms.get("class:ext")

        # Where tasks can be: running on a CPU, or on a local/bypass/global/user DSQ.
        running, dsq_label = {}, {}
        cpus = []
        if sk.syms.get("runqueues") is not None:
            try:
                cpus = scx.read_cpus(reader, layout, sk.syms["runqueues"], kctx.per_cpu_offsets(),
                                     sk.dsq_offs, st.sch, walk=False)
            except (ReadError, LayoutError):
                cpus = []
        for c in cpus:
            if c.curr:
                running[c.curr] = c.cpu
            for d in (c.local_dsq, c.bypass_dsq):
                if d is not None:
                    dsq_label[d.addr] = f"{d.kind} cpu{d.cpu}"
        globals_, _ = scx.global_dsq_addrs(reader, layout, st.sch, sk.syms, sk.nr_nodes())
        for node, addr in globals_:
            dsq_label[addr] = f"global node{node}"

        ids = {}

        def where(t):
            if t.addr in running:
                return f"running on CPU {running[t.addr]}", None
            if not t.dsq:
                # Not on a DSQ: asleep, or runnable but held by the BPF scheduler itself.
                return ("runnable, not on a DSQ" if t.on_rq else "not runnable"), None
            if t.dsq not in ids:
                try:
                    ids[t.dsq] = reader.u64(t.dsq + layout.offset("scx_dispatch_q", "id"))
                except ReadError:
                    ids[t.dsq] = None
            dsq_id = ids[t.dsq]
            label = dsq_label.get(t.dsq)
            if label is None:
                label = f"dsq {dsq_id:#x}" if dsq_id is not None else f"dsq at {t.dsq:#x} (unreadable)"
            return label, dsq_id

        cursor = dict(sk.enum("scx_ent_flags") or ()).get("SCX_TASK_CURSOR", 0) & 0xFFFFFFFF
        walk = scx.walk_scx_tasks(reader, layout, sk.syms["tasks"], cursor_flag=cursor)
        timeout = st.watchdog_timeout
        for addr in walk.tasks:
            t = scx.read_task(reader, layout, addr)
            if t.error:
                if not pids:
                    yield (0, (-1, NA(), "", "", t.error, NA(), NA(), NA(), NA(), "", "", NA(),
                               NA(), NA(), "", format_hints.Hex(addr)))
                continue
            if pids and t.pid not in pids:
                continue
            if not show_all and ext is not None and t.sched_class != ext:
                continue
            loc, dsq_id = where(t)
            age = scx.runnable_for(t, st.jiffies)
            starved = "STARVED" if scx.is_starved(age, timeout) else ""
            yield (0, (t.pid, _v(t.tgid), t.comm, sk.class_name(t.sched_class) or "", loc,
                       format_hints.Hex(dsq_id) if dsq_id is not None else NA(),
                       _v(t.slice), _v(t.dsq_vtime), _v(t.weight), sk.task_flags(t.flags) or "",
                       sk.ops_state(t.ops_state) or "", _v(t.runnable_at), _v(age), _v(t.sticky_cpu), starved,
                       format_hints.Hex(addr)))
        if walk.error:
            yield (0, (-1, NA(), "", "", f"scx_tasks walk stopped: {walk.error}", NA(), NA(), NA(),
                       NA(), "", "", NA(), NA(), NA(), "", format_hints.Hex(sk.syms["tasks"])))

    def run(self):
        return renderers.TreeGrid(
            [("PID", int), ("TGID", int), ("COMM", str), ("SchedClass", str), ("Where", str),
             ("DSQ", format_hints.Hex), ("SliceNs", int), ("DsqVtime", int), ("Weight", int),
             ("Flags", str), ("OpsState", str), ("RunnableAt", int),
             ("RunnableForJiffies", int), ("StickyCPU", int),
             ("Starved", str), ("Task", format_hints.Hex)],
            guarded("linux.ktstr.scxtasks", self._generator()))
