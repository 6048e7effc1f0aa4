"""The probe-side hook walkers (bpf/probes.py) on a synthetic kernel whose members are all off
their kernel offsets: kprobes (plain, kretprobe, aggregated, not a trace_kprobe), tracepoint
probes (raw_tp link and bare program data), fprobes (kprobe_multi) and netfilter hook entries;
programs and links registered nowhere, with no fd and no ksym, are still attributed to their
hook and reported hidden. Hostile cases: a cycle in a kprobe hash chain, an unreadable funcs
array, tracepoint pointers that are neither form."""

from helpers.bpfworld import TEXT, World
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
        ("netfilter", "nf:ipv4/local_in prio -128 netns:4026531833", p, link)]
    assert not damage
    # the link decoder names the same hook
    bk = w.kernel()
    dec = hooks.LinkDecoder(bk)
    decoded = dec.read(link)
    assert decoded.target == "nf:pf2/hook1/prio-128"
    assert decoded.hooks[0].target.startswith("nf:ipv4/local_in prio -128 netns:")
