"""The map types beyond arrays and hashes (bpf/mapkinds.py) and socket-level BPF
(bpf/sockets.py) on synthetic memory laid out two ways: a synthetic kernel with every member
off its kernel offset, and the real x86-64 kernel BTF (KTSTR_DUMPS). The zoo dump has an LPM
trie, a queue, a ring buffer, prog_array and array_of_maps (checked end to end in
test_bpfforensics_e2e); it has no socket with a filter, no stack, bloom filter, sockhash,
reuseport array or legacy cgroup storage: those are here."""

import struct

import pytest

from helpers.synth import MINI_KERNEL, Memory, SynthKernel, layout_fixture
from volatility3_ktstr.bpf import mapkinds, sockets
from volatility3_ktstr.bpf.maps import BpfMap
from volatility3_ktstr.bpf.values import ValueError_, WalkInfo

DECLS = MINI_KERNEL + """
struct bpf_map { u32 map_type; u32 key_size; u32 value_size; u32 max_entries; u32 id; };
struct lpm_trie_node { struct lpm_trie_node *child[2]; u32 prefixlen; u32 flags; u8 data[0]; };
struct lpm_trie { struct bpf_map map; struct lpm_trie_node *root; unsigned long n_entries;
  unsigned long max_prefixlen; unsigned long data_size; };
struct bpf_queue_stack { struct bpf_map map; u32 head; u32 tail; u32 size; char elements[0]; };
struct bpf_bloom_filter { struct bpf_map map; u32 bitset_mask; u32 hash_seed; u32 nr_hash_funcs;
  unsigned long bitset[0]; };
struct bpf_ringbuf_hdr { u32 len; u32 pg_off; };
struct bpf_ringbuf { u64 mask; unsigned long consumer_pos; unsigned long producer_pos;
  unsigned long pending_pos; char data[0]; };
struct bpf_ringbuf_map { struct bpf_map map; struct bpf_ringbuf *rb; };
struct in6_addr { u8 s6_addr[16]; };
struct atomic64_s { u64 counter; };
struct sock_common { u32 skc_daddr; u32 skc_rcv_saddr; u16 skc_dport; u16 skc_num; u16 skc_family;
  u8 skc_state; struct in6_addr skc_v6_daddr; struct in6_addr skc_v6_rcv_saddr;
  struct atomic64_s skc_cookie; };
struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; };
struct sock_fprog_kern { u16 len; struct sock_filter *filter; };
struct bpf_prog { u32 type; struct sock_fprog_kern *orig_prog; };
struct sk_filter { u64 refcnt; struct bpf_prog *prog; };
struct sock_reuseport { u16 max_socks; u16 num_socks; struct bpf_prog *prog; };
struct sock { struct sock_common __sk_common; struct sk_filter *sk_filter; u16 sk_protocol;
  u16 sk_type; struct sock_reuseport *sk_reuseport_cb; };
struct bpf_stab { struct bpf_map map; struct sock **sks; };
struct bpf_shtab_bucket { struct hlist_head head; };
struct bpf_shtab_elem { u32 hash; struct sock *sk; struct hlist_node node; u8 key[0]; };
struct bpf_shtab { struct bpf_map map; struct bpf_shtab_bucket *buckets; u32 buckets_num; };
struct reuseport_array { struct bpf_map map; struct sock *ptrs[0]; };
struct bpf_storage_buffer { u64 rcu[2]; char data[0]; };
struct bpf_cgroup_storage_key { u64 cgroup_inode_id; u32 attach_type; };
union bpf_cgroup_storage_buf { struct bpf_storage_buffer *buf; void *percpu_buf; };
struct bpf_cgroup_storage { union bpf_cgroup_storage_buf; struct bpf_cgroup_storage_map *map;
  struct bpf_cgroup_storage_key key; struct list_head list_map; struct list_head list_cg;
  struct rb_node node; };
struct bpf_cgroup_storage_map { struct bpf_map map; u32 lock; struct rb_root root; struct list_head list; };
"""

layout = layout_fixture(lambda: SynthKernel(DECLS).layout)


def _map(mem, L, struct_name, type_name, key_size=0, value_size=8, max_entries=8, extra=0, **fields):
    base = mem.alloc(L.size(struct_name) + extra)
    mem.put(struct_name, base, fields)
    kva = base + L.offset(struct_name, "map")
    return base, BpfMap(kva=kva, id=1, type_name=type_name, key_size=key_size, value_size=value_size,
                        max_entries=max_entries)


def test_lpm_trie_elements_skip_intermediate_nodes(layout):
    mem, L = Memory(layout), layout
    base, m = _map(mem, L, "lpm_trie", "lpm_trie", key_size=8, value_size=8, max_entries=16,
                   data_size=4, n_entries=2)
    node_size = L.offset("lpm_trie_node", "data") + 4 + 8

    def node(prefixlen, data, value, flags=0, kids=(0, 0)):
        n = mem.alloc(node_size)
        mem.put("lpm_trie_node", n, {"prefixlen": prefixlen, "flags": flags})
        f = L.field("lpm_trie_node", "child")
        for i, c in enumerate(kids):
            mem.u64(n + f.offset + i * f.elem_size, c)
        mem.write(n + L.offset("lpm_trie_node", "data"), bytes(data) + struct.pack("<Q", value))
        return n

    a = node(8, [10, 0, 0, 0], 8)
    b = node(24, [192, 168, 1, 0], 24)
    im = node(0, [0, 0, 0, 0], 0, flags=mapkinds.LPM_TREE_NODE_FLAG_IM, kids=(a, b))
    mem.set("lpm_trie", base, "root", im)
    info = WalkInfo()
    got = list(mapkinds.lpm_entries(mem, L, m, info=info))
    assert sorted(e.formatted["prefix"] for e in got) == ["10.0.0.0/8", "192.168.1.0/24"]
    e = next(e for e in got if e.formatted["prefixlen"] == 24)
    assert e.key == struct.pack("<I", 24) + bytes([192, 168, 1, 0]) and e.value == struct.pack("<Q", 24)
    assert info.shown == 2 and not info.skipped
    # a cycle back to the root is damage, not a hang
    mem.u64(a + L.offset("lpm_trie_node", "child"), im)
    info = WalkInfo()
    assert len(list(mapkinds.lpm_entries(mem, L, m, info=info))) == 2
    assert any("cycle" in why for _a, why in info.skipped)


@pytest.mark.parametrize("kind", ["queue", "stack"])
def test_queue_and_stack_in_pop_order(layout, kind):
    mem, L = Memory(layout), layout
    size = 5                                  # max_entries 4 + 1
    base, m = _map(mem, L, "bpf_queue_stack", kind, value_size=8, max_entries=4, extra=8 * size,
                   head=1, tail=3, size=size)  # wrapped: slots 3, 4, 0
    for slot in range(size):
        mem.u64(base + L.offset("bpf_queue_stack", "elements") + 8 * slot, 100 + slot)
    got = [struct.unpack("<Q", e.value)[0] for e in mapkinds.queue_stack_entries(mem, L, m)]
    assert got == ([103, 104, 100] if kind == "queue" else [100, 104, 103])
    mem.set("bpf_queue_stack", base, "head", 9)
    with pytest.raises(ValueError_):
        list(mapkinds.queue_stack_entries(mem, L, m))


def test_bloom_filter_parameters_and_bits(layout):
    mem, L = Memory(layout), layout
    base, m = _map(mem, L, "bpf_bloom_filter", "bloom_filter", value_size=4, extra=16,
                   bitset_mask=127, hash_seed=0xABC, nr_hash_funcs=3)
    mem.write(base + L.offset("bpf_bloom_filter", "bitset"), b"\x03" + bytes(7) + b"\x80" + bytes(7))
    (e,) = list(mapkinds.bloom_entries(mem, L, m))
    assert e.formatted["bits"] == 128 and e.formatted["bits_set"] == 3 and e.formatted["nr_hash_funcs"] == 3
    assert "3 of 128 bits set" in e.text


def test_ringbuf_unconsumed_records_with_wrap_busy_and_discard(layout):
    mem, L = Memory(layout), layout
    cap = 256
    rb = mem.alloc(L.size("bpf_ringbuf") + cap)
    data = rb + L.offset("bpf_ringbuf", "data")
    hdr = L.size("bpf_ringbuf_hdr")
    base, m = _map(mem, L, "bpf_ringbuf_map", "ringbuf", max_entries=cap, rb=rb)

    def record(pos, payload, flags=0):
        head = bytearray(hdr)
        f = L.field("bpf_ringbuf_hdr", "len")
        head[f.offset:f.offset + 4] = struct.pack("<I", len(payload) | flags)
        raw = bytes(head) + payload
        for i, byte in enumerate(raw):
            mem.write(data + (pos + i) % cap, bytes([byte]))
        return (len(payload) + hdr + 7) & ~7

    pos = cap - 24                                    # consumer; the first record wraps
    start = pos
    pos += record(pos, b"A" * 8)
    pos += record(pos, b"B" * 4, mapkinds.BPF_RINGBUF_DISCARD_BIT)
    pos += record(pos, b"C" * 8, mapkinds.BPF_RINGBUF_BUSY_BIT)
    mem.put("bpf_ringbuf", rb, mask=cap - 1, consumer_pos=start, producer_pos=pos, pending_pos=pos - 16)
    got = list(mapkinds.ringbuf_entries(mem, L, m))
    assert got[0].index == -1 and got[0].formatted["unconsumed_bytes"] == pos - start
    recs = got[1:]
    assert [(r.value, r.formatted["discarded"], r.formatted["busy"]) for r in recs] == [
        (b"A" * 8, False, False), (b"B" * 4, True, False), (b"C" * 8, False, True)]
    assert recs[2].error and "busy" in recs[2].error
    # positions further apart than the capacity: state only, records not walked
    mem.set("bpf_ringbuf", rb, "producer_pos", start + 10 * cap)
    walk = mapkinds.ringbuf_entries(mem, L, m)
    assert next(walk).index == -1
    with pytest.raises(ValueError_):
        next(walk)


def _sock(mem, L, family=2, laddr=b"\x0a\x00\x00\x01", lport=22, raddr=b"\x0a\x00\x00\x02", rport=5555):
    return mem.new("sock", {"__sk_common.skc_family": family, "__sk_common.skc_num": lport,
                            "__sk_common.skc_dport": struct.unpack("<H", struct.pack(">H", rport))[0],
                            "__sk_common.skc_rcv_saddr": struct.unpack("<I", laddr)[0],
                            "__sk_common.skc_daddr": struct.unpack("<I", raddr)[0],
                            "sk_type": 3, "sk_protocol": 768})


def test_socket_with_a_classic_filter_is_described_and_disassembled(layout):
    mem, L = Memory(layout), layout
    # tcpdump -dd 'ip and udp': ldh [12]; jeq #0x800 jt 2 jf 5; ldb [23]; jeq #17 jt 4 jf 5; ret #262144; ret #0
    code = [(0x28, 0, 0, 12), (0x15, 0, 3, 0x800), (0x30, 0, 0, 23), (0x15, 0, 1, 17),
            (0x06, 0, 0, 0x40000), (0x06, 0, 0, 0)]
    size = L.size("sock_filter")
    arr = mem.alloc(size * len(code))
    for i, (c, jt, jf, k) in enumerate(code):
        mem.put("sock_filter", arr + i * size, code=c, jt=jt, jf=jf, k=k)
    fprog = mem.new("sock_fprog_kern", len=len(code), filter=arr)
    prog = mem.new("bpf_prog", type=1, orig_prog=fprog)
    sk = _sock(mem, L)
    mem.set("sock", sk, "sk_filter", mem.new("sk_filter", prog=prog))
    info = sockets.describe_sock(mem, L, sk)
    assert info.family == "inet" and info.type == "raw" and info.protocol == "eth_p_all"
    assert info.local == "10.0.0.1:22" and info.remote == "10.0.0.2:5555"
    assert info.filter_prog == prog
    cls = sockets.classic_insns(mem, L, prog)
    assert cls.insns == code and not cls.error
    text = sockets.disasm_classic(cls.insns)
    assert text[0].split() == ["(000)", "ldh", "[12]"]
    assert text[1].split() == ["(001)", "jeq", "#0x800", "jt", "2", "jf", "5"]
    assert text[4].split() == ["(004)", "ret", "#0x40000"]


def test_reuseport_and_ebpf_filter_and_no_filter(layout):
    mem, L = Memory(layout), layout
    prog = mem.new("bpf_prog", type=21)
    sk = _sock(mem, L, lport=8080, rport=0)
    mem.set("sock", sk, "sk_reuseport_cb", mem.new("sock_reuseport", prog=prog, num_socks=4))
    info = sockets.describe_sock(mem, L, sk)
    assert info.reuseport_prog == prog and info.reuseport_socks == 4 and info.remote == ""
    assert sockets.classic_insns(mem, L, prog).insns == []
    bare = _sock(mem, L)
    assert sockets.describe_sock(mem, L, bare).filter_prog == 0


def test_sockmap_and_sockhash_members(layout):
    mem, L = Memory(layout), layout
    socks = [_sock(mem, L, lport=1000 + i) for i in range(2)]
    sks = mem.alloc(8 * 4)
    mem.u64(sks + 8 * 2, socks[0])
    base, m = _map(mem, L, "bpf_stab", "sockmap", key_size=4, value_size=4, max_entries=4, sks=sks)
    assert list(sockets.sockmap_socks(mem, L, m)) == [("2", socks[0])]
    buckets = mem.alloc(L.size("bpf_shtab_bucket") * 2)
    elem = mem.alloc(L.size("bpf_shtab_elem") + 4)
    mem.put("bpf_shtab_elem", elem, sk=socks[1])
    mem.write(elem + L.offset("bpf_shtab_elem", "key"), b"\x01\x02\x03\x04")
    mem.hlist_add_head(buckets + L.size("bpf_shtab_bucket") + L.offset("bpf_shtab_bucket", "head"),
                       elem + L.offset("bpf_shtab_elem", "node"))
    base, h = _map(mem, L, "bpf_shtab", "sockhash", key_size=4, value_size=4, max_entries=4,
                   buckets=buckets, buckets_num=2)
    assert list(sockets.sockmap_socks(mem, L, h)) == [("01020304", socks[1])]


def _zoo():
    import dumps

    root = dumps.dumps_root()
    return root is not None and (root / "x86_64/scx_sdt_zoo" / "truth.json").is_file()


@pytest.mark.skipif(not _zoo(), reason="KTSTR_DUMPS is unset or has no x86_64/scx_sdt_zoo")
def test_zoo_mapdump_walks_every_map_type_it_holds():
    import json

    import dumps
    from helpers.vol_kctx import open_kctx
    from volatility3_ktstr.views import mapdump

    truth = dumps.load_truth("x86_64/scx_sdt_zoo")
    names = [c.name for c in mapdump.GRID.columns]
    rows = [dict(zip(names, v)) for _l, v in mapdump.rows(open_kctx("x86_64/scx_sdt_zoo"))]
    not_dumped = {r["MapType"] for r in rows if "not dumped" in r["Error"] or "cannot walk" in r["Error"]}
    assert not_dumped <= {"arena", "task_storage"}, not_dumped
    by = {}
    for r in rows:
        by.setdefault(r["MapName"], []).append(r)
    lpm = [json.loads(r["Formatted"])["formatted"] for r in by["zoo_lpm"] if r["Index"] >= 0]
    assert lpm and all(f["value"]["prefixlen"] == f["key"]["prefixlen"] for f in lpm)
    queue = [r for r in by["zoo_queue"] if r["Index"] >= 0]
    assert 0 < len(queue) <= 8
    progs = {p["name"]: p["id"] for p in truth["progs"]}
    maps = {m["name"]: m["id"] for m in truth["maps"]}
    jmp = [json.loads(r["Formatted"])["formatted"]["value"] for r in by["zoo_jmp"] if r["Index"] >= 0]
    assert [(j["prog_id"], j["prog"]) for j in jmp] == [(progs["zoo_tail"], "zoo_tail")]
    outer = {json.loads(r["Formatted"])["formatted"]["value"]["map_id"] for r in by["zoo_outer"] if r["Index"] >= 0}
    assert outer == {maps["zoo_inner_a"], maps["zoo_inner_b"]}
    rb = by["zoo_rb"]
    state = json.loads(rb[0]["Formatted"])["formatted"]["value"]
    recs = [r for r in rb if r["Index"] >= 0]
    assert state["consumer_pos"] <= state["producer_pos"] and recs
    assert all(not r["Error"] for r in recs)


def _cgroup_storage(mem, L, type_name, elements, key_size=16, value_size=8, per_cpu=0):
    """A bpf_cgroup_storage_map with ``elements`` [(cgroup id, attach type, value bytes or
    [bytes per CPU])] on its list; ``per_cpu``: the per-CPU stride (percpu maps)."""
    base, m = _map(mem, L, "bpf_cgroup_storage_map", type_name, key_size=key_size,
                   value_size=value_size, max_entries=0)
    head = mem.list_init(base + L.offset("bpf_cgroup_storage_map", "list"))
    nodes = []
    for cg, atype, value in elements:
        st = mem.new("bpf_cgroup_storage", {"key.cgroup_inode_id": cg, "key.attach_type": atype})
        if per_cpu:
            pbuf = mem.alloc(per_cpu * len(value))
            for cpu, v in enumerate(value):
                mem.write(pbuf + cpu * per_cpu, v)
            mem.set("bpf_cgroup_storage", st, "percpu_buf", pbuf)
        else:
            buf = mem.alloc(L.size("bpf_storage_buffer") + value_size)
            mem.write(buf + L.offset("bpf_storage_buffer", "data"), value)
            mem.set("bpf_cgroup_storage", st, "buf", buf)
        mem.list_add_tail(head, st + L.offset("bpf_cgroup_storage", "list_map"))
        nodes.append(st)
    return m, nodes


def test_cgroup_storage_elements_keyed_by_cgroup_and_attach_type(layout):
    mem, L = Memory(layout), layout
    m, _ = _cgroup_storage(mem, L, "cgroup_storage", [(0x1234, 2, struct.pack("<Q", 7)),
                                                      (0x99, 0, struct.pack("<Q", 1 << 40))])
    info = WalkInfo()
    got = list(mapkinds.cgroup_storage_entries(mem, L, m, info=info))
    assert [(e.key, e.value) for e in got] == [
        (struct.pack("<QI", 0x1234, 2) + bytes(4), struct.pack("<Q", 7)),
        (struct.pack("<QI", 0x99, 0) + bytes(4), struct.pack("<Q", 1 << 40))]
    assert info.shown == 2 and not info.skipped
    # a map keyed by the cgroup id alone (key_size 8)
    m8, _ = _cgroup_storage(mem, L, "cgroup_storage", [(0x55, 1, b"\1" * 8)], key_size=8)
    assert [e.key for e in mapkinds.cgroup_storage_entries(mem, L, m8)] == [struct.pack("<Q", 0x55)]


def test_percpu_cgroup_storage_reads_every_cpu(layout):
    mem, L = Memory(layout), layout
    m, _ = _cgroup_storage(mem, L, "percpu_cgroup_storage",
                           [(0x77, 1, [struct.pack("<I", 1), struct.pack("<I", 2)])],
                           value_size=4, per_cpu=64)
    got = list(mapkinds.cgroup_storage_entries(mem, L, m, offsets=[0, 64]))
    assert [(e.key[:8], e.percpu) for e in got] == [
        (struct.pack("<Q", 0x77), [(0, struct.pack("<I", 1)), (1, struct.pack("<I", 2))])]
    with pytest.raises(ValueError_):
        list(mapkinds.cgroup_storage_entries(mem, L, m, offsets=None))


def test_cgroup_storage_damage_is_skipped_and_said(layout):
    mem, L = Memory(layout), layout
    m, nodes = _cgroup_storage(mem, L, "cgroup_storage", [(1, 0, b"a" * 8), (2, 0, b"b" * 8), (3, 0, b"c" * 8)])
    mem.set("bpf_cgroup_storage", nodes[1], "buf", mem.hole())         # a value gone
    link = nodes[2] + L.offset("bpf_cgroup_storage", "list_map")
    mem.set("list_head", link, "next", link)                           # a cycle after the third
    info = WalkInfo()
    got = list(mapkinds.cgroup_storage_entries(mem, L, m, info=info))
    assert [e.value for e in got] == [b"a" * 8, None, b"c" * 8]
    assert "unreadable" in got[1].error
    assert any("cycle" in reason for _, reason in info.skipped)


def test_reuseport_sockarray_slots_hold_sockets(layout):
    mem, L = Memory(layout), layout
    base, m = _map(mem, L, "reuseport_array", "reuseport_sockarray", key_size=4, value_size=8,
                   max_entries=4, extra=8 * 4)
    socks = {}
    for slot, port in ((0, 8080), (3, 8081)):
        sk = mem.new("sock", {"__sk_common.skc_family": 2, "__sk_common.skc_num": port,
                              "__sk_common.skc_cookie.counter": 0x100 + slot})
        mem.u64(base + L.offset("reuseport_array", "ptrs") + 8 * slot, sk)
        socks[slot] = sk
    seen = []

    def describe(sk):
        seen.append(sk)
        return {"owner": f"pid {sk & 0xff}", "text": "described"}

    info = WalkInfo()
    got = list(mapkinds.reuseport_entries(mem, L, m, info=info, describe=describe))
    assert [(e.index, e.kva, e.value, e.text) for e in got] == [
        (0, socks[0], struct.pack("<Q", 0x100), "described"),
        (3, socks[3], struct.pack("<Q", 0x103), "described")]
    assert "text" not in got[0].formatted and got[0].formatted["owner"] == f"pid {socks[0] & 0xff}"
    assert seen == [socks[0], socks[3]] and info.shown == 2
    # a socket that cannot be read: the slot still shows, with the reason
    mem.u64(base + L.offset("reuseport_array", "ptrs") + 8, mem.hole())
    got = list(mapkinds.reuseport_entries(mem, L, m, describe=describe))
    assert [e.index for e in got] == [0, 1, 3] and "unreadable" in got[1].formatted["error"]


def test_mapdump_dumps_legacy_cgroup_storage_and_leaves_only_local_storage_and_arenas():
    """Through the view (mapdump.rows on a synthetic kernel): the map's element row, not "not
    dumped"; and the only types mapdump declines are local storage and arenas (own plugins)."""
    from helpers.bpfworld import World
    from volatility3_ktstr.views import mapdump

    w = World()
    L, mem = w.L, w.mem
    base = mem.new("bpf_cgroup_storage_map", map__map_type=dict(w.enum("bpf_map_type"))["BPF_MAP_TYPE_CGROUP_STORAGE"],
                   map__id=7, map__name="cg_store", map__key_size=16, map__value_size=8)
    head = mem.list_init(base + L.offset("bpf_cgroup_storage_map", "list"))
    st = mem.new("bpf_cgroup_storage", {"key.cgroup_inode_id": 0x1234, "key.attach_type": 2})
    buf = mem.alloc(L.size("bpf_storage_buffer") + 8)
    mem.write(buf + L.offset("bpf_storage_buffer", "data"), struct.pack("<Q", 42))
    mem.set("bpf_cgroup_storage", st, "buf", buf)
    mem.list_add_tail(head, st + L.offset("bpf_cgroup_storage", "list_map"))
    w.register("map_idr", 7, base + L.offset("bpf_cgroup_storage_map", "map"))
    w.handed_out["map_idr"] = 8
    rows = [r for _, r in mapdump.rows(w.kctx())]
    assert [(r[0], r[2], r[3], r[5], r[6], r[8]) for r in rows] == [
        (7, "cgroup_storage", 0, "34 12 00 00 00 00 00 00 02 00 00 00 00 00 00 00",
         "2a 00 00 00 00 00 00 00", "")]
    declined = {t for t in mapdump.NOT_WALKED if t not in mapkinds.WALKERS}
    assert declined == {"task_storage", "inode_storage", "sk_storage", "cgrp_storage", "arena"}


RHASH_DECLS = DECLS + """
struct rhtab_elem { struct rhash_head node; u64 data[0]; };
struct bpf_rhtab { struct bpf_map map; struct rhashtable ht; u32 elem_size; };
struct bpf_insn_array_value { u32 orig_off; u32 xlated_off; u32 jitted_off; };
struct bpf_insn_array { struct bpf_map map; u32 used; long *ips; struct bpf_insn_array_value values[0]; };
"""


def test_rhash_elements_and_insn_array_values():
    L = SynthKernel(RHASH_DECLS).layout
    mem = Memory(L)
    base, m = _map(mem, L, "bpf_rhtab", "rhash", key_size=4, value_size=8)
    tbl = mem.alloc(L.size("bucket_table") + 8 * 4)
    mem.put("bucket_table", tbl, size=4)
    elems = []
    for i, (k, v) in enumerate(((1, 100), (2, 200), (6, 600))):
        e = mem.alloc(L.size("rhtab_elem") + 16)
        mem.write(e + L.offset("rhtab_elem", "data"), struct.pack("<I", k) + bytes(4) + struct.pack("<Q", v))
        elems.append(e)
    # bucket 1: elems 0 -> 2 (the chain ends in an odd "nulls" marker); bucket 2: elem 1
    node = lambda e: e + L.offset("rhtab_elem", "node")          # noqa: E731
    mem.u64(tbl + L.offset("bucket_table", "buckets") + 8, node(elems[0]))
    mem.set("rhash_head", node(elems[0]), "next", node(elems[2]))
    mem.set("rhash_head", node(elems[2]), "next", 1)
    mem.set("rhash_head", node(elems[1]), "next", 1)
    mem.u64(tbl + L.offset("bucket_table", "buckets") + 16, node(elems[1]))
    for b in (0, 3):
        mem.u64(tbl + L.offset("bucket_table", "buckets") + 8 * b, 1)
    mem.set("bpf_rhtab", base, "ht.tbl", tbl)
    info = WalkInfo()
    got = list(mapkinds.rhash_entries(mem, L, m, info=info))
    assert sorted((e.key, e.value) for e in got) == [
        (struct.pack("<I", k), struct.pack("<Q", v)) for k, v in ((1, 100), (2, 200), (6, 600))]
    assert info.shown == 3 and not info.skipped
    base, m = _map(mem, L, "bpf_insn_array", "insn_array", key_size=4, value_size=12, max_entries=2,
                   extra=2 * L.size("bpf_insn_array_value"))
    ips = mem.alloc(16)
    mem.u64(ips, 0xFFFFFFFFA0001000)
    mem.u64(ips + 8, 0xFFFFFFFFA0001040)
    mem.set("bpf_insn_array", base, "ips", ips)
    at = base + L.offset("bpf_insn_array", "values")
    for i, (o, x, j) in enumerate(((3, 5, 0x20), (9, 12, 0x58))):
        mem.put("bpf_insn_array_value", at + i * L.size("bpf_insn_array_value"), orig_off=o, xlated_off=x, jitted_off=j)
    got = list(mapkinds.insn_array_entries(mem, L, m))
    assert [e.formatted for e in got] == [
        {"key": 0, "orig_off": 3, "xlated_off": 5, "jitted_off": 0x20, "ip": "0xffffffffa0001000"},
        {"key": 1, "orig_off": 9, "xlated_off": 12, "jitted_off": 0x58, "ip": "0xffffffffa0001040"}]
