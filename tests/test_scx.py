"""The sched_ext package on synthetic kernel memory: a padded synthetic sched_ext kernel (no member at its
kernel offset, tests/helpers/scxmem.py) and, when KTSTR_DUMPS is set, the real 7.2 x86-64
kernel BTF as a second layout.

DSQ list walks (order, cursors, cycles, unreadable nodes, bound), the rhashtable behind user
DSQs, scx_tasks, per-task fields, flag/state decoding, the scheduler state (root, NULL root,
older kernels' globals), every scheduler (scx_sched_all, children, ops.priv), event counters,
runnable lists, struct_ops callbacks and their programs' run statistics.
"""

import pytest

from helpers.synth import HidingLayout

from helpers.scxmem import kernel, real, synth, w  # noqa: F401 (fixtures)
from helpers.scxmem import BtfKernel, ScxWorld, enum_values, synth_kernel
from volatility3_ktstr.bpf import runstats
from volatility3_ktstr.core import BtfLayout, LayoutError
from volatility3_ktstr import kds, sched_ext as scx

BUILTIN = 1 << 63


def syms_of(w):
    return scx.resolve_symbols(w.syms.get)


def offs_of(w, cursor=True):
    flag = dict(enum_values(w.btf, "scx_dsq_lnode_flags") or ())["SCX_DSQ_LNODE_ITER_CURSOR"]
    return scx.DsqOffsets.from_layout(w.L, cursor_flag=flag if cursor else 0)


def new_dsq(w, dsq_id=0x10):
    d = w.mem.alloc("scx_dispatch_q")
    w.mem.list_init(d + w.L.offset("scx_dispatch_q", "list"))
    w.mem.set("scx_dispatch_q", d, "id", dsq_id)
    return d


def tasks(w, n, **kw):
    return [w.task(100 + i, f"t{i}", **kw) for i in range(n)]


# --- DSQs --------------------------------------------------------------------------------------


def test_dsq_walk_in_order_and_task_fields(w):
    d = new_dsq(w)
    ts = tasks(w, 5)
    for i in (3, 1, 4, 0):
        w.enqueue(ts[i], d)
    walk = scx.walk_dsq_list(w.mem, w.L, offs_of(w), d)
    assert walk.tasks == [ts[3], ts[1], ts[4], ts[0]]
    assert walk.error is None and not walk.truncated and walk.cursors == 0
    assert [scx.read_task(w.mem, w.L, t).pid for t in walk.tasks] == [103, 101, 104, 100]


def test_dsq_walk_empty(w):
    walk = scx.walk_dsq_list(w.mem, w.L, offs_of(w), new_dsq(w))
    assert walk.tasks == [] and walk.error is None


def test_dsq_walk_skips_iterator_cursor(w):
    d = new_dsq(w)
    ts = tasks(w, 3)
    for t in ts:
        w.enqueue(t, d)
    offs = offs_of(w)
    w.mem.set("task_struct", ts[1], "scx.dsq_list.flags", offs.cursor_flag)   # a BPF iterator cursor
    walk = scx.walk_dsq_list(w.mem, w.L, offs, d)
    assert walk.tasks == [ts[0], ts[2]] and walk.cursors == 1


def test_dsq_walk_cycle_null_unreadable_bound(w):
    offs = offs_of(w)
    d = new_dsq(w)
    ts = tasks(w, 4)
    for t in ts[:3]:
        w.enqueue(t, d)
    node = [t + offs.lnode_node for t in ts]
    nxt = w.L.offset("list_head", "next")
    w.mem.u64(node[2] + nxt, node[1])             # 2 -> 1 instead of back to the head
    walk = scx.walk_dsq_list(w.mem, w.L, offs, d)
    assert walk.tasks == ts[:3] and "cycle" in walk.error
    w.mem.u64(node[1] + nxt, 0)
    walk = scx.walk_dsq_list(w.mem, w.L, offs, d)
    assert walk.tasks == ts[:2] and "NULL" in walk.error
    w.mem.u64(node[0] + nxt, w.mem.hole())
    walk = scx.walk_dsq_list(w.mem, w.L, offs, d)
    assert walk.tasks == ts[:1] and "unreadable" in walk.error
    walk = scx.walk_dsq_list(w.mem, w.L, offs, w.mem.hole())
    assert walk.tasks == [] and "unreadable" in walk.error
    d2 = new_dsq(w)
    for t in tasks(w, 6):
        w.enqueue(t, d2)
    walk = scx.walk_dsq_list(w.mem, w.L, offs, d2, max_tasks=3)
    assert len(walk.tasks) == 3 and walk.truncated


def test_read_dsq_fields(w):
    d = new_dsq(w, BUILTIN | 1)
    for t in tasks(w, 2):
        w.enqueue(t, d)
    got = scx.read_dsq(w.mem, w.L, offs_of(w), d, "global", node=0)
    assert (got.id, got.nr, got.vtime, len(got.walk.tasks)) == (BUILTIN | 1, 2, False, 2)
    w.mem.set("scx_dispatch_q", d, "priq.rb_node", d)
    assert scx.read_dsq(w.mem, w.L, offs_of(w), d, "user").vtime is True
    assert scx.read_dsq(w.mem, w.L, offs_of(w), w.mem.hole(), "user").damage.kind == "unreadable"


def test_user_dsqs_through_the_rhashtable(w):
    """Buckets with lock bits, nulls-terminated chains, a rehash table behind (future_tbl)."""
    L, mem = w.L, w.mem
    sch = w.sched()
    dsqs = [new_dsq(w, i) for i in range(5)]
    hn = [d + L.offset("scx_dispatch_q", "hash_node") for d in dsqs]
    nxt = L.offset("rhash_head", "next")
    tbl = int.from_bytes(mem.read(sch + L.offset("scx_sched", "dsq_hash.tbl"), 8), "little")
    buckets = tbl + L.offset("bucket_table", "buckets")
    tbl2 = mem.alloc(L.offset("bucket_table", "buckets") + 16)
    mem.set("bucket_table", tbl2, "size", 2)
    mem.set("bucket_table", tbl, "future_tbl", tbl2)
    mem.u64(buckets, hn[0] | 1)                  # locked bucket
    mem.u64(hn[0] + nxt, hn[1])
    mem.u64(hn[1] + nxt, (0 << 1) | 1)
    mem.u64(buckets + 16, hn[2])
    mem.u64(hn[2] + nxt, (2 << 1) | 1)
    mem.u64(buckets + 24, hn[3])
    mem.u64(hn[3] + nxt, hn[3])                  # self-cycle
    t2 = tbl2 + L.offset("bucket_table", "buckets")
    mem.u64(t2, hn[4])
    mem.u64(hn[4] + nxt, 1)
    mem.u64(t2 + 8, hn[0])                       # the same DSQ through the new table
    damage = kds.DamageLog()
    addrs = scx.user_dsq_addrs(mem, L, sch, syms_of(w), damage)
    assert addrs == dsqs and not damage
    mem.u64(hn[2] + nxt, mem.hole())
    damage = kds.DamageLog()
    addrs = scx.user_dsq_addrs(mem, L, sch, syms_of(w), damage)
    assert dsqs[2] in addrs and any("unreadable" in str(d) for d in damage)


def test_global_dsqs(w):
    sch = w.sched()
    damage = kds.DamageLog()
    got = scx.global_dsq_addrs(w.mem, w.L, sch, syms_of(w), 1, damage)
    assert not damage and len(got) == 1
    assert scx.read_dsq(w.mem, w.L, offs_of(w), got[0][1], "global").id == BUILTIN | 1


# --- tasks -------------------------------------------------------------------------------------


def test_scx_tasks_walk_skips_cursor_and_stops_on_cycle(w):
    cursor = dict(enum_values(w.btf, "scx_ent_flags"))["SCX_TASK_CURSOR"] & 0xFFFFFFFF
    ts = tasks(w, 4)
    w.mem.set("task_struct", ts[2], "scx.flags", cursor)
    walk = scx.walk_scx_tasks(w.mem, w.L, w.syms["scx_tasks"], cursor_flag=cursor)
    assert walk.tasks == [ts[0], ts[1], ts[3]] and walk.cursors == 1 and walk.error is None
    node = w.L.offset("task_struct", "scx.tasks_node")
    w.mem.u64(ts[3] + node + w.L.offset("list_head", "next"), ts[1] + node)
    walk = scx.walk_scx_tasks(w.mem, w.L, w.syms["scx_tasks"], cursor_flag=cursor)
    assert "cycle" in walk.error
    assert scx.walk_scx_tasks(w.mem, w.L, w.syms["scx_tasks"], max_tasks=2).truncated


def test_read_task_fields(w):
    sch = w.sched()
    t = w.task(321, "worker", cpu=1, sched=sch, flags=0x301, weight=100, sticky_cpu=-1,
               slice=5000000, dsq_vtime=77, ops_state=(5 << 2) | 2)
    got = scx.read_task(w.mem, w.L, t)
    assert (got.pid, got.tgid, got.comm, got.cpu, got.weight, got.sticky_cpu, got.slice, got.dsq_vtime,
            got.sched, got.runnable_linked) == (321, 321, "worker", 1, 100, -1, 5000000, 77, sch, False)
    w.make_runnable(t, 1, 1000)
    got = scx.read_task(w.mem, w.L, t)
    assert got.runnable_linked is True and got.runnable_at == 1000 and got.on_rq == 1
    assert scx.read_task(w.mem, w.L, w.mem.hole()).damage.kind == "unreadable"
    states = enum_values(w.btf, "scx_ops_state")
    assert scx.ops_state_text(got.ops_state, states) == "QUEUED qseq=5"
    assert scx.ops_state_text(0, states) == "NONE"


def test_runnable_list_in_order(w):
    ts = tasks(w, 3)
    for t, at in zip(ts, (900, 950, 990)):
        w.make_runnable(t, 0, at)
    assert scx.runnable_list(w.mem, w.L, w.rq(0)) == ts
    assert scx.runnable_list(w.mem, w.L, w.rq(1)) == []


def test_runnable_age_and_starvation():
    t = scx.ScxTask(addr=0, runnable_at=1000, runnable_linked=True)
    assert scx.runnable_for(t, 1500) == 500
    assert scx.is_starved(500, 400) and not scx.is_starved(500, 500) and not scx.is_starved(500, None)
    t.runnable_at = (1 << 64) - 10           # jiffies wrapped since runnable_at
    assert scx.runnable_for(t, 20) == 30
    t.runnable_at = 2000                      # after the dump's jiffies: no age
    assert scx.runnable_for(t, 1500) is None
    t.runnable_at, t.runnable_linked = 1000, False
    assert scx.runnable_for(t, 5000) is None and not scx.is_starved(None, 10)
    assert scx.runnable_for(t, 5000, linked=True) == 4000   # a runnable_list walk says so


def test_decode_flags(kernel):
    ent = enum_values(kernel.btf, "scx_ent_flags")
    c = dict(ent)
    v = c["SCX_TASK_QUEUED"] | c["SCX_TASK_ENABLED"]
    assert scx.decode_flags(ent, v, "SCX_TASK_", 32) == "QUEUED|ENABLED"
    v = c["SCX_TASK_RESET_RUNNABLE_AT"] | c["SCX_TASK_READY"] | (1 << 30)
    assert scx.decode_flags(ent, v, "SCX_TASK_", 32) == "RESET_RUNNABLE_AT|READY|0x40000000"
    assert scx.decode_flags(ent, 0, "SCX_TASK_", 32) == "NONE"
    rq = enum_values(kernel.btf, "scx_rq_flags")
    assert scx.decode_flags(rq, 1 | 32, "SCX_RQ_", 32) == "ONLINE|CLK_VALID"
    ops = enum_values(kernel.btf, "scx_ops_flags")
    assert scx.decode_flags(ops, 8 | 4, "SCX_OPS_") == "ENQ_EXITING|SWITCH_PARTIAL"
    assert scx.decode_flags(None, 5) == "0x5"


# --- the scheduler -----------------------------------------------------------------------------


def test_read_sched_state_root_and_exit_info(w):
    sch = w.sched(dump_len=64)
    w.set_root(sch)
    w.glob("scx_enable_state_var", dict(enum_values(w.btf, "scx_enable_state"))["SCX_ENABLED"], 4)
    w.static_key("__scx_enabled", True)
    w.glob("scx_switching_all", 1, 1)
    w.glob("scx_nr_rejected", 3)
    w.glob("scx_enable_seq", 2)
    w.glob("jiffies_64", 4294906051)
    w.glob("scx_watchdog_timestamp", 4294904962)
    kinds = dict(enum_values(w.btf, "scx_exit_kind"))
    dump = "".join(f"line {i}\n" for i in range(20))     # longer than exit_dump_len: cut at 64
    w.exit(sch, kinds["SCX_EXIT_ERROR_STALL"], "runnable task stall", "t[1] failed to run for 5.5s",
           bt=[0xFFFFFFFF81000010, 0xFFFFFFFF81000200], dump=dump, exit_code=-2, exit_cpu=1)
    st = scx.read_sched_state(w.mem, w.L, syms_of(w), ["select_cpu", "enqueue", "init"],
                              enum_values(w.btf, "scx_enable_state"))
    assert (st.sch, st.name, st.watchdog_timeout, st.level, st.cgroup_path) == (sch, "sdt", 7500, 0, "/")
    assert [n for n, _ in st.callbacks] == ["select_cpu", "enqueue"]
    assert (st.enable_state_str, st.enabled, st.switched_all, st.switching_all) == ("enabled", True, False, True)
    assert (st.nr_rejected, st.enable_seq, st.jiffies, st.watchdog_timestamp) == (3, 2, 4294906051, 4294904962)
    assert st.in_softlockup is None and st.breather_depth is None and not st.damage
    ei = st.exit
    assert st.exit_kind == ei.kind == kinds["SCX_EXIT_ERROR_STALL"]
    assert (ei.reason, ei.msg, ei.exit_code, ei.exit_cpu, ei.flags) == (
        "runnable task stall", "t[1] failed to run for 5.5s", -2, 1, 1)
    assert ei.bt == [0xFFFFFFFF81000010, 0xFFFFFFFF81000200] and ei.bt_len == 2
    assert ei.dump == dump[:64] and not ei.damage
    # Unreadable message: the rest stays.
    w.mem.set("scx_exit_info", ei.addr, "msg", w.mem.hole())
    ei2 = scx.read_sched_state(w.mem, w.L, syms_of(w)).exit
    assert ei2.reason == "runnable task stall" and ei2.msg == "" and "unreadable" in ei2.error
    # No scheduler loaded: scx_root is NULL.
    w.set_root(0)
    st = scx.read_sched_state(w.mem, w.L, syms_of(w))
    assert st.sch == 0 and st.name is None and st.exit is None and not st.damage


def test_older_kernel_globals(w):
    """6.12: no struct scx_sched; ops, exit kind/info, bypass depth and watchdog come from
    globals; what the kernel lacks stays None (N/A), with no error."""
    L = HidingLayout(w.btf, hide_types={"scx_sched"})
    mem = w.mem
    g = mem.alloc(0x1000)
    ops = mem.alloc("sched_ext_ops")
    ei = mem.alloc("scx_exit_info")
    mem.set("sched_ext_ops", ops, "name", "oldsched")
    syms = {k: None for k in scx.SYMBOLS}
    syms.update(ops=ops, exit_kind=g + 0x100, exit_info=g + 0x18, bypass_depth=g + 0x20,
                watchdog_timeout=g + 0x28, enable_state=g + 0x140, dsq_global=g + 0x400)
    kinds = dict(enum_values(w.btf, "scx_exit_kind"))
    mem.set("atomic_t", g + 0x100, "counter", kinds["SCX_EXIT_UNREG"])   # atomic_t scx_exit_kind
    mem.u64(g + 0x18, ei)
    mem.write(g + 0x20, (2).to_bytes(4, "little"))
    mem.u64(g + 0x28, 30 * 250)
    mem.set("atomic_t", g + 0x140, "counter", dict(enum_values(w.btf, "scx_enable_state"))["SCX_DISABLED"])
    mem.set("scx_exit_info", ei, "kind", kinds["SCX_EXIT_UNREG"])
    st = scx.read_sched_state(mem, L, syms, enable_state_names=enum_values(w.btf, "scx_enable_state"))
    assert (st.sch, st.name, st.exit_kind, st.bypass_depth, st.watchdog_timeout) == (
        None, "oldsched", kinds["SCX_EXIT_UNREG"], 2, 7500)
    assert st.exit.kind == kinds["SCX_EXIT_UNREG"] and st.exit.reason == "" and st.exit.error is None
    assert st.enable_state_str == "disabled"
    assert st.switched_all is None and st.nr_rejected is None and not st.damage
    assert scx.find_scheds(mem, L, syms) == []
    damage = kds.DamageLog()
    assert scx.global_dsq_addrs(mem, L, None, syms, 1, damage) == [(0, g + 0x400)] and not damage
    assert scx.user_dsq_addrs(mem, L, None, syms) == []


def test_older_dsq_list_without_cursor_nodes(w):
    """sched_ext_entity.dsq_list as a plain list_head (no scx_dsq_list_node): still walked."""
    L = HidingLayout(w.btf, hide_members={("sched_ext_entity", "dsq_list.node"),
                                          ("sched_ext_entity", "dsq_list.flags")})
    offs = scx.DsqOffsets.from_layout(L)
    assert offs.lnode_flags is None and offs.cursor_flag == 0
    assert offs.lnode_node == L.offset("task_struct", "scx.dsq_list")
    d = new_dsq(w)
    ts = tasks(w, 3)
    for t in (ts[2], ts[0]):       # linked through the old plain list_head
        w.mem.list_add_tail(d + L.offset("scx_dispatch_q", "list"), t + offs.lnode_node)
    assert scx.walk_dsq_list(w.mem, L, offs, d).tasks == [ts[2], ts[0]]


# --- every scheduler ---------------------------------------------------------------------------


def test_find_scheds_root_all_children_and_priv(w):
    root = w.sched("root")
    a = w.sched("a", level=1, parent=root, cgroup="/a")
    b = w.sched("b", level=1, parent=root, cgroup="/b")
    aa = w.sched("aa", level=2, parent=a, cgroup="/a/a")
    gone = w.sched("gone")                 # disabled: off scx_sched_all, not scx_root
    w.set_root(root)
    for s in (root, a, b, aa):
        w.link_all(s)
    refs = scx.find_scheds(w.mem, w.L, syms_of(w), extra=[(gone, "struct_ops map 9 gone_ops (ops.priv)")])
    assert [r.addr for r in refs] == [root, a, aa, b, gone]
    by = {r.addr: r for r in refs}
    assert by[root].via == ["scx_root", "scx_sched_all"] and by[root].parent is None
    assert (by[aa].parent, by[aa].depth) == (a, 2) and by[b].parent == root
    assert by[gone].via == ["struct_ops map 9 gone_ops (ops.priv)"]
    st = scx.read_sched_state(w.mem, w.L, syms_of(w), sch=aa)
    assert (st.level, st.parent, st.cgroup_path, st.name) == (2, a, "/a/a", "aa")


def test_sub_scheds_depth_first_and_cycle_safe(w):
    s = [w.sched(f"s{i}") for i in range(4)]
    L = w.L

    def adopt(parent, child):
        w.mem.list_add_tail(parent + L.offset("scx_sched", "children"), child + L.offset("scx_sched", "sibling"))

    adopt(s[0], s[1])
    adopt(s[0], s[2])
    adopt(s[1], s[3])
    assert scx.sub_scheds(w.mem, L, s[0]) == [(s[1], 1, s[0]), (s[3], 2, s[1]), (s[2], 1, s[0])]
    # a child pointing back at the root
    sib = s[0] + L.offset("scx_sched", "sibling")
    w.mem.u64(s[3] + L.offset("scx_sched", "children") + L.offset("list_head", "next"), sib)
    damage = kds.DamageLog()
    got = scx.sub_scheds(w.mem, L, s[0], damage=damage)
    assert len(got) == 3 and damage
    assert scx.sub_scheds(w.mem, L, 0) == []


# --- event counters ----------------------------------------------------------------------------


def test_events_per_cpu_and_summed(w):
    sch = w.sched()
    w.events(sch, [{"SCX_EV_DISPATCH_KEEP_LAST": 733, "SCX_EV_BYPASS_DURATION": 32367111},
                   {"SCX_EV_DISPATCH_KEEP_LAST": 426, "SCX_EV_ENQ_SKIP_EXITING": -1}])
    ev = scx.read_events(w.mem, w.L, sch, w.offsets)
    assert ev.source == "scx_sched.pcpu->event_stats" and not ev.damage
    assert ev.names == [n for n, _ in w.L.members("scx_event_stats")]
    tot = dict(zip(ev.names, ev.totals))
    assert tot["SCX_EV_DISPATCH_KEEP_LAST"] == 1159 and tot["SCX_EV_BYPASS_DURATION"] == 32367111
    assert tot["SCX_EV_ENQ_SKIP_EXITING"] == -1          # s64: signed
    assert [c for c, _ in ev.per_cpu] == [0, 1]
    # An unreadable CPU copy: reported, the others still summed.
    ev = scx.read_events(w.mem, w.L, sch, w.offsets + [1 << 40])
    assert ev.per_cpu[2] == (2, None) and "cpu2" in str(next(iter(ev.damage)))
    assert dict(zip(ev.names, ev.totals))["SCX_EV_DISPATCH_KEEP_LAST"] == 1159


def test_events_older_layouts(w):
    """6.17: scx_sched.event_stats_cpu (a __percpu pointer); 6.15: the per-CPU global
    event_stats_cpu; before: none."""
    sch = w.sched()
    w.events(sch, [{"SCX_EV_DISPATCH_KEEP_LAST": 5}, {"SCX_EV_DISPATCH_KEEP_LAST": 6}])
    pcpu = int.from_bytes(w.mem.read(sch + w.L.offset("scx_sched", "pcpu"), 8), "little")
    stats = pcpu + w.L.offset("scx_sched_pcpu", "event_stats")
    no_pcpu = HidingLayout(w.btf, hide_members={("scx_sched", "pcpu")})
    assert scx.read_events(w.mem, no_pcpu, sch, w.offsets) is None
    ev = scx.read_events(w.mem, no_pcpu, sch, w.offsets, {"event_stats_cpu": stats})
    assert ev.source.startswith("event_stats_cpu") and dict(zip(ev.names, ev.totals))["SCX_EV_DISPATCH_KEEP_LAST"] == 11
    assert scx.read_events(w.mem, HidingLayout(w.btf, hide_types={"scx_event_stats"}), sch, w.offsets) is None


# --- struct_ops --------------------------------------------------------------------------------


def test_struct_ops_callbacks_programs_and_priv(w):
    L = w.L
    sch = w.sched(callbacks=("select_cpu", "enqueue", "dispatch"))
    p_enq = w.prog(9, "my_enqueue", stats=[(10, 1000, 0), (30, 5000, 2)])
    p_dsp = w.prog(10, "my_dispatch")
    st_map = w.struct_ops_map(sch, progs={"enqueue": p_enq, "dispatch": p_dsp})
    vs = "bpf_struct_ops_sched_ext_ops"
    names = ["select_cpu", "enqueue", "dispatch"]
    errors = kds.DamageLog()
    cbs = scx.struct_ops_callbacks(w.mem, L, st_map, "sched_ext_ops", names, vs, errors)
    assert [(c.member, c.prog_id, c.prog_name) for c in cbs] == [
        ("select_cpu", None, None), ("enqueue", 9, "my_enqueue"), ("dispatch", 10, "my_dispatch")]
    assert cbs[1].prog == p_enq and cbs[1].kfunc == 0xFFFFFFFFC0000100
    assert not errors
    assert scx.struct_ops_sched(w.mem, L, st_map, vs) == sch
    s = runstats.prog_stats(w.mem, L, p_enq, w.offsets)
    assert (s.cnt, s.nsecs, s.misses, s.avg_ns, s.cpus, s.error) == (40, 6000, 2, 150, 2, None)
    s = runstats.prog_stats(w.mem, L, p_dsp, w.offsets)
    assert s.error == "bpf_prog.stats is NULL"
    s = runstats.prog_stats(w.mem, L, p_enq, w.offsets + [1 << 40])
    assert s.unreadable == [2] and s.cnt == 40
    # Without a user value the callbacks are still listed, with no program.
    w.mem.set("bpf_struct_ops_map", st_map, "uvalue", 0)
    cbs = scx.struct_ops_callbacks(w.mem, L, st_map, "sched_ext_ops", names, vs)
    assert [(c.member, c.prog_id) for c in cbs] == [("select_cpu", None), ("enqueue", None), ("dispatch", None)]


def test_stats_enabled_key(w):
    assert runstats.stats_enabled(w.mem, w.L, None) is None
    assert runstats.stats_enabled(w.mem, w.L, w.syms["bpf_stats_enabled_key"]) is False
    w.static_key("bpf_stats_enabled_key", True)
    assert runstats.stats_enabled(w.mem, w.L, w.syms["bpf_stats_enabled_key"]) is True


def test_global_fields_come_from_the_layout(w):
    """Globals have no struct: their fields are those of their C types in the layout (the
    atomics' counters, off offset 0 in the padded synthetic kernel), with stand-ins when a
    layout lacks the typedef'd atomic structs."""
    at, at64 = w.L.field("atomic_t", "counter"), w.L.field("atomic64_t", "counter")
    assert scx.global_field(w.L, "atomic_t") == at and scx.global_field(w.L, "atomic_long_t") == at64
    assert (scx.global_field(w.L, "int").size, scx.global_field(w.L, "int").signed) == (at.size, True)
    assert (scx.global_field(w.L, "u64").size, scx.global_field(w.L, "u64").signed) == (at64.size, False)
    assert scx.global_field(w.L, "bool").size == 1
    g = w.mem.alloc("atomic64_t")
    w.mem.set("atomic64_t", g, "counter", -3)
    assert scx.read_global(w.mem, w.L, {"nr_rejected": g}, "nr_rejected") == -3
    assert scx.read_global(w.mem, w.L, {"nr_rejected": None}, "nr_rejected") is None
    L = HidingLayout(w.btf, hide_types={"atomic_t", "atomic64_t"})
    assert (scx.global_field(L, "atomic_t").size, scx.global_field(L, "atomic_t").offset) == (
        w.L.field("static_key", "enabled").size, 0)
    assert scx.global_field(L, "atomic_long_t").size == w.L.field("list_head", "next").size
    with pytest.raises(LayoutError):
        scx.global_field(w.L, "float")
