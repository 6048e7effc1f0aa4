"""BPF links from the kernel's ``link_idr``, their attach targets decoded per link type.

``struct bpf_link`` {id, type, ops, prog, attach_type (6.17+), ...} is embedded in a container
struct per link type (kernel/bpf/*.c, net/*); the container is found from ``link->type``
(``enum bpf_link_type``) and read with one bulk read. A kernel whose types lack a container
(older kernels, features compiled out) keeps the link's row with a note instead of a target:
features are checked in the layout, never by version.

| link type      | container                | target                                         |
|----------------|--------------------------|------------------------------------------------|
| raw_tracepoint | bpf_raw_tp_link          | btp->tp->name                                  |
| tracing        | bpf_tracing_link         | trampoline key (BTF obj << 32 | type), ip      |
| cgroup         | bpf_cgroup_link          | cgroup (kernfs id, path)                       |
| iter           | bpf_iter_link            | tinfo->reg_info->target                        |
| netns          | bpf_netns_link           | net->ns.inum                                   |
| xdp, tcx, netkit | bpf_xdp_link, tcx_link, netkit_link | dev (name, ifindex)               |
| perf_event     | bpf_perf_link            | perf_file->private_data: a perf_event          |
| kprobe_multi   | bpf_kprobe_multi_link    | addrs[cnt]                                     |
| uprobe_multi   | bpf_uprobe_multi_link    | path, uprobes[cnt].offset, task                |
| struct_ops     | bpf_struct_ops_link      | map                                            |
| netfilter      | bpf_nf_link              | hook_ops (pf, hooknum, priority)               |
| sockmap        | sockmap_link             | map                                            |
| tracing_multi  | bpf_tracing_multi_link   | nodes[nodes_cnt].trampoline                    |

``info`` holds the fields ``bpftool link show -j`` prints for the type (same names), so the
JSON stays close to bpftool's. No Volatility import.
"""

from dataclasses import dataclass, field

from ..core import LayoutError, ReadError, Record, read_int
from ..kds import idr_entries, list_nodes
from ..walkers.netdev import NetDev
from ..walkers.owners import OwnerResolver
from ..walkers.vfs import Vfs

MAX_LINKS = 1 << 16
MAX_MULTI = 1 << 16         # kprobe_multi addrs / uprobe_multi uprobes (the kernel caps at 1M)
MAX_NAME = 256
BTF_MAX_TYPE = 0xFFFFF      # uapi linux/btf.h: type ids fit in 20 bits (higher key bits are flags)

# link type -> (container struct, member path of its struct bpf_link)
CONTAINERS = {
    "raw_tracepoint": ("bpf_raw_tp_link", "link"),
    "tracing": ("bpf_tracing_link", "link.link"),
    "cgroup": ("bpf_cgroup_link", "link"),
    "iter": ("bpf_iter_link", "link"),
    "netns": ("bpf_netns_link", "link"),
    "xdp": ("bpf_xdp_link", "link"),
    "perf_event": ("bpf_perf_link", "link"),
    "kprobe_multi": ("bpf_kprobe_multi_link", "link"),
    "struct_ops": ("bpf_struct_ops_link", "link"),
    "netfilter": ("bpf_nf_link", "link"),
    "tcx": ("tcx_link", "link"),
    "uprobe_multi": ("bpf_uprobe_multi_link", "link"),
    "netkit": ("netkit_link", "link"),
    "sockmap": ("sockmap_link", "link"),
    "tracing_multi": ("bpf_tracing_multi_link", "link"),
}

# link type -> the link_ops symbols its links use (a mismatch is worth a note)
OPS_SYMBOLS = {
    "raw_tracepoint": ("bpf_raw_tp_link_lops",),
    "tracing": ("bpf_tracing_link_lops",),
    "cgroup": ("bpf_cgroup_link_lops",),
    "iter": ("bpf_iter_link_lops",),
    "netns": ("bpf_netns_link_ops",),
    "xdp": ("bpf_xdp_link_lops",),
    "perf_event": ("bpf_perf_link_lops",),
    "kprobe_multi": ("bpf_kprobe_multi_link_lops",),
    "struct_ops": ("bpf_struct_ops_map_lops", "bpf_struct_ops_link_lops"),
    "netfilter": ("bpf_nf_link_lops",),
    "tcx": ("tcx_link_lops",),
    "uprobe_multi": ("bpf_uprobe_multi_link_lops",),
    "netkit": ("netkit_link_lops",),
    "sockmap": ("sock_map_link_ops",),
    "tracing_multi": ("bpf_tracing_multi_link_lops",),
}

# uapi enum bpf_link_type (stable): names when the kernel's enum is unavailable.
UAPI_LINK_TYPES = ("unspec raw_tracepoint tracing cgroup iter netns xdp perf_event kprobe_multi "
                   "struct_ops netfilter tcx uprobe_multi netkit sockmap").split()
NETNS_ATTACH = {"NETNS_BPF_FLOW_DISSECTOR": "flow_dissector", "NETNS_BPF_SK_LOOKUP": "sk_lookup"}


@dataclass
class Hook:
    """Where a program runs: ``kind`` (cgroup, xdp, tcx, netkit, tracepoint, kprobe, uprobe,
    trampoline, perf_event, iter, netns, netfilter, sockmap, struct_ops, ...), ``target`` (one
    line: ``cgroup:/lab/web``, ``dev:lo``, ``kprobe:do_sys_openat2``), ``attach_type``."""

    kind: str
    target: str
    attach_type: str = ""


@dataclass
class BpfLink:
    kva: int
    id: int
    type: int = -1
    type_name: str = "?"
    ops: int = 0
    prog_kva: int = 0
    attach_type: str = ""
    info: dict = field(default_factory=dict)     # bpftool `link show -j` type-specific fields
    target: str = ""
    hooks: list = field(default_factory=list)    # [Hook]
    maps: list = field(default_factory=list)     # map kvas the link holds (struct_ops, sockmap, iter)
    error: str = None

    def note(self, text):
        self.error = f"{self.error}; {text}" if self.error else text


class LinkDecoder:
    """Reads ``struct bpf_link`` objects and their containers of one kernel (a BpfKernel)."""

    def __init__(self, kernel):
        self.k = kernel
        self.reader = kernel.reader
        self.layout = kernel.layout
        self.type_names = kernel.link_type_names() or dict(enumerate(UAPI_LINK_TYPES))
        self.attach_names = kernel.attach_type_names()
        self._ops = {}
        for tname, syms in OPS_SYMBOLS.items():
            for s in syms:
                a = kernel.symbol(s)
                if a:
                    self._ops[a] = tname
        self._vfs = None
        self._owners = None

    @property
    def vfs(self):
        if self._vfs is None:
            self._vfs = Vfs(self.reader, self.layout)
        return self._vfs

    @property
    def owners(self):
        if self._owners is None:
            self._owners = OwnerResolver(self.reader, self.layout)
        return self._owners

    def attach_name(self, value):
        return self.attach_names.get(value, f"attach_type {value}")

    # --- the link ------------------------------------------------------------------------

    def read(self, kva, link_id=None) -> BpfLink:
        link = BpfLink(kva=kva, id=link_id if link_id is not None else -1)
        try:
            r = Record(self.reader, self.layout, "bpf_link", kva,
                       ("id", "type", "ops", "prog", "attach_type"))
        except ReadError as e:
            link.error = f"struct bpf_link unreadable: {e.reason}"
            return link
        real = r.int("id")
        if link_id is not None and real != link_id:
            link.note(f"link_idr says id {link_id} but the link says {real} (stale or corrupt)")
        if link_id is None:
            link.id = real
        link.type = r.int("type")
        link.type_name = self.type_names.get(link.type, f"type {link.type}")
        link.ops = r.int("ops")
        link.prog_kva = r.int("prog")
        if r.has("attach_type"):
            value = r.int("attach_type")
            # 0 is BPF_CGROUP_INET_INGRESS, but also "not given" (raw_tp, older link types)
            if value or link.type_name == "cgroup":
                link.attach_type = self.attach_name(value)
        ops_type = self._ops.get(link.ops)
        if ops_type is not None and ops_type != link.type_name:
            link.note(f"ops are {ops_type} link ops but the type says {link.type_name}")
        self._decode(link)
        return link

    def _decode(self, link):
        spec = CONTAINERS.get(link.type_name)
        if spec is None:
            link.note(f"link type {link.type_name} not decoded")
            return
        struct, member = spec
        if not self.layout.has(struct, member):
            link.note(f"struct {struct} is not in the kernel types: target not decoded")
            return
        base = link.kva - self.layout.offset(struct, member)
        try:
            rec = Record(self.reader, self.layout, struct, base)
            getattr(self, "_" + link.type_name)(link, rec)
        except ReadError as e:
            link.note(f"{struct} target unreadable: {e.reason}")
        except LayoutError as e:
            link.note(f"{struct}: {e}")

    # --- per type -------------------------------------------------------------------------

    def _raw_tracepoint(self, link, rec):
        btp = rec.int("btp")
        name = ""
        if btp:
            tp = self.reader.ptr(btp + self.layout.offset("bpf_raw_event_map", "tp"))
            name = self.tracepoint_name(tp)
        link.info.update(tp_name=name, cookie=rec.int("cookie", 0))
        link.target = f"raw_tp:{name}"
        link.hooks.append(Hook("raw_tracepoint", name))

    def tracepoint_name(self, tp):
        if not tp:
            return ""
        ptr = self.reader.ptr(tp + self.layout.offset("tracepoint", "name"))
        return self.reader.cstring(ptr, MAX_NAME) if ptr else ""

    def _tracing(self, link, rec):
        if not link.attach_type and rec.has("attach_type"):
            link.attach_type = self.attach_name(rec.int("attach_type"))
        tr = rec.int("trampoline")
        obj_id = btf_id = 0
        ip = 0
        if tr:
            t = Record(self.reader, self.layout, "bpf_trampoline", tr, ("key", "ip"))
            obj_id, btf_id = split_key(t.int("key"))
            ip = t.int("ip", 0)
        cookie = rec.first_int("link.node.cookie", "link.cookie", default=0)
        tgt_prog = rec.int("tgt_prog", 0)
        prog = self.k.prog_by_kva.get(link.prog_kva)
        name = self.target_name(obj_id, btf_id, tgt_prog)
        link.info.update(prog_type=prog.type_name if prog else "", attach_type=link.attach_type,
                         target_obj_id=obj_id, target_btf_id=btf_id, cookie=cookie,
                         target_name=name)
        if ip:
            link.info["target_addr"] = ip
        link.target = f"{link.attach_type}:{name or f'btf_obj{obj_id}/type{btf_id}'}"
        link.hooks.append(Hook("trampoline", name or f"btf_obj{obj_id}/type{btf_id}", link.attach_type))

    def target_name(self, obj_id, btf_id, tgt_prog=0):
        """A traced function by BTF object and type id (a program's BTF when ``tgt_prog``)."""
        if tgt_prog:
            p = self.k.prog_by_kva.get(tgt_prog)
            return f"prog:{p.name}[{p.id}]" if p is not None else f"prog at {tgt_prog:#x}"
        return self.k.btf_type_name(obj_id, btf_id)

    def _cgroup(self, link, rec):
        if not link.attach_type and rec.has("type"):
            link.attach_type = self.attach_name(rec.int("type"))
        cg = rec.int("cgroup")
        owner = self.owners.resolve("cgroup", cg)
        link.info.update(cgroup_id=owner.ident if owner.ident is not None else 0,
                         attach_type=link.attach_type)
        path = owner.name or ("<cgroup gone>" if not cg else f"<{owner.error}>")
        link.info["cgroup"] = path
        link.target = f"cgroup:{path}"
        attach = link.attach_type
        if attach == "lsm_cgroup":      # the LSM hook: the program's attach function
            attach = lsm_cgroup_hook(self.reader, self.layout, link.prog_kva, self.k.prog_type_names)
        link.hooks.append(Hook("cgroup", link.target, attach))

    def _iter(self, link, rec):
        tinfo = rec.int("tinfo")
        name = ""
        if tinfo:
            reg = self.reader.ptr(tinfo + self.layout.offset("bpf_iter_target_info", "reg_info"))
            if reg:
                ptr = self.reader.ptr(reg + self.layout.offset("bpf_iter_reg", "target"))
                name = self.reader.cstring(ptr, MAX_NAME) if ptr else ""
        link.info["target_name"] = name
        m = rec.int("aux.map", 0)
        if m and name in ("bpf_map_elem", "bpf_sk_storage_map"):
            link.maps.append(m)
            mm = self.k.map_by_kva.get(m)
            link.info["map_id"] = mm.id if mm else self._map_id(m)
        link.target = f"iter:{name}"
        link.hooks.append(Hook("iter", name))

    def _map_id(self, kva):
        try:
            return read_int(self.reader, self.layout, "bpf_map", kva, "id")
        except ReadError:
            return -1

    def _netns(self, link, rec):
        net = rec.int("net")
        ino = self._netns_ino(net)
        if not link.attach_type:
            value = rec.first_int("netns_type", "type", default=-1)
            consts = {v: k for k, v in self.k.constants("netns_bpf_attach_type").items()}
            link.attach_type = NETNS_ATTACH.get(consts.get(value), f"netns_type {value}")
        link.info.update(netns_ino=ino, attach_type=link.attach_type)
        link.target = f"netns:{ino}"
        link.hooks.append(Hook("netns", link.target + self.netns_owner(net), link.attach_type))

    def netns_owner(self, net):
        """`` (init_net)`` for the initial network namespace; for another, the process with the
        lowest pid whose ``nsproxy->net_ns`` is it (`` (pid 412 ip)``), `` (no process)`` when
        no process on the task list is in it (a namespace kept by a bind mount or a socket)."""
        if not net:
            return ""
        if net == self.k.symbol("init_net"):
            return " (init_net)"
        owners = self.k.memo(("netns_owners",), self._netns_owners)
        if owners is None:
            return ""
        owner = owners.get(net)
        return f" (pid {owner[0]} {owner[1]})" if owner else " (no process)"

    def _netns_owners(self):
        """{net address: (pid, comm)} over the processes on ``init_task.tasks`` (None when the
        kernel keeps no ``nsproxy->net_ns``)."""
        from ..kds import DamageLog
        from ..walkers.tasks import processes

        lay = self.layout
        init_task = self.k.symbol("init_task")
        if not init_task or not lay.has("task_struct", "nsproxy") or not lay.has("nsproxy", "net_ns"):
            return None
        out = {}
        for t in processes(self.reader, lay, init_task, DamageLog()):
            try:
                nsproxy = read_int(self.reader, lay, "task_struct", t.kva, "nsproxy")
                net = read_int(self.reader, lay, "nsproxy", nsproxy, "net_ns") if nsproxy else 0
            except ReadError:
                continue
            if net and (net not in out or t.pid < out[net][0]):
                out[net] = (t.pid, t.comm)
        return out

    def _netns_ino(self, net):
        if not net or not self.layout.has("net", "ns"):
            return 0
        try:
            return read_int(self.reader, self.layout, "net", net, "ns.inum")
        except ReadError:
            return 0

    def device(self, dev):
        """:class:`NetDev` of the ``struct net_device`` at ``dev`` (ReadError when unreadable)."""
        r = Record(self.reader, self.layout, "net_device", dev, ("name", "ifindex", "nd_net"))
        net = r.int("nd_net", 0) if r.has("nd_net") else 0
        return NetDev(dev, r.str("name"), r.int("ifindex"), net, self._netns_ino(net))

    def _dev_link(self, link, rec, kind):
        dev = rec.int("dev")
        if not dev:
            link.info.update(devname="", ifindex=0)
            link.target = "dev:<detached>"
            return
        d = self.device(dev)
        link.info.update(devname=d.name, ifindex=d.ifindex)
        if kind != "xdp":
            if not link.attach_type and rec.has("location"):
                link.attach_type = self.attach_name(rec.int("location"))
            link.info["attach_type"] = link.attach_type
        link.target = f"dev:{d.name}"
        link.hooks.append(Hook(kind, f"dev:{d.name}", link.attach_type if kind != "xdp" else "xdp"))

    def _xdp(self, link, rec):
        self._dev_link(link, rec, "xdp")

    def _tcx(self, link, rec):
        self._dev_link(link, rec, "tcx")

    def _netkit(self, link, rec):
        self._dev_link(link, rec, "netkit")

    def _perf_event(self, link, rec):
        pfile = rec.int("perf_file")
        if not pfile:
            link.note("perf_file is NULL")
            return
        event = self.reader.ptr(pfile + self.layout.offset("file", "private_data"))
        prog = self.k.prog_by_kva.get(link.prog_kva)
        info, hook = describe_perf_event(self, event, prog.type_name if prog else None)
        link.info.update(info)
        link.target = f"{hook.kind}:{hook.target}"
        link.hooks.append(hook)

    def _kprobe_multi(self, link, rec):
        cnt = rec.int("cnt")
        if cnt > MAX_MULTI:
            link.note(f"implausible cnt {cnt}: first {MAX_MULTI} read")
            cnt = MAX_MULTI
        addrs = _u64_array(self.reader, rec.int("addrs"), cnt)
        cookies = _u64_array(self.reader, rec.int("cookies"), cnt) if rec.int("cookies") else [0] * cnt
        entry = rec.int("fp.entry_handler", 0)
        exit_ = rec.int("fp.exit_handler", 0)
        flags = rec.int("flags") if rec.has("flags") else (1 if exit_ and not entry else 0)
        funcs = [{"addr": a, "func": self.k.symbol_at(a) or self.k.symbol_near(a), "module": None,
                  "cookie": c} for a, c in zip(addrs, cookies)]
        link.info.update(retprobe=bool(flags & 1), func_cnt=cnt, missed=rec.int("fp.nmissed", 0),
                         funcs=funcs)
        kind = "kretprobe_multi" if flags & 1 else "kprobe_multi"
        names = ",".join(f["func"] or f"{f['addr']:#x}" for f in funcs)
        link.target = f"{kind}:{names}"
        for f in funcs:
            link.hooks.append(Hook("kretprobe" if flags & 1 else "kprobe", f["func"] or f"{f['addr']:#x}"))

    def _uprobe_multi(self, link, rec):
        path = self.vfs.struct_path(rec.addr_of("path"))
        cnt = rec.int("cnt")
        if cnt > MAX_MULTI:
            link.note(f"implausible cnt {cnt}: first {MAX_MULTI} read")
            cnt = MAX_MULTI
        base = rec.int("uprobes")
        stride = self.layout.size("bpf_uprobe")
        funcs = []
        retprobe = False
        raw = self.reader.read(base, stride * cnt) if base and cnt else b""
        for i in range(cnt):
            u = Record.of(self.layout, "bpf_uprobe", base + i * stride, raw[i * stride:(i + 1) * stride])
            funcs.append({"offset": u.int("offset"), "ref_ctr_offset": u.int("ref_ctr_offset", 0),
                          "cookie": u.int("cookie", 0)})
            if i == 0:
                h, rh = u.int("consumer.handler", 0), u.int("consumer.ret_handler", 0)
                retprobe = bool(rh and not h)
        if rec.has("flags"):
            retprobe = bool(rec.int("flags") & 1)
        pid = 0
        task = rec.int("task", 0)
        if task:    # bpftool shows the process (task_pid_nr_ns(task, PIDTYPE_TGID))
            pid = read_int(self.reader, self.layout, "task_struct", task, "tgid")
        link.info.update(retprobe=retprobe, path=path, func_cnt=cnt, pid=pid, funcs=funcs)
        link.target = f"uprobe_multi:{path}"
        for f in funcs:
            link.hooks.append(Hook("uretprobe" if retprobe else "uprobe", f"{path}+{f['offset']:#x}"))

    def _struct_ops(self, link, rec):
        m = rec.int("map")
        if m:
            link.maps.append(m)
        mm = self.k.map_by_kva.get(m)
        link.info["map_id"] = mm.id if mm else (self._map_id(m) if m else 0)
        name = mm.name if mm else ""
        link.target = f"struct_ops_map:{name}" if m else "struct_ops_map:<detached>"
        if mm is not None:
            ops, ops_name = self.struct_ops_name(mm)
            if ops:
                link.info["struct_ops"] = ops
                if ops_name:
                    link.info["ops_name"] = ops_name
                link.target += f" ({ops} {ops_name})" if ops_name else f" ({ops})"

    def struct_ops_name(self, m):
        """(ops struct, the ``name`` the ops carry) of a struct_ops map: for sched_ext the
        scheduler's name (``kvalue.data.name``). ('', '') when unknown."""
        vtype = self.k.btf_type_name(self.k.kernel_btf_id, m.btf_vmlinux_value_type_id)
        if not vtype.startswith("bpf_struct_ops_"):
            return "", ""
        ops = vtype[len("bpf_struct_ops_"):]
        lay = self.layout
        if not (lay.has(ops, "name") and lay.has("bpf_struct_ops_map", "kvalue")):
            return ops, ""
        data = lay.offset(vtype, "data") if lay.has(vtype, "data") else \
            lay.offset("bpf_struct_ops_value", "data")
        at = (m.kva - lay.offset("bpf_struct_ops_map", "map") + lay.offset("bpf_struct_ops_map", "kvalue")
              + data + lay.offset(ops, "name"))
        f = lay.field(ops, "name")
        try:
            return ops, self.reader.read(at, f.size).split(b"\0", 1)[0].decode("utf-8", "replace")
        except ReadError:
            return ops, ""

    def _netfilter(self, link, rec):
        pf, hooknum = rec.int("hook_ops.pf"), rec.int("hook_ops.hooknum")
        prio = rec.int("hook_ops.priority")
        flags = rec.int("flags") if rec.has("flags") else (1 if rec.int("defrag_hook", 0) else 0)
        link.info.update(pf=pf, hook=hooknum, prio=prio, flags=flags)
        link.target = f"nf:pf{pf}/hook{hooknum}/prio{prio}"
        fam = nf_family_name(self.k, pf)
        net = rec.int("net", 0)
        owner = self.netns_owner(net)
        link.hooks.append(Hook("netfilter", f"nf:{fam}/{nf_hook_name(self.k, fam, hooknum)} prio {prio} "
                               f"netns:{self._netns_ino(net)}{owner}", "netfilter"))

    def _sockmap(self, link, rec):
        m = rec.int("map")
        if m:
            link.maps.append(m)
        mm = self.k.map_by_kva.get(m)
        link.info.update(map_id=mm.id if mm else (self._map_id(m) if m else 0),
                         attach_type=link.attach_type)
        link.target = f"map:{mm.name if mm else (f'{m:#x}' if m else '<detached>')}"
        link.hooks.append(Hook("sockmap", link.target, link.attach_type))

    def _tracing_multi(self, link, rec):
        n = rec.int("nodes_cnt")
        if not 0 <= n <= MAX_MULTI:
            link.note(f"implausible nodes_cnt {n}")
            return
        base = rec.addr_of("nodes")
        stride = self.layout.size("bpf_tracing_multi_node")
        off = self.layout.offset("bpf_tracing_multi_node", "trampoline")
        funcs = []
        for i in range(n):
            tr = self.reader.ptr(base + i * stride + off)
            if not tr:
                continue
            t = Record(self.reader, self.layout, "bpf_trampoline", tr, ("key", "ip"))
            obj_id, btf_id = split_key(t.int("key"))
            name = self.target_name(obj_id, btf_id)
            funcs.append({"target_obj_id": obj_id, "target_btf_id": btf_id,
                          "target_name": name, "addr": t.int("ip", 0)})
            link.hooks.append(Hook("trampoline", name or f"btf_obj{obj_id}/type{btf_id}",
                                   link.attach_type))
        link.info.update(attach_type=link.attach_type, func_cnt=len(funcs), funcs=funcs)
        link.target = f"{link.attach_type}:{','.join(f['target_name'] for f in funcs)}"


NF_FAMILIES = {"hooks_ipv4": "ipv4", "hooks_ipv6": "ipv6", "hooks_arp": "arp",
               "hooks_bridge": "bridge", "hooks_decnet": "decnet"}


def nf_hook_name(kernel, family, hooknum):
    """``local_in`` for (ipv4, 1): inet-style families' hooks by ``enum nf_inet_hooks``."""
    if family in ("ipv4", "ipv6", "bridge", "inet"):
        names = kernel.names("nf_inet_hooks", "NF_INET_")
        if hooknum in names:
            return names[hooknum].lower()
    if family == "netdev":
        names = kernel.names("nf_dev_hooks", "NF_NETDEV_")
        if hooknum in names:
            return names[hooknum].lower()
    return f"hook{hooknum}"


def nf_family_name(kernel, pf):
    """``ipv4`` for NFPROTO_IPV4 (the values from the kernel's anonymous enum)."""
    for name in ("inet", "ipv4", "arp", "netdev", "bridge", "ipv6"):
        if kernel.enumerator("NFPROTO_" + name.upper()) == pf:
            return name
    return f"pf{pf}"


def lsm_cgroup_hook(reader, layout, prog_kva, type_names=None):
    """``lsm_cgroup:socket_bind``: an lsm_cgroup program's LSM hook (its ``attach_func_name``,
    ``bpf_lsm_`` dropped); ``lsm_cgroup`` when it cannot be read."""
    from .progs import read_prog

    if not prog_kva:
        return "lsm_cgroup"
    name = read_prog(reader, layout, prog_kva, type_names=type_names).attach_func_name or ""
    if not name or name.startswith("<"):
        return "lsm_cgroup"
    return "lsm_cgroup:" + (name[len("bpf_lsm_"):] if name.startswith("bpf_lsm_") else name)


def split_key(key):
    """(BTF object id or target program id, BTF type id) of a trampoline key
    (``bpf_trampoline_compute_key``: object id in the upper 32 bits)."""
    return key >> 32, key & BTF_MAX_TYPE


def _u64_array(reader, addr, n):
    if not addr or not n:
        return []
    raw = reader.read(addr, 8 * n)
    return [int.from_bytes(raw[i:i + 8], "little") for i in range(0, 8 * n, 8)]


# --- perf events ---------------------------------------------------------------------------


def describe_perf_event(dec, event, prog_type=None):
    """(bpftool ``perf_event`` link fields, Hook) of the ``struct perf_event`` at ``event``.

    Follows ``bpf_perf_link_fill_link_info``: a tracepoint/kprobe/uprobe event is recognised by
    its ``tp_event`` flags (``TRACE_EVENT_FL_KPROBE``/``_UPROBE``; a tracepoint otherwise), any
    other event by ``attr.type``/``attr.config``."""
    k, reader, lay = dec.k, dec.reader, dec.layout
    if not event:
        return {}, Hook("perf_event", "<no event>")
    r = Record(reader, lay, "perf_event", event, ("attr.type", "attr.config", "tp_event", "bpf_cookie"))
    cookie = r.int("bpf_cookie", 0)
    call = r.int("tp_event")
    if not call or prog_type == "perf_event":
        info = {"event_type": r.int("attr.type"), "event_config": r.int("attr.config"),
                "cookie": cookie}
        return info, Hook("event", _perf_event_name(reader, lay, event, info))
    c = Record(reader, lay, "trace_event_call", call, ("flags", "name", "tp"))
    flags = c.int("flags")
    fl_kprobe = k.enumerator("TRACE_EVENT_FL_KPROBE")
    fl_uprobe = k.enumerator("TRACE_EVENT_FL_UPROBE")
    if fl_kprobe and flags & fl_kprobe and lay.has("trace_kprobe", "tp"):
        tk = _probe_of(reader, lay, call, "trace_kprobe")
        t = Record(reader, lay, "trace_kprobe", tk, ("symbol", "rp.kp.addr", "rp.kp.offset",
                                                    "rp.kp.nmissed", "rp.handler", "rp.nmissed"))
        sym = t.int("symbol")
        func = reader.cstring(sym, MAX_NAME) if sym else ""
        addr = t.int("rp.kp.addr")
        ret = bool(t.int("rp.handler"))
        missed = t.int("rp.kp.nmissed") + (t.int("rp.nmissed", 0) if ret else 0)
        info = {"retprobe": ret, "addr": addr, "func": func or k.symbol_near(addr),
                "offset": t.int("rp.kp.offset"), "missed": missed, "cookie": cookie}
        return info, Hook("kretprobe" if ret else "kprobe", info["func"] + (
            f"+{info['offset']:#x}" if info["offset"] else ""))
    if fl_uprobe and flags & fl_uprobe and lay.has("trace_uprobe", "tp"):
        tu = _probe_of(reader, lay, call, "trace_uprobe")
        t = Record(reader, lay, "trace_uprobe", tu, ("filename", "offset", "ref_ctr_offset",
                                                    "consumer.handler", "consumer.ret_handler"))
        fn = t.int("filename")
        path = reader.cstring(fn, 4096) if fn else dec.vfs.struct_path(tu + lay.offset("trace_uprobe", "path"))
        ret = bool(t.int("consumer.ret_handler", 0)) and not t.int("consumer.handler", 0)
        info = {"retprobe": ret, "file": path, "offset": t.int("offset"),
                "ref_ctr_offset": t.int("ref_ctr_offset", 0), "cookie": cookie}
        return info, Hook("uretprobe" if ret else "uprobe", f"{path}+{info['offset']:#x}")
    name = trace_call_name(k, reader, lay, call, c)
    return {"tracepoint": name, "cookie": cookie}, Hook("tracepoint", name)


def _perf_event_name(reader, lay, event, info):
    """``cpu_clock/config0 cpu0``: the event's PMU by name (``event->pmu->name``), its config and
    the CPU it counts on (``type6/config0`` when the PMU cannot be read)."""
    name = f"type{info['event_type']}"
    cpu = ""
    try:
        r = Record(reader, lay, "perf_event", event, ("pmu", "cpu"))
        if r.has("cpu") and r.int("cpu") >= 0:
            cpu = f" cpu{r.int('cpu')}"
        pmu = r.int("pmu")
        if pmu and lay.has("pmu", "name"):
            ptr = read_int(reader, lay, "pmu", pmu, "name")
            text = reader.cstring(ptr, MAX_NAME) if ptr else ""
            if text:
                name = text
    except ReadError:
        pass
    return f"{name}/config{info['event_config']}{cpu}"


def trace_call_name(k, reader, lay, call, rec=None):
    """``trace_event_name()``: ``tp->name`` for TRACE_EVENT_FL_TRACEPOINT events, else ``name``."""
    c = rec or Record(reader, lay, "trace_event_call", call, ("flags", "name", "tp"))
    fl_tp = k.enumerator("TRACE_EVENT_FL_TRACEPOINT")
    ptr = c.int("name")
    if fl_tp and c.int("flags") & fl_tp and ptr:
        ptr = reader.ptr(ptr + lay.offset("tracepoint", "name"))
    return reader.cstring(ptr, MAX_NAME) if ptr else ""


def _probe_of(reader, lay, call, struct):
    """The ``trace_kprobe``/``trace_uprobe`` of a dynamic event's ``trace_event_call``: the call
    is embedded in a ``trace_probe_event`` whose ``probes`` list holds ``trace_probe.list``."""
    tpe = call - lay.offset("trace_probe_event", "call")
    head = tpe + lay.offset("trace_probe_event", "probes")
    for node in list_nodes(reader, lay, head, limit=1):
        return node - lay.offset("trace_probe", "list") - lay.offset(struct, "tp")
    raise ReadError(head, 8, "trace_probe_event without probes")


# --- the registry --------------------------------------------------------------------------


def iter_links(kernel, link_idr, damage=None, limit=MAX_LINKS):
    """Every link in ``link_idr`` in id order; skipped registry nodes go to ``damage``."""
    dec = LinkDecoder(kernel)
    for link_id, kva in idr_entries(kernel.reader, kernel.layout, link_idr, limit=limit, damage=damage):
        yield dec.read(kva, link_id)
