"""BPF forensics walkers and views on a synthetic kernel (tests/helpers/bpfworld.py), laid out
with padding (no member at its kernel offset) and naturally: links and their targets, fd
holders, bpffs pins, hooks with and without links, the cross-view of hidden objects, xlated
instructions, and damage (cycles, holes) reported instead of raised."""

import json
import struct

import pytest

from helpers.bpfworld import CALL_BASE, FUNCS, World
from volatility3_ktstr.bpf import bpffs, hooks, insns
from volatility3_ktstr.bpf import fds as bpffds
from volatility3_ktstr.bpf import links as bpflinks
from volatility3_ktstr.kds import DamageLog
from volatility3_ktstr.views import bpffds as fds_view
from volatility3_ktstr.views import bpfhidden as hidden_view
from volatility3_ktstr.views import bpfhooks as hooks_view
from volatility3_ktstr.views import bpfpins as pins_view
from volatility3_ktstr.views import links as links_view
from volatility3_ktstr.views import progs as progs_view


def insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def ld_imm64(dst, value):
    return insn(0x18, dst, 0, 0, value & 0xFFFFFFFF) + insn(0, 0, 0, 0, (value >> 32) - (1 << 32)
                                                             if value >> 63 else value >> 32)


class Zoo:
    """A world like the zoo dump's, small."""

    def __init__(self, pad, unregister=()):
        w = self.w = World(pad)
        L, mem = w.L, w.mem
        skip = set(unregister)
        reg = lambda kind, i: (kind, i) not in skip  # noqa: E731
        self.maps = {}
        self.maps[6] = w.map(6, "zoo_data", "BPF_MAP_TYPE_ARRAY", register=reg("map", 6))
        self.maps[8] = w.map(8, "zoo_inner", "BPF_MAP_TYPE_ARRAY", register=reg("map", 8))
        self.maps[7] = w.map(7, "zoo_outer", "BPF_MAP_TYPE_ARRAY_OF_MAPS", slots=[(0, self.maps[8])],
                             register=reg("map", 7))
        names = {10: ("zoo_kprobe", "BPF_PROG_TYPE_KPROBE"), 11: ("zoo_cg_legacy", "BPF_PROG_TYPE_CGROUP_SKB"),
                 12: ("zoo_cg_link", "BPF_PROG_TYPE_CGROUP_SKB"), 13: ("zoo_xdp", "BPF_PROG_TYPE_XDP"),
                 14: ("zoo_tcx", "BPF_PROG_TYPE_SCHED_CLS"), 15: ("zoo_tcx_legacy", "BPF_PROG_TYPE_SCHED_CLS"),
                 17: ("zoo_fentry", "BPF_PROG_TYPE_TRACING"), 18: ("zoo_tail", "BPF_PROG_TYPE_RAW_TRACEPOINT"),
                 19: ("zoo_idle", "BPF_PROG_TYPE_KPROBE"), 20: ("zoo_kmulti", "BPF_PROG_TYPE_KPROBE")}
        self.progs = {i: w.prog(i, n, t, register=reg("prog", i), maps=[self.maps[6]])
                      for i, (n, t) in names.items()}
        self.maps[5] = w.map(5, "zoo_jmp", "BPF_MAP_TYPE_PROG_ARRAY", slots=[(0, self.progs[18])],
                             register=reg("map", 5))
        code = (insn(0x85, imm=FUNCS["bpf_ktime_get_ns"] - CALL_BASE)
                + insn(0x85, imm=FUNCS["htab_map_lookup_elem"] - CALL_BASE)
                + insn(0x85, src=2, imm=FUNCS["scx_bpf_kick_cpu"] - CALL_BASE)
                + ld_imm64(2, self.maps[5]) + ld_imm64(1, self.maps[6] - L.offset("bpf_array", "map") + L.offset("bpf_array", "ptrs") + 4)
                + insn(0xf5, imm=1) + insn(0xb7, 0, 0, 0, 0) + insn(0x95))
        self.progs[16] = w.prog(16, "zoo_raw_tp", "BPF_PROG_TYPE_RAW_TRACEPOINT", insns=code,
                                register=reg("prog", 16), maps=[self.maps[6], self.maps[5]])
        # cgroups /lab/web (79) and /lab/batch (80)
        lab = w.cgroup(w.root_cgroup, "lab", 70)
        self.web = w.cgroup(lab, "web", 79)
        self.batch = w.cgroup(lab, "batch", 80)
        # network: init_net with lo
        net = w.netns(4026531833)
        self.lo = w.netdev(net, "lo", 1)
        # links
        tp = mem.new("tracepoint", name=w.cstr("sched_switch"))
        self.links = {}
        self.links[1] = w.link("bpf_raw_tp_link", 1, "raw_tracepoint", self.progs[16], ops="bpf_raw_tp_link_lops",
                               register=reg("link", 1), btp=mem.new("bpf_raw_event_map", tp=tp))
        self.links[2] = w.link("bpf_cgroup_link", 2, "cgroup", self.progs[12], attach="BPF_CGROUP_INET_INGRESS",
                               ops="bpf_cgroup_link_lops", register=reg("link", 2), cgroup=self.web)
        self.links[3] = w.link("bpf_xdp_link", 3, "xdp", self.progs[13], attach="BPF_XDP", register=reg("link", 3),
                               dev=self.lo)
        self.links[4] = w.link("tcx_link", 4, "tcx", self.progs[14], attach="BPF_TCX_EGRESS", register=reg("link", 4),
                               dev=self.lo)
        addrs = mem.alloc(16)
        mem.u64(addrs, FUNCS["vfs_read"])
        mem.u64(addrs + 8, FUNCS["vfs_write"])
        self.links[5] = w.link("bpf_kprobe_multi_link", 5, "kprobe_multi", self.progs[20],
                               attach="BPF_TRACE_KPROBE_MULTI", register=reg("link", 5),
                               addrs=addrs, cnt=2, fp__entry_handler=0x1234, fp__nmissed=3)
        self.links[6] = w.link("bpf_tracing_link", 6, "tracing", self.progs[17], attach="BPF_TRACE_FENTRY",
                               register=reg("link", 6))
        tramp = w.trampoline(1, w.kbtf_ids["hrtimer_nanosleep"], FUNCS["hrtimer_nanosleep"] + 4,
                             [(0, self.links[6])], slot=3)
        mem.set("bpf_tracing_link", self.links[6] - L.offset("bpf_tracing_link", "link.link"), "trampoline", tramp)
        # hooks: cgroup link (prog read through the link) + legacy, effective arrays
        w.cgroup_attach(self.web, "CGROUP_INET_INGRESS", 0, self.links[2])
        w.cgroup_attach(self.batch, "CGROUP_INET_EGRESS", self.progs[11])
        w.cgroup_effective(self.web, "CGROUP_INET_INGRESS", [self.progs[12]])
        w.cgroup_effective(self.batch, "CGROUP_INET_EGRESS", [self.progs[11]])
        # device: xdp through its link, tcx link + legacy
        xs = self.lo + L.offset("net_device", "xdp_state")
        mem.u64(xs + L.offset("bpf_xdp_entity", "link"), self.links[3])
        mem.set("net_device", self.lo, "xdp_prog", self.progs[13])
        w.tcx(self.lo, "egress", [(self.progs[14], self.links[4]), (self.progs[15], 0)])
        # processes
        self.btf = mem.new("btf", id=3, name="zoo")
        if reg("btf", 3):
            w.btf_ids[3] = self.btf
        zoo = w.task(146, "bpf_zoo")
        w.fds(zoo, {3: ("bpf_map_fops", self.maps[6]), 4: ("bpf_prog_fops", self.progs[10]),
                    5: ("bpf_link_fops", self.links[1]), 6: ("shmem_fops", 0), 8: ("btf_fops", self.btf)})
        holder = w.task(149, "zoo_holder")
        w.fds(holder, {5: ("bpf_link_fops_poll", self.links[3])})
        # bpffs
        root = w.bpffs_at_sys_fs_bpf()
        d = self.zoo_dir = w.dentry(root, "zoo", w.inode("bpf_dir_iops", 1300))
        w.dentry(d, "zoo_tail", w.inode("bpf_prog_iops", 1305, self.progs[18]))
        w.dentry(d, "pinonly", w.inode("bpf_map_iops", 1311, self.maps[6]))
        w.dentry(d, "raw_tp_link", w.inode("bpf_link_iops", 1307, self.links[1]))
        w.dentry(d, "gone")                 # a negative dentry
        self.kctx = w.kctx()
        self.bk = self.kctx.bpf_kernel()


@pytest.fixture(params=[8, 0], ids=["padded", "natural"])
def zoo(request):
    return Zoo(request.param)


def by_id(links):
    return {link.id: link for link in links}


# --- links ---------------------------------------------------------------------------------------


def test_links_and_their_targets(zoo):
    damage = DamageLog()
    links = by_id(bpflinks.iter_links(zoo.bk, zoo.w.syms["link_idr"], damage=damage))
    assert set(links) == {1, 2, 3, 4, 5, 6} and not damage
    assert all(not link.error for link in links.values()), [link.error for link in links.values()]
    assert (links[1].type_name, links[1].info["tp_name"], links[1].target) == \
        ("raw_tracepoint", "sched_switch", "raw_tp:sched_switch")
    # attach types by the kernel's enum, not uapi numbers
    assert (links[2].attach_type, links[2].info["cgroup_id"], links[2].target) == \
        ("cgroup_inet_ingress", 79, "cgroup:/lab/web")
    assert (links[3].info, links[3].target) == ({"devname": "lo", "ifindex": 1}, "dev:lo")
    assert links[4].info == {"devname": "lo", "ifindex": 1, "attach_type": "tcx_egress"}
    km = links[5].info
    assert (km["func_cnt"], km["missed"], km["retprobe"]) == (2, 3, False)
    assert [(f["func"], f["addr"]) for f in km["funcs"]] == [("vfs_read", FUNCS["vfs_read"]),
                                                            ("vfs_write", FUNCS["vfs_write"])]
    tr = links[6].info
    assert (tr["attach_type"], tr["target_obj_id"], tr["target_btf_id"], tr["target_name"]) == \
        ("trace_fentry", 1, zoo.w.kbtf_ids["hrtimer_nanosleep"], "hrtimer_nanosleep")
    assert links[6].target == "trace_fentry:hrtimer_nanosleep"
    assert [h.kind for h in links[5].hooks] == ["kprobe", "kprobe"]


def test_link_of_a_type_the_kernel_lacks_or_with_wrong_ops(zoo):
    w = zoo.w
    # netkit: declared in the link type enum, but struct netkit_link is not in these types
    nk = w.link("bpf_cgroup_link", 7, "netkit", zoo.progs[14])
    bad = w.link("bpf_cgroup_link", 8, "cgroup", zoo.progs[12], ops="tcx_link_lops", cgroup=zoo.web)
    w.mem.set("bpf_link", bad, "type", 99)
    dec = bpflinks.LinkDecoder(zoo.bk)
    a, b = dec.read(nk, 7), dec.read(bad, 8)
    assert "struct netkit_link is not in the kernel types" in a.error
    assert "tcx link ops" in b.error and "not decoded" in b.error


def test_links_view_rows_are_bpftool_shaped(zoo):
    rows = [r for _, r in links_view.rows(zoo.kctx)]
    names = links_view.GRID.names()
    got = {r[0]: dict(zip(names, r)) for r in rows}
    info = json.loads(got[1]["Info"])
    assert info["id"] == 1 and info["type"] == "raw_tracepoint" and info["prog_id"] == 16
    assert info["pinned"] == ["/sys/fs/bpf/zoo/raw_tp_link"]
    assert info["pids"] == [{"pid": 146, "comm": "bpf_zoo"}]
    assert got[3]["Pids"] == "149:zoo_holder"
    assert got[1]["ProgName"] == "zoo_raw_tp" and not got[1]["Error"]


# --- fds and pins --------------------------------------------------------------------------------


def test_bpf_fds_by_f_op(zoo):
    damage = DamageLog()
    got = [(f.pid, f.comm, f.fd, f.kind, bpffds.object_id(zoo.bk, f.kind, f.obj)[0])
           for f in bpffds.bpf_fds(zoo.bk, zoo.w.init_task, damage)]
    assert got == [(146, "bpf_zoo", 3, "map", 6), (146, "bpf_zoo", 4, "prog", 10),
                   (146, "bpf_zoo", 5, "link", 1), (146, "bpf_zoo", 8, "btf", 3),
                   (149, "zoo_holder", 5, "link", 3)]
    assert not damage
    rows = [r for _, r in fds_view.rows(zoo.kctx)]
    assert [(r[0], r[2], r[3], r[5]) for r in rows][:2] == [(146, 3, "map", "zoo_data"),
                                                            (146, 4, "prog", "zoo_kprobe")]


def test_corrupt_fd_table_is_skipped_and_shared_tables_read_once(zoo):
    """A max_fds that is no whole number of bitmap longs is no live fdtable (a fuzz finding:
    init_files' fdtab made 16M "fds" of kernel text, read once per kernel thread)."""
    w = zoo.w
    shared = w.fds(w.task(300, "kthread_a"), {0: ("bpf_map_fops", zoo.maps[6])})
    w.task(301, "kthread_b", files=shared)
    reads = []
    real_read = w.mem.read

    def counting(addr, size):
        reads.append(addr)
        return real_read(addr, size)

    w.mem.read = counting
    got = [(f.pid, f.fd, f.kind) for f in bpffds.bpf_fds(zoo.bk, w.init_task)]
    assert (300, 0, "map") in got and (301, 0, "map") in got
    fdt = w.mem.u64(shared + w.L.offset("files_struct", "fdt"))
    array = w.mem.u64(fdt + w.L.offset("fdtable", "fd"))
    assert reads.count(array) == 1       # the fd array of the shared table: read once
    w.mem.read = real_read
    w.mem.set("fdtable", fdt, "max_fds", 0x01000010)
    damage = DamageLog()
    got = [(f.pid, f.fd) for f in bpffds.bpf_fds(zoo.bk, w.init_task, damage)]
    assert (300, 0) not in got and (301, 0) not in got
    assert any(d.kind == "corrupt" and "max_fds 16777232" in d.reason for d in damage)


def test_exited_leader_fds_come_from_a_thread(zoo):
    w = zoo.w
    t = w.task(200, "leader")
    thread = w.task(201, "worker", leader=False)
    L = w.L
    sig = w.mem.u64(t + L.offset("task_struct", "signal"))
    w.mem.list_add_tail(sig + L.offset("signal_struct", "thread_head"), thread + L.offset("task_struct", "thread_node"))
    w.fds(thread, {0: ("bpf_prog_fops", zoo.progs[19])})
    w.mem.set("task_struct", t, "files", 0)
    got = [(f.pid, f.fd, f.kind) for f in bpffds.bpf_fds(zoo.bk, w.init_task)]
    assert (200, 0, "prog") in got


def test_pins_under_the_mount_point(zoo):
    damage = DamageLog()
    got = [(p.path, p.kind, p.ino, p.mounts) for p in bpffs.pins(zoo.bk, damage)]
    assert got == [("/sys/fs/bpf/zoo/pinonly", "map", 1311, ["/sys/fs/bpf"]),
                   ("/sys/fs/bpf/zoo/raw_tp_link", "link", 1307, ["/sys/fs/bpf"]),
                   ("/sys/fs/bpf/zoo/zoo_tail", "prog", 1305, ["/sys/fs/bpf"])]
    assert not damage
    rows = [r for _, r in pins_view.rows(zoo.kctx)]
    assert [(r[0], r[2], r[3]) for r in rows] == [("/sys/fs/bpf/zoo/pinonly", 6, "zoo_data"),
                                                  ("/sys/fs/bpf/zoo/raw_tp_link", 1, ""),
                                                  ("/sys/fs/bpf/zoo/zoo_tail", 18, "zoo_tail")]


# --- hooks ---------------------------------------------------------------------------------------


def test_hook_walkers(zoo):
    damage = DamageLog()
    found = list(hooks.HookWalker(zoo.bk, damage).all())
    assert not damage
    pid = {v: k for k, v in zoo.progs.items()}
    got = {(a.hook, a.target, a.attach_type, pid.get(a.prog_kva), a.link_kva) for a in found}
    assert ("cgroup", "cgroup:/lab/web", "cgroup_inet_ingress", 12, zoo.links[2]) in got
    assert ("cgroup", "cgroup:/lab/batch", "cgroup_inet_egress", 11, 0) in got
    assert ("xdp", "dev:lo", "xdp_skb", 13, zoo.links[3]) in got
    assert ("tcx", "dev:lo", "tcx_egress", 14, zoo.links[4]) in got
    assert ("tcx", "dev:lo", "tcx_egress", 15, 0) in got
    assert ("trampoline", "hrtimer_nanosleep", "fentry", 17, zoo.links[6]) in got
    assert ("tail_call", "zoo_jmp[0]", "tail_call", 18, 0) in got
    # effective arrays agree with the lists: no "runs here but attached nowhere" entry
    assert not [a for a in found if "effective" in a.via]


def test_classic_tc_filters_through_the_cls_bpf_module_btf():
    from helpers.synth import MINI_KERNEL, SynthKernel

    for pad in (8, 0):
        z = Zoo(pad)
        w, mem = z.w, z.w.mem
        # cls_bpf's types are not in the kernel's: they come from the module's BTF
        mod = SynthKernel(MINI_KERNEL + """
            struct bpf_prog { u32 type; };
            struct cls_bpf_head { u32 flags; struct list_head plist; };
            struct cls_bpf_prog { struct bpf_prog *filter; struct list_head link; };""", pad=pad)
        ML = mod.layout
        head = mem.alloc(ML.size("cls_bpf_head"))
        mem.list_init(head + ML.offset("cls_bpf_head", "plist"))
        for p in (z.progs[19], z.progs[10]):
            fp = mem.alloc(ML.size("cls_bpf_prog"))
            mem.u64(fp + ML.offset("cls_bpf_prog", "filter"), p)
            mem.list_add_tail(head + ML.offset("cls_bpf_head", "plist"), fp + ML.offset("cls_bpf_prog", "link"))
        miniq = w.tc_filters([("u32", 1 << 16, 0), ("bpf", 2 << 16, head)])
        w.tcx(z.lo, "ingress", [], miniq=miniq)
        bk = w.kernel()
        damage = DamageLog()
        tc = [a for a in hooks.HookWalker(bk, damage).all() if a.hook == "tc"]
        assert [(a.attach_type, a.prog_kva, a.link_kva, a.note) for a in tc] == [
            ("tc_ingress", 0, 0, "cls_bpf filter: struct cls_bpf_prog is in neither the kernel types "
                                 "nor a cls_bpf module BTF in the dump: programs not read")]
        w.modules["cls_bpf"] = mod.btf
        tc = [a for a in hooks.HookWalker(w.kernel(), damage).all() if a.hook == "tc"]
        assert [(a.target, a.attach_type, a.prog_kva) for a in tc] == [
            ("dev:lo", "tc_ingress", z.progs[19]), ("dev:lo", "tc_ingress", z.progs[10])]
        assert "bpf prio 2" in tc[0].via and not damage


def test_effective_only_program_is_reported(zoo):
    zoo.w.cgroup_effective(zoo.web, "CGROUP_DEVICE", [zoo.progs[19]])
    found = [a for a in hooks.HookWalker(zoo.bk).all() if "effective" in a.via]
    assert [(a.target, a.attach_type, a.prog_kva) for a in found] == \
        [("cgroup:/lab/web", "cgroup_device", zoo.progs[19])]
    assert "attached at no ancestor" in found[0].note


def test_bpfhooks_view_attributes_every_program(zoo):
    names = hooks_view.GRID.names()
    rows = [dict(zip(names, r)) for _, r in hooks_view.rows(zoo.kctx)]
    assert not [r for r in rows if r["Error"]]
    assert hooks_view.notes(zoo.kctx) == ["lirc: module rc_core is not loaded (and rc-core is not "
                                          "built in): no rc device can hold a lirc program"]
    legacy = {(r["Hook"], r["Target"], r["AttachType"], r["ProgId"]) for r in rows if r["Source"] == "no link"}
    assert legacy == {("cgroup", "cgroup:/lab/batch", "cgroup_inet_egress", 11),
                      ("tcx", "dev:lo", "tcx_egress", 15)}
    linked = {(r["ProgId"], r["LinkId"]) for r in rows if r["Source"] == "link"}
    assert {(16, 1), (12, 2), (13, 3), (14, 4), (20, 5), (17, 6)} <= linked
    idle = {r["ProgId"] for r in rows if r["Hook"] == "none"}
    assert idle == {10, 19}          # zoo_kprobe is only held by an fd; zoo_idle by nothing
    assert all(r["Target"] == "loaded, not attached" for r in rows if r["Hook"] == "none")
    assert {r["ProgId"] for r in rows} == set(zoo.progs)


# --- hidden objects -----------------------------------------------------------------------------


def _hidden(z):
    kctx = z.kctx
    rows = [dict(zip(hidden_view.GRID.names(), r)) for _, r in hidden_view.rows(kctx)]
    return [r for r in rows if r["Kind"] != "summary"], rows[-1]


def test_clean_world_has_only_the_summary_row(zoo):
    rows, summary = _hidden(zoo)
    assert rows == []
    assert summary["Kind"] == "summary" and summary["Name"] == "no hidden objects"


@pytest.mark.parametrize("kind,obj_id,expect", [
    ("prog", 15, ["tcx dev:lo via net_device->tcx_egress->fp_items[1]", "bpf_kallsyms"]),
    ("prog", 18, ["map 5 (zoo_jmp) slot 0", "pin /sys/fs/bpf/zoo/zoo_tail", "bpf_kallsyms"]),
    ("prog", 11, ["cgroup cgroup:/lab/batch via cgroup->bpf.progs"]),
    ("prog", 10, ["fd 4 of pid 146 (bpf_zoo)"]),
    ("prog", 19, ["bpf_kallsyms"]),
    ("map", 8, ["map 7 (zoo_outer) slot 0"]),
    ("map", 6, ["fd 3 of pid 146", "pin /sys/fs/bpf/zoo/pinonly", "used by prog"]),
    ("link", 1, ["fd 5 of pid 146", "pin /sys/fs/bpf/zoo/raw_tp_link"]),
    ("link", 4, ["tcx dev:lo"]),
])
def test_unregistered_object_is_found_with_its_paths(kind, obj_id, expect):
    for pad in (8, 0):
        z = Zoo(pad, unregister=[(kind, obj_id)])
        rows, summary = _hidden(z)
        assert [(r["Kind"], r["ID"]) for r in rows] == [(kind, obj_id)], rows
        assert all(e in rows[0]["FoundVia"] for e in expect), rows[0]["FoundVia"]
        assert summary["Name"] == "1 hidden object" and summary["ID"] == 1


def test_hidden_link_leads_to_its_hidden_program():
    z = Zoo(8, unregister=[("link", 1), ("prog", 16)])
    rows, _ = _hidden(z)
    assert [(r["Kind"], r["ID"]) for r in rows] == [("link", 1), ("prog", 16)]


def test_garbage_reference_is_reported_not_dropped(zoo):
    # a prog_array slot pointing at something that is not a program (a map struct)
    w = zoo.w
    w.mem.u64(zoo.maps[5] - w.L.offset("bpf_array", "map") + w.L.offset("bpf_array", "ptrs") + 8, zoo.maps[6])
    rows, _ = _hidden(zoo)
    assert len(rows) == 1 and rows[0]["Kind"] == "prog" and rows[0]["Error"]
    assert "slot 1" in rows[0]["FoundVia"]


# --- xlated instructions ------------------------------------------------------------------------


def test_xlated_calls_and_text(zoo):
    bk = zoo.bk
    prog = bk.prog_by_kva[zoo.progs[16]]
    code = insns.read_insns(bk.reader, bk.layout, prog)
    namer = insns.Namer(bk)
    c = insns.calls(code, namer)
    # a helper, and the map op the verifier put in place of bpf_map_lookup_elem
    assert [(h[0], h[1]) for h in c.helpers] == [("ktime_get_ns", 5), ("map_lookup_elem", 1)]
    assert c.kfuncs == [("scx_bpf_kick_cpu", zoo.w.kbtf_ids["scx_bpf_kick_cpu"])]
    assert c.tail_calls == 1
    text = [t for _, t, _ in insns.disassemble(code, namer, progs_view.map_namer(bk))]
    assert text[0] == "call bpf_ktime_get_ns#5"
    assert text[1] == "call htab_map_lookup_elem#1"
    assert text[2] == "call scx_bpf_kick_cpu"
    assert text[3] == "r2 = map[id:5]" and text[4] == "r1 = map[id:6][0]+4"
    assert text[5:] == ["tail_call", "r0 = 0x0", "exit"]


def test_progs_view_new_columns(zoo):
    names = progs_view.GRID.names()
    rows = {r[0]: dict(zip(names, r)) for _, r in progs_view.rows(zoo.kctx)}
    r = rows[16]
    assert (r["Uid"], r["Gpl"]) == (0, 1)
    assert r["Helpers"] == "ktime_get_ns#5,map_lookup_elem#1,tail_call#12"
    assert r["Kfuncs"] == f"scx_bpf_kick_cpu#{zoo.w.kbtf_ids['scx_bpf_kick_cpu']}"
    assert r["TailCalls"] == "zoo_jmp[0]->zoo_tail#18"
    assert rows[10]["Pids"] == "146:bpf_zoo" and rows[16]["Pids"] == ""


# --- damage ------------------------------------------------------------------------------------


def test_damaged_walks_say_what_they_skipped(zoo):
    w, L, mem = zoo.w, zoo.w.L, zoo.w.mem
    # the task list loops back onto a process; an fd points into a hole
    zoo_task = mem.u64(w.init_task + L.offset("task_struct", "tasks.next")) - L.offset("task_struct", "tasks")
    last = mem.u64(w.init_task + L.offset("task_struct", "tasks.prev"))
    mem.u64(last + L.offset("list_head", "next"), zoo_task + L.offset("task_struct", "tasks"))
    files = mem.u64(zoo_task + L.offset("task_struct", "files"))
    fdt = mem.u64(files + L.offset("files_struct", "fdt"))
    arr = mem.u64(fdt + L.offset("fdtable", "fd"))
    mem.u64(arr + 8 * 6, mem.hole())
    damage = DamageLog()
    got = list(bpffds.bpf_fds(zoo.bk, w.init_task, damage))
    assert len(got) == 5
    whats = {d.what for d in damage}
    assert "struct file" in whats and any("cycle" in d.reason for d in damage)
    # a cgroup that is its own child; a dentry child list that loops
    css = zoo.web + L.offset("cgroup", "self")
    mem.list_add_tail(zoo.web + L.offset("cgroup", "self.children"),
                      css + L.offset("cgroup_subsys_state", "sibling"))
    damage = DamageLog()
    found = list(hooks.HookWalker(zoo.bk, damage).all())
    assert found and damage
    # the pin directory's child list loops back to its first entry
    node = mem.u64(zoo.zoo_dir + L.offset("dentry", "d_children") + L.offset("hlist_head", "first"))
    first = node
    while mem.u64(node + L.offset("hlist_node", "next")):
        node = mem.u64(node + L.offset("hlist_node", "next"))
    mem.u64(node + L.offset("hlist_node", "next"), first)
    damage = DamageLog()
    pins = list(bpffs.pins(zoo.bk, damage))
    assert len(pins) == 3
    assert [d.reason for d in damage] == ["cycle (node already visited)"]


def test_hooks_and_hidden_without_a_link_registry(zoo):
    """A kernel without link_idr (before BPF links) or with an unreadable one: the hooks and
    the cross-view still run, and say the links were not read."""
    from volatility3_ktstr.errors import KtstrError

    def no_links(damage=None):
        raise KtstrError("kernel symbol 'link_idr' is not in the symbol table")

    zoo.kctx.links = no_links
    names = hooks_view.GRID.names()
    rows = [dict(zip(names, r)) for _, r in hooks_view.rows(zoo.kctx)]
    assert ("cgroup", 11, "no link") in {(r["Hook"], r["ProgId"], r["Source"]) for r in rows}
    assert any("links not read" in r["Error"] for r in rows if r["Hook"] == "?")
    assert not [r for r in rows if r["Source"] == "link not in link_idr"]
    hidden_rows = [dict(zip(hidden_view.GRID.names(), r)) for _, r in hidden_view.rows(zoo.kctx)]
    assert [r["Kind"] for r in hidden_rows] == ["?", "summary"]     # the note, no false alarm
