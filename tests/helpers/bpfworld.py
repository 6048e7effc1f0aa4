"""A synthetic kernel with BPF objects where forensics walkers look for them.

:class:`World` declares (padded, see ``synth.py``) the kernel structs the BPF forensics walkers
read, and builds objects in a synthetic memory: programs and maps in their IDRs, links of a few
types, processes with fd tables, a bpffs instance mounted at /sys/fs/bpf, cgroups, network
devices, trampolines, the BPF kallsyms list. ``kctx()`` gives the kernel type the views take
(``kernel_model.Kernel``), ``kernel()`` the :class:`BpfKernel` of it the walkers take.

Enum values are deliberately not the uapi ones where the code must read them from the kernel.
"""

from helpers.btf import BtfBuilder
from helpers.synth import MINI_KERNEL, Memory, SynthKernel, kernel_of
from volatility3_ktstr.bpf import links as bpflinks
from volatility3_ktstr.bpf.facts import BpfKernel
from volatility3_ktstr.kernel_model import BtfEnums
from volatility3_ktstr.btf import Btf
from volatility3_ktstr.core import BtfLayout

DECLS = MINI_KERNEL + """
enum bpf_prog_type { BPF_PROG_TYPE_UNSPEC = 0, BPF_PROG_TYPE_KPROBE = 2, BPF_PROG_TYPE_SCHED_CLS = 3,
  BPF_PROG_TYPE_XDP = 6, BPF_PROG_TYPE_CGROUP_SKB = 8, BPF_PROG_TYPE_RAW_TRACEPOINT = 17,
  BPF_PROG_TYPE_TRACING = 26 };
enum bpf_map_type { BPF_MAP_TYPE_UNSPEC = 0, BPF_MAP_TYPE_HASH = 1, BPF_MAP_TYPE_ARRAY = 2,
  BPF_MAP_TYPE_PROG_ARRAY = 3, BPF_MAP_TYPE_ARRAY_OF_MAPS = 12, BPF_MAP_TYPE_CGROUP_STORAGE = 19,
  BPF_MAP_TYPE_REUSEPORT_SOCKARRAY = 20, BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE = 21 };
enum bpf_link_type { BPF_LINK_TYPE_UNSPEC = 0, BPF_LINK_TYPE_CGROUP = 1, BPF_LINK_TYPE_RAW_TRACEPOINT = 2,
  BPF_LINK_TYPE_TRACING = 3, BPF_LINK_TYPE_XDP = 4, BPF_LINK_TYPE_KPROBE_MULTI = 5,
  BPF_LINK_TYPE_TCX = 6, BPF_LINK_TYPE_NETKIT = 7, BPF_LINK_TYPE_NETFILTER = 8,
  BPF_LINK_TYPE_UPROBE_MULTI = 9 };
enum bpf_attach_type { BPF_CGROUP_INET_INGRESS = 0, BPF_CGROUP_INET_EGRESS = 5, BPF_TRACE_FENTRY = 7,
  BPF_TCX_INGRESS = 9, BPF_TCX_EGRESS = 10, BPF_TRACE_KPROBE_MULTI = 11, BPF_XDP = 12 };
enum cgroup_bpf_attach_type { CGROUP_INET_INGRESS = 1, CGROUP_INET_EGRESS = 0, CGROUP_DEVICE = 2 };
enum bpf_xdp_mode { XDP_MODE_SKB = 0, XDP_MODE_DRV = 1, XDP_MODE_HW = 2 };
enum bpf_tramp_prog_type { BPF_TRAMP_FENTRY = 0, BPF_TRAMP_FEXIT = 1, BPF_TRAMP_MODIFY_RETURN = 2 };
enum bpf_func_id { BPF_FUNC_unspec = 0, BPF_FUNC_map_lookup_elem = 1, BPF_FUNC_ktime_get_ns = 5,
  BPF_FUNC_tail_call = 12 };

struct bpf_prog_stats { u64 cnt; u64 nsecs; u64 misses; };
struct bpf_prog { u16 pages; u32 jited : 1; u32 gpl_compatible : 1; u32 type; u32 expected_attach_type;
  u32 len; u32 jited_len; u8 tag[8]; struct bpf_prog_stats *stats; fnptr bpf_func;
  struct bpf_prog_aux *aux; u64 insnsi[0]; };
struct bpf_ksym { unsigned long start; unsigned long end; char name[32]; struct list_head lnode; bool prog; };
struct user_struct { u32 uid; };
struct bpf_prog_aux { u32 used_map_cnt; u32 id; u32 func_idx; struct bpf_map **used_maps;
  struct bpf_prog_aux *main_prog_aux; struct bpf_ksym ksym; struct bpf_prog *prog;
  struct user_struct *user; char name[16]; };
struct bpf_map { u32 map_type; u32 key_size; u32 value_size; u32 max_entries; u32 map_flags; u32 id;
  char name[16]; };
struct bpf_array { struct bpf_map map; u32 elem_size; void *ptrs[0]; };
struct bpf_storage_buffer { u64 rcu[2]; char data[0]; };
struct bpf_cgroup_storage_key { u64 cgroup_inode_id; u32 attach_type; };
union bpf_cgroup_storage_buf { struct bpf_storage_buffer *buf; void *percpu_buf; };
struct bpf_cgroup_storage { union bpf_cgroup_storage_buf; struct bpf_cgroup_storage_map *map;
  struct bpf_cgroup_storage_key key; struct list_head list_map; struct list_head list_cg; };
struct bpf_cgroup_storage_map { struct bpf_map map; u32 lock; struct rb_root root; struct list_head list; };

struct bpf_link { u64 refcnt; u32 id; enum bpf_link_type type; void *ops; struct bpf_prog *prog;
  enum bpf_attach_type attach_type; };
struct tracepoint_func { fnptr func; void *data; int prio; };
struct tracepoint { char *name; struct tracepoint_func *funcs; };
struct bpf_raw_event_map { struct tracepoint *tp; };
struct bpf_raw_tp_link { struct bpf_link link; struct bpf_raw_event_map *btp; u64 cookie; };
struct bpf_cgroup_link { struct bpf_link link; struct cgroup *cgroup; };
struct bpf_xdp_link { struct bpf_link link; struct net_device *dev; };
struct tcx_link { struct bpf_link link; struct net_device *dev; };
struct fprobe { unsigned long nmissed; fnptr entry_handler; fnptr exit_handler; };
struct bpf_kprobe_multi_link { struct bpf_link link; struct fprobe fp; unsigned long *addrs;
  u64 *cookies; u32 cnt; };
struct bpf_tramp_node { struct bpf_link *link; struct hlist_node tramp_hlist; u64 cookie; };
struct bpf_tramp_link { struct bpf_link link; struct bpf_tramp_node node; };
struct bpf_trampoline { struct hlist_node hlist_key; u64 key; unsigned long ip;
  struct bpf_prog *extension_prog; struct hlist_head progs_hlist[3]; };
struct bpf_tracing_link { struct bpf_tramp_link link; struct bpf_trampoline *trampoline;
  struct bpf_prog *tgt_prog; };

struct kernfs_node { struct kernfs_node *__parent; char *name; u64 id; };
struct cgroup_subsys_state { struct cgroup_subsys_state *parent; struct list_head sibling;
  struct list_head children; };
struct bpf_prog_array_item { struct bpf_prog *prog; u64 bpf_cookie; };
struct bpf_prog_array { u64 rcu; struct bpf_prog_array_item items[0]; };
struct cgroup_bpf { struct bpf_prog_array *effective[3]; struct hlist_head progs[3]; };
struct bpf_prog_list { struct hlist_node node; struct bpf_prog *prog; struct bpf_cgroup_link *link; };
struct cgroup { struct cgroup_subsys_state self; struct kernfs_node *kn; struct cgroup_bpf bpf; };
struct cgroup_root { u32 flags; struct cgroup cgrp; };

struct bpf_xdp_entity { struct bpf_prog *prog; struct bpf_xdp_link *link; };
struct bpf_mprog_fp { struct bpf_prog *prog; };
struct bpf_mprog_cp { struct bpf_link *link; };
struct bpf_mprog_entry { struct bpf_mprog_fp fp_items[4]; struct bpf_mprog_bundle *parent; };
struct bpf_mprog_bundle { struct bpf_mprog_entry a; struct bpf_mprog_entry b;
  struct bpf_mprog_cp cp_items[4]; u32 count; };
struct tcf_proto_ops { u32 flags; char kind[16]; };
struct tcf_proto { struct tcf_proto *next; void *root; u32 prio; struct tcf_proto_ops *ops; };
struct mini_Qdisc { struct tcf_proto *filter_list; };
struct tcx_entry { struct mini_Qdisc *miniq; struct bpf_mprog_bundle bundle; };
struct net_device { char name[16]; int ifindex; struct list_head dev_list; struct bpf_prog *xdp_prog;
  struct bpf_xdp_entity xdp_state[3]; struct bpf_mprog_entry *tcx_ingress;
  struct bpf_mprog_entry *tcx_egress; struct net *nd_net; };
struct ns_common { u32 stashed; unsigned int inum; };
struct nf_hook_entry { fnptr hook; void *priv; };
struct nf_hook_entries { u16 num_hook_entries; struct nf_hook_entry hooks[0]; };
struct nf_hook_ops { struct list_head list; fnptr hook; void *priv; u8 pf; unsigned int hooknum;
  int priority; };
struct bpf_nf_link { struct bpf_link link; struct nf_hook_ops hook_ops; struct net *net; };
struct netns_nf { u64 proc; struct nf_hook_entries *hooks_ipv4[5]; struct nf_hook_entries *hooks_ipv6[5]; };
struct net { struct list_head list; struct ns_common ns; struct list_head dev_base_head;
  struct netns_nf nf; };
enum nf_inet_hooks { NF_INET_PRE_ROUTING = 0, NF_INET_LOCAL_IN = 1, NF_INET_FORWARD = 2,
  NF_INET_LOCAL_OUT = 3, NF_INET_POST_ROUTING = 4 };
enum nfproto { NFPROTO_UNSPEC = 0, NFPROTO_INET = 1, NFPROTO_IPV4 = 2, NFPROTO_IPV6 = 10 };

struct kprobe { struct hlist_node hlist; struct list_head list; unsigned long nmissed; u64 addr;
  char *symbol_name; unsigned int offset; fnptr pre_handler; };
struct kretprobe { struct kprobe kp; fnptr handler; };
struct trace_event_call { struct list_head list; char *name; int flags; struct bpf_prog_array *prog_array;
  struct tracepoint *tp; };
enum trace_event_flags { TRACE_EVENT_FL_TRACEPOINT = 0x100, TRACE_EVENT_FL_KPROBE = 0x200,
  TRACE_EVENT_FL_UPROBE = 0x400 };
struct trace_probe_event { unsigned int flags; struct trace_event_call call; struct list_head probes; };
struct trace_probe { struct list_head list; struct trace_probe_event *event; };
struct trace_kprobe { u64 devent; struct kretprobe rp; char *symbol; struct trace_probe tp; };
struct fprobe_hlist { struct hlist_node hlist; struct fprobe *fp; int size; };
struct elf64_sym { u32 st_name; u8 st_info; u8 st_other; u16 st_shndx; u64 st_value; u64 st_size; };
struct mod_kallsyms { struct elf64_sym *symtab; unsigned int num_symtab; char *strtab; };
struct module { u32 state; struct list_head list; char name[56]; unsigned int num_tracepoints;
  int *tracepoints_ptrs; struct mod_kallsyms *kallsyms; };
struct uprobe_consumer { fnptr handler; fnptr ret_handler; struct list_head cons_node; };
struct uprobe { struct rb_node rb_node; u64 ref; struct list_head consumers; u64 offset; };
struct trace_uprobe { u64 devent; struct uprobe_consumer consumer; char *filename; unsigned long offset;
  struct trace_probe tp; };
struct bpf_uprobe { struct bpf_uprobe_multi_link *link; u64 offset; u64 ref_ctr_offset; u64 cookie;
  struct uprobe_consumer consumer; };
struct bpf_uprobe_multi_link { struct bpf_link link; struct path path; u32 cnt; u32 flags;
  struct bpf_uprobe *uprobes; struct task_struct *task; };
struct perf_event_attr { u32 type; u32 size; u64 config; };
struct pmu { u64 entry; char *name; };
struct perf_event { struct list_head event_entry; struct perf_event_attr attr; struct pmu *pmu; int cpu;
  struct trace_event_call *tp_event; struct bpf_prog *prog; u64 bpf_cookie; };
struct perf_event_context { u64 lock; struct list_head event_list; };
struct perf_cpu_context { u64 online; struct perf_event_context ctx; };
struct nsproxy { u32 count; struct net *net_ns; };

struct fdtable { unsigned int max_fds; struct file **fd; };
struct files_struct { u32 count; struct fdtable *fdt; };
struct signal_struct { struct list_head thread_head; };
struct task_struct { int pid; int tgid; char comm[16]; struct list_head tasks; struct files_struct *files;
  struct signal_struct *signal; struct list_head thread_node; struct task_struct *group_leader;
  struct perf_event_context *perf_event_ctxp; struct nsproxy *nsproxy; };
struct qstr { u32 hash; char *name; };
struct inode { void *i_op; u64 i_ino; void *i_private; };
struct dentry { struct dentry *d_parent; struct qstr d_name; struct inode *d_inode;
  struct hlist_node d_sib; struct hlist_head d_children; };
struct vfsmount { struct dentry *mnt_root; struct super_block *mnt_sb; };
struct mount { struct mount *mnt_parent; struct dentry *mnt_mountpoint; struct vfsmount mnt;
  struct mount *mnt_next_for_sb; };
struct path { struct vfsmount *mnt; struct dentry *dentry; };
struct file { u32 f_mode; void *f_op; void *private_data; struct path f_path; };
struct super_block { struct list_head s_list; void *s_type; struct dentry *s_root; struct mount *s_mounts; };
struct btf { u32 id; char name[16]; };
"""

# Addresses of kernel code/rodata symbols that are compared, never read.
TEXT = 0xFFFFFFFF81000000
CALL_BASE = TEXT + 0x100000
FAKE = ("bpf_map_fops", "bpf_prog_fops", "bpf_link_fops", "bpf_link_fops_poll", "btf_fops",
        "perf_fops", "bpf_map_iops", "bpf_prog_iops", "bpf_link_iops", "bpf_dir_iops", "bpf_fs_type",
        "ext4_fs_type", "bpf_cgroup_link_lops", "bpf_xdp_link_lops", "tcx_link_lops",
        "bpf_raw_tp_link_lops", "bpf_tracing_link_lops", "bpf_kprobe_multi_link_lops",
        "bpf_nf_link_lops", "bpf_uprobe_multi_link_lops",
        "shmem_fops")
FUNCS = {"bpf_map_lookup_elem": CALL_BASE + 0x1000, "bpf_ktime_get_ns": CALL_BASE + 0x2000,
         "htab_map_lookup_elem": CALL_BASE + 0x3000, "vfs_read": TEXT + 0x5000,
         "vfs_write": TEXT + 0x6000, "hrtimer_nanosleep": TEXT + 0x7000,
         "scx_bpf_kick_cpu": CALL_BASE - 0x4000, "__bpf_call_base": CALL_BASE,
         "do_sys_openat2": TEXT + 0x8000, "kprobe_dispatcher": TEXT + 0x9000,
         "kretprobe_dispatcher": TEXT + 0x9100, "aggr_pre_handler": TEXT + 0x9200,
         "pre_handler_kretprobe": TEXT + 0x9300, "kprobe_multi_link_handler": TEXT + 0x9400,
         "nf_hook_run_bpf": TEXT + 0x9500, "ipv4_conntrack_in": TEXT + 0x9600,
         "__bpf_trace_sched_switch": TEXT + 0x9700, "probe_sched_switch": TEXT + 0x9800,
         "uprobe_dispatcher": TEXT + 0x9900, "uprobe_multi_link_handler": TEXT + 0x9a00,
         "__bpf_trace_rc_keydown": TEXT + 0x9b00}


def kernel_btf_with_funcs():
    """A 'kernel BTF' with FUNC records (kfunc BTF ids, tracing targets)."""
    b = BtfBuilder()
    i = b.int("int", 4, signed=True)
    proto = b.func_proto(i, [])
    ids = {n: b.func(n, proto) for n in ("hrtimer_nanosleep", "scx_bpf_kick_cpu", "bpf_lsm_file_open")}
    return Btf.parse(b.build(), source="kernel funcs"), ids


class RealKernel:
    """A real kernel BTF in SynthKernel's place: the World's objects at their kernel offsets."""

    def __init__(self, btf):
        self.btf = btf
        self.layout = BtfLayout(btf)

    def memory(self, size):
        return Memory(self.layout, size=size)


class World:
    def __init__(self, pad=8, btf=None):
        """``btf``: a real kernel BTF to lay the objects out by (else the padded DECLS)."""
        self.k = RealKernel(btf) if btf is not None else SynthKernel(DECLS, pad=pad)
        self.L = self.k.layout
        self.mem = self.k.memory(size=8 << 20)
        self.syms = dict(FUNCS)
        for n, name in enumerate(FAKE):
            self.syms[name] = TEXT + 0x800000 + 0x100 * n
        self.kbtf, self.kbtf_ids = kernel_btf_with_funcs()
        self.modules = {}            # module name -> Btf
        self.btf_ids = {}            # id -> struct btf in btf_idr besides the modules' (programs')
        self.ids = {"prog_idr": {}, "map_idr": {}, "link_idr": {}}
        # idr_alloc_cyclic's idr_next: past every id handed out (an unlinked object keeps its id)
        self.handed_out = dict.fromkeys(self.ids, 1)
        for name in self.ids:
            self.syms[name] = self.mem.alloc("idr")
        self.syms["bpf_kallsyms"] = self.mem.list_init(self.mem.alloc("list_head"))
        self.syms["super_blocks"] = self.mem.list_init(self.mem.alloc("list_head"))
        self.syms["net_namespace_list"] = self.mem.list_init(self.mem.alloc("list_head"))
        heads = 16 * self.L.size("hlist_head")
        self.syms["trampoline_key_table"] = self.mem.alloc(heads)
        self.syms["trampoline_key_table_end"] = self.syms["trampoline_key_table"] + heads
        self.init_task = self.task(0, "swapper/0", files=0, leader=True)
        self.syms["init_task"] = self.init_task
        root = self.mem.new("cgroup_root")
        self.syms["cgrp_dfl_root"] = root
        self.root_cgroup = root + self.L.offset("cgroup_root", "cgrp")
        self._cgroup_init(self.root_cgroup, None, "")

    # --- registries ----------------------------------------------------------------------

    def register(self, idr, obj_id, kva):
        self.ids[idr][obj_id] = kva

    # --- objects -------------------------------------------------------------------------

    def prog(self, prog_id, name, ptype="BPF_PROG_TYPE_KPROBE", register=True, insns=b"", maps=(),
             ksym=True, uid=0, gpl=1):
        enum = dict(self.k.btf.find("bpf_prog_type")[0].values)
        mem, L = self.mem, self.L
        p = mem.alloc(L.size("bpf_prog") + len(insns))
        aux = mem.new("bpf_prog_aux", id=prog_id, name=name, prog=p,
                      user=mem.new("user_struct", uid=uid))
        mem.put("bpf_prog", p, type=enum[ptype], len=len(insns) // 8, jited_len=0x40, aux=aux,
                bpf_func=TEXT + 0x900000 + 0x1000 * prog_id, gpl_compatible=gpl, jited=1)
        mem.write(p + L.offset("bpf_prog", "insnsi"), insns)
        if maps:
            arr = mem.alloc(8 * len(maps))
            for i, m in enumerate(maps):
                mem.u64(arr + 8 * i, m)
            mem.put("bpf_prog_aux", aux, used_map_cnt=len(maps), used_maps=arr)
        if ksym:
            k = aux + L.offset("bpf_prog_aux", "ksym")
            mem.put("bpf_ksym", k, name=f"bpf_prog_{prog_id:04x}_{name}"[:31], prog=1,
                    start=TEXT + 0x900000 + 0x1000 * prog_id)
            mem.list_add_tail(self.syms["bpf_kallsyms"], k + L.offset("bpf_ksym", "lnode"))
        self.handed_out["prog_idr"] = max(self.handed_out["prog_idr"], prog_id + 1)
        if register:
            self.register("prog_idr", prog_id, p)
        return p

    def map(self, map_id, name, mtype="BPF_MAP_TYPE_ARRAY", max_entries=4, slots=(), register=True):
        enum = dict(self.k.btf.find("bpf_map_type")[0].values)
        L = self.L
        m = self.mem.alloc(L.size("bpf_array") + 8 * max_entries)
        self.mem.put("bpf_array", m, map__map_type=enum[mtype], map__id=map_id, map__name=name,
                     map__key_size=4, map__value_size=4 if mtype != "BPF_MAP_TYPE_ARRAY" else 8,
                     map__max_entries=max_entries)
        for i, ptr in slots:
            self.mem.u64(m + L.offset("bpf_array", "ptrs") + 8 * i, ptr)
        m += L.offset("bpf_array", "map")          # maps are known by their struct bpf_map
        self.handed_out["map_idr"] = max(self.handed_out["map_idr"], map_id + 1)
        if register:
            self.register("map_idr", map_id, m)
        return m

    def link(self, container, link_id, type_name, prog, attach=None, ops=None, register=True, **fields):
        """A link in its container struct; returns the ``struct bpf_link`` address."""
        L = self.L
        types = dict(self.k.btf.find("bpf_link_type")[0].values)
        spec = bpflinks.CONTAINERS.get(type_name)
        member = spec[1] if spec and spec[0] == container else "link"
        base = self.mem.new(container, {k.replace("__", "."): v for k, v in fields.items()})
        lk = base + L.offset(container, member)
        attach_types = dict(self.k.btf.find("bpf_attach_type")[0].values)
        self.mem.put("bpf_link", lk, id=link_id, type=types["BPF_LINK_TYPE_" + type_name.upper()],
                     prog=prog, attach_type=attach_types[attach] if attach else 0,
                     ops=self.syms.get(ops or "", 0))
        self.handed_out["link_idr"] = max(self.handed_out["link_idr"], link_id + 1)
        if register:
            self.register("link_idr", link_id, lk)
        return lk

    def cstr(self, text):
        a = self.mem.alloc(len(text) + 1, align=8)
        self.mem.write(a, text.encode() + b"\0")
        return a

    # --- cgroups ----------------------------------------------------------------------------

    def _cgroup_init(self, cg, parent, name, kn_id=1):
        L, mem = self.L, self.mem
        css = cg + L.offset("cgroup", "self")
        mem.list_init(css + L.offset("cgroup_subsys_state", "children"))
        pkn = mem.read(parent + L.offset("cgroup", "kn"), 8) if parent else None
        kn = mem.new("kernfs_node", {"__parent": int.from_bytes(pkn, "little") if pkn else 0},
                     name=self.cstr(name) if name else 0, id=kn_id)
        mem.put("cgroup", cg, kn=kn)
        if parent:
            mem.set("cgroup", cg, "self.parent", parent + L.offset("cgroup", "self"))
            mem.list_add_tail(parent + L.offset("cgroup", "self.children"),
                              css + L.offset("cgroup_subsys_state", "sibling"))
        return cg

    def cgroup(self, parent, name, kn_id):
        return self._cgroup_init(self.mem.new("cgroup"), parent, name, kn_id)

    def cgroup_attach(self, cg, atype, prog, link=0):
        L = self.L
        value = dict(self.k.btf.find("cgroup_bpf_attach_type")[0].values)[atype]
        pl = self.mem.new("bpf_prog_list", prog=prog, link=link)
        head = cg + L.offset("cgroup", "bpf.progs") + L.size("hlist_head") * value
        self.mem.hlist_add_head(head, pl + L.offset("bpf_prog_list", "node"))

    def prog_array(self, progs):
        L = self.L
        stride = L.size("bpf_prog_array_item")
        arr = self.mem.alloc(L.size("bpf_prog_array") + stride * (len(progs) + 1))
        for i, p in enumerate(progs):
            self.mem.u64(arr + L.offset("bpf_prog_array", "items") + i * stride
                         + L.offset("bpf_prog_array_item", "prog"), p)
        return arr

    def cgroup_effective(self, cg, atype, progs):
        value = dict(self.k.btf.find("cgroup_bpf_attach_type")[0].values)[atype]
        self.mem.u64(cg + self.L.offset("cgroup", "bpf.effective") + 8 * value, self.prog_array(progs))

    # --- network ----------------------------------------------------------------------------

    def netns(self, inum):
        net = self.mem.new("net", ns__inum=inum)
        self.mem.list_init(net + self.L.offset("net", "dev_base_head"))
        self.mem.list_add_tail(self.syms["net_namespace_list"], net + self.L.offset("net", "list"))
        return net

    def netdev(self, net, name, ifindex):
        dev = self.mem.new("net_device", name=name, ifindex=ifindex, nd_net=net)
        self.mem.list_add_tail(net + self.L.offset("net", "dev_base_head"),
                               dev + self.L.offset("net_device", "dev_list"))
        return dev

    def tcx(self, dev, direction, entries, miniq=0):
        """``entries``: [(prog, link or 0)]; the bundle sits in a ``tcx_entry`` with ``miniq``."""
        L = self.L
        tcx = self.mem.new("tcx_entry", miniq=miniq)
        bundle = tcx + L.offset("tcx_entry", "bundle")
        self.mem.put("bpf_mprog_bundle", bundle, count=len(entries))
        entry = bundle + L.offset("bpf_mprog_bundle", "a")
        self.mem.put("bpf_mprog_entry", entry, parent=bundle)
        fp, cp = L.field("bpf_mprog_entry", "fp_items"), L.field("bpf_mprog_bundle", "cp_items")
        for i, (prog, link) in enumerate(entries):
            self.mem.u64(entry + fp.offset + fp.elem_size * i + L.offset("bpf_mprog_fp", "prog"), prog)
            self.mem.u64(bundle + cp.offset + cp.elem_size * i + L.offset("bpf_mprog_cp", "link"), link)
        self.mem.set("net_device", dev, f"tcx_{direction}", entry)

    def tc_filters(self, filters):
        """A clsact mini_Qdisc whose filter chain is ``filters``: [(kind, prio, root)]."""
        mem = self.mem
        nxt = 0
        for kind, prio, root in reversed(filters):
            ops = mem.new("tcf_proto_ops", kind=kind)
            nxt = mem.new("tcf_proto", next=nxt, root=root, prio=prio, ops=ops)
        return mem.new("mini_Qdisc", filter_list=nxt)

    # --- processes and files -------------------------------------------------------------------

    def task(self, pid, comm, files=None, leader=True):
        L, mem = self.L, self.mem
        if files is None:
            files = mem.new("files_struct", fdt=mem.new("fdtable", max_fds=0))
        sig = mem.new("signal_struct")
        mem.list_init(sig + L.offset("signal_struct", "thread_head"))
        t = mem.new("task_struct", pid=pid, tgid=pid, comm=comm, files=files, signal=sig)
        mem.list_add_tail(sig + L.offset("signal_struct", "thread_head"), t + L.offset("task_struct", "thread_node"))
        if leader:
            if pid == 0:
                mem.list_init(t + L.offset("task_struct", "tasks"))
            else:
                mem.list_add_tail(self.init_task + L.offset("task_struct", "tasks"),
                                  t + L.offset("task_struct", "tasks"))
        return t

    def fds(self, task, files):
        """Give ``task`` an fd table: ``files`` is {fd: (f_op symbol, private_data) or a raw file address}."""
        L, mem = self.L, self.mem
        n = (max(files) + 64) // 64 * 64       # fdtables come in whole bitmap longs
        arr = mem.alloc(8 * n)
        for fd, spec in files.items():
            f = spec if isinstance(spec, int) else mem.new("file", f_op=self.syms[spec[0]], private_data=spec[1])
            mem.u64(arr + 8 * fd, f)
        fdt = mem.new("fdtable", max_fds=n, fd=arr)
        fs = mem.new("files_struct", fdt=fdt)
        mem.set("task_struct", task, "files", fs)
        return fs

    # --- bpffs --------------------------------------------------------------------------------

    def dentry(self, parent, name, inode=0):
        L, mem = self.L, self.mem
        d = mem.new("dentry", d_name__name=self.cstr(name), d_inode=inode)
        mem.set("dentry", d, "d_parent", parent or d)
        if parent:
            mem.hlist_add_head(parent + L.offset("dentry", "d_children"), d + L.offset("dentry", "d_sib"))
        return d

    def inode(self, iops, ino, private=0):
        return self.mem.new("inode", i_op=self.syms[iops] if iops else 0, i_ino=ino, i_private=private)

    def mount(self, root, parent=None, mountpoint=0, sb=0):
        m = self.mem.new("mount", mnt_mountpoint=mountpoint, mnt__mnt_root=root, mnt__mnt_sb=sb)
        self.mem.set("mount", m, "mnt_parent", parent or m)
        return m

    def super_block(self, fs_type, root, mounts=()):
        sb = self.mem.new("super_block", s_type=self.syms[fs_type], s_root=root,
                          s_mounts=mounts[0] if mounts else 0)
        for a, b in zip(mounts, mounts[1:]):
            self.mem.set("mount", a, "mnt_next_for_sb", b)
        self.mem.list_add_tail(self.syms["super_blocks"], sb + self.L.offset("super_block", "s_list"))
        return sb

    def bpffs_at_sys_fs_bpf(self):
        """rootfs '/' with sys/fs/bpf, and a bpffs instance mounted on bpf; returns its root."""
        root = self.dentry(0, "/", self.inode("shmem_fops", 2))
        sys_ = self.dentry(root, "sys", self.inode("shmem_fops", 3))
        fs = self.dentry(sys_, "fs", self.inode("shmem_fops", 4))
        bpf = self.dentry(fs, "bpf", self.inode("shmem_fops", 5))
        rootmnt = self.mount(root)
        self.super_block("ext4_fs_type", root, [rootmnt])
        broot = self.dentry(0, "/", self.inode("bpf_dir_iops", 1))
        bmnt = self.mount(broot, rootmnt, bpf)
        self.super_block("bpf_fs_type", broot, [bmnt])
        return broot

    # --- trampolines -------------------------------------------------------------------------

    def trampoline(self, obj_id, btf_id, ip, nodes, slot=0):
        """``nodes``: [(kind, its ``struct bpf_link`` address)]: the bpf_tramp_link's node is used."""
        L, mem = self.L, self.mem
        tr = mem.new("bpf_trampoline", key=(obj_id << 32) | btf_id, ip=ip)
        mem.hlist_add_head(self.syms["trampoline_key_table"] + L.size("hlist_head") * slot,
                           tr + L.offset("bpf_trampoline", "hlist_key"))
        for kind, tlink in nodes:
            node = tlink - L.offset("bpf_tramp_link", "link") + L.offset("bpf_tramp_link", "node")
            mem.put("bpf_tramp_node", node, link=tlink)
            mem.hlist_add_head(tr + L.offset("bpf_trampoline", "progs_hlist") + L.size("hlist_head") * kind,
                               node + L.offset("bpf_tramp_node", "tramp_hlist"))
        return tr

    # --- the kernel as walkers see it ------------------------------------------------------------

    # --- probes ----------------------------------------------------------------------------

    def tracepoint(self, name, funcs):
        """A ``struct tracepoint`` whose ``funcs`` hold [(func symbol, data)] (NULL-terminated)."""
        L, mem = self.L, self.mem
        stride = L.size("tracepoint_func")
        arr = mem.alloc(stride * (len(funcs) + 1))
        for i, (func, data) in enumerate(funcs):
            mem.put("tracepoint_func", arr + i * stride, func=self.syms[func], data=data)
        return mem.new("tracepoint", name=self.cstr(name), funcs=arr)

    def module(self, name, tracepoints=(), relative=True, symbols=None):
        """A loaded module on the ``modules`` list with ``tracepoints_ptrs`` over ``tracepoints``
        (32-bit self-relative entries, or pointers) and ``symbols`` {name: address} in its
        ``kallsyms`` symbol table."""
        L, mem = self.L, self.mem
        if "modules" not in self.syms:
            self.syms["modules"] = mem.list_init(mem.alloc("list_head"))
        width = 4 if relative else 8
        ptrs = mem.alloc(width * len(tracepoints) + 8) if tracepoints else 0
        for i, tp in enumerate(tracepoints):
            at = ptrs + i * width
            mem.write(at, (((tp - at) & 0xFFFFFFFF) if relative else tp).to_bytes(width, "little"))
        ks = 0
        if symbols is not None:
            size = L.size("elf64_sym")
            strtab = mem.alloc(1 + sum(len(n) + 1 for n in symbols) + 8, align=8)
            symtab = mem.alloc(size * (len(symbols) + 1))      # entry 0: the null symbol
            at = 1
            for i, (sym, addr) in enumerate(symbols.items(), 1):
                mem.write(strtab + at, sym.encode() + b"\0")
                mem.put("elf64_sym", symtab + i * size, st_name=at, st_value=addr)
                at += len(sym) + 1
            ks = mem.new("mod_kallsyms", symtab=symtab, num_symtab=len(symbols) + 1, strtab=strtab)
        mod = mem.new("module", name=name, num_tracepoints=len(tracepoints), tracepoints_ptrs=ptrs,
                      kallsyms=ks)
        mem.list_add_tail(self.syms["modules"], mod + L.offset("module", "list"))
        return mod

    def uprobe(self, offset, consumers, left=0):
        """A ``struct uprobe`` at ``offset`` with ``consumers`` (uprobe_consumer addresses), put
        in ``uprobes_tree`` as its root (``left``: a uprobe hung as the root's left child)."""
        L, mem = self.L, self.mem
        up = mem.new("uprobe", offset=offset)
        head = up + L.offset("uprobe", "consumers")
        mem.list_init(head)
        for c in consumers:
            mem.list_add_tail(head, c + L.offset("uprobe_consumer", "cons_node"))
        node = up + L.offset("uprobe", "rb_node")
        if left:
            mem.set("rb_node", node, "rb_left", left + L.offset("uprobe", "rb_node"))
            mem.set("rb_node", left + L.offset("uprobe", "rb_node"), "__rb_parent_color", node)
        if "uprobes_tree" not in self.syms:
            self.syms["uprobes_tree"] = mem.alloc("rb_root")
        mem.set("rb_root", self.syms["uprobes_tree"], "rb_node", node)
        return up

    def trace_uprobe(self, path, prog, ret=False):
        """A ``trace_uprobe`` (a perf uprobe event libbpf opens) whose event holds ``prog``;
        returns its consumer."""
        L, mem = self.L, self.mem
        tpe = mem.new("trace_probe_event", call__prog_array=self.prog_array([prog]),
                      call__flags=self.enumerator("TRACE_EVENT_FL_UPROBE"))
        mem.list_init(tpe + L.offset("trace_probe_event", "probes"))
        disp = self.syms["uprobe_dispatcher"]
        tu = mem.new("trace_uprobe", {"tp.event": tpe, "consumer.handler": 0 if ret else disp,
                                      "consumer.ret_handler": disp if ret else 0},
                     filename=self.cstr(path))
        mem.list_add_tail(tpe + L.offset("trace_probe_event", "probes"),
                          tu + L.offset("trace_uprobe", "tp") + L.offset("trace_probe", "list"))
        return tu + L.offset("trace_uprobe", "consumer")

    def perf_event(self, prog, call=0, etype=1, config=0, cpu=-1, pmu=""):
        return self.mem.new("perf_event", {"attr.type": etype, "attr.config": config}, prog=prog,
                            tp_event=call, cpu=cpu,
                            pmu=self.mem.new("pmu", name=self.cstr(pmu)) if pmu else 0)

    def perf_context(self, events, ctx=0):
        """A ``perf_event_context`` (at ``ctx``, else a new one) holding ``events``."""
        L, mem = self.L, self.mem
        ctx = ctx or mem.new("perf_event_context")
        head = ctx + L.offset("perf_event_context", "event_list")
        mem.list_init(head)
        for e in events:
            mem.list_add_tail(head, e + L.offset("perf_event", "event_entry"))
        return ctx

    def enumerator(self, const):
        """The value of enumerator ``const`` in any enum (the kernel's flags are anonymous enums)."""
        if not hasattr(self, "_enumerators"):
            self._enumerators = BtfEnums(self.k.btf).enumerators()
        return self._enumerators[const]

    def enum(self, name):
        found = self.k.btf.find(name)
        return list(found[0].values) if found and found[0].values else None

    def kctx(self):
        """The kernel type (``kernel_model.Kernel``) over this world: its symbols, registries
        (IDRs), one CPU, the enums of its declarations, the FUNC-bearing kernel BTF, and each
        module BTF of ``modules`` as a ``struct btf`` in ``btf_idr``."""
        btfs, modules = {}, {}
        for i, (name, btf) in enumerate(sorted(self.modules.items())):
            kva = self.mem.new("btf", id=40 + i, name=name)
            btfs[kva], modules[40 + i] = btf, kva
        modules.update(self.btf_ids)
        self.write_idrs()
        k = kernel_of(self.mem, self.L, self.syms, btf=self.kbtf, btfs=btfs, percpu_offsets=[0],
                      idrs={"btf_idr": modules}, enums=BtfEnums(self.k.btf))
        self.mem.set("idr", k.symbol("btf_idr"), "idr_next", max(modules, default=0) + 1)
        return k

    def write_idrs(self):
        """Lay the map/prog/link registries out in memory: IDRs, and idr_alloc_cyclic's
        idr_next past every id handed out (an unlinked object keeps its id)."""
        for name, entries in self.ids.items():
            self.mem.idr(self.syms[name], entries)
            self.mem.set("idr", self.syms[name], "idr_next", self.handed_out[name])

    def kernel(self, damage=None):
        """What the BPF forensics walkers take: :meth:`kctx` with its registries read (registry
        damage into ``damage``)."""
        k = self.kctx()
        return BpfKernel(k, progs=k.progs(damage), maps=k.maps(damage))
