"""Synthetic sched_ext kernels for walker and view tests.

``SCX_DECLS`` declares the kernel structs the sched_ext walkers read (names and members as in
Linux 7.x; every member padded off its kernel offset by :class:`helpers.synth.SynthKernel`).
:class:`ScxWorld` builds kernel memory on any layout (the synthetic one, or the real kernel BTF
through :class:`BtfKernel`): schedulers, exit info, per-CPU run queues and event counters, tasks,
struct_ops maps with programs, a scheduler's ``.data``/``.data.uei_dump`` maps (program BTF made
here with BtfBuilder), and a printk ring buffer. :func:`scx_kernel` is the kernel (``kernel_model.Kernel``)
the views take, built from the world.
"""

import struct

from .btf import BtfBuilder
from helpers.synth import MINI_KERNEL, Memory, SynthKernel, kernel_of
from volatility3_ktstr.kernel_model import Kernel
from volatility3_ktstr.btf import Btf
from volatility3_ktstr.core import BtfLayout

SCX_DECLS = MINI_KERNEL + """
enum scx_exit_kind { SCX_EXIT_NONE = 0, SCX_EXIT_DONE, SCX_EXIT_UNREG = 64, SCX_EXIT_UNREG_BPF,
    SCX_EXIT_UNREG_KERN, SCX_EXIT_SYSRQ, SCX_EXIT_PARENT, SCX_EXIT_PARENT_KILL,
    SCX_EXIT_ERROR = 1024, SCX_EXIT_ERROR_BPF, SCX_EXIT_ERROR_STALL, SCX_EXIT_ERROR_REENQ,
    SCX_EXIT_ERROR_RESCUE };
enum scx_exit_flags { SCX_EFLAG_INITIALIZED = 1 };
enum scx_ent_flags { SCX_TASK_QUEUED = 1, SCX_TASK_RESET_RUNNABLE_AT = 4, SCX_TASK_DEQD_FOR_SLEEP = 8,
    SCX_TASK_STATE_SHIFT = 8, SCX_TASK_STATE_BITS = 2, SCX_TASK_STATE_MASK = 0x300,
    SCX_TASK_NONE = 0, SCX_TASK_INIT = 0x100, SCX_TASK_READY = 0x200, SCX_TASK_ENABLED = 0x300,
    SCX_TASK_CURSOR = -0x80000000 };
enum scx_dsq_lnode_flags { SCX_DSQ_LNODE_ITER_CURSOR = 1, __SCX_DSQ_LNODE_PRIV_SHIFT = 16 };
enum scx_ops_state { SCX_OPSS_NONE, SCX_OPSS_QUEUEING, SCX_OPSS_QUEUED, SCX_OPSS_DISPATCHING,
    SCX_OPSS_QSEQ_SHIFT = 2 };
enum scx_enable_state { SCX_ENABLING, SCX_ENABLED, SCX_DISABLING, SCX_DISABLED };
enum scx_rq_flags { SCX_RQ_ONLINE = 1, SCX_RQ_CAN_STOP_TICK = 2, SCX_RQ_CLK_VALID = 32 };
enum scx_ops_flags { SCX_OPS_KEEP_BUILTIN_IDLE = 1, SCX_OPS_ENQ_LAST = 2, SCX_OPS_ENQ_EXITING = 4,
    SCX_OPS_SWITCH_PARTIAL = 8 };
enum scx_dsq_id_flags { SCX_DSQ_FLAG_BUILTIN = 0x8000000000000000,
    SCX_DSQ_FLAG_LOCAL_ON = 0x4000000000000000, SCX_DSQ_INVALID = 0x8000000000000000,
    SCX_DSQ_GLOBAL = 0x8000000000000001, SCX_DSQ_LOCAL = 0x8000000000000002,
    SCX_DSQ_BYPASS = 0x8000000000000003 };
struct atomic_t { int counter; };
struct atomic64_t { s64 counter; };
struct static_key { int enabled; u64 type; };
struct static_key_false { struct static_key key; };
struct thread_info { u32 flags; u32 cpu; };
struct scx_dsq_list_node { struct list_head node; u32 flags; u32 priv; };
struct sched_ext_entity { struct scx_sched *sched; struct scx_dispatch_q *dsq; long ops_state;
    u64 ddsp_dsq_id; struct scx_dsq_list_node dsq_list; struct rb_node dsq_priq; u32 dsq_seq;
    u32 dsq_flags; u32 flags; u32 weight; s32 sticky_cpu; s32 holding_cpu;
    struct list_head runnable_node; unsigned long runnable_at; u64 slice; u64 dsq_vtime;
    bool disallow; struct list_head tasks_node; };
struct cpumask { unsigned long bits[1]; };
struct sched_entity { u64 exec_start; u64 sum_exec_runtime; };
struct task_struct { struct thread_info thread_info; int on_cpu; int on_rq; int pid; int tgid;
    char comm[16]; void *sched_class; u32 policy; int prio; struct sched_entity se;
    struct cpumask *cpus_ptr; struct cpumask cpus_mask; int nr_cpus_allowed; u16 migration_disabled;
    struct sched_ext_entity scx; };
struct scx_dispatch_q { u32 lock; struct list_head list; struct rb_root priq; u32 nr; u32 seq;
    u64 id; struct rhash_head hash_node; struct scx_sched *sched; };
struct scx_rq { struct scx_dispatch_q local_dsq; struct list_head runnable_list; u32 nr_running;
    u32 flags; };
struct rq { u32 nr_running; struct task_struct *curr; u64 clock; u64 clock_task; struct scx_rq scx; };
struct scx_exit_info { enum scx_exit_kind kind; s32 exit_cpu; s64 exit_code; u64 flags; char *reason;
    unsigned long *bt; u32 bt_len; char *msg; char *dump; };
struct sched_ext_ops { fnptr select_cpu; fnptr enqueue; fnptr dispatch; fnptr init_task; fnptr exit;
    u32 dispatch_max_batch; u64 flags; u32 timeout_ms; u32 exit_dump_len; u64 hotplug_seq;
    char name[128]; void *priv; };
struct scx_event_stats { s64 SCX_EV_SELECT_CPU_FALLBACK; s64 SCX_EV_DISPATCH_KEEP_LAST;
    s64 SCX_EV_ENQ_SKIP_EXITING; s64 SCX_EV_BYPASS_DURATION; };
struct scx_sched_pcpu { struct scx_sched *sch; u64 flags; struct scx_event_stats event_stats;
    struct scx_dispatch_q bypass_dsq; };
struct scx_sched_pnode { struct scx_dispatch_q global_dsq; };
struct scx_sched { struct sched_ext_ops ops; struct rhashtable dsq_hash; struct scx_sched_pnode **pnode;
    struct scx_sched_pcpu *pcpu; u64 slice_dfl; s32 bypass_depth; bool aborting; s32 level;
    struct list_head all; struct list_head children; struct list_head sibling; char *cgrp_path;
    unsigned long watchdog_timeout; u32 exit_kind; struct scx_exit_info *exit_info;
    struct scx_sched *ancestors[0]; };
struct bpf_map { u32 map_type; u32 key_size; u32 value_size; u32 max_entries; u64 map_extra;
    u32 map_flags; u32 id; char name[16]; void *btf; u32 btf_key_type_id; u32 btf_value_type_id;
    u32 btf_vmlinux_value_type_id; bool frozen; };
union bpf_array_values { char value[0]; void *ptrs[0]; void *pptrs[0]; };
struct bpf_array { struct bpf_map map; u32 elem_size; u32 index_mask; union bpf_array_values };
struct vm_struct { struct vm_struct *next; void *addr; unsigned long size; };
struct bpf_arena { struct bpf_map map; u64 user_vm_start; u64 user_vm_end; struct vm_struct *kern_vm; };
struct bpf_prog_stats { u64 cnt; u64 nsecs; u64 misses; };
struct bpf_prog_aux { u32 used_map_cnt; u32 id; u64 load_time; char name[16]; void *btf;
    void *used_maps; };
struct bpf_prog { u16 pages; u32 type; u32 expected_attach_type; u32 len; u32 jited_len; u8 tag[8];
    struct bpf_prog_stats *stats; fnptr bpf_func; struct bpf_prog_aux *aux; };
struct bpf_link { u64 refcnt; u32 id; struct bpf_prog *prog; };
struct bpf_struct_ops_value { u64 common; char data[0]; };
struct bpf_struct_ops_sched_ext_ops { u64 common; struct sched_ext_ops data; };
struct bpf_struct_ops_map { struct bpf_map map; void *st_ops_desc; struct bpf_link **links;
    u32 funcs_cnt; struct bpf_struct_ops_value *uvalue; struct bpf_struct_ops_value kvalue; };
struct prb_data_blk_lpos { unsigned long begin; unsigned long next; };
struct prb_desc { long state_var; struct prb_data_blk_lpos text_blk_lpos; };
struct printk_info { u64 seq; u64 ts_nsec; u16 text_len; u8 facility; u8 flags : 5; u8 level : 3;
    u32 caller_id; };
struct prb_desc_ring { unsigned int count_bits; struct prb_desc *descs; struct printk_info *infos;
    long head_id; long tail_id; long last_finalized_seq; };
struct prb_data_ring { unsigned int size_bits; char *data; long head_lpos; long tail_lpos; };
struct printk_ringbuffer { struct prb_desc_ring desc_ring; struct prb_data_ring text_data_ring;
    long fail; };
"""

MAP_TYPES = {"hash": 1, "array": 2, "percpu_hash": 5, "percpu_array": 6, "struct_ops": 26, "arena": 33}
PROG_BTF_KVA = 0xFFFF_8880_7700_0000
GLOBAL_NAMES = ("scx_root", "scx_sched_all", "scx_tasks", "jiffies_64", "scx_watchdog_timestamp",
                "scx_watchdog_interval", "scx_enable_state_var", "__scx_enabled", "__scx_switched_all",
                "scx_switching_all", "scx_nr_rejected", "scx_enable_seq", "scx_hotplug_seq", "prb",
                "bpf_stats_enabled_key", "nr_node_ids")


class BtfKernel:
    """The real kernel BTF as a kernel for ScxWorld (same interface as SynthKernel)."""

    def __init__(self, btf):
        self.btf = btf
        self.layout = BtfLayout(btf)

    def memory(self, base=0xFFFF888000100000, size=4 << 20):
        return Memory(self.layout, base, size)


def enum_values(btf, name):
    found = [t for t in btf.find(name) if t.values]
    return list(found[0].values) if found else None


def uei_program_btf(reason_len=128, msg_len=1024, dump_len=4096, with_exit_code=True):
    """A scheduler program's BTF as libbpf emits it for UEI_DEFINE(uei): DATASEC ``.data`` with
    ``struct user_exit_info uei`` (+ a string var), DATASEC ``.data.uei_dump`` with
    ``char uei_dump[dump_len]``. Returns (btf, .data datasec id, dump datasec id, .data size)."""
    b = BtfBuilder()
    i32 = b.int("int", 4, signed=True)
    s64 = b.int("long long", 8, signed=True)
    u32 = b.int("unsigned int", 4)
    ch = b.int("char", 1, encoding=2)
    reason = b.array(ch, u32, reason_len)
    msg = b.array(ch, u32, msg_len)
    members = [("kind", i32, 0)]
    off = 8
    if with_exit_code:
        members.append(("exit_code", s64, 64))
        off = 16
    members += [("reason", reason, off * 8), ("msg", msg, (off + reason_len) * 8)]
    size = off + reason_len + msg_len
    size = (size + 7) & ~7
    uei_t = b.struct("user_exit_info", size, members)
    uei_v = b.var("uei", uei_t)
    fmt_t = b.array(ch, u32, 24)
    fmt_v = b.var("____sched_init.___fmt", fmt_t)
    data_size = size + 24
    data = b.datasec(".data", data_size, [(uei_v, 0, size), (fmt_v, size, 24)])
    dump_t = b.array(ch, u32, dump_len)
    dump_v = b.var("uei_dump", dump_t)
    dump = b.datasec(".data.uei_dump", dump_len, [(dump_v, 0, dump_len)])
    return Btf.parse(b.build(), source="scheduler program"), data, dump, data_size


class ScxWorld:
    """Kernel memory with sched_ext state, built member by member at the layout's offsets."""

    def __init__(self, kernel, ncpu=2, mem_size=24 << 20, zero_based_percpu=False):
        self.k = kernel
        self.L = kernel.layout
        self.btf = kernel.btf
        self.mem = kernel.memory(size=mem_size)
        self.ncpu = ncpu
        self.syms = {}
        self.text_syms = {}
        self.btfs = {}
        self.map_list = []            # (id, kva)
        self.stride = 0x40000
        self.percpu = self.mem.alloc(self.stride * ncpu, align=4096)
        # Per-CPU pointers and symbols are ``pcpu_link`` + offset in a CPU's area; a zero-based
        # per-CPU section (x86-64 before 6.15) links them at 0 and puts the area's address in
        # __per_cpu_offset instead.
        self.zero_based_percpu = zero_based_percpu
        self.pcpu_link = 0 if zero_based_percpu else self.percpu
        self.offsets = [self.percpu - self.pcpu_link + self.stride * c for c in range(ncpu)]
        self._pc_next = 0
        g = self.mem.alloc(0x1000, align=4096)
        for i, name in enumerate(GLOBAL_NAMES):
            self.syms[name] = g + 0x40 * i
        for name in ("scx_sched_all", "scx_tasks"):
            self.mem.list_init(self.syms[name])
        self.mem.write(self.syms["nr_node_ids"], struct.pack("<I", 1))
        rq_size = self.L.size("rq")
        self.syms["runqueues"] = self.pcpu_link + self.pc_alloc(rq_size)
        for c in range(ncpu):
            rq = self.rq(c)
            self.mem.list_init(rq + self.L.offset("rq", "scx.runnable_list"))
            self.mem.list_init(rq + self.L.offset("rq", "scx.local_dsq.list"))
            self.mem.set("rq", rq, "scx.local_dsq.id", self.enum("scx_dsq_id_flags", "SCX_DSQ_LOCAL"))
        self.syms["ext_sched_class"] = self.mem.alloc(64)
        self.syms["idle_sched_class"] = self.mem.alloc(64)

    # --- basics -------------------------------------------------------------------------------

    def enum(self, name, const):
        return dict(enum_values(self.btf, name))[const] & 0xFFFFFFFFFFFFFFFF

    def pc_alloc(self, size, align=64):
        off = (self._pc_next + align - 1) // align * align
        self._pc_next = off + size
        assert self._pc_next <= self.stride
        return off

    def rq(self, cpu):
        return self.syms["runqueues"] + self.offsets[cpu]

    def glob(self, name, value, size=8):
        """Set a global; the kernel's atomic_t/atomic_long_t globals through their ``counter``
        (off offset 0 in the padded layout, as a walker must find it)."""
        atomic = ATOMIC_GLOBALS.get(name)
        if atomic and self.L.has(atomic, "counter"):
            self.mem.set(atomic, self.syms[name], "counter", value)
            return
        self.mem.write(self.syms[name], (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def static_key(self, name, on):
        self.mem.set("static_key_false", self.syms[name], "key.enabled", 1 if on else 0)

    def cstr(self, text):
        data = text.encode() + b"\0"
        a = self.mem.alloc(len(data), align=8)
        self.mem.write(a, data)
        return a

    # --- schedulers ---------------------------------------------------------------------------

    def sched(self, name="sdt", timeout=7500, level=0, parent=None, cgroup="/", dump_len=0,
              callbacks=("select_cpu", "enqueue", "dispatch")):
        L, mem = self.L, self.mem
        size = L.size("scx_sched") + 8 * (level + 1)
        sch = mem.alloc(size)
        ops = sch + L.offset("scx_sched", "ops")
        mem.set("sched_ext_ops", ops, "name", name)
        mem.set("sched_ext_ops", ops, "exit_dump_len", dump_len)
        for i, cb in enumerate(callbacks):
            mem.set("sched_ext_ops", ops, cb, 0xFFFFFFFFC0000000 + 0x100 * i)
        mem.set("scx_sched", sch, "watchdog_timeout", timeout)
        mem.set("scx_sched", sch, "level", level)
        mem.set("scx_sched", sch, "slice_dfl", 20000000)
        for lst in ("all", "children", "sibling"):
            mem.list_init(sch + L.offset("scx_sched", lst))
        anc = sch + L.offset("scx_sched", "ancestors")
        if parent is not None:
            mem.u64(anc + 8 * (level - 1), parent)
            mem.list_add_tail(parent + L.offset("scx_sched", "children"), sch + L.offset("scx_sched", "sibling"))
        mem.u64(anc + 8 * level, sch)
        mem.set("scx_sched", sch, "cgrp_path", self.cstr(cgroup))
        ei = mem.alloc("scx_exit_info")
        mem.set("scx_sched", sch, "exit_info", ei)
        # per-CPU data: event counters and the bypass DSQ
        pc = self.pc_alloc(L.size("scx_sched_pcpu"))
        mem.set("scx_sched", sch, "pcpu", self.pcpu_link + pc)
        for c in range(self.ncpu):
            p = self.pcpu_link + pc + self.offsets[c]
            mem.set("scx_sched_pcpu", p, "sch", sch)
            mem.list_init(p + L.offset("scx_sched_pcpu", "bypass_dsq.list"))
            mem.set("scx_sched_pcpu", p, "bypass_dsq.id", self.enum("scx_dsq_id_flags", "SCX_DSQ_BYPASS"))
        # one NUMA node: pnode[0]->global_dsq
        pnodes = mem.alloc(8)
        pn = mem.alloc("scx_sched_pnode")
        mem.u64(pnodes, pn)
        mem.set("scx_sched", sch, "pnode", pnodes)
        mem.list_init(pn + L.offset("scx_sched_pnode", "global_dsq.list"))
        mem.set("scx_sched_pnode", pn, "global_dsq.id", self.enum("scx_dsq_id_flags", "SCX_DSQ_GLOBAL"))
        # an empty DSQ hash table
        tbl = mem.alloc(L.offset("bucket_table", "buckets") + 8 * 4)
        mem.set("bucket_table", tbl, "size", 4)
        mem.set("scx_sched", sch, "dsq_hash.tbl", tbl)
        return sch

    def set_root(self, sch):
        self.mem.u64(self.syms["scx_root"], sch)

    def link_all(self, sch):
        self.mem.list_add_tail(self.syms["scx_sched_all"], sch + self.L.offset("scx_sched", "all"))

    def exit(self, sch, kind, reason="", msg="", bt=(), dump=None, exit_code=0, exit_cpu=-1, flags=1):
        mem, L = self.mem, self.L
        ei = mem.read(sch + L.offset("scx_sched", "exit_info"), 8)
        ei = int.from_bytes(ei, "little")
        mem.set("scx_sched", sch, "exit_kind", kind)
        mem.put("scx_exit_info", ei, kind=kind, exit_code=exit_code, exit_cpu=exit_cpu, flags=flags)
        if reason is not None:
            mem.set("scx_exit_info", ei, "reason", self.cstr(reason))
        if msg is not None:
            mem.set("scx_exit_info", ei, "msg", self.cstr(msg))
        if bt:
            arr = mem.alloc(8 * len(bt))
            for i, pc in enumerate(bt):
                mem.u64(arr + 8 * i, pc)
            mem.put("scx_exit_info", ei, bt=arr, bt_len=len(bt))
        if dump is not None:
            mem.set("scx_exit_info", ei, "dump", self.cstr(dump))
        return ei

    def events(self, sch, per_cpu):
        """per_cpu: [{event name: value}] for each CPU."""
        base = int.from_bytes(self.mem.read(sch + self.L.offset("scx_sched", "pcpu"), 8), "little")
        for c, values in enumerate(per_cpu):
            for name, v in values.items():
                self.mem.set("scx_sched_pcpu", base + self.offsets[c], "event_stats." + name, v)

    # --- tasks --------------------------------------------------------------------------------

    def task(self, pid, comm, cpu=0, sched=None, ext=True, **scx_fields):
        mem = self.mem
        t = mem.alloc("task_struct")
        mem.put("task_struct", t, pid=pid, tgid=pid, comm=comm, thread_info__cpu=cpu,
                sched_class=self.syms["ext_sched_class" if ext else "idle_sched_class"])
        if sched:
            mem.set("task_struct", t, "scx.sched", sched)
        for k, v in scx_fields.items():
            mem.set("task_struct", t, "scx." + k, v)
        mem.list_add_tail(self.syms["scx_tasks"], t + self.L.offset("task_struct", "scx.tasks_node"))
        mem.list_init(t + self.L.offset("task_struct", "scx.runnable_node"))
        return t

    def make_runnable(self, t, cpu, runnable_at):
        self.mem.set("task_struct", t, "scx.runnable_at", runnable_at)
        self.mem.set("task_struct", t, "on_rq", 1)
        self.mem.list_add_tail(self.rq(cpu) + self.L.offset("rq", "scx.runnable_list"),
                               t + self.L.offset("task_struct", "scx.runnable_node"))

    def enqueue(self, t, dsq):
        node = t + self.L.offset("task_struct", "scx.dsq_list.node")
        self.mem.list_add_tail(dsq + self.L.offset("scx_dispatch_q", "list"), node)
        nr = self.L.field("scx_dispatch_q", "nr")
        cur = nr.decode(self.mem.read(dsq + nr.offset, nr.size), nr.offset)
        self.mem.set("scx_dispatch_q", dsq, "nr", cur + 1)
        self.mem.set("task_struct", t, "scx.dsq", dsq)

    # --- BPF objects --------------------------------------------------------------------------

    def bpf_map(self, map_id, name, mtype, value_size, struct_name="bpf_map", extra=0,
                btf_kva=0, value_type_id=0, max_entries=1, key_size=4):
        """The ``struct_name`` (embedding ``struct bpf_map map``) holding a map; returns the
        struct's address (the map's kva, as map_idr holds it, is that of its ``map`` member)."""
        size = self.L.size(struct_name) + extra
        base = self.mem.alloc(size, align=64)
        kva = base + (self.L.offset(struct_name, "map") if struct_name != "bpf_map" else 0)
        self.mem.put("bpf_map", kva, map_type=MAP_TYPES[mtype], value_size=value_size,
                     max_entries=max_entries, key_size=key_size, id=map_id, name=name, btf=btf_kva,
                     btf_value_type_id=value_type_id)
        self.map_list.append((map_id, kva))
        return base

    def prog(self, prog_id, name, stats=()):
        mem = self.mem
        p = mem.alloc("bpf_prog")
        aux = mem.alloc("bpf_prog_aux")
        mem.put("bpf_prog", p, type=27, aux=aux, bpf_func=0xFFFFFFFFC1000000 + prog_id * 0x1000)
        mem.put("bpf_prog_aux", aux, id=prog_id, name=name)
        if stats:
            off = self.pc_alloc(self.L.size("bpf_prog_stats"))
            mem.set("bpf_prog", p, "stats", self.pcpu_link + off)
            for c, (cnt, ns, miss) in enumerate(stats):
                mem.put("bpf_prog_stats", self.pcpu_link + off + self.offsets[c], cnt=cnt, nsecs=ns,
                        misses=miss)
        return p

    # bpf/values.py reads ARRAY and PERCPU_ARRAY maps as the kernel lays them out, struct
    # bpf_array at the map's address (its ``map`` is at offset 0): the two below write them so
    # (a padded layout puts ``map`` elsewhere; the real BTF is the kernel's layout)

    def array_map(self, map_id, name, btf_kva, value_type_id, values, max_entries=None):
        """An ARRAY map of ``values`` (bytes each, padded to the value size) typed by the
        program BTF at ``btf_kva``; returns the map's kva."""
        vsize = self.btfs[btf_kva].size_of(value_type_id)
        n = max_entries or len(values)
        stride = (vsize + 7) & ~7
        voff = self.L.offset("bpf_array", "value")
        kva = self.bpf_map(map_id, name, "array", vsize, "bpf_array", extra=voff + stride * n,
                           btf_kva=btf_kva, value_type_id=value_type_id, max_entries=n) \
            + self.L.offset("bpf_array", "map")
        self.mem.set("bpf_array", kva, "elem_size", stride)
        for i, v in enumerate(values):
            self.mem.write(kva + voff + i * stride, v)
        return kva

    def percpu_array_map(self, map_id, name, btf_kva, value_type_id, per_cpu_values):
        """A PERCPU_ARRAY map: ``per_cpu_values`` [[element 0 of CPU 0, of CPU 1, ...], ...]
        (bytes), each element's per-CPU copies in the per-CPU areas; returns the map's kva."""
        vsize = self.btfs[btf_kva].size_of(value_type_id)
        n = len(per_cpu_values)
        pptrs = self.L.first("bpf_array", "pptrs", "value")
        kva = self.bpf_map(map_id, name, "percpu_array", vsize, "bpf_array", extra=pptrs + 8 * n,
                           btf_kva=btf_kva, value_type_id=value_type_id, max_entries=n) \
            + self.L.offset("bpf_array", "map")
        for i, copies in enumerate(per_cpu_values):
            off = self.pc_alloc((vsize + 7) & ~7, align=8)
            self.mem.u64(kva + pptrs + 8 * i, self.pcpu_link + off)
            for c, v in enumerate(copies):
                self.mem.write(self.pcpu_link + off + self.offsets[c], v)
        return kva

    def section_map(self, map_id, name, btf_kva, datasec_id, data=b""):
        """A section map (``.bss``/``.data``: one element whose BTF type is the DATASEC), laid
        out like the ``.data`` of :meth:`uei_maps`; returns the struct bpf_array's address."""
        size = self.btfs[btf_kva].type(datasec_id).size
        voff = self.L.offset("bpf_array", "value")
        base = self.bpf_map(map_id, name, "array", size, "bpf_array", extra=voff + size,
                            btf_kva=btf_kva, value_type_id=datasec_id)
        self.mem.write(base + voff, data)
        return base

    def arena_map(self, map_id, pages, user_vm_start=1 << 32, page_size=4096):
        """An arena map of ``pages`` pages whose kernel window lies in this memory (every page
        mapped, zero); returns (map kva, kernel address of arena offset 0). walkers/arena.py
        reads struct bpf_arena at the map's address (the kernel's ``map`` is at offset 0)."""
        from volatility3_ktstr.walkers.arena import guard_half

        kva = self.bpf_map(map_id, "arena", "arena", 0, "bpf_arena", extra=self.L.size("bpf_arena"),
                           max_entries=pages, key_size=0) + self.L.offset("bpf_arena", "map")
        half = guard_half(page_size)
        window = self.mem.alloc(half + pages * page_size, align=page_size)
        vm = self.mem.alloc("vm_struct")
        self.mem.put("vm_struct", vm, {"addr": window, "size": 2 * half + pages * page_size})
        self.mem.put("bpf_arena", kva, user_vm_start=user_vm_start,
                     user_vm_end=user_vm_start + pages * page_size, kern_vm=vm)
        return kva, window + half

    def struct_ops_map(self, sch, map_id=13, name="sdt_ops", priv=True, progs=None, btf_kva=0):
        """A sched_ext struct_ops map whose kernel copy of the ops is ``sch``'s ops (same
        callbacks and name), programs {member: bpf_prog address} behind the callbacks."""
        L, mem = self.L, self.mem
        vs = "bpf_struct_ops_sched_ext_ops"
        ops_size = L.size("sched_ext_ops")
        data_off = L.offset(vs, "data")
        kv_off = L.offset("bpf_struct_ops_map", "kvalue")
        kva = self.bpf_map(map_id, name, "struct_ops", L.size(vs), "bpf_struct_ops_map",
                           extra=data_off + ops_size, btf_kva=btf_kva)
        kdata = kva + kv_off + data_off
        ops = sch + L.offset("scx_sched", "ops")
        mem.write(kdata, mem.read(ops, ops_size))
        if priv:
            mem.set("sched_ext_ops", kdata, "priv", sch)
        uv = mem.alloc(data_off + ops_size)
        mem.set("bpf_struct_ops_map", kva, "uvalue", uv)
        progs = progs or {}
        links = mem.alloc(8 * max(1, len(progs)))
        mem.set("bpf_struct_ops_map", kva, "links", links)
        mem.set("bpf_struct_ops_map", kva, "funcs_cnt", len(progs))
        for i, (member, prog) in enumerate(progs.items()):
            link = mem.alloc("bpf_link")
            mem.set("bpf_link", link, "prog", prog)
            mem.u64(links + 8 * i, link)
            aux = int.from_bytes(mem.read(prog + L.offset("bpf_prog", "aux"), 8), "little")
            pid = int.from_bytes(mem.read(aux + L.offset("bpf_prog_aux", "id"), 4), "little")
            mem.set("sched_ext_ops", uv + data_off, member, pid)
        return kva

    def uei_maps(self, kind=0, reason="", msg="", dump="", exit_code=0, prog_btf=None,
                 btf_kva=PROG_BTF_KVA, data_id=11, dump_id=10, prefix="scx_sdt"):
        """The scheduler's ``<prefix>.data`` (uei) and ``.data.uei_dump`` maps."""
        btf, data_sec, dump_sec, data_size = prog_btf or uei_program_btf()
        self.btfs[btf_kva] = btf
        voff = self.L.offset("bpf_array", "value")
        dump_size = btf.type(dump_sec).size
        dkva = self.bpf_map(data_id, f"{prefix}.data", "array", data_size, "bpf_array",
                            extra=voff + data_size, btf_kva=btf_kva, value_type_id=data_sec)
        ukva = self.bpf_map(dump_id, ".data.uei_dump", "array", dump_size, "bpf_array",
                            extra=voff + dump_size, btf_kva=btf_kva, value_type_id=dump_sec)
        pl = BtfLayout(btf)
        base = dkva + voff
        uei_var = next(v for v in btf.type(data_sec).vars if btf.type(v[0]).name == "uei")
        base += uei_var[1]
        self.mem.write(base + pl.offset("user_exit_info", "kind"), struct.pack("<i", kind))
        if pl.has("user_exit_info", "exit_code"):
            self.mem.write(base + pl.offset("user_exit_info", "exit_code"), struct.pack("<q", exit_code))
        self.mem.write(base + pl.offset("user_exit_info", "reason"), reason.encode() + b"\0")
        self.mem.write(base + pl.offset("user_exit_info", "msg"), msg.encode() + b"\0")
        if dump:
            self.mem.write(ukva + voff, dump.encode()[:dump_size - 1] + b"\0")
        return dkva, ukva

    # --- the kernel log -----------------------------------------------------------------------

    def printk(self, records, count_bits=4, size_bits=10, first_id=0, text_start=0):
        """A printk ring holding ``records`` [(ts_nsec, text, caller_id)] with ids from
        ``first_id``; text blocks from logical position ``text_start`` (a block that does not
        fit before the ring's end goes to its start, as the kernel does)."""
        L, mem = self.L, self.mem
        count, size = 1 << count_bits, 1 << size_bits
        prb = mem.alloc("printk_ringbuffer")
        descs = mem.alloc(L.size("prb_desc") * count)
        infos = mem.alloc(L.size("printk_info") * count)
        data = mem.alloc(size, align=8)
        dr = prb + L.offset("printk_ringbuffer", "desc_ring")
        tr = prb + L.offset("printk_ringbuffer", "text_data_ring")
        mem.put("prb_desc_ring", dr, count_bits=count_bits, descs=descs, infos=infos,
                head_id=first_id + len(records) - 1, tail_id=first_id)
        mem.put("prb_data_ring", tr, size_bits=size_bits, data=data)
        shift = 8 * L.field("prb_desc", "state_var").size - 2
        lpos = text_start
        for n, (ts, text, caller) in enumerate(records):
            ident = first_id + n
            i = ident & (count - 1)
            d = descs + L.size("prb_desc") * i
            inf = infos + L.size("printk_info") * i
            body = text.encode()
            need = (8 + len(body) + 7) & ~7
            begin = lpos
            if (begin & (size - 1)) + need > size:      # wrap: the block goes to the start
                nxt = (begin | (size - 1)) + 1 + need
                start = 0
            else:
                nxt = begin + need
                start = begin & (size - 1)
            mem.u64(data + start, ident)
            mem.write(data + start + 8, body)
            mem.put("prb_desc", d, state_var=(2 << shift) | ident, text_blk_lpos__begin=begin,
                    text_blk_lpos__next=nxt)
            mem.put("printk_info", inf, seq=n, ts_nsec=ts, text_len=len(body), level=6, caller_id=caller)
            lpos = nxt
        mem.u64(self.syms["prb"], prb)
        return prb


PERCPU_SYMBOLS = ("runqueues",)


def scx_kernel(world, slide=0):
    """The kernel type over an ScxWorld (what kernel.KernelContext gives the views): its
    symbols (globals and text), per-CPU offsets, the maps in ``map_idr``, its program BTFs.

    ``slide``: a KASLR slide; the symbol table then holds link-time addresses (runtime minus
    the slide), except, on a zero-based per-CPU world, the per-CPU symbols, which are offsets
    in the per-CPU section (``__per_cpu_start`` 0, ``__per_cpu_end`` its size, below ``_text``)."""
    live = kernel_of(world.mem, world.L, {**world.text_syms, **world.syms}, btf=world.btf,
                     btfs=world.btfs, percpu_offsets=world.offsets, idrs={"map_idr": dict(world.map_list)})
    if not slide and not world.zero_based_percpu:
        return live
    runtime = live.symbol_table
    zero = world.zero_based_percpu
    symbols = {n: a if zero and n in PERCPU_SYMBOLS else (a - slide) & ((1 << 64) - 1)
               for n, a in runtime.items()}
    if zero:
        symbols.update(__per_cpu_start=0, __per_cpu_end=world.stride, _text=0xFFFFFFFF81000000 - slide)
    return Kernel(world.mem, world.L, symbols, slide=slide, btf=world.btf, btf_cache=dict(world.btfs))


# Globals the kernel declares atomic_t / atomic_long_t (kernel/sched/ext.c).
ATOMIC_GLOBALS = {n: "atomic_t" for n in ("scx_enable_state_var", "scx_ops_enable_state_var",
                                          "scx_breather_depth", "scx_exit_kind")}
ATOMIC_GLOBALS.update({n: "atomic64_t" for n in ("scx_nr_rejected", "scx_enable_seq", "scx_hotplug_seq")})


def synth_kernel(pad=8):
    return SynthKernel(SCX_DECLS, pad=pad)


# --- fixtures for the sched_ext walker tests: the synthetic kernel, then the real BTF ---------
# (import them into a test module: ``from helpers.scxmem import kernel, real, synth, w``)

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def synth():
    return synth_kernel()


@pytest.fixture(scope="module")
def real(request):
    btf = request.getfixturevalue("amd64_kernel_btf")
    if not btf.find("sched_ext_entity"):
        pytest.skip("kernel BTF without sched_ext")
    return BtfKernel(btf)


@pytest.fixture(params=["synth", "real"])
def kernel(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def w(kernel):
    return ScxWorld(kernel)
