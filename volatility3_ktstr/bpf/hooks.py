"""Where BPF programs are attached, read from the hooks themselves (with or without a link).

Each walker reads one kind of kernel hook and yields an :class:`Attachment` per (hook, program)
with the link that made it when the hook keeps one (``link_kva``; 0 = attached without a link,
``BPF_PROG_ATTACH`` and friends):

- cgroups (``cgrp_dfl_root`` tree): ``cgroup->bpf.progs[atype]`` lists of ``struct
  bpf_prog_list {prog, link}``; ``cgroup->bpf.effective[atype]`` arrays (what actually runs,
  inherited programs included) are checked against the lists of the cgroup and its ancestors.
- network devices (every namespace): ``dev->xdp_state[mode] {prog, link}`` (and
  ``dev->xdp_prog``), ``dev->tcx_ingress/tcx_egress`` (``struct bpf_mprog_entry``:
  ``fp_items[i].prog`` with ``parent->cp_items[i].link``), classic tc filters of the clsact
  qdisc (``tcx_entry->miniq->filter_list``: ``struct tcf_proto`` chain; ``cls_bpf`` programs
  when the kernel types have ``struct cls_bpf_prog``).
- network namespaces: ``net->bpf.progs[type]`` (legacy flow dissector / sk_lookup attach) and
  ``net->bpf.run_array[type]``.
- trampolines (``trampoline_key_table``/``trampoline_table``): ``progs_hlist[kind]`` nodes
  (fentry, fexit, fmod_ret, LSM) with their links, and ``extension_prog`` (freplace).
- trace events (``ftrace_events`` and the events of perf fds): ``prog_array``; perf events'
  ``prog`` (``PERF_EVENT_IOC_SET_BPF`` without a link).
- struct_ops maps: ``links[]`` -> the programs implementing the ops.
- sockmap/sockhash: ``progs.{msg_parser, stream_parser, stream_verdict, skb_verdict}`` and
  their ``*_link``.
- prog_array maps: tail-call slots (``bpf_array.ptrs[i]``).
- the probe side (``bpf.probes``, a mixin): kprobes, tracepoint probes, fprobes, uprobes, perf
  event contexts per CPU and task, netfilter hook entries -- what reaches a program whose
  registry slots, links, fds and kallsyms entry are all gone.

No Volatility import; every walk bounded and cycle-checked (``kds``), damage into a DamageLog.
"""

from dataclasses import dataclass

from ..core import LayoutError, ReadError, Record
from ..kds import DamageLog, follow, hash_table_nodes, hlist_nodes, list_entries
from ..walkers import netdev
from ..walkers.owners import OwnerResolver
from .probes import ProbeWalks
from .links import (NETNS_ATTACH, LinkDecoder, describe_perf_event, lsm_cgroup_hook, split_key,
                    trace_call_name)

MAX_ARRAY_ITEMS = 1 << 12       # items of one bpf_prog_array (BPF_TRACE_MAX_PROGS is 64)
MAX_PROG_LIST = 1 << 12         # programs on one cgroup hook (BPF_CGROUP_MAX_PROGS is 64)
MAX_TRAMPOLINES = 1 << 16
MAX_TRAMP_PROGS = 1 << 10       # per trampoline kind (BPF_MAX_TRAMP_LINKS is 38)
MAX_TABLE_HEADS = 1 << 16
# The bpf_trampoline hash table, by the member that links a trampoline into it: newer kernels
# keep trampoline_key_table (hlist_key), older ones trampoline_table (hlist).
TRAMPOLINE_TABLES = {"hlist_key": "trampoline_key_table", "hlist": "trampoline_table"}
MAX_TRACE_EVENTS = 1 << 16
MAX_TC_FILTERS = 1 << 12
MAX_SLOTS = 1 << 16             # prog_array slots read


@dataclass
class Attachment:
    hook: str                  # cgroup, xdp, tcx, tc, netns, trampoline, tracepoint, kprobe, ...
    target: str                # cgroup:/lab/web, dev:lo, netns:4026531833, bpf_lsm_file_open ...
    attach_type: str
    prog_kva: int
    link_kva: int = 0          # the link the hook records: 0 = attached without a link,
                               # -1 = this hook does not record links (run arrays, perf events)
    via: str = ""              # the kernel structure it was read from
    note: str = ""
    map_kva: int = 0           # the map holding the hook (struct_ops, sockmap, prog_array)


class HookWalker(ProbeWalks):
    """Walks the hooks of one kernel (a :class:`BpfKernel`)."""

    def __init__(self, kernel, damage=None):
        self.k = kernel
        self.reader = kernel.reader
        self.layout = kernel.layout
        self.damage = damage if damage is not None else DamageLog()
        self.notes = []            # why a hook family has nothing to walk (absent, not damaged)
        self.dec = LinkDecoder(kernel)
        self.owners = OwnerResolver(self.reader, self.layout)
        self.dummy = {a for a in (kernel.symbol("dummy_bpf_prog"),) if a}
        shim = kernel.symbol("bpf_shim_tramp_link_lops")
        self.shim_ops = shim or None

    def all(self, perf_events=(), tasks=()):
        """Every attachment of every walker (``perf_events``: perf_event addresses from fds;
        ``tasks``: task_struct addresses whose perf contexts to read)."""
        for walk in (self.cgroups, self.devices, self.netns, self.trampolines,
                     lambda: self.trace_events(perf_events), self.struct_ops, self.sockmaps,
                     self.tail_calls) + self.probe_walks(tasks):
            try:
                yield from walk()
            except (ReadError, LayoutError) as e:
                self.damage.add(getattr(walk, "__name__", "hooks"), 0, str(e))

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def attachment(*args, **kw) -> "Attachment":
        return Attachment(*args, **kw)

    def prog_array(self, arr, what):
        """Program addresses of a ``struct bpf_prog_array`` (NULL-terminated ``items``)."""
        if not arr:
            return []
        lay = self.layout
        base = arr + lay.offset("bpf_prog_array", "items")
        stride = lay.size("bpf_prog_array_item")
        f_prog = lay.field("bpf_prog_array_item", "prog")
        out = []
        chunk = 16
        for first in range(0, MAX_ARRAY_ITEMS, chunk):
            raw = self.reader.try_read(base + first * stride, chunk * stride)
            if raw is None:
                self.damage.add(what, base + first * stride, "prog array items unreadable")
                return out
            for i in range(chunk):
                p = f_prog.decode(raw, -i * stride)
                if not p:
                    return out
                if p not in self.dummy:
                    out.append(p)
        self.damage.add(what, arr, f"more than {MAX_ARRAY_ITEMS} items")
        return out

    def _enum_names(self, enum, prefix=""):
        return {v: (k[len(prefix):] if k.startswith(prefix) else k).lower()
                for k, v in self.k.constants(enum).items()}

    # --- cgroups ---------------------------------------------------------------------------

    def cgroups(self):
        lay, reader = self.layout, self.reader
        root = self.k.symbol("cgrp_dfl_root")
        if not root or not lay.has("cgroup", "bpf") or not lay.has("bpf_prog_list", "prog"):
            return
        atypes = self._enum_names("cgroup_bpf_attach_type")
        lsm_start = self.k.constants("cgroup_bpf_attach_type").get("CGROUP_LSM_START")
        lsm_end = self.k.constants("cgroup_bpf_attach_type").get("CGROUP_LSM_END")
        bpf_off = lay.offset("cgroup", "bpf")
        f_progs = lay.field("cgroup_bpf", "progs")
        f_eff = lay.field("cgroup_bpf", "effective")
        head_size = lay.size("hlist_head")
        f_first = lay.field("hlist_head", "first")
        node_off = lay.offset("bpf_prog_list", "node")
        attached = {}            # cgroup -> {atype: set(prog)}
        parents = {}
        for cg, parent in self._cgroup_tree(root + lay.offset("cgroup_root", "cgrp")):
            parents[cg] = parent
            owner = self.owners.resolve("cgroup", cg)
            path = owner.name or f"<cgroup {cg:#x}>"
            mine = attached.setdefault(cg, {})
            try:
                rec = Record(reader, lay, "cgroup_bpf", cg + bpf_off, ("effective", "progs"))
            except ReadError as e:
                self.damage.add("cgroup_bpf", cg, f"unreadable ({e.reason})")
                continue
            raw, lo = rec.data, rec.lo
            for atype in range(f_progs.count):
                if not f_first.decode(raw, lo - f_progs.offset - atype * head_size):
                    continue
                name = "lsm_cgroup" if lsm_start is not None and lsm_start <= atype <= (lsm_end or atype) \
                    else atypes.get(atype, f"cgroup atype {atype}")
                head = cg + bpf_off + f_progs.offset + atype * head_size
                for node in hlist_nodes(reader, lay, head, limit=MAX_PROG_LIST, damage=self.damage,
                                        what="bpf_prog_list"):
                    try:
                        pl = Record(reader, lay, "bpf_prog_list", node - node_off, ("prog", "link"))
                    except ReadError as e:
                        self.damage.add("bpf_prog_list", node, f"unreadable ({e.reason})")
                        continue
                    prog, link = pl.int("prog"), pl.int("link")
                    if not prog and link:        # a link's program is read through the link
                        try:
                            prog = reader.ptr(link + lay.offset("bpf_link", "prog"))
                        except ReadError:
                            prog = 0
                    mine.setdefault(atype, set()).add(prog)
                    yield Attachment("cgroup", f"cgroup:{path}",
                                     lsm_cgroup_hook(reader, lay, prog, self.k.prog_type_names)
                                     if name == "lsm_cgroup" else name, prog, link,
                                     f"cgroup->bpf.progs[{atype}]")
            # effective arrays: every program must be attached here or at an ancestor
            for atype in range(f_eff.count):
                at = f_eff.offset + atype * f_eff.elem_size - lo
                arr = int.from_bytes(raw[at:at + f_eff.elem_size], "little")
                progs = self.prog_array(arr, "cgroup effective array")
                if not progs:
                    continue
                known = set()
                c = cg
                for _ in range(64):
                    known |= attached.get(c, {}).get(atype, set())
                    c = parents.get(c)
                    if not c:
                        break
                for p in progs:
                    if p not in known:
                        name = atypes.get(atype, f"cgroup atype {atype}")
                        yield Attachment("cgroup", f"cgroup:{path}", name, p, 0,
                                         f"cgroup->bpf.effective[{atype}]",
                                         "runs here but attached at no ancestor's list")

    def _cgroup_tree(self, root):
        """(cgroup, parent) depth first."""
        lay = self.layout
        self_off = lay.offset("cgroup", "self")
        parent_off = lay.offset("cgroup_subsys_state", "parent") if lay.has("cgroup_subsys_state", "parent") else None
        for cg in netdev.cgroups(self.reader, lay, root, self.damage):
            parent = 0
            if parent_off is not None and cg != root:
                try:
                    css = self.reader.ptr(cg + self_off + parent_off)
                    parent = css - self_off if css else 0
                except ReadError:
                    parent = 0
            yield cg, parent

    # --- network devices -------------------------------------------------------------------

    def devices(self):
        head = self.k.symbol("net_namespace_list")
        if not head or not self.layout.has("net_device", "dev_list"):
            return
        for dev in netdev.all_devices(self.reader, self.layout, head, self.damage):
            try:
                yield from self._device(dev)
            except ReadError as e:
                self.damage.add("net_device", dev.kva, f"hooks unreadable ({e.reason})")

    def _device(self, dev):
        lay, reader = self.layout, self.reader
        target = f"dev:{dev.name}"
        seen_xdp = set()
        if lay.has("net_device", "xdp_state"):
            modes = self._enum_names("bpf_xdp_mode", "XDP_MODE_")
            f = lay.field("net_device", "xdp_state")
            stride = lay.size("bpf_xdp_entity")
            raw = reader.read(dev.kva + f.offset, f.size)
            for mode in range(f.count):
                e = Record.of(lay, "bpf_xdp_entity", 0, raw[mode * stride:(mode + 1) * stride])
                prog, link = e.int("prog"), e.int("link")
                if link and not prog:   # dev_xdp_prog(): a link's program is read through it
                    prog = reader.ptr(link + lay.offset("bpf_link", "prog"))
                if prog:
                    seen_xdp.add(prog)
                    yield Attachment("xdp", target, f"xdp_{modes.get(mode, mode)}", prog, link,
                                     f"net_device->xdp_state[{modes.get(mode, mode)}]")
        if lay.has("net_device", "xdp_prog"):
            prog = reader.ptr(dev.kva + lay.offset("net_device", "xdp_prog"))
            if prog and prog not in seen_xdp:
                yield Attachment("xdp", target, "xdp_skb", prog, 0, "net_device->xdp_prog",
                                 "not in xdp_state")
        for direction in ("ingress", "egress"):
            member = f"tcx_{direction}"
            if lay.has("net_device", member):
                entry = reader.ptr(dev.kva + lay.offset("net_device", member))
                if entry:
                    yield from self._mprog(entry, target, member, f"net_device->{member}")
                    yield from self._tc_filters(entry, target, direction)

    def _mprog(self, entry, target, attach_type, via):
        """Programs of a ``struct bpf_mprog_entry`` with their links (``parent->cp_items``)."""
        lay, reader = self.layout, self.reader
        f_fp = lay.field("bpf_mprog_entry", "fp_items")
        f_fp_prog = lay.field("bpf_mprog_fp", "prog")
        r = Record(reader, lay, "bpf_mprog_entry", entry)
        bundle = r.int("parent")
        count = f_fp.count
        links = []
        if bundle:
            b = Record(reader, lay, "bpf_mprog_bundle", bundle, ("count", "cp_items"))
            count = min(b.int("count"), f_fp.count)
            f_cp = lay.field("bpf_mprog_bundle", "cp_items")
            f_cp_link = lay.field("bpf_mprog_cp", "link")
            links = [f_cp_link.decode(b.data, b.lo - f_cp.offset - i * f_cp.elem_size)
                     for i in range(count)]
        for i in range(count):
            prog = f_fp_prog.decode(r.data, r.lo - f_fp.offset - i * f_fp.elem_size)
            if not prog:
                break
            yield Attachment("tcx", target, attach_type, prog, links[i] if i < len(links) else 0,
                             f"{via}->fp_items[{i}]")

    def _tc_filters(self, entry, target, direction):
        """Classic tc filters of the clsact qdisc: ``tcx_entry->miniq->filter_list``."""
        lay, reader = self.layout, self.reader
        if not (lay.has("bpf_mprog_entry", "parent") and lay.has("tcx_entry", "miniq")
                and lay.has("mini_Qdisc", "filter_list")):
            return
        bundle = reader.ptr(entry + lay.offset("bpf_mprog_entry", "parent"))
        if not bundle:
            return
        tcx = bundle - lay.offset("tcx_entry", "bundle")
        miniq = reader.ptr(tcx + lay.offset("tcx_entry", "miniq"))
        if not miniq:
            return
        first = reader.ptr(miniq + lay.offset("mini_Qdisc", "filter_list"))
        fields = [lay.field("tcf_proto", m) for m in ("next", "root", "ops", "prio")]
        lo = min(f.offset for f in fields)
        window = (lo, max(f.end for f in fields) - lo)
        for tp, raw in follow(reader, first, lay.offset("tcf_proto", "next"), lambda a: a == 0,
                              limit=MAX_TC_FILTERS, damage=self.damage, what="tcf_proto",
                              window=window):
            if raw is None:
                self.damage.add("tcf_proto", tp, "filter unreadable")
                continue
            r = Record.of(lay, "tcf_proto", tp, raw, lo)
            ops = r.int("ops")
            kind = Record(reader, lay, "tcf_proto_ops", ops, ("kind",)).str("kind") if ops else "?"
            if kind == "bpf":
                yield from self._cls_bpf(r.int("root"), target, direction, r.int("prio"))

    def _cls_bpf(self, head, target, direction, prio):
        """Programs of a cls_bpf filter: ``tcf_proto.root`` is a ``struct cls_bpf_head`` whose
        ``plist`` holds ``struct cls_bpf_prog {filter, link}`` (types of the cls_bpf module: from
        its BTF in the dump when the kernel's own types lack them)."""
        lay = self.layout
        via = f"tcx_entry->miniq->filter_list (bpf prio {prio >> 16 if prio > 0xFFFF else prio})"
        if not (lay.has("cls_bpf_head", "plist") and lay.has("cls_bpf_prog", "filter")):
            lay = self.k.module_layout("cls_bpf")
        if lay is None or not (lay.has("cls_bpf_head", "plist") and lay.has("cls_bpf_prog", "filter")):
            yield Attachment("tc", target, f"tc_{direction}", 0, 0, via,
                             "cls_bpf filter: struct cls_bpf_prog is in neither the kernel types "
                             "nor a cls_bpf module BTF in the dump: programs not read")
            return
        for fp in list_entries(self.reader, lay, head + lay.offset("cls_bpf_head", "plist"),
                               "cls_bpf_prog", "link", limit=MAX_TC_FILTERS, damage=self.damage,
                               what="cls_bpf_prog"):
            prog = self.reader.ptr(fp + lay.offset("cls_bpf_prog", "filter"))
            if prog:
                yield Attachment("tc", target, f"tc_{direction}", prog, 0, via)

    # --- network namespaces ----------------------------------------------------------------

    def netns(self):
        lay, reader = self.layout, self.reader
        head = self.k.symbol("net_namespace_list")
        if not head or not lay.has("net", "bpf") or not lay.has("netns_bpf", "progs"):
            return
        types = {v: k for k, v in self.k.constants("netns_bpf_attach_type").items()}
        bpf_off = lay.offset("net", "bpf")
        f_progs = lay.field("netns_bpf", "progs")
        f_run = lay.field("netns_bpf", "run_array")
        for net, ino in netdev.namespaces(reader, lay, head, self.damage):
            try:
                raw = reader.read(net + bpf_off, lay.size("netns_bpf"))
            except ReadError as e:
                self.damage.add("netns_bpf", net, f"unreadable ({e.reason})")
                continue
            target = f"netns:{ino}{self.dec.netns_owner(net)}"
            for i in range(f_progs.count):
                name = NETNS_ATTACH.get(types.get(i), f"netns_type {i}")
                prog = int.from_bytes(raw[f_progs.offset + f_progs.elem_size * i:][:f_progs.elem_size], "little")
                if prog:
                    yield Attachment("netns", target, name, prog, 0, f"net->bpf.progs[{i}]")
                arr = int.from_bytes(raw[f_run.offset + f_run.elem_size * i:][:f_run.elem_size], "little")
                for p in self.prog_array(arr, "netns run_array"):
                    # link-attached programs are only in run_array: the link walk names them
                    yield Attachment("netns", target, name, p, -1, f"net->bpf.run_array[{i}]")

    # --- trampolines -----------------------------------------------------------------------

    def trampoline_heads(self):
        """(table address, head count, member) of the trampoline hash table."""
        lay = self.layout
        for member, sym in TRAMPOLINE_TABLES.items():
            addr = self.k.symbol(sym)
            if addr and lay.has("bpf_trampoline", member):
                return addr, self.k.symbol_size(sym) // lay.size("hlist_head"), member
        return None

    def trampolines(self):
        """Every ``struct bpf_trampoline`` of the hash table."""
        table = self.trampoline_heads()
        if table is None:
            return
        addr, n, member = table
        n = min(max(n, 0), MAX_TABLE_HEADS)
        lay = self.layout
        off = lay.offset("bpf_trampoline", member)
        for node in hash_table_nodes(self.reader, lay, addr, n, limit=MAX_TRAMPOLINES,
                                     damage=self.damage, what="bpf_trampoline",
                                     table_name=TRAMPOLINE_TABLES[member]):
            try:
                yield from self._trampoline(node - off)
            except ReadError as e:
                self.damage.add("bpf_trampoline", node - off, f"unreadable ({e.reason})")

    def _trampoline(self, tr):
        lay, reader = self.layout, self.reader
        r = Record(reader, lay, "bpf_trampoline", tr, ("key", "ip", "extension_prog", "progs_hlist"))
        obj_id, btf_id = split_key(r.int("key"))
        name = self.dec.target_name(obj_id, btf_id) or self.k.symbol_near(r.int("ip", 0)) \
            or f"btf_obj{obj_id}/type{btf_id}"
        kinds = self._enum_names("bpf_tramp_prog_type", "BPF_TRAMP_")
        ext = r.int("extension_prog", 0)
        if ext:
            yield Attachment("trampoline", name, "freplace", ext, 0, "bpf_trampoline->extension_prog")
        f = lay.field("bpf_trampoline", "progs_hlist")
        new_nodes = lay.has("bpf_tramp_node", "tramp_hlist")
        if new_nodes:
            node_off = lay.offset("bpf_tramp_node", "tramp_hlist")
            link_off = lay.offset("bpf_tramp_node", "link")
        else:
            node_off = lay.offset("bpf_tramp_link", "tramp_hlist")
            link_off = None
        for kind in range(f.count):
            head = tr + f.offset + kind * f.elem_size
            for node in hlist_nodes(reader, lay, head, limit=MAX_TRAMP_PROGS, damage=self.damage,
                                    what="trampoline node"):
                base = node - node_off
                link = reader.ptr(base + link_off) if link_off is not None else \
                    base + lay.offset("bpf_tramp_link", "link")
                if not link:
                    continue
                lr = Record(reader, lay, "bpf_link", link, ("prog", "ops"))
                if self.shim_ops and lr.int("ops") == self.shim_ops:
                    continue        # the lsm_cgroup shim: its cgroup link is reported instead
                yield Attachment("trampoline", name, kinds.get(kind, f"kind {kind}"),
                                 lr.int("prog"), link, f"bpf_trampoline->progs_hlist[{kind}]")

    # --- trace events, perf events ---------------------------------------------------------

    def trace_events(self, perf_events=()):
        lay, reader = self.layout, self.reader
        if not lay.has("trace_event_call", "prog_array"):
            return
        calls = {}
        head = self.k.symbol("ftrace_events")
        if head:
            for call in list_entries(reader, lay, head, "trace_event_call", "list",
                                     limit=MAX_TRACE_EVENTS, damage=self.damage,
                                     what="trace_event_call (ftrace_events)"):
                calls[call] = "ftrace_events"
        for event in perf_events:
            try:
                r = Record(reader, lay, "perf_event", event, ("prog", "tp_event"))
            except ReadError as e:
                self.damage.add("perf_event", event, f"unreadable ({e.reason})")
                continue
            if r.int("tp_event"):
                calls.setdefault(r.int("tp_event"), "perf event fd")
            if r.int("prog"):
                prog = self.k.prog_by_kva.get(r.int("prog"))
                try:
                    _info, hook = describe_perf_event(self.dec, event, prog.type_name if prog else None)
                except (ReadError, LayoutError) as e:
                    self.damage.add("perf_event", event, f"event unreadable ({e})")
                    continue
                yield Attachment(hook.kind, hook.target, "perf_event", r.int("prog"), -1,
                                 "perf_event->prog (perf fd)")
        for call, where in calls.items():
            try:
                arr = reader.ptr(call + lay.offset("trace_event_call", "prog_array"))
                if not arr:
                    continue
                progs = self.prog_array(arr, "trace_event_call prog_array")
                name = trace_call_name(self.k, reader, lay, call)
            except ReadError as e:
                self.damage.add("trace_event_call", call, f"unreadable ({e.reason})")
                continue
            for p in progs:
                yield Attachment("trace_event", name, "perf_event", p, -1,
                                 f"trace_event_call->prog_array ({where})")

    # --- maps ------------------------------------------------------------------------------

    def struct_ops(self):
        lay, reader = self.layout, self.reader
        if not lay.has("bpf_struct_ops_map", "links"):
            return
        for m in self.k.maps:
            if m.type_name != "struct_ops" or m.error:
                continue
            try:
                r = Record(reader, lay, "bpf_struct_ops_map", m.kva - lay.offset("bpf_struct_ops_map", "map"),
                           ("links", "funcs_cnt"))
                n = r.int("funcs_cnt") if r.has("funcs_cnt") else 64
                links = r.int("links")
                raw = reader.read(links, 8 * min(n, 256)) if links and n else b""
            except ReadError as e:
                self.damage.add("bpf_struct_ops_map", m.kva, f"links unreadable ({e.reason})")
                continue
            vtype = self.k.btf_type_name(self.k.kernel_btf_id, m.btf_vmlinux_value_type_id)
            ops = vtype[len("bpf_struct_ops_"):] if vtype.startswith("bpf_struct_ops_") else vtype
            for i in range(len(raw) // 8):
                link = int.from_bytes(raw[8 * i:8 * i + 8], "little")
                if not link:
                    continue
                try:
                    prog = reader.ptr(link + lay.offset("bpf_link", "prog"))
                except ReadError as e:
                    self.damage.add("struct_ops link", link, f"unreadable ({e.reason})")
                    continue
                p = self.k.prog_by_kva.get(prog)
                member = p.attach_func_name if p is not None and p.attach_func_name else f"#{i}"
                yield Attachment("struct_ops", f"{ops}.{member}", "struct_ops", prog, -1,
                                 f"struct_ops map {m.name} (id {m.id})->links[{i}]", map_kva=m.kva)

    def sockmaps(self):
        lay, reader = self.layout, self.reader
        for m in self.k.maps:
            struct = {"sockmap": "bpf_stab", "sockhash": "bpf_shtab"}.get(m.type_name)
            if struct is None or m.error or not lay.has(struct, "progs"):
                continue
            base = m.kva - lay.offset(struct, "map")
            try:
                r = Record(reader, lay, "sk_psock_progs", base + lay.offset(struct, "progs"))
            except ReadError as e:
                self.damage.add(struct, m.kva, f"progs unreadable ({e.reason})")
                continue
            for slot in ("msg_parser", "stream_parser", "stream_verdict", "skb_verdict"):
                prog = r.int(slot, 0)
                if prog:
                    attach = {"msg_parser": "sk_msg_verdict", "stream_parser": "sk_skb_stream_parser",
                              "stream_verdict": "sk_skb_stream_verdict",
                              "skb_verdict": "sk_skb_verdict"}[slot]
                    yield Attachment("sockmap", f"map:{m.name}", attach, prog,
                                     r.int(slot + "_link", 0), f"{struct}->progs.{slot}", map_kva=m.kva)

    def tail_calls(self):
        for m in self.k.maps:
            if m.type_name != "prog_array" or m.error:
                continue
            for i, prog in map_slots(self.reader, self.layout, m, self.damage):
                yield Attachment("tail_call", f"{m.name}[{i}]", "tail_call", prog, 0,
                                 f"prog_array {m.name} (id {m.id}) slot {i}", map_kva=m.kva)


def map_slots(reader, layout, m, damage=None, limit=MAX_SLOTS):
    """(index, pointer) of the non-empty slots of a prog_array / array_of_maps /
    perf_event_array (``bpf_array.ptrs[max_entries]``)."""
    damage = damage if damage is not None else DamageLog()
    n = min(m.max_entries, limit)
    base = m.kva - layout.offset("bpf_array", "map") + layout.first("bpf_array", "ptrs", "value")
    per = 4096 // 8
    for first in range(0, n, per):
        cnt = min(per, n - first)
        raw = reader.try_read(base + 8 * first, 8 * cnt)
        if raw is None:
            damage.add(f"{m.type_name} slots", base + 8 * first, f"slots {first}.. of map {m.id} unreadable")
            continue
        for i in range(cnt):
            p = int.from_bytes(raw[8 * i:8 * i + 8], "little")
            if p:
                yield first + i, p
