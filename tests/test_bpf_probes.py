"""The probe-side hook walkers (bpf/probes.py) on a synthetic kernel whose members are all off
their kernel offsets: kprobes (plain, kretprobe, aggregated, not a trace_kprobe), tracepoint
probes (raw_tp link and bare program data), fprobes (kprobe_multi) and netfilter hook entries;
programs and links registered nowhere, with no fd and no ksym, are still attributed to their
hook and reported hidden. Module tracepoints, the uprobes tree and perf contexts also run on the
real kernel BTF's layout. Hostile cases: a cycle in a kprobe hash chain, an unreadable funcs
array, tracepoint pointers that are neither form, cycles in the uprobes tree and a perf event
list, an unreadable consumer list."""

import pytest

from helpers.bpfworld import TEXT, RealKernel, World
from volatility3_ktstr.bpf import hidden, hooks

HEADS = 4


def _table(w, name):
    """A static hash table of HEADS hlist heads at symbol ``name`` (its size: the next symbol)."""
    size = HEADS * w.L.size("hlist_head")
    addr = w.mem.alloc(size)
    w.syms[name] = addr
    w.syms[name + "_end"] = addr + size
    return addr


def _trace_kprobe(w, table, prog, ret=False, slot=0, head=True):
    L, mem, s = w.L, w.mem, w.syms
    tpe = mem.new("trace_probe_event", call__prog_array=w.prog_array([prog]))
    fields = {"rp.kp.addr": s["do_sys_openat2"], "symbol": w.cstr("do_sys_openat2"), "tp.event": tpe,
              "rp.kp.pre_handler": s["pre_handler_kretprobe" if ret else "kprobe_dispatcher"]}
    if ret:
        fields["rp.handler"] = s["kretprobe_dispatcher"]
    tk = mem.new("trace_kprobe", fields)
    kp = tk + L.offset("trace_kprobe", "rp") + L.offset("kretprobe", "kp")
    if head:
        mem.hlist_add_head(table + slot * L.size("hlist_head"), kp + L.offset("kprobe", "hlist"))
    return kp


def _world():
    w = World()
    return w


def _walk(w, name):
    walker = hooks.HookWalker(w.kernel())
    return list(getattr(walker, name)()), walker.damage


def test_kprobes_and_kretprobes_lead_to_their_event_programs():
    w = _world()
    table = _table(w, "kprobe_table")
    p1 = w.prog(23, "zoo_kprobe", register=False, ksym=False)
    p2 = w.prog(24, "zoo_kretprobe", register=False, ksym=False)
    _trace_kprobe(w, table, p1, slot=1)
    _trace_kprobe(w, table, p2, ret=True, slot=1)
    w.mem.hlist_add_head(table, w.mem.new("kprobe", pre_handler=TEXT + 0x42) + w.L.offset("kprobe", "hlist"))
    got, damage = _walk(w, "kprobes")
    assert sorted((a.hook, a.target, a.prog_kva) for a in got) == sorted(
        [("kprobe", "do_sys_openat2", p1), ("kretprobe", "do_sys_openat2", p2)])
    assert not damage
    # found with nothing else pointing at them
    bk = w.kernel()
    found = hidden.hidden(bk, hidden.references(bk, attachments=got))
    assert {(f.kind, f.id) for f in found} == {("prog", 23), ("prog", 24)}
    assert all("kprobe_table" in f.via[0] for f in found)


def test_an_aggregated_kprobe_lists_its_probes():
    w = _world()
    table = _table(w, "kprobe_table")
    L, mem = w.L, w.mem
    aggr = mem.new("kprobe", pre_handler=w.syms["aggr_pre_handler"])
    mem.list_init(aggr + L.offset("kprobe", "list"))
    mem.hlist_add_head(table + 2 * L.size("hlist_head"), aggr + L.offset("kprobe", "hlist"))
    progs = [w.prog(30 + i, f"p{i}", register=False, ksym=False) for i in range(2)]
    for i, p in enumerate(progs):
        kp = _trace_kprobe(w, table, p, ret=bool(i), head=False)
        mem.list_add_tail(aggr + L.offset("kprobe", "list"), kp + L.offset("kprobe", "list"))
    got, damage = _walk(w, "kprobes")
    assert [(a.hook, a.prog_kva) for a in got] == [("kprobe", progs[0]), ("kretprobe", progs[1])]
    assert not damage


def test_a_kprobe_chain_cycle_is_damage_not_a_hang():
    w = _world()
    table = _table(w, "kprobe_table")
    p = w.prog(23, "zoo_kprobe")
    kp = _trace_kprobe(w, table, p)
    node = kp + w.L.offset("kprobe", "hlist")
    w.mem.set("hlist_node", node, "next", node)          # points at itself
    got, damage = _walk(w, "kprobes")
    assert [a.prog_kva for a in got] == [p]
    assert any("cycle" in str(d) for d in damage)


def _tracepoints(w, entries, relative=True):
    """__tracepoints_ptrs over tracepoints [(name, [(func symbol, data)])]."""
    L, mem = w.L, w.mem
    tps = []
    for name, funcs in entries:
        arr = mem.alloc(L.size("tracepoint_func") * (len(funcs) + 1)) if funcs is not None else mem.hole()
        for i, (func, data) in enumerate(funcs or ()):
            mem.put("tracepoint_func", arr + i * L.size("tracepoint_func"), func=w.syms[func], data=data)
        tp = mem.new("tracepoint", name=w.cstr(name), funcs=arr)
        w.syms["__tracepoint_" + name] = tp
        tps.append(tp)
    width = 4 if relative else 8
    start = mem.alloc(width * len(tps) + 8)
    for i, tp in enumerate(tps):
        at = start + i * width
        value = (tp - at) & 0xFFFFFFFF if relative else tp
        mem.write(at, value.to_bytes(width, "little"))
    w.syms["__start___tracepoints_ptrs"] = start
    w.syms["__stop___tracepoints_ptrs"] = start + width * len(tps)


def test_tracepoint_probes_hold_raw_tp_links_or_programs():
    for relative in (True, False):
        w = _world()
        p1 = w.prog(27, "zoo_raw_tp", register=False, ksym=False)
        p2 = w.prog(28, "old_raw_tp", register=False, ksym=False)
        link = w.link("bpf_raw_tp_link", 6, "raw_tracepoint", p1, ops="bpf_raw_tp_link_lops", register=False)
        _tracepoints(w, [("sched_switch", [("probe_sched_switch", 0), ("__bpf_trace_sched_switch", link),
                                           ("__bpf_trace_sched_switch", p2)]),
                         ("sched_wakeup", [])], relative)
        got, damage = _walk(w, "tracepoints")
        assert [(a.hook, a.target, a.prog_kva, a.link_kva) for a in got] == [
            ("raw_tracepoint", "sched_switch", p1, link), ("raw_tracepoint", "sched_switch", p2, -1)]
        assert not damage
        bk = w.kernel()
        found = hidden.hidden(bk, hidden.references(bk, attachments=got))
        assert {(f.kind, f.id) for f in found} == {("prog", 27), ("prog", 28), ("link", 6)}


def test_unreadable_tracepoint_funcs_and_unknown_pointer_forms_are_damage():
    w = _world()
    _tracepoints(w, [("sched_switch", None)])
    got, damage = _walk(w, "tracepoints")
    assert got == [] and any("funcs" in str(d) for d in damage)
    w = _world()
    start = w.mem.alloc(16)
    w.mem.write(start, b"\x11" * 16)
    w.syms["__start___tracepoints_ptrs"], w.syms["__stop___tracepoints_ptrs"] = start, start + 16
    got, damage = _walk(w, "tracepoints")
    assert got == [] and any("neither" in str(d) for d in damage)


def test_fprobes_lead_to_kprobe_multi_links():
    w = _world()
    table = _table(w, "fprobe_table")
    L, mem, s = w.L, w.mem, w.syms
    p = w.prog(25, "zoo_kmulti", register=False, ksym=False)
    addrs = mem.alloc(16)
    mem.u64(addrs, s["vfs_read"])
    mem.u64(addrs + 8, s["vfs_write"])
    link = w.link("bpf_kprobe_multi_link", 4, "kprobe_multi", p, register=False,
                  ops="bpf_kprobe_multi_link_lops", addrs=addrs, cnt=2,
                  fp__entry_handler=s["kprobe_multi_link_handler"])
    fp = link - L.offset("bpf_kprobe_multi_link", "link") + L.offset("bpf_kprobe_multi_link", "fp")
    other = mem.new("fprobe", entry_handler=TEXT + 0x77)
    for f in (fp, other):
        h = mem.new("fprobe_hlist", fp=f)
        mem.hlist_add_head(table + L.size("hlist_head"), h + L.offset("fprobe_hlist", "hlist"))
    got, damage = _walk(w, "fprobes")
    assert sorted((a.hook, a.target, a.prog_kva, a.link_kva) for a in got) == [
        ("kprobe", "vfs_read", p, link), ("kprobe", "vfs_write", p, link)]
    assert not damage


def test_netfilter_entries_name_family_hook_priority_and_link():
    w = _world()
    L, mem, s = w.L, w.mem, w.syms
    net = w.netns(4026531833)
    for pid, comm in ((900, "netd"), (812, "ip"), (950, "other")):     # the lowest pid names it
        t = w.task(pid, comm)
        mem.set("task_struct", t, "nsproxy", mem.new("nsproxy", net_ns=net if pid != 950 else 0))
    p = w.prog(50, "zoo_nf", register=False, ksym=False)
    link = w.link("bpf_nf_link", 27, "netfilter", p, register=False, ops="bpf_nf_link_lops",
                  hook_ops__pf=2, hook_ops__hooknum=1, hook_ops__priority=-128)
    ops_bpf = link - L.offset("bpf_nf_link", "link") + L.offset("bpf_nf_link", "hook_ops")
    ops_ct = mem.new("nf_hook_ops", priority=-200)
    stride = L.size("nf_hook_entry")
    n = 2
    entries = mem.alloc(L.size("nf_hook_entries") + n * stride + 8 * n + 64)
    hooks_at = entries + L.offset("nf_hook_entries", "hooks")
    mem.put("nf_hook_entries", entries, num_hook_entries=n)
    mem.put("nf_hook_entry", hooks_at, hook=s["ipv4_conntrack_in"], priv=0)
    mem.put("nf_hook_entry", hooks_at + stride, hook=s["nf_hook_run_bpf"], priv=p)
    mem.u64(hooks_at + n * stride, ops_ct)
    mem.u64(hooks_at + n * stride + 8, ops_bpf)
    mem.u64(net + L.offset("net", "nf") + L.offset("netns_nf", "hooks_ipv4") + 8 * 1, entries)
    got, damage = _walk(w, "netfilter")
    assert [(a.hook, a.target, a.prog_kva, a.link_kva) for a in got] == [
        ("netfilter", "nf:ipv4/local_in prio -128 netns:4026531833 (pid 812 ip)", p, link)]
    assert not damage
    # the link decoder names the same hook
    bk = w.kernel()
    dec = hooks.LinkDecoder(bk)
    decoded = dec.read(link)
    assert decoded.target == "nf:pf2/hook1/prio-128"
    assert decoded.hooks[0].target.startswith("nf:ipv4/local_in prio -128 netns:")


# --- module tracepoints, uprobes and perf contexts: the padded DECLS and the real kernel BTF --



@pytest.fixture(params=["synthetic", "kernel"])
def world(request):
    """A World laid out by the padded DECLS, or by the real x86-64 kernel BTF (skipped without
    KTSTR_DUMPS): members at their kernel offsets, the kernel's own enums."""
    if request.param == "kernel":
        return World(btf=request.getfixturevalue("amd64_kernel_btf"))
    return World()


def _kernel_tracepoints(w, tps, relative=True):
    width = 4 if relative else 8
    start = w.mem.alloc(width * len(tps) + 8)
    for i, (name, tp) in enumerate(tps):
        at = start + i * width
        w.mem.write(at, (((tp - at) & 0xFFFFFFFF) if relative else tp).to_bytes(width, "little"))
        w.syms["__tracepoint_" + name] = tp
    w.syms["__start___tracepoints_ptrs"] = start
    w.syms["__stop___tracepoints_ptrs"] = start + width * len(tps)


def test_module_tracepoints_are_walked_like_the_kernels(world):
    w = world
    p_core = w.prog(40, "core_raw_tp", register=False, ksym=False)
    p_mod = w.prog(41, "rc_raw_tp", register=False, ksym=False)
    p_old = w.prog(42, "rc_old_raw_tp", register=False, ksym=False)
    link = w.link("bpf_raw_tp_link", 9, "raw_tracepoint", p_mod, ops="bpf_raw_tp_link_lops", register=False)
    _kernel_tracepoints(w, [("sched_switch", w.tracepoint("sched_switch", [("__bpf_trace_sched_switch", p_core)]))])
    w.module("rc_core", [w.tracepoint("rc_keydown", [("probe_sched_switch", 0),
                                                       ("__bpf_trace_rc_keydown", link)])])
    w.module("no_tracepoints")
    w.module("other", [w.tracepoint("other_event", [("__bpf_trace_rc_keydown", p_old)])])
    got, damage = _walk(w, "tracepoints")
    assert [(a.target, a.prog_kva, a.link_kva) for a in got] == [
        ("sched_switch", p_core, -1), ("rc_keydown", p_mod, link), ("other_event", p_old, -1)]
    assert "module rc_core tracepoints_ptrs" in got[1].via
    assert not damage
    bk = w.kernel()
    found = hidden.hidden(bk, hidden.references(bk, attachments=got))
    assert {(f.kind, f.id) for f in found} == {("prog", 40), ("prog", 41), ("prog", 42), ("link", 9)}


def test_module_tracepoint_forms_without_the_kernels_table(world):
    """No __tracepoints_ptrs in the kernel image (a minimized dump): each module's form is the
    one whose first entry reads as a named tracepoint; neither form is damage."""
    for relative in (True, False):
        w = World(btf=world.k.btf) if isinstance(world.k, RealKernel) else World()
        p = w.prog(43, "mod_prog", register=False, ksym=False)
        w.module("m", [w.tracepoint("m_event", [("__bpf_trace_rc_keydown", p)])], relative=relative)
        got, damage = _walk(w, "tracepoints")
        assert [(a.target, a.prog_kva) for a in got] == [("m_event", p)] and not damage
    w = World()
    mod = w.module("bad", [w.tracepoint("x", [])])
    bogus = w.mem.alloc(16)
    w.mem.write(bogus, b"\x11" * 16)
    w.mem.set("module", mod, "tracepoints_ptrs", bogus)
    got, damage = _walk(w, "tracepoints")
    assert got == [] and any("module bad" in str(d) and "neither" in str(d) for d in damage)
    w.mem.set("module", mod, "tracepoints_ptrs", w.mem.hole())
    got, damage = _walk(w, "tracepoints")
    assert got == [] and any("module bad: unreadable" in str(d) for d in damage)


def test_uprobes_tree_leads_to_trace_uprobe_events_and_uprobe_multi_links(world):
    w = world
    L, mem, s = w.L, w.mem, w.syms
    p_up = w.prog(60, "zoo_uprobe", register=False, ksym=False)
    p_uret = w.prog(61, "zoo_uretprobe", register=False, ksym=False)
    p_multi = w.prog(62, "zoo_umulti", register=False, ksym=False)
    link = w.link("bpf_uprobe_multi_link", 12, "uprobe_multi", p_multi, register=False, cnt=1,
                  ops="bpf_uprobe_multi_link_lops")
    base = link - L.offset("bpf_uprobe_multi_link", "link")
    bu = mem.new("bpf_uprobe", {"consumer.handler": s["uprobe_multi_link_handler"]}, link=base, offset=0x1234)
    mem.set("bpf_uprobe_multi_link", base, "uprobes", bu)
    other = mem.new("uprobe_consumer", handler=TEXT + 0x55)        # another uprobe user
    left = w.uprobe(0x1234, [bu + L.offset("bpf_uprobe", "consumer")])
    w.uprobe(0x4f0, [w.trace_uprobe("/usr/bin/zoo", p_up), other,
                     w.trace_uprobe("/usr/bin/zoo", p_uret, ret=True)], left=left)
    got, damage = _walk(w, "uprobes")
    assert sorted((a.hook, a.target, a.prog_kva, a.link_kva) for a in got) == sorted([
        ("uprobe", "/usr/bin/zoo+0x4f0", p_up, -1), ("uretprobe", "/usr/bin/zoo+0x4f0", p_uret, -1),
        ("uprobe", "?+0x1234", p_multi, link)])
    assert not damage
    bk = w.kernel()
    found = hidden.hidden(bk, hidden.references(bk, attachments=got))
    assert {(f.kind, f.id) for f in found} == {("prog", 60), ("prog", 61), ("prog", 62), ("link", 12)}
    assert all("uprobes_tree" in f.via[0] for f in found)


def test_a_uprobes_tree_cycle_and_an_unreadable_consumer_are_damage(world):
    w = world
    p = w.prog(63, "zoo_uprobe", register=False, ksym=False)
    up = w.uprobe(0x10, [w.trace_uprobe("/bin/x", p)])
    node = up + w.L.offset("uprobe", "rb_node")
    w.mem.set("rb_node", node, "rb_left", node)                     # the root is its own child
    got, damage = _walk(w, "uprobes")
    assert [a.prog_kva for a in got] == [p] and damage
    w.mem.set("rb_node", node, "rb_left", 0)
    head = up + w.L.offset("uprobe", "consumers")
    w.mem.set("list_head", head, "next", w.mem.hole())
    got, damage = _walk(w, "uprobes")
    assert got == [] and damage


def test_perf_contexts_of_cpus_and_tasks_hold_programs(world):
    w = world
    L, mem = w.L, w.mem
    p_cpu = w.prog(70, "zoo_perf", register=False, ksym=False)
    p_task = w.prog(71, "zoo_task_perf", register=False, ksym=False)
    pcpu = mem.new("perf_cpu_context")
    w.syms["perf_cpu_context"] = pcpu
    e_cpu = w.perf_event(p_cpu, etype=1, config=0, cpu=0, pmu="cpu_clock")
    w.perf_context([w.perf_event(0), e_cpu], ctx=pcpu + L.offset("perf_cpu_context", "ctx"))
    task = w.task(400, "loader")
    e_task = w.perf_event(p_task, etype=1, config=3, pmu="task_clock")
    mem.set("task_struct", task, "perf_event_ctxp", w.perf_context([e_task]))
    walker = hooks.HookWalker(w.kernel())
    got = list(walker.perf_contexts(tasks=[task, w.init_task]))
    assert [(a.target, a.prog_kva) for a in got] == [
        ("cpu_clock/config0 cpu0", p_cpu), ("task_clock/config3", p_task)]
    assert "(cpu0)" in got[0].via and f"(task {task:#x})" in got[1].via
    assert not walker.damage
    bk = w.kernel()
    found = hidden.hidden(bk, hidden.references(bk, attachments=got))
    assert {(f.kind, f.id) for f in found} == {("prog", 70), ("prog", 71)}
    # a cycle in a task's event list: damage, the event still found once
    node = e_task + L.offset("perf_event", "event_entry")
    mem.set("list_head", node, "next", node)
    walker = hooks.HookWalker(w.kernel())
    got = list(walker.perf_contexts(tasks=[task]))
    assert [a.prog_kva for a in got].count(p_task) == 1 and walker.damage


def test_a_namespace_without_processes_and_init_net_are_named_as_such():
    w = _world()
    init_net = w.netns(4026531840)
    w.syms["init_net"] = init_net
    empty = w.netns(4026532000)
    dec = hooks.LinkDecoder(w.kernel())
    assert dec.netns_owner(init_net) == " (init_net)"
    assert dec.netns_owner(empty) == " (no process)"
    assert dec.netns_owner(0) == ""


# --- lirc: rc-core's types in its module BTF, its list in the module's symbol table -----------

RC_DECLS = """
struct kobject { char *name; u64 entry; };
struct device { u64 parent; struct kobject kobj; };
struct bpf_prog_array { u64 rcu; };
struct rc_dev { u64 x; struct device dev; char *device_name; char *driver_name; struct ir_raw_event_ctrl *raw; };
struct ir_raw_event_ctrl { struct list_head list; u64 thread; struct rc_dev *dev; struct bpf_prog_array *progs; };
"""


def _rc_world(with_btf=True, with_symbol=True, devices=(("rc0", "gpio_ir_recv"),)):
    from helpers.synth import MINI_KERNEL, SynthKernel

    w = _world()
    # a module BTF is split on the kernel's: list_head laid out as the world's (same pad)
    rc = SynthKernel(MINI_KERNEL + RC_DECLS)
    RL, mem = rc.layout, w.mem
    head = mem.list_init(mem.alloc(16))
    if with_btf:
        w.modules["rc_core"] = rc.btf
    w.module("rc_core", symbols={"rc_map_register": TEXT + 0x10, "ir_raw_client_list": head} if with_symbol
             else {"rc_map_register": TEXT + 0x10})
    out = []
    for i, (name, driver) in enumerate(devices):
        p = w.prog(80 + i, f"lirc_{name}", ptype="BPF_PROG_TYPE_KPROBE", register=False, ksym=False)
        dev = mem.alloc(RL.size("rc_dev"))
        raw = mem.alloc(RL.size("ir_raw_event_ctrl"))
        mem.u64(dev + RL.offset("rc_dev", "dev.kobj.name"), w.cstr(name))
        mem.u64(dev + RL.offset("rc_dev", "driver_name"), w.cstr(driver))
        mem.u64(dev + RL.offset("rc_dev", "raw"), raw)
        mem.u64(raw + RL.offset("ir_raw_event_ctrl", "dev"), dev)
        mem.u64(raw + RL.offset("ir_raw_event_ctrl", "progs"), w.prog_array([p]))
        mem.list_add_tail(head, raw + RL.offset("ir_raw_event_ctrl", "list"))
        out.append((p, dev))
    return w, out


def test_lirc_programs_of_rc_devices_through_the_modules_btf():
    w, made = _rc_world(devices=(("rc0", "gpio_ir_recv"), ("rc1", "")))
    walker = hooks.HookWalker(w.kernel())
    got = list(walker.lirc())
    assert [(a.hook, a.target, a.attach_type, a.prog_kva) for a in got] == [
        ("lirc", "rc:rc0 (gpio_ir_recv)", "lirc_mode2", made[0][0]),
        ("lirc", "rc:rc1", "lirc_mode2", made[1][0])]
    assert all("module rc_core ir_raw_client_list" in a.via for a in got)
    assert not walker.damage and not walker.notes
    bk = w.kernel()
    found = hidden.hidden(bk, hidden.references(bk, attachments=got))
    assert {(f.kind, f.id) for f in found} == {("prog", 80), ("prog", 81)}
    # the whole hook walk (what bpfhooks and bpfhidden take) includes them
    assert {a.prog_kva for a in hooks.HookWalker(w.kernel()).all() if a.hook == "lirc"} == {
        made[0][0], made[1][0]}


def test_lirc_says_when_rc_core_its_btf_or_its_list_is_absent():
    w = _world()
    walker = hooks.HookWalker(w.kernel())
    assert list(walker.lirc()) == [] and not walker.damage
    assert walker.notes == ["lirc: module rc_core is not loaded (and rc-core is not built in): "
                            "no rc device can hold a lirc program"]
    for kw, text in (({"with_btf": False}, "its BTF is not in the dump"),
                     ({"with_symbol": False}, "ir_raw_client_list not in module rc_core")):
        w, _ = _rc_world(**kw)
        walker = hooks.HookWalker(w.kernel())
        assert list(walker.lirc()) == [] and not walker.notes
        assert any(text in str(d) for d in walker.damage)


def test_an_rc_device_list_cycle_is_damage():
    w, made = _rc_world()
    RL = w.kernel().module_layout("rc_core")
    node = made[0][1]
    raw = int.from_bytes(w.mem.read(node + RL.offset("rc_dev", "raw"), 8), "little")
    at = raw + RL.offset("ir_raw_event_ctrl", "list")
    w.mem.set("list_head", at, "next", at)                 # list.next points at itself
    walker = hooks.HookWalker(w.kernel())
    got = list(walker.lirc())
    assert [a.prog_kva for a in got] == [made[0][0]] and walker.damage
