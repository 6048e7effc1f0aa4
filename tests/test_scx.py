"""walkers/scx on synthetic memory laid out by the real kernel BTF (7.2 x86-64, with sched_ext).

DSQ list walks (order, cursors, cycles, unreadable nodes, bound), the rhashtable walk behind user
DSQs, scx_tasks, per-task fields, flag/state decoding and the scheduler state read.
"""

import struct

import pytest

from volatility3_ktstr.core import BtfLayout, BufferReader, LayoutError
from volatility3_ktstr.walkers import scx

BASE = 0xFFFF888000100000
TASK_STRIDE = 0x2000
DSQ_AT = 0xFFFF888000010000
HEAD_AT = 0xFFFF888000020000
UNMAPPED = 0xFFFF8880DEAD0000


@pytest.fixture(scope="module")
def btf(amd64_kernel_btf):
    if not amd64_kernel_btf.find("sched_ext_entity"):
        pytest.skip("kernel BTF without sched_ext")
    return amd64_kernel_btf


@pytest.fixture(scope="module")
def layout(btf):
    return BtfLayout(btf)


def enum(btf, name):
    return list(btf.find(name)[0].values)


class Mem:
    """A BufferReader plus helpers to build tasks and DSQs at real-BTF offsets."""

    def __init__(self, layout, ntasks=8):
        self.L = layout
        self.r = BufferReader()
        self.tsize = layout.size("task_struct")
        self.r.add(BASE, bytes(TASK_STRIDE * ntasks))
        self.r.add(DSQ_AT, bytes(0x1000))
        self.r.add(HEAD_AT, bytes(0x1000))
        self.offs = scx.DsqOffsets.from_layout(layout)

    def task(self, i):
        return BASE + i * TASK_STRIDE

    def put(self, addr, fmt, value):
        self.r.write(addr, struct.pack("<" + fmt, value))

    def set_task(self, i, pid, comm, **scx_fields):
        t = self.task(i)
        self.put(t + self.L.offset("task_struct", "pid"), "i", pid)
        self.put(t + self.L.offset("task_struct", "tgid"), "i", pid)
        self.r.write(t + self.L.offset("task_struct", "comm"), comm.encode().ljust(16, b"\0"))
        fmts = {"flags": "I", "weight": "I", "sticky_cpu": "i", "slice": "Q", "dsq_vtime": "Q",
                "runnable_at": "Q", "dsq": "Q", "ops_state": "Q", "sched": "Q"}
        for k, v in scx_fields.items():
            self.put(t + self.L.offset("task_struct", "scx." + k), fmts[k], v)
        return t

    def node(self, i):
        return self.task(i) + self.offs.lnode_node

    def link_dsq(self, order, dsq=DSQ_AT):
        """Put tasks ``order`` (indices) on the DSQ list in that order (a proper circular list)."""
        head = dsq + self.offs.dsq_list
        nodes = [self.node(i) for i in order]
        ring = [head] + nodes
        for k, n in enumerate(ring):
            self.put(n, "Q", ring[(k + 1) % len(ring)])
            self.put(n + 8, "Q", ring[k - 1])
        self.put(dsq + self.L.offset("scx_dispatch_q", "nr"), "I", len(order))


def test_dsq_walk_in_order(layout):
    m = Mem(layout)
    for i in range(5):
        m.set_task(i, 100 + i, f"t{i}")
    m.link_dsq([3, 1, 4, 0])
    w = scx.walk_dsq_list(m.r, m.offs, DSQ_AT)
    assert w.tasks == [m.task(3), m.task(1), m.task(4), m.task(0)]
    assert w.error is None and not w.truncated and w.cursors == 0
    assert [scx.read_task(m.r, layout, t).pid for t in w.tasks] == [103, 101, 104, 100]


def test_dsq_walk_empty(layout):
    m = Mem(layout)
    m.link_dsq([])
    w = scx.walk_dsq_list(m.r, m.offs, DSQ_AT)
    assert w.tasks == [] and w.error is None


def test_dsq_walk_skips_iterator_cursor(layout, btf):
    cursor = dict(enum(btf, "scx_dsq_lnode_flags"))["SCX_DSQ_LNODE_ITER_CURSOR"]
    m = Mem(layout)
    m.offs = scx.DsqOffsets.from_layout(layout, cursor_flag=cursor)
    m.link_dsq([0, 1, 2])
    m.put(m.task(1) + m.offs.lnode_flags, "I", cursor)   # task 1's slot is a BPF iterator cursor
    w = scx.walk_dsq_list(m.r, m.offs, DSQ_AT)
    assert w.tasks == [m.task(0), m.task(2)] and w.cursors == 1


def test_dsq_walk_cycle_stops(layout):
    m = Mem(layout)
    m.link_dsq([0, 1, 2])
    m.put(m.node(2), "Q", m.node(1))     # 2 -> 1 instead of back to the head
    w = scx.walk_dsq_list(m.r, m.offs, DSQ_AT)
    assert w.tasks == [m.task(0), m.task(1), m.task(2)]
    assert w.error and "cycle" in w.error


def test_dsq_walk_unreadable_node(layout):
    m = Mem(layout)
    m.link_dsq([0, 1])
    m.put(m.node(0), "Q", UNMAPPED)
    w = scx.walk_dsq_list(m.r, m.offs, DSQ_AT)
    assert w.tasks == [m.task(0)]
    assert w.error and "unreadable" in w.error


def test_dsq_walk_null_link_and_unreadable_head(layout):
    m = Mem(layout)
    m.link_dsq([0])
    m.put(m.node(0), "Q", 0)
    w = scx.walk_dsq_list(m.r, m.offs, DSQ_AT)
    assert w.tasks == [m.task(0)] and "NULL" in w.error
    w = scx.walk_dsq_list(m.r, m.offs, UNMAPPED)
    assert w.tasks == [] and "head unreadable" in w.error


def test_dsq_walk_bounded(layout):
    m = Mem(layout)
    m.link_dsq(list(range(8)))
    w = scx.walk_dsq_list(m.r, m.offs, DSQ_AT, max_tasks=3)
    assert len(w.tasks) == 3 and w.truncated


def test_read_dsq_fields(layout):
    m = Mem(layout)
    m.link_dsq([0, 1])
    m.put(DSQ_AT + layout.offset("scx_dispatch_q", "id"), "Q", 0x8000000000000001)
    d = scx.read_dsq(m.r, layout, m.offs, DSQ_AT, "global", node=0)
    assert (d.id, d.nr, d.vtime, len(d.walk.tasks)) == (0x8000000000000001, 2, False, 2)
    m.put(DSQ_AT + layout.offset("scx_dispatch_q", "priq"), "Q", m.task(0))
    assert scx.read_dsq(m.r, layout, m.offs, DSQ_AT, "user").vtime is True
    assert scx.read_dsq(m.r, layout, m.offs, UNMAPPED, "user").error


def test_rhashtable_walk(layout):
    """Buckets with lock bits, chains ending in nulls markers, a rehash table behind."""
    r = BufferReader()
    ht, tbl, tbl2, objs = 0xFFFF888000300000, 0xFFFF888000310000, 0xFFFF888000320000, 0xFFFF888000400000
    for base in (ht, tbl, tbl2):
        r.add(base, bytes(0x1000))
    r.add(objs, bytes(0x10000))
    node_off = layout.offset("scx_dispatch_q", "hash_node")
    nxt = layout.offset("rhash_head", "next")
    buckets = layout.offset("bucket_table", "buckets")
    obj = [objs + 0x200 * i for i in range(6)]
    hn = [o + node_off for o in obj]

    def put(addr, v):
        r.write(addr, struct.pack("<Q", v))

    put(ht + layout.offset("rhashtable", "tbl"), tbl)
    r.write(tbl + layout.offset("bucket_table", "size"), struct.pack("<I", 4))
    put(tbl + layout.offset("bucket_table", "future_tbl"), tbl2)
    nulls = lambda i: (i << 1) | 1  # noqa: E731 - the kernel's end-of-chain marker
    put(tbl + buckets + 0, hn[0] | 1)      # locked bucket: bit 0 is the lock
    put(hn[0] + nxt, hn[1])
    put(hn[1] + nxt, nulls(0))
    put(tbl + buckets + 8, 0)              # empty
    put(tbl + buckets + 16, hn[2])
    put(hn[2] + nxt, nulls(2))
    put(tbl + buckets + 24, hn[3])
    put(hn[3] + nxt, hn[3])                # self-cycle
    r.write(tbl2 + layout.offset("bucket_table", "size"), struct.pack("<I", 2))
    put(tbl2 + buckets, hn[4])
    put(hn[4] + nxt, nulls(0))
    put(tbl2 + buckets + 8, hn[0])         # same object seen through the new table
    got, errors = scx.walk_rhashtable(r, layout, ht, node_off)
    assert got == [obj[0], obj[1], obj[2], obj[3], obj[4]]
    assert errors == []
    put(hn[2] + nxt, 0xFFFF8880DEAD0010)   # unreadable chain node
    got, errors = scx.walk_rhashtable(r, layout, ht, node_off)
    assert obj[2] in got and any("unreadable" in e for e in errors)


def test_scx_tasks_walk_skips_cursor(layout, btf):
    cursor = dict(enum(btf, "scx_ent_flags"))["SCX_TASK_CURSOR"] & 0xFFFFFFFF
    m = Mem(layout)
    node = layout.offset("task_struct", "scx") + layout.offset("sched_ext_entity", "tasks_node")
    ring = [HEAD_AT] + [m.task(i) + node for i in range(4)]
    for k, n in enumerate(ring):
        m.put(n, "Q", ring[(k + 1) % len(ring)])
    m.set_task(2, 0, "", flags=cursor)
    w = scx.walk_scx_tasks(m.r, layout, HEAD_AT, cursor_flag=cursor)
    assert w.tasks == [m.task(0), m.task(1), m.task(3)] and w.cursors == 1 and w.error is None
    m.put(ring[3], "Q", ring[1])   # cycle
    w = scx.walk_scx_tasks(m.r, layout, HEAD_AT, cursor_flag=cursor)
    assert "cycle" in w.error


def test_read_task_fields(layout, btf):
    m = Mem(layout)
    t = m.set_task(0, 321, "worker", flags=0x401, weight=100, sticky_cpu=-1, slice=5000000,
                   dsq_vtime=77, runnable_at=1000, dsq=DSQ_AT, ops_state=(5 << 2) | 2)
    own = t + layout.offset("task_struct", "scx.runnable_node")
    m.put(own, "Q", HEAD_AT)   # linked on a runnable_list
    got = scx.read_task(m.r, layout, t)
    assert (got.pid, got.comm, got.weight, got.sticky_cpu, got.slice, got.dsq_vtime, got.runnable_at,
            got.dsq, got.runnable_linked) == (321, "worker", 100, -1, 5000000, 77, 1000, DSQ_AT, True)
    m.put(own, "Q", own)       # list_del_init: points at itself
    assert scx.read_task(m.r, layout, t).runnable_linked is False
    assert scx.read_task(m.r, layout, UNMAPPED).error
    assert scx.ops_state_text(got.ops_state, enum(btf, "scx_ops_state")) == "QUEUED qseq=5"
    assert scx.ops_state_text(0, enum(btf, "scx_ops_state")) == "NONE"


def test_decode_flags_real_enums(btf):
    ent = enum(btf, "scx_ent_flags")
    c = dict(ent)
    v = c["SCX_TASK_QUEUED"] | c["SCX_TASK_ENABLED"]
    assert scx.decode_flags(ent, v, "SCX_TASK_", 32) == "QUEUED|ENABLED"
    v = c["SCX_TASK_RESET_RUNNABLE_AT"] | c["SCX_TASK_READY"] | c["SCX_TASK_REENQ_KFUNC"] | (1 << 30)
    assert scx.decode_flags(ent, v, "SCX_TASK_", 32) == "RESET_RUNNABLE_AT|READY|REENQ_KFUNC|0x40000000"
    assert scx.decode_flags(ent, 0, "SCX_TASK_", 32) == "NONE"
    rq = enum(btf, "scx_rq_flags")
    assert scx.decode_flags(rq, 1 | 32, "SCX_RQ_", 32) == "ONLINE|CLK_VALID"
    ops = enum(btf, "scx_ops_flags")
    assert scx.decode_flags(ops, 8 | 4, "SCX_OPS_") == "ENQ_EXITING|SWITCH_PARTIAL"
    assert scx.decode_flags(None, 5) == "0x5"


def test_read_sched_state(layout, btf):
    """scx_root -> scx_sched with ops, exit info and globals; unknown globals stay None."""
    r = BufferReader()
    sch, ei, msg, g = 0xFFFF888000500000, 0xFFFF888000510000, 0xFFFF888000520000, 0xFFFFFFFF82000000
    r.add(sch, bytes(0x1000))
    r.add(ei, bytes(0x100))
    r.add(msg, b"runnable task stall\0".ljust(0x1000, b"\0"))
    r.add(g, bytes(0x1000))

    def put(addr, fmt, v):
        r.write(addr, struct.pack("<" + fmt, v))

    syms = {k: None for k in scx.SYMBOLS}
    syms.update(root=g, enable_state=g + 0x10, enabled_key=g + 0x20, switched_all_key=g + 0x40,
                switching_all=g + 0x60, nr_rejected=g + 0x68, enable_seq=g + 0x70, jiffies=g + 0x78)
    put(g, "Q", sch)
    put(g + 0x10, "i", dict(enum(btf, "scx_enable_state"))["SCX_ENABLED"])
    put(g + 0x20, "i", 1)
    put(g + 0x40, "i", 0)
    put(g + 0x60, "B", 1)
    put(g + 0x68, "q", 3)
    put(g + 0x70, "q", 2)
    put(g + 0x78, "Q", 4294906051)
    ops = sch + layout.offset("scx_sched", "ops")
    r.write(ops + layout.offset("sched_ext_ops", "name"), b"mysched\0")
    put(ops + layout.offset("sched_ext_ops", "flags"), "Q", 8)
    put(ops + layout.offset("sched_ext_ops", "enqueue"), "Q", 0xFFFFFFFFC0001000)
    put(sch + layout.offset("scx_sched", "exit_kind"), "I", 1026)
    put(sch + layout.offset("scx_sched", "exit_info"), "Q", ei)
    put(sch + layout.offset("scx_sched", "watchdog_timeout"), "Q", 7500)
    put(ei + layout.offset("scx_exit_info", "kind"), "I", 1026)
    put(ei + layout.offset("scx_exit_info", "reason"), "Q", msg)
    put(ei + layout.offset("scx_exit_info", "msg"), "Q", UNMAPPED)
    st = scx.read_sched_state(r, layout, syms, ["select_cpu", "enqueue"], enum(btf, "scx_enable_state"))
    assert (st.sch, st.name, st.ops_flags, st.watchdog_timeout) == (sch, "mysched", 8, 7500)
    assert st.callbacks == [("enqueue", 0xFFFFFFFFC0001000)]
    assert (st.enable_state_str, st.enabled, st.switched_all, st.switching_all) == ("enabled", True, False, True)
    assert (st.nr_rejected, st.enable_seq, st.jiffies) == (3, 2, 4294906051)
    assert st.in_softlockup is None and st.breather_depth is None
    assert st.exit_kind == 1026 and st.exit.reason == "runnable task stall"
    assert st.exit.msg is None and "unreadable" in st.exit.error
    # No scheduler loaded: scx_root is NULL.
    put(g, "Q", 0)
    st = scx.read_sched_state(r, layout, syms)
    assert st.sch == 0 and st.name is None and st.errors == []


class HidingLayout(BtfLayout):
    """The real layout minus some types/members: stands in for an older kernel."""

    def __init__(self, btf, hide_types=(), hide_members=()):
        super().__init__(btf)
        self.hide_types = set(hide_types)
        self.hide_members = set(hide_members)

    def _size(self, struct_name):
        if struct_name in self.hide_types:
            raise LayoutError(f"type 'struct {struct_name}' is not in the BTF")
        return super()._size(struct_name)

    def _field(self, struct_name, path):
        if struct_name in self.hide_types or (struct_name, path) in self.hide_members:
            raise LayoutError(f"type 'struct {struct_name}' has no member '{path}'")
        return super()._field(struct_name, path)


def test_older_kernel_globals(btf):
    """No struct scx_sched: ops, exit kind/info, bypass depth and watchdog come from globals;
    what the kernel lacks stays None (N/A), with no error."""
    layout = HidingLayout(btf, hide_types={"scx_sched"})
    r = BufferReader()
    g, ei = 0xFFFFFFFF82000000, 0xFFFF888000510000
    r.add(g, bytes(0x1000))
    r.add(ei, bytes(0x1000))

    def put(addr, fmt, v):
        r.write(addr, struct.pack("<" + fmt, v))

    syms = {k: None for k in scx.SYMBOLS}
    syms.update(ops=g + 0x200, exit_kind=g + 0x10, exit_info=g + 0x18, bypass_depth=g + 0x20,
                watchdog_timeout=g + 0x28, enable_state=g + 0x30)
    r.write(g + 0x200 + layout.offset("sched_ext_ops", "name"), b"oldsched\0")
    put(g + 0x10, "I", 64)
    put(g + 0x18, "Q", ei)
    put(g + 0x20, "i", 2)
    put(g + 0x28, "Q", 30 * 250)
    put(g + 0x30, "i", 3)
    put(ei + layout.offset("scx_exit_info", "kind"), "I", 64)
    st = scx.read_sched_state(r, layout, syms, enable_state_names=enum(btf, "scx_enable_state"))
    assert (st.sch, st.name, st.exit_kind, st.bypass_depth, st.watchdog_timeout) == (None, "oldsched", 64, 2, 7500)
    assert st.exit.kind == 64 and st.exit.reason == "" and st.exit.error is None
    assert st.enable_state_str == "disabled"
    assert st.switched_all is None and st.nr_rejected is None and st.errors == []
    # No global DSQ array/pnode and no hash: nothing, with a reason for the hash.
    assert scx.global_dsq_addrs(r, layout, None, syms, 1) == ([], [])
    assert scx.user_dsq_addrs(r, layout, None, syms)[0] == []
    syms["dsq_global"] = g + 0x400
    assert scx.global_dsq_addrs(r, layout, None, syms, 1) == ([(0, g + 0x400)], [])


def test_older_dsq_list_without_cursor_nodes(btf):
    """sched_ext_entity.dsq_list as a plain list_head (no scx_dsq_list_node): still walked."""
    layout = HidingLayout(btf, hide_members={("sched_ext_entity", "dsq_list.node"),
                                             ("sched_ext_entity", "dsq_list.flags")})
    offs = scx.DsqOffsets.from_layout(layout)
    assert offs.lnode_flags is None and offs.cursor_flag == 0
    assert offs.lnode_node == layout.offset("task_struct", "scx") + layout.offset("sched_ext_entity", "dsq_list")
    m = Mem(layout)
    m.offs = offs
    m.link_dsq([2, 0])
    assert scx.walk_dsq_list(m.r, offs, DSQ_AT).tasks == [m.task(2), m.task(0)]


def test_struct_ops_callbacks(layout):
    """kvalue holds trampolines, uvalue the program ids, links[] the programs (names)."""
    r = BufferReader()
    st, uv, links, objs = 0xFFFF888000600000, 0xFFFF888000610000, 0xFFFF888000620000, 0xFFFF888000700000
    r.add(st, bytes(0x2000))
    r.add(uv, bytes(0x1000))
    r.add(links, bytes(0x100))
    r.add(objs, bytes(0x10000))

    def put(addr, fmt, v):
        r.write(addr, struct.pack("<" + fmt, v))

    vs = "bpf_struct_ops_sched_ext_ops"
    kdata = scx.struct_ops_kdata(layout, st, vs)
    udata = uv + scx.struct_ops_value_data(layout, vs)
    put(st + layout.offset("bpf_struct_ops_map", "uvalue"), "Q", uv)
    put(st + layout.offset("bpf_struct_ops_map", "links"), "Q", links)
    put(st + layout.offset("bpf_struct_ops_map", "funcs_cnt"), "I", 3)
    names = ["select_cpu", "enqueue", "dispatch"]
    for i, (cb, pid, pname) in enumerate([("enqueue", 9, "my_enqueue"), ("dispatch", 10, "my_dispatch")]):
        off = layout.offset("sched_ext_ops", cb)
        put(kdata + off, "Q", 0xFFFFFFFFC0000000 + 0x100 * i)
        put(udata + off, "Q", pid)
        link, prog, aux = objs + 0x1000 * i, objs + 0x1000 * i + 0x200, objs + 0x1000 * i + 0x400
        put(links + 8 * i, "Q", link)
        put(link + layout.offset("bpf_link", "prog"), "Q", prog)
        put(prog + layout.offset("bpf_prog", "aux"), "Q", aux)
        put(aux + layout.offset("bpf_prog_aux", "id"), "I", pid)
        r.write(aux + layout.offset("bpf_prog_aux", "name"), pname.encode() + b"\0")
    put(links + 16, "Q", UNMAPPED)   # a third link that cannot be read
    cbs, errors = scx.struct_ops_callbacks(r, layout, st, "sched_ext_ops", names, vs)
    assert [(c.member, c.prog_id, c.prog_name) for c in cbs] == [
        ("enqueue", 9, "my_enqueue"), ("dispatch", 10, "my_dispatch")]
    assert cbs[0].kfunc == 0xFFFFFFFFC0000000 and cbs[1].prog == objs + 0x1200
    assert len(errors) == 1 and "link 2" in errors[0]
    # Without a user value the callbacks are still listed, with no program.
    put(st + layout.offset("bpf_struct_ops_map", "uvalue"), "Q", 0)
    cbs, _ = scx.struct_ops_callbacks(r, layout, st, "sched_ext_ops", names, vs)
    assert [(c.member, c.prog_id) for c in cbs] == [("enqueue", None), ("dispatch", None)]


def test_sub_scheds_depth_first_and_cycle_safe(layout):
    r = BufferReader()
    base = 0xFFFF888000800000
    size = layout.size("scx_sched")
    r.add(base, bytes(0x1000 * 8))
    sch = [base + 0x1000 * i for i in range(6)]
    ch, sib = layout.offset("scx_sched", "children"), layout.offset("scx_sched", "sibling")
    assert size <= 0x1000

    def ring(parent, kids):
        head = parent + ch
        nodes = [head] + [k + sib for k in kids]
        for k, n in enumerate(nodes):
            r.write(n, struct.pack("<QQ", nodes[(k + 1) % len(nodes)], nodes[k - 1]))

    for s_ in sch:
        ring(s_, [])
    ring(sch[0], [sch[1], sch[2]])
    ring(sch[1], [sch[3]])
    got, errors = scx.sub_scheds(r, layout, sch[0])
    assert got == [(sch[1], 1, sch[0]), (sch[3], 2, sch[1]), (sch[2], 1, sch[0])] and errors == []
    ring(sch[3], [sch[0]])   # a child pointing back at the root
    got, errors = scx.sub_scheds(r, layout, sch[0])
    assert len(got) == 3 and any("cycle" in e for e in errors)
    assert scx.sub_scheds(r, layout, 0) == ([], [])


def test_runnable_age_and_starvation():
    t = scx.ScxTask(addr=0, runnable_at=1000, runnable_linked=True)
    assert scx.runnable_for(t, 1500) == 500
    assert scx.is_starved(500, 400) and not scx.is_starved(500, 500) and not scx.is_starved(500, None)
    # jiffies wrapped past 2^64 since runnable_at: still the right age.
    t.runnable_at = (1 << 64) - 10
    assert scx.runnable_for(t, 20) == 30
    # runnable_at after the dump's jiffies, or the task not waiting: no age.
    t.runnable_at = 2000
    assert scx.runnable_for(t, 1500) is None
    t.runnable_linked = False
    assert scx.runnable_for(t, 5000) is None and not scx.is_starved(None, 10)
