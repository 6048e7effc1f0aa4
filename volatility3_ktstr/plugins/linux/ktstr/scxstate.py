"""linux.ktstr.scxstate: the sched_ext scheduler, its callbacks, run queues and dispatch queues."""

from volatility3.framework import interfaces, renderers
from volatility3.framework.configuration import requirements
from volatility3.framework.renderers import format_hints

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.core import LayoutError, ReadError
from volatility3_ktstr.errors import guarded
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.scx_support import ScxKernel
from volatility3_ktstr.walkers import scx

NA = renderers.NotAvailableValue


def _text(v):
    if v is None:
        return NA()
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


class ScxState(interfaces.plugins.PluginInterface):
    """sched_ext post-mortem: scheduler identity/state, callbacks -> BPF programs, per-CPU run
    queues and every dispatch queue with its queued tasks.

    Rows are Section / Object / Key / Value; a DSQ's queued tasks are children of its 'queued'
    row. What the kernel does not have is N/A."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement(),
                requirements.BooleanRequirement(name="no_tasks", default=False, optional=True,
                                                description="Do not list the tasks queued on DSQs")]

    def _generator(self):
        kctx = KernelContext.from_plugin(self)
        sk = ScxKernel(kctx)
        reader, layout = sk.reader, sk.layout
        st = scx.read_sched_state(reader, layout, sk.syms, sk.callback_names(),
                                  sk.enum("scx_enable_state") or sk.enum("scx_ops_enable_state"))
        H = format_hints.Hex

        def row(section, obj, key, value, addr=None, level=0):
            return (level, (section, obj, key, _text(value), H(addr) if addr is not None else NA()))

        # --- scheduler ---
        obj = st.name if st.name is not None else "(none)"
        if st.sch is not None:
            yield row("scheduler", obj, "scx_sched", f"{st.sch:#x}" if st.sch else "NULL (no scheduler)",
                      st.sch or None)
        yield row("scheduler", obj, "name", st.name, st.ops_addr)
        flags = None if st.ops_flags is None else scx.decode_flags(sk.enum("scx_ops_flags"), st.ops_flags,
                                                                  "SCX_OPS_")
        yield row("scheduler", obj, "flags", flags)
        yield row("scheduler", obj, "timeout_ms", st.timeout_ms)
        yield row("scheduler", obj, "watchdog_timeout_jiffies", st.watchdog_timeout)
        yield row("scheduler", obj, "dispatch_max_batch", st.dispatch_max_batch)
        yield row("scheduler", obj, "exit_dump_len", st.exit_dump_len)
        yield row("scheduler", obj, "slice_dfl_ns", st.slice_dfl)
        yield row("scheduler", obj, "level", st.level)
        kinds = sk.enum("scx_exit_kind")
        kind = None if st.exit_kind is None else (scx.enum_name(kinds, st.exit_kind, "SCX_EXIT_")
                                                  or str(st.exit_kind))
        yield row("scheduler", obj, "exit_kind", kind)
        if st.exit is not None and st.exit_kind:
            ei = st.exit
            ekind = None if ei.kind is None else (scx.enum_name(kinds, ei.kind, "SCX_EXIT_") or str(ei.kind))
            yield row("scheduler", obj, "exit_info.kind", ekind)
            yield row("scheduler", obj, "exit_info.exit_code", ei.exit_code)
            yield row("scheduler", obj, "exit_info.reason", ei.reason)
            yield row("scheduler", obj, "exit_info.msg", ei.msg)
            if ei.error:
                yield row("scheduler", obj, "error", ei.error)
        yield row("scheduler", obj, "enable_state", st.enable_state_str if st.enable_state_str is not None
                  else st.enable_state)
        yield row("scheduler", obj, "enabled", st.enabled)
        yield row("scheduler", obj, "switching_all", st.switching_all)
        yield row("scheduler", obj, "switched_all", st.switched_all)
        yield row("scheduler", obj, "bypass_depth", st.bypass_depth)
        yield row("scheduler", obj, "aborting", st.aborting)
        yield row("scheduler", obj, "in_softlockup", st.in_softlockup)
        yield row("scheduler", obj, "breather_depth", st.breather_depth)
        yield row("scheduler", obj, "nr_rejected", st.nr_rejected)
        yield row("scheduler", obj, "enable_seq", st.enable_seq)
        yield row("scheduler", obj, "hotplug_seq", st.hotplug_seq)
        yield row("scheduler", obj, "jiffies", st.jiffies)
        for err in st.errors:
            yield row("scheduler", obj, "error", err)

        if st.cgroup_path is not None:
            yield row("scheduler", obj, "cgroup", st.cgroup_path)

        # --- callbacks ---
        yield from self._callbacks(kctx, sk, st, row)

        # --- sub-schedulers (kernels with nested schedulers) ---
        subs, errors = scx.sub_scheds(reader, layout, st.sch)
        for addr, depth, parent in subs:
            sub = scx.read_sched_state(reader, layout, sk.syms, sch=addr)
            o = sub.name if sub.name is not None else f"@{addr:#x}"
            yield row("subsched", o, "scx_sched", f"{addr:#x}", addr)
            yield row("subsched", o, "parent", f"{parent:#x}", parent)
            yield row("subsched", o, "depth", depth)
            yield row("subsched", o, "level", sub.level)
            yield row("subsched", o, "cgroup", sub.cgroup_path)
            yield row("subsched", o, "exit_kind", None if sub.exit_kind is None else (
                scx.enum_name(kinds, sub.exit_kind, "SCX_EXIT_") or str(sub.exit_kind)))
            yield row("subsched", o, "bypass_depth", sub.bypass_depth)
            for err in sub.errors:
                yield row("subsched", o, "error", err)
        for err in errors:
            yield row("subsched", "-", "error", err)

        # --- CPUs ---
        tasks = {}

        def task_text(addr):
            if addr not in tasks:
                tasks[addr] = scx.read_task(reader, layout, addr)
            t = tasks[addr]
            if t.error:
                return f"{addr:#x} ({t.error})"
            return f"{t.pid} {t.comm}"

        walk = not self.config.get("no_tasks", False)
        cpus = []
        if sk.syms.get("runqueues") is None:
            yield row("cpu", "-", "error", "symbol 'runqueues' is not in the symbol table")
        else:
            try:
                cpus = scx.read_cpus(reader, layout, sk.syms["runqueues"], kctx.per_cpu_offsets(),
                                     sk.dsq_offs, st.sch, walk=True)
            except (ReadError, LayoutError) as e:
                yield row("cpu", "-", "error", str(e))
        rq_flags = sk.enum("scx_rq_flags")
        for c in cpus:
            o = f"cpu{c.cpu}"
            if c.error:
                yield row("cpu", o, "error", c.error, c.rq)
                continue
            yield row("cpu", o, "nr_running", c.nr_running, c.rq)
            yield row("cpu", o, "scx.nr_running", c.scx_nr_running)
            yield row("cpu", o, "local_dsq.nr", c.local_dsq.nr if c.local_dsq else None)
            yield row("cpu", o, "flags", None if c.flags is None else
                      scx.decode_flags(rq_flags, c.flags, "SCX_RQ_", 32))
            if c.curr:
                t = scx.read_task(reader, layout, c.curr)
                tasks[c.curr] = t
                cur = (f"{c.curr:#x} ({t.error})" if t.error else
                       f"{t.pid} {t.comm} ({sk.class_name(t.sched_class)})")
            else:
                cur = "NULL"
            yield row("cpu", o, "curr", cur, c.curr)

        # --- dispatch queues ---
        dsqs = []
        addrs, errors = self._global(sk, st)
        for e in errors:
            yield row("dsq", "global", "error", e)
        for node, addr in addrs:
            dsqs.append(scx.read_dsq(reader, layout, sk.dsq_offs, addr, "global", walk=True, node=node))
        for c in cpus:
            if c.local_dsq is not None:
                dsqs.append(c.local_dsq)
        for c in cpus:
            if c.bypass_dsq is not None:
                dsqs.append(c.bypass_dsq)
        if st.sch == 0:  # scx_root is NULL: no scheduler, so no global or user DSQs
            addrs, errors = [], []
        else:
            addrs, errors = scx.user_dsq_addrs(reader, layout, st.sch, sk.syms)
        for e in errors:
            yield row("dsq", "user", "error", e)
        user = [scx.read_dsq(reader, layout, sk.dsq_offs, a, "user", walk=True) for a in addrs]
        user.sort(key=lambda d: (d.id is None, d.id or 0))
        dsqs.extend(user)
        for d in dsqs:
            yield from self._dsq_rows(sk, d, row, task_text, walk)

    @staticmethod
    def _global(sk, st):
        """([(node, address)] of the global DSQs, [errors]); none without a scheduler."""
        if st.sch == 0:
            return [], []
        return scx.global_dsq_addrs(sk.reader, sk.layout, st.sch, sk.syms, sk.nr_nodes())

    def _dsq_rows(self, sk, d, row, task_text, walk):
        ids = sk.enum("scx_dsq_id_flags")
        if d.kind == "user":
            o = f"{d.id:#x}" if d.id is not None else f"@{d.addr:#x}"
        elif d.kind == "global":
            o = f"GLOBAL node{d.node}"
        else:
            o = f"{d.kind.upper()} cpu{d.cpu}"
        if d.error:
            yield row("dsq", o, "error", d.error, d.addr)
            return
        name = scx.enum_name(ids, d.id, "SCX_DSQ_") if d.id is not None and d.id >> 63 else None
        yield row("dsq", o, "id", f"{d.id:#x}" + (f" ({name})" if name else ""), d.addr)
        w = d.walk
        order = "vtime" if d.vtime else ("fifo" if d.vtime is not None else None)
        if d.nr == 0 and not d.vtime and d.vtime is not None:
            order = "empty"  # an empty DSQ keeps no trace of how it was used
        yield row("dsq", o, "ordering", order)
        yield row("dsq", o, "nr", d.nr)
        if w is None:
            return
        yield row("dsq", o, "queued", len(w.tasks))
        if walk:
            for i, t in enumerate(w.tasks):
                yield row("dsq", o, f"task[{i}]", task_text(t), t, level=1)
        if w.cursors:
            yield row("dsq", o, "iterator_cursors", w.cursors)
        if w.error:
            yield row("dsq", o, "error", w.error)
        elif d.nr is not None and d.nr != len(w.tasks):
            yield row("dsq", o, "note", f"nr says {d.nr} but the list holds {len(w.tasks)} tasks")

    def _callbacks(self, kctx, sk, st, row):
        """One row per implemented callback: its BPF program, via the struct_ops map whose kernel
        copy of the ops holds the same function pointers as the running scheduler."""
        if not st.callbacks:
            return
        layout, reader = sk.layout, sk.reader
        live = dict(st.callbacks)
        names = [n for n, _ in st.callbacks]
        match, errors = None, []
        if layout.has("bpf_struct_ops_map"):
            try:
                maps = [m for m in kctx.maps() if m.type_name == "struct_ops"]
            except Exception as e:  # noqa: BLE001 - the callbacks are still worth showing
                maps, errors = [], [f"map list: {e}"]
            value_struct = "bpf_struct_ops_sched_ext_ops"
            for m in maps:
                st_map = m.kva - layout.offset("bpf_struct_ops_map", "map")
                try:
                    kdata = scx.struct_ops_kdata(layout, st_map, value_struct)
                    got = scx.ops_callbacks(reader, layout, kdata, names)
                except (ReadError, LayoutError) as e:
                    errors.append(f"struct_ops map {m.id}: {e}")
                    continue
                if got and all(live.get(n) == p for n, p in got):
                    match = m
                    cbs, errs = scx.struct_ops_callbacks(reader, layout, st_map, "sched_ext_ops",
                                                         names, value_struct)
                    errors.extend(errs)
                    break
        if match is None:
            yield row("struct_ops", "-", "map", "no struct_ops map holds the running ops")
            for n, p in st.callbacks:
                yield row("callback", n, "prog", None, p)
        else:
            yield row("struct_ops", match.name, "map", f"id {match.id} {match.name}", match.kva)
            for cb in cbs:
                prog = (f"{cb.prog_name} (id {cb.prog_id})" if cb.prog_name is not None
                        else (f"id {cb.prog_id}" if cb.prog_id else None))
                yield row("callback", cb.member, "prog", prog, cb.kfunc)
        for e in errors:
            yield row("struct_ops", "-", "error", e)

    def run(self):
        return renderers.TreeGrid(
            [("Section", str), ("Object", str), ("Key", str), ("Value", str),
             ("Address", format_hints.Hex)],
            guarded("linux.ktstr.scxstate", self._generator()))
