"""BPF programs read from the probe side of the kernel: hooks that hold a program (or its link)
whatever happened to the ID registries, the link registry, the loader's fds and ``bpf_kallsyms``.

Each walk starts at a kernel global the BPF subsystem does not own, so unlinking a program from
``prog_idr``/``link_idr``, closing its fds and taking its ``bpf_ksym`` off ``bpf_kallsyms`` (a
careful rootkit's DKOM) leaves it reachable:

- kprobes: ``kprobe_table`` (hash of ``struct kprobe`` by ``hlist``; an aggregated probe's
  ``list`` holds the real ones) -> the ``trace_kprobe`` a perf kprobe event embeds
  (``kprobe_dispatcher``/``kretprobe_dispatcher``) -> ``tp.event->call.prog_array``;
- tracepoints (``__start___tracepoints_ptrs``..``__stop___tracepoints_ptrs``): each
  ``tracepoint->funcs`` array; a ``__bpf_trace_<name>`` probe's ``data`` is the raw_tp link (or
  the program on kernels before raw_tp links kept it) -- raw_tp and tp_btf programs;
- fprobes (``fprobe_table``: ``struct fprobe_hlist {hlist, fp}``): an fprobe whose entry handler
  is ``kprobe_multi_link_handler`` is the ``fp`` of a ``bpf_kprobe_multi_link`` (kprobe_multi);
- uprobes (``uprobes_tree``: ``struct uprobe`` -> ``consumers``): a ``trace_uprobe`` consumer
  (``uprobe_dispatcher``) -> its event's ``prog_array``; a ``bpf_uprobe`` consumer
  (``uprobe_multi_link_handler``) -> ``bpf_uprobe->link`` (uprobe_multi);
- perf events of every CPU context (``perf_cpu_context.ctx``) and of every task context given
  (``task->perf_event_ctxp``): ``perf_event->prog`` (perf_event programs and the kprobe, uprobe
  and tracepoint events libbpf opens);
- netfilter hook entries of every namespace and family (``net->nf.hooks_<family>[hook]``):
  entries whose hook is ``nf_hook_run_bpf`` hold the program in ``priv``; the entry's
  ``orig_ops`` is the ``hook_ops`` of a ``bpf_nf_link``.

Mixed into :class:`volatility3_ktstr.bpf.hooks.HookWalker` (self.k, reader, layout, damage,
dec, prog_array). No Volatility import.
"""

from ..core import LayoutError, ReadError, Record
from ..errors import KtstrError
from ..kds import hash_table_nodes, list_entries, rb_nodes
from ..walkers import netdev
from .links import NF_FAMILIES, describe_perf_event, nf_hook_name

MAX_KPROBES = 1 << 16
MAX_TRACEPOINTS = 1 << 15
MAX_TP_FUNCS = 1 << 10
MAX_FPROBES = 1 << 14
MAX_UPROBES = 1 << 16
MAX_CONSUMERS = 1 << 10
MAX_PERF_EVENTS = 1 << 14
MAX_NF_ENTRIES = 1 << 10
MAX_NAME = 256
MAX_MODULES = 1 << 12


def _tp_ptrs(raw, start, width, relative):
    """Addresses of a ``tracepoint_ptr_t`` array read at ``start`` (PREL32 offsets are relative
    to each entry's own address)."""
    n = len(raw) // width
    return [start + i * width + int.from_bytes(raw[i * width:(i + 1) * width], "little", signed=True)
            if relative else int.from_bytes(raw[i * width:(i + 1) * width], "little")
            for i in range(n)]

class ProbeWalks:
    """The probe-side walks (see the module docstring)."""

    def probe_walks(self, tasks=()):
        return (self.kprobes, self.tracepoints, self.fprobes, self.uprobes,
                lambda: self.perf_contexts(tasks), self.netfilter, self.lirc)

    # --- kprobes ---------------------------------------------------------------------------

    def _table(self, sym, struct):
        addr = self.k.symbol(sym)
        if not addr or not self.layout.has(struct, "hlist"):
            return None, 0
        n = self.k.symbol_size(sym) // self.layout.size("hlist_head")
        return addr, min(max(n, 0), 1 << 16)

    def kprobes(self):
        lay = self.layout
        table, n = self._table("kprobe_table", "kprobe")
        if not table or not lay.has("trace_kprobe", "rp"):
            return
        disp = self.k.symbol("kprobe_dispatcher")
        rdisp = self.k.symbol("kretprobe_dispatcher")
        aggr = self.k.symbol("aggr_pre_handler")
        hoff = lay.offset("kprobe", "hlist")
        for node in hash_table_nodes(self.reader, lay, table, n, limit=MAX_KPROBES,
                                     damage=self.damage, what="kprobe", table_name="kprobe_table"):
            kp = node - hoff
            try:
                pre = Record(self.reader, lay, "kprobe", kp, ("pre_handler",)).int("pre_handler")
                probes = [kp]
                if aggr and pre == aggr:
                    probes = list(list_entries(self.reader, lay, kp + lay.offset("kprobe", "list"),
                                               "kprobe", "list", limit=MAX_KPROBES,
                                               damage=self.damage, what="aggregated kprobe"))
                for p in probes:
                    yield from self._trace_kprobe(p, disp, rdisp)
            except ReadError as e:
                self.damage.add("kprobe", kp, f"unreadable ({e.reason})")

    def _trace_kprobe(self, kp, disp, rdisp):
        lay = self.layout
        # judge from the kprobe itself before reading the trace_kprobe around it: another
        # kprobe user's container may not extend that far
        pre = Record(self.reader, lay, "kprobe", kp, ("pre_handler",)).int("pre_handler")
        if disp and pre == disp:
            kind = "kprobe"
        elif rdisp and pre and pre == self.k.symbol("pre_handler_kretprobe"):
            rp = kp - lay.offset("kretprobe", "kp")
            if Record(self.reader, lay, "kretprobe", rp, ("handler",)).int("handler") != rdisp:
                return
            kind = "kretprobe"
        else:
            return                  # another kprobe user (not a trace_kprobe)
        tk = kp - lay.offset("trace_kprobe", "rp") - lay.offset("kretprobe", "kp")
        r = Record(self.reader, lay, "trace_kprobe", tk, ("rp.kp.addr", "rp.kp.offset", "symbol", "tp.event"))
        sym = r.int("symbol")
        func = (self.reader.cstring(sym, MAX_NAME) if sym else "") or self.k.symbol_near(r.int("rp.kp.addr"))
        off = r.int("rp.kp.offset")
        target = func + (f"+{off:#x}" if off else "")
        yield from self._event_progs(r.int("tp.event"), kind, target, "kprobe_table -> trace_kprobe")

    def _event_progs(self, tpe, kind, target, via):
        """Programs of a ``trace_probe_event``'s call (``call.prog_array``)."""
        if not tpe:
            return
        lay = self.layout
        call = tpe + lay.offset("trace_probe_event", "call")
        arr = self.reader.ptr(call + lay.offset("trace_event_call", "prog_array"))
        for p in self.prog_array(arr, f"{kind} event prog_array"):
            yield self.attachment(kind, target, "perf_event", p, -1, f"{via} -> call.prog_array")

    # --- tracepoints -----------------------------------------------------------------------

    def tracepoint_addrs(self):
        """Every ``struct tracepoint`` of the kernel image (``__tracepoints_ptrs``: 32-bit
        self-relative offsets on kernels with PREL32 relocations, pointers otherwise; BTF rarely
        keeps ``tracepoint_ptr_t``, so the form whose first entry is a ``__tracepoint_``
        symbol is taken, and remembered for the modules' tables)."""
        start = self.k.symbol("__start___tracepoints_ptrs")
        stop = self.k.symbol("__stop___tracepoints_ptrs")
        if not start or not stop or stop <= start:
            return []
        ps = self.reader.pointer_size
        raw = self.reader.read(start, min(stop - start, MAX_TRACEPOINTS * ps))
        if not any(raw):
            return []       # reads as zeros (a minimized dump without the page): no tracepoints
        for width, relative in ((4, True), (ps, False)):
            out = _tp_ptrs(raw, start, width, relative)
            if out and (self.k.symbol_at(out[0]) or "").startswith("__tracepoint_"):
                self._tp_form = (width, relative)
                return out
        self.damage.add("__tracepoints_ptrs", start, "entries are neither self-relative offsets "
                        "nor pointers to __tracepoint_ symbols: tracepoints not read")
        return []

    def module_tracepoint_addrs(self):
        """(module name, ``struct tracepoint`` address) of every loaded module's tracepoints:
        ``module->tracepoints_ptrs[num_tracepoints]``, the module's own ``__tracepoints_ptrs``
        section (kernel/tracepoint.c ``tp_module_going``/``tp_module_coming`` walk the same);
        entries in the kernel image's form, else the form whose first entry reads as a
        tracepoint with a name."""
        lay = self.layout
        head = self.k.symbol("modules")
        if not head or not all(lay.has("module", m) for m in ("list", "tracepoints_ptrs", "num_tracepoints")):
            return []
        ps = self.reader.pointer_size
        known = getattr(self, "_tp_form", None)
        forms = [known] if known else [(4, True), (ps, False)]
        out = []
        for mod in list_entries(self.reader, lay, head, "module", "list", limit=MAX_MODULES,
                                damage=self.damage, what="module (modules list)"):
            try:
                r = Record(self.reader, lay, "module", mod, ("name", "tracepoints_ptrs", "num_tracepoints"))
            except ReadError as e:
                self.damage.add("module", mod, f"unreadable ({e.reason})")
                continue
            ptrs, n = r.int("tracepoints_ptrs"), r.int("num_tracepoints")
            if not ptrs or n <= 0:
                continue
            name = r.str("name") or f"module@{mod:#x}"
            if n > MAX_TRACEPOINTS:
                self.damage.add("module tracepoints", mod, f"module {name}: {n} tracepoints, "
                                f"only the first {MAX_TRACEPOINTS} read")
                n = MAX_TRACEPOINTS
            for width, relative in forms:
                raw = self.reader.try_read(ptrs, n * width)
                if raw is None:
                    self.damage.add("module tracepoints_ptrs", ptrs, f"module {name}: unreadable")
                    break
                addrs = _tp_ptrs(raw, ptrs, width, relative)
                if known or self._names_a_tracepoint(addrs[0]):
                    out.extend((name, a) for a in addrs)
                    break
            else:
                self.damage.add("module tracepoints_ptrs", ptrs, f"module {name}: entries are neither "
                                "self-relative offsets nor pointers to tracepoints: not read")
        return out

    def _names_a_tracepoint(self, tp):
        try:
            name = Record(self.reader, self.layout, "tracepoint", tp, ("name",)).int("name")
            text = self.reader.cstring(name, MAX_NAME) if name else ""
        except ReadError:
            return False
        return bool(text) and text.replace("_", "a").isalnum()

    def tracepoints(self):
        lay = self.layout
        if not lay.has("tracepoint", "funcs") or not lay.has("tracepoint_func", "data"):
            return
        raw_lops = self.k.symbol("bpf_raw_tp_link_lops")
        stride = lay.size("tracepoint_func")
        f_func = lay.field("tracepoint_func", "func")
        f_data = lay.field("tracepoint_func", "data")
        tps = [(None, tp) for tp in self.tracepoint_addrs()] + self.module_tracepoint_addrs()
        for module, tp in tps:
            try:
                r = Record(self.reader, lay, "tracepoint", tp, ("name", "funcs"))
            except ReadError as e:
                self.damage.add("tracepoint", tp, f"unreadable ({e.reason})")
                continue
            funcs = r.int("funcs")
            if not funcs:
                continue
            name = None
            for first in range(0, MAX_TP_FUNCS, 16):
                raw = self.reader.try_read(funcs + first * stride, 16 * stride)
                if raw is None:
                    self.damage.add("tracepoint funcs", funcs, "unreadable")
                    break
                done = False
                for i in range(16):
                    func = f_func.decode(raw, -i * stride)
                    if not func:
                        done = True
                        break
                    sym = self.k.symbol_at(func) or ""
                    if not sym.startswith("__bpf_trace_"):
                        continue
                    data = f_data.decode(raw, -i * stride)
                    if name is None:
                        name = self.reader.cstring(r.int("name"), MAX_NAME) if r.int("name") else sym[12:]
                    yield from self._raw_tp(data, name, raw_lops, first + i, module)
                if done:
                    break

    def _raw_tp(self, data, name, raw_lops, i, module=None):
        lay = self.layout
        link, prog = 0, data
        try:
            if lay.has("bpf_raw_tp_link", "link"):
                ops = self.reader.ptr(data + lay.offset("bpf_link", "ops"))
                if raw_lops and ops == raw_lops:
                    link = data
                    prog = self.reader.ptr(data + lay.offset("bpf_link", "prog"))
        except ReadError as e:
            self.damage.add("tracepoint probe data", data, f"unreadable ({e.reason})")
            return
        if prog:
            where = f"module {module} tracepoints_ptrs: " if module else ""
            yield self.attachment("raw_tracepoint", name, "raw_tp", prog, link or -1,
                                  f"{where}tracepoint {name}->funcs[{i}]")

    # --- fprobes (kprobe_multi) ------------------------------------------------------------

    def fprobes(self):
        lay = self.layout
        table, n = self._table("fprobe_table", "fprobe_hlist")
        if not table or not lay.has("bpf_kprobe_multi_link", "fp"):
            return
        handler = self.k.symbol("kprobe_multi_link_handler")
        hoff = lay.offset("fprobe_hlist", "hlist")
        for node in hash_table_nodes(self.reader, lay, table, n, limit=MAX_FPROBES,
                                     damage=self.damage, what="fprobe_hlist",
                                     table_name="fprobe_table"):
            try:
                fp = Record(self.reader, lay, "fprobe_hlist", node - hoff, ("fp",)).int("fp")
                if not fp:
                    continue
                f = Record(self.reader, lay, "fprobe", fp, ("entry_handler", "exit_handler"))
                if not handler or handler not in (f.int("entry_handler"), f.int("exit_handler")):
                    continue
                base = fp - lay.offset("bpf_kprobe_multi_link", "fp")
                link = base + lay.offset("bpf_kprobe_multi_link", "link")
                info = self.dec.read(link)
                for h in info.hooks or ():
                    yield self.attachment(h.kind, h.target, "kprobe_multi", info.prog_kva, link,
                                          "fprobe_table -> bpf_kprobe_multi_link.fp")
            except ReadError as e:
                self.damage.add("fprobe", node, f"unreadable ({e.reason})")

    # --- uprobes ---------------------------------------------------------------------------

    def uprobes(self):
        lay = self.layout
        root = self.k.symbol("uprobes_tree")
        if not root or not lay.has("uprobe", "consumers") or not lay.has("uprobe_consumer", "cons_node"):
            return
        disp = self.k.symbol("uprobe_dispatcher")
        multi = self.k.symbol("uprobe_multi_link_handler")
        roff = lay.offset("uprobe", "rb_node")
        for node in rb_nodes(self.reader, lay, root, limit=MAX_UPROBES, damage=self.damage,
                             what="uprobe (uprobes_tree)"):
            up = node - roff
            try:
                off = Record(self.reader, lay, "uprobe", up, ("offset",)).int("offset")
                for c in list_entries(self.reader, lay, up + lay.offset("uprobe", "consumers"),
                                      "uprobe_consumer", "cons_node", limit=MAX_CONSUMERS,
                                      damage=self.damage, what="uprobe_consumer"):
                    yield from self._consumer(c, off, disp, multi)
            except ReadError as e:
                self.damage.add("uprobe", up, f"unreadable ({e.reason})")

    def _consumer(self, c, offset, disp, multi):
        lay = self.layout
        r = Record(self.reader, lay, "uprobe_consumer", c, ("handler", "ret_handler"))
        h, rh = r.int("handler"), r.int("ret_handler")
        if disp and disp in (h, rh) and lay.has("trace_uprobe", "consumer"):
            tu = c - lay.offset("trace_uprobe", "consumer")
            t = Record(self.reader, lay, "trace_uprobe", tu, ("filename", "tp.event"))
            fn = t.int("filename")
            path = self.reader.cstring(fn, 4096) if fn else "?"
            kind = "uretprobe" if rh == disp and h != disp else "uprobe"
            yield from self._event_progs(t.int("tp.event"), kind, f"{path}+{offset:#x}",
                                         "uprobes_tree -> trace_uprobe")
        elif multi and multi in (h, rh) and lay.has("bpf_uprobe", "consumer"):
            bu = c - lay.offset("bpf_uprobe", "consumer")
            ml = Record(self.reader, lay, "bpf_uprobe", bu, ("link",)).int("link")
            if not ml:
                return
            link = ml + lay.offset("bpf_uprobe_multi_link", "link")
            info = self.dec.read(link)
            path = info.info.get("path") or "?"
            kind = "uretprobe" if info.info.get("retprobe") else "uprobe"
            yield self.attachment(kind, f"{path}+{offset:#x}", "uprobe_multi", info.prog_kva, link,
                                  "uprobes_tree -> bpf_uprobe -> uprobe_multi link")

    # --- perf events -----------------------------------------------------------------------

    def perf_contexts(self, tasks=()):
        """``perf_event->prog`` of the events of every CPU's and every given task's context."""
        lay = self.layout
        if not lay.has("perf_event", "prog") or not lay.has("perf_event_context", "event_list"):
            return
        ctxs = []
        if self.k.symbol("perf_cpu_context") and lay.has("perf_cpu_context", "ctx"):
            try:
                for cpu, pcpu in enumerate(self.k.percpu_addresses("perf_cpu_context")):
                    ctxs.append((pcpu + lay.offset("perf_cpu_context", "ctx"), f"cpu{cpu}"))
            except (ReadError, LayoutError, KtstrError) as e:     # no per-CPU offsets
                self.damage.add("perf_cpu_context", 0, f"per-CPU contexts not read ({e})")
        if tasks and lay.has("task_struct", "perf_event_ctxp"):
            off = lay.offset("task_struct", "perf_event_ctxp")
            for t in tasks:
                try:
                    ctx = self.reader.ptr(t + off)
                except ReadError:
                    continue
                if ctx:
                    ctxs.append((ctx, f"task {t:#x}"))
        seen = set()
        for ctx, where in ctxs:
            if ctx in seen:
                continue
            seen.add(ctx)
            head = ctx + lay.offset("perf_event_context", "event_list")
            if not any(self.reader.try_read(head, lay.size("list_head")) or b"\1"):
                continue    # a context never initialised (reads as zeros): no events
            for event in list_entries(self.reader, lay, head,
                                      "perf_event", "event_entry", limit=MAX_PERF_EVENTS,
                                      damage=self.damage, what=f"perf_event ({where} context)"):
                try:
                    prog = Record(self.reader, lay, "perf_event", event, ("prog",)).int("prog")
                    if not prog:
                        continue
                    p = self.k.prog_by_kva.get(prog)
                    ptype = p.type_name if p is not None else self._prog_type(prog)
                    _info, hook = describe_perf_event(self.dec, event, ptype)
                except (ReadError, LayoutError) as e:
                    self.damage.add("perf_event", event, f"unreadable ({e})")
                    continue
                yield self.attachment(hook.kind, hook.target, "perf_event", prog, -1,
                                      f"perf_event_context ({where})->event_list: perf_event->prog")

    def _prog_type(self, prog):
        from .progs import read_prog

        return read_prog(self.reader, self.layout, prog, type_names=self.k.prog_type_names).type_name

    # --- lirc ------------------------------------------------------------------------------

    def lirc(self):
        """``BPF_LIRC_MODE2`` programs of every raw-decoding rc device (bpf/lirc.py); why none
        could be read goes to ``self.notes`` (absent) or the damage log (a gap)."""
        from .lirc import lirc_source, rc_devices

        src = lirc_source(self.k, self.damage)
        if src.note:
            if src.damage:
                self.damage.add("lirc", 0, src.note)
            else:
                self.notes.append(f"lirc: {src.note}")
            return
        for dev, name, progs in rc_devices(self.k, src, self.damage):
            for p in self.prog_array(progs, f"rc device {name} raw->progs"):
                yield self.attachment("lirc", f"rc:{name}", "lirc_mode2", p, -1,
                                      f"{src.where} ir_raw_client_list -> rc_dev {dev:#x} raw->progs")

    # --- netfilter -------------------------------------------------------------------------

    def netfilter(self):
        lay = self.layout
        head = self.k.symbol("net_namespace_list")
        run_bpf = self.k.symbol("nf_hook_run_bpf")
        if not head or not run_bpf or not lay.has("net", "nf") or not lay.has("nf_hook_entries", "hooks"):
            return
        nf_off = lay.offset("net", "nf")
        fams = [(m, fam) for m, fam in NF_FAMILIES.items() if lay.has("netns_nf", m)]
        for net, ino in netdev.namespaces(self.reader, lay, head, self.damage):
            for member, fam in fams:
                f = lay.field("netns_nf", member)
                try:
                    raw = self.reader.read(net + nf_off + f.offset, f.size)
                except ReadError as e:
                    self.damage.add("netns_nf", net, f"{member} unreadable ({e.reason})")
                    continue
                for hooknum in range(f.count):
                    entries = int.from_bytes(raw[hooknum * f.elem_size:(hooknum + 1) * f.elem_size], "little")
                    if entries:
                        try:
                            yield from self._nf_entries(entries, net, ino, fam, hooknum, member, run_bpf)
                        except ReadError as e:
                            self.damage.add("nf_hook_entries", entries, f"unreadable ({e.reason})")

    def _nf_entries(self, entries, net, ino, fam, hooknum, member, run_bpf):
        lay = self.layout
        num = Record(self.reader, lay, "nf_hook_entries", entries, ("num_hook_entries",)).int("num_hook_entries")
        num = min(num, MAX_NF_ENTRIES)
        stride = lay.size("nf_hook_entry")
        hooks = entries + lay.offset("nf_hook_entries", "hooks")
        raw = self.reader.read(hooks, num * stride)
        # nf_hook_entries_get_hook_ops(): the ops pointers follow the hooks array
        ops_raw = self.reader.read(hooks + num * stride, num * self.reader.pointer_size)
        f_hook = lay.field("nf_hook_entry", "hook")
        f_priv = lay.field("nf_hook_entry", "priv")
        ps = self.reader.pointer_size
        hname = nf_hook_name(self.k, fam, hooknum)
        owner = self.dec.netns_owner(net)
        for i in range(num):
            if f_hook.decode(raw, -i * stride) != run_bpf:
                continue
            prog = f_priv.decode(raw, -i * stride)
            ops = int.from_bytes(ops_raw[i * ps:(i + 1) * ps], "little")
            prio, link = None, 0
            if ops:
                try:
                    prio = Record(self.reader, lay, "nf_hook_ops", ops, ("priority",)).int("priority")
                except ReadError:
                    prio = None
                if lay.has("bpf_nf_link", "hook_ops"):
                    link = ops - lay.offset("bpf_nf_link", "hook_ops") + lay.offset("bpf_nf_link", "link")
            target = f"nf:{fam}/{hname} prio {prio if prio is not None else '?'} netns:{ino}{owner}"
            yield self.attachment("netfilter", target, "netfilter", prog, link or -1,
                                  f"net->nf.{member}[{hooknum}]->hooks[{i}]")
