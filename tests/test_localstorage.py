"""BPF local storage walker and owner naming on synthetic memory.

Every test runs on two layouts: a small hand-made BTF whose offsets differ from the kernel's
(``map_node`` not at 0, the bucket list not at 0, a 24-byte bucket stride, the old
``kernfs_node.parent`` name, ``pid`` after ``tgid``), and the real x86-64 kernel BTF of the dumps
(skipped without KTSTR_DUMPS). :class:`Synth` builds guest memory with offsets from the layout
only, so the tests also check that the walker hard-codes nothing.
"""

import ipaddress

import pytest

from btfbuilder import CHAR, BtfBuilder
from volatility3_ktstr.btf import Btf
from volatility3_ktstr.core import BtfLayout, Field, Layout, LayoutError, ReadError, Reader
from volatility3_ktstr.walkers import localstorage as ls
from volatility3_ktstr.walkers.owners import OwnerResolver

BASE = 0xFFFF_8880_0000_0000
UNMAPPED = 0xFFFF_DEAD_0000_0000


def handmade_btf() -> Btf:
    b = BtfBuilder()
    u8, u16, u32, u64 = (b.int(n, s) for n, s in (("u8", 1), ("u16", 2), ("u32", 4), ("u64", 8)))
    s32 = b.int("int", 4, signed=True)
    char = b.int("char", 1, encoding=CHAR)
    ptr = b.ptr(0)

    def arr(t, n):
        return b.array(t, u32, n)

    def st(name, size, members, union=False):
        ms = [(n, t, off * 8) for n, t, off in members]
        return b.union(name, size, ms) if union else b.struct(name, size, ms)

    hnode = st("hlist_node", 16, [("next", ptr, 0), ("pprev", ptr, 8)])
    hhead = st("hlist_head", 8, [("first", ptr, 0)])
    st("bpf_local_storage_map", 200, [("pad", arr(u8, 160), 0), ("bucket_log", u32, 168),
                                      ("buckets", ptr, 176)])
    st("bpf_local_storage_map_bucket", 24, [("lock", u64, 0), ("list", hhead, 8), ("pad", u64, 16)])
    sdata = st("bpf_local_storage_data", 16, [("smap", ptr, 0), ("pad", u64, 8),
                                              ("data", arr(u8, 0), 16)])
    st("bpf_local_storage_elem", 160, [("state", u32, 0), ("snode", hnode, 8), ("map_node", hnode, 24),
                                       ("local_storage", ptr, 48), ("sdata", sdata, 128)])
    st("bpf_local_storage", 64, [("list", hhead, 0), ("lock", u64, 8), ("owner", ptr, 40)])
    st("task_struct", 256, [("flags", u32, 0), ("bpf_storage", ptr, 16), ("comm", arr(char, 16), 64),
                            ("tgid", s32, 100), ("pid", s32, 120)])
    st("kernfs_node", 64, [("parent", ptr, 8), ("id", u64, 16), ("name", ptr, 32)])
    st("cgroup", 128, [("bpf_cgrp_storage", ptr, 8), ("kn", ptr, 64)])
    qstr = st("qstr", 16, [("hash_len", u64, 0), ("name", ptr, 8)])
    st("dentry", 96, [("d_parent", ptr, 8), ("d_name", qstr, 16), ("d_alias", hnode, 48)])
    st("file_system_type", 32, [("fs_flags", u32, 0), ("name", ptr, 16)])
    st("super_block", 96, [("s_type", ptr, 8), ("s_id", arr(char, 32), 40)])
    dentry_u = st("", 8, [("i_dentry", hhead, 0), ("i_rcu", u64, 0)], union=True)
    st("inode", 128, [("i_sb", ptr, 8), ("i_ino", u64, 24), ("", dentry_u, 64)])
    addrs = st("", 8, [("skc_daddr", u32, 0), ("skc_rcv_saddr", u32, 4)])
    addr_u = st("", 8, [("skc_addrpair", u64, 0), ("", addrs, 0)], union=True)
    ports = st("", 4, [("skc_dport", u16, 0), ("skc_num", u16, 2)])
    port_u = st("", 4, [("skc_portpair", u32, 0), ("", ports, 0)], union=True)
    in6 = st("in6_addr", 16, [("u6_addr8", arr(u8, 16), 0)])
    common = st("sock_common", 80, [("", addr_u, 0), ("", port_u, 12), ("skc_family", u16, 16),
                                    ("skc_state", u8, 18), ("skc_v6_daddr", in6, 24),
                                    ("skc_v6_rcv_saddr", in6, 40)])
    st("sock", 160, [("__sk_common", common, 0), ("sk_protocol", u16, 100), ("sk_type", u16, 102),
                     ("sk_bpf_storage", ptr, 120)])
    return Btf.parse(b.build(), source="handmade")


class Synth:
    """Guest memory built from a layout: maps, elements, owners. ``reader(holes)`` unmaps ranges."""

    def __init__(self, layout, size=4 << 20):
        self.L = layout
        self.offs = ls.LocalStorageOffsets.from_layout(layout)
        self.mem = bytearray(size)
        self.top = BASE + 0x1000

    def alloc(self, size, align=64):
        a = (self.top + align - 1) & ~(align - 1)
        self.top = a + max(size, 1)
        assert self.top <= BASE + len(self.mem), "synthetic memory full"
        return a

    def write(self, addr, data):
        self.mem[addr - BASE:addr - BASE + len(data)] = data

    def wint(self, addr, value, width=8):
        self.write(addr, (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little"))

    def rint(self, addr, width=8):
        return int.from_bytes(self.mem[addr - BASE:addr - BASE + width], "little")

    def field(self, kva, struct, path, value, width=8):
        off = self.L.offset(struct, path)
        if isinstance(value, bytes):
            self.write(kva + off, value)
        else:
            self.wint(kva + off, value, width)

    def string(self, s):
        a = self.alloc(len(s) + 1, 8)
        self.write(a, s.encode() + b"\0")
        return a

    def reader(self, holes=()):
        """A live view (later writes show) with ``holes`` [(addr, size)] unmapped."""
        return _SynthReader(self, holes)

    # --- local storage ---------------------------------------------------------------------

    def smap(self, log, buckets=True):
        m = self.alloc(self.L.size("bpf_local_storage_map"))
        self.field(m, "bpf_local_storage_map", "bucket_log", log, 4)
        if buckets:
            b = self.alloc((1 << log) * self.offs.bucket_size)
            self.field(m, "bpf_local_storage_map", "buckets", b)
        return m

    def buckets(self, smap):
        return self.rint(smap + self.offs.smap_buckets)

    def bucket_head(self, smap, index):
        return self.buckets(smap) + index * self.offs.bucket_size + self.offs.bucket_first

    def storage(self, owner):
        s = self.alloc(self.L.size("bpf_local_storage"))
        self.field(s, "bpf_local_storage", "owner", owner)
        return s

    def elem(self, smap, bucket, storage, value, at=None):
        """Push an element on the front of ``bucket``'s chain; ``at`` places it explicitly."""
        o = self.offs
        e = at if at is not None else self.alloc(o.value + len(value))
        self.wint(e + o.elem_local_storage, storage)
        self.wint(e + o.elem_smap, smap)
        self.write(e + o.value, value)
        head = self.bucket_head(smap, bucket)
        self.wint(e + o.map_node + o.node_next, self.rint(head))
        self.wint(head, e + o.map_node)
        return e

    def set_next(self, elem, target_node):
        self.wint(elem + self.offs.map_node + self.offs.node_next, target_node)

    # --- owners ----------------------------------------------------------------------------

    def task(self, pid, tgid, comm, storage=0):
        t = self.alloc(self.L.size("task_struct"))
        self.field(t, "task_struct", "pid", pid, 4)
        self.field(t, "task_struct", "tgid", tgid, 4)
        self.field(t, "task_struct", "comm", comm.encode()[:15])
        if storage and self.L.has("task_struct", "bpf_storage"):
            self.field(t, "task_struct", "bpf_storage", storage)
        return t

    def kernfs(self, name, kid, parent):
        parent_member = "__parent" if self.L.has("kernfs_node", "__parent") else "parent"
        kn = self.alloc(self.L.size("kernfs_node"))
        self.field(kn, "kernfs_node", parent_member, parent)
        self.field(kn, "kernfs_node", "id", kid)
        self.field(kn, "kernfs_node", "name", self.string(name))
        return kn

    def cgroup(self, kn):
        c = self.alloc(self.L.size("cgroup"))
        self.field(c, "cgroup", "kn", kn)
        return c

    def inode(self, ino, fstype, sid, path):
        fs = self.alloc(self.L.size("file_system_type"))
        self.field(fs, "file_system_type", "name", self.string(fstype))
        sb = self.alloc(self.L.size("super_block"))
        self.field(sb, "super_block", "s_type", fs)
        self.field(sb, "super_block", "s_id", sid.encode())
        ino_kva = self.alloc(self.L.size("inode"))
        self.field(ino_kva, "inode", "i_ino", ino)
        self.field(ino_kva, "inode", "i_sb", sb)
        if path is not None:
            parent = self.alloc(self.L.size("dentry"))   # the root dentry is its own parent
            self.field(parent, "dentry", "d_parent", parent)
            self.field(parent, "dentry", "d_name.name", self.string("/"))
            d = parent
            for part in [p for p in path.split("/") if p]:
                d = self.alloc(self.L.size("dentry"))
                self.field(d, "dentry", "d_parent", parent)
                self.field(d, "dentry", "d_name.name", self.string(part))
                parent = d
            self.field(ino_kva, "inode", "i_dentry", d + self.L.offset("dentry", "d_alias"))
        return ino_kva

    def sock(self, family, proto, stype, saddr, sport, daddr, dport, state):
        s = self.alloc(self.L.size("sock"))
        c = s + self.L.offset("sock", "__sk_common")
        self.field(c, "sock_common", "skc_family", family, 2)
        self.field(c, "sock_common", "skc_state", state, 1)
        self.field(c, "sock_common", "skc_num", sport, 2)
        self.field(c, "sock_common", "skc_dport", dport.to_bytes(2, "big"))
        if family == 10:
            self.field(c, "sock_common", "skc_v6_rcv_saddr", ipaddress.IPv6Address(saddr).packed)
            self.field(c, "sock_common", "skc_v6_daddr", ipaddress.IPv6Address(daddr).packed)
        else:
            self.field(c, "sock_common", "skc_rcv_saddr", ipaddress.IPv4Address(saddr).packed)
            self.field(c, "sock_common", "skc_daddr", ipaddress.IPv4Address(daddr).packed)
        self.field(s, "sock", "sk_protocol", proto, 2)
        self.field(s, "sock", "sk_type", stype, 2)
        return s


class _SynthReader(Reader):
    def __init__(self, syn, holes):
        self.mem, self.holes = syn.mem, list(holes)

    def read(self, addr, size):
        start = addr - BASE
        if start < 0 or start + size > len(self.mem) or size < 0:
            raise ReadError(addr, size, "unmapped")
        for h, n in self.holes:
            if addr < h + n and h < addr + size:
                raise ReadError(addr, size, f"unmapped at {max(h, addr):#x}")
        return bytes(self.mem[start:start + size])


@pytest.fixture(scope="module")
def handmade_layout():
    return BtfLayout(handmade_btf())


@pytest.fixture(params=["handmade", "kernel"])
def layout(request, handmade_layout):
    if request.param == "handmade":
        return handmade_layout
    return BtfLayout(request.getfixturevalue("amd64_kernel_btf"))


def walk(syn, smap, value_size, reader=None, budget=None):
    stats = ls.WalkStats()
    elems = list(ls.walk(reader or syn.reader(), syn.offs, smap, value_size, stats, budget))
    return elems, stats


def val(i, n=24):
    return bytes([i & 0xFF]) * n


# --- offsets ---------------------------------------------------------------------------------


def test_offsets_come_from_the_layout(handmade_layout):
    o = ls.LocalStorageOffsets.from_layout(handmade_layout)
    assert (o.map_node, o.bucket_size, o.bucket_first, o.elem_local_storage) == (24, 24, 8, 48)
    assert (o.value, o.elem_smap, o.ls_owner, o.smap_buckets, o.smap_bucket_log) == (144, 128, 40, 176, 168)


def test_kernel_offsets(amd64_kernel_btf):
    k = BtfLayout(amd64_kernel_btf)
    o = ls.LocalStorageOffsets.from_layout(k)
    assert o.map_node == 0
    assert o.bucket_size == k.size("bpf_local_storage_map_bucket")
    assert o.value == k.offset("bpf_local_storage_elem", "sdata") + k.offset("bpf_local_storage_data", "data")


class _DictLayout(Layout):
    def __init__(self, sizes, offsets):
        super().__init__()
        self.sizes, self.offs = sizes, offsets

    def _size(self, s):
        if s not in self.sizes:
            raise LayoutError(f"type 'struct {s}' is not in the BTF")
        return self.sizes[s]

    def _field(self, s, p):
        if (s, p) not in self.offs:
            raise LayoutError(f"type 'struct {s}' has no member '{p}'")
        return Field(self.offs[(s, p)], 8)


def test_missing_member_is_a_one_line_layout_error():
    with pytest.raises(LayoutError) as e:
        ls.LocalStorageOffsets.from_layout(_DictLayout({}, {}))
    assert "local storage" in str(e.value) and "bpf_local_storage" in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_owner_type_names_it_per_owner(layout):
    syn = Synth(layout)
    r = OwnerResolver(syn.reader(), _DictLayout({}, {}))
    o = r.resolve("task", syn.task(5, 5, "x"))
    assert o.pid is None and "task_struct" in o.error
    assert "unresolved" not in o.describe() and "task_struct" in o.describe()


# --- the walk --------------------------------------------------------------------------------


def test_empty_map(layout):
    syn = Synth(layout)
    m = syn.smap(3)
    elems, st = walk(syn, m, 24)
    assert elems == [] and st.buckets == 8 and st.complete
    assert st.summary() == "0 elements in 8 buckets"


def test_chains_and_buckets(layout):
    syn = Synth(layout)
    m = syn.smap(2)
    made = {}
    for i, bucket in enumerate([0, 0, 0, 2, 3]):
        t = syn.task(100 + i, 100, f"t{i}")
        s = syn.storage(t)
        made[syn.elem(m, bucket, s, val(i))] = (bucket, s, t, val(i))
    elems, st = walk(syn, m, 24)
    assert st.complete and st.elements == 5 and st.buckets == 4
    got = {e.kva: (e.bucket, e.storage, e.owner, e.value) for e in elems}
    assert got == made
    assert all(e.smap == m and e.owner_error is None for e in elems)
    # a chain is walked from its head: the last pushed element comes first
    assert [e.value[0] for e in elems[:3]] == [2, 1, 0]


def test_value_size_zero_and_large(layout):
    syn = Synth(layout)
    m = syn.smap(0)
    big = bytes(range(256)) * 20
    syn.elem(m, 0, syn.storage(syn.task(1, 1, "a")), big)
    elems, st = walk(syn, m, len(big))
    assert elems[0].value == big
    elems, st = walk(syn, m, 0)
    assert elems[0].value == b"" and st.complete


def test_null_and_unreadable_local_storage(layout):
    syn = Synth(layout)
    m = syn.smap(1)
    syn.elem(m, 0, 0, val(1))
    syn.elem(m, 1, UNMAPPED, val(2))
    syn.elem(m, 1, syn.storage(0), val(3))
    elems, st = walk(syn, m, 24)
    assert st.elements == 3 and st.complete
    by = {e.value[0]: e for e in elems}
    assert by[1].owner == 0 and "NULL" in by[1].owner_error
    assert by[2].owner == 0 and "unreadable" in by[2].owner_error
    assert by[3].owner == 0 and "owner is NULL" in by[3].owner_error


def test_shared_storage_is_read_once(layout):
    syn = Synth(layout)
    m = syn.smap(1)
    t = syn.task(7, 7, "a")
    s = syn.storage(t)
    syn.elem(m, 0, s, val(1))
    syn.elem(m, 1, s, val(2))
    elems, _ = walk(syn, m, 24)
    assert [e.owner for e in elems] == [t, t]


def test_cycle_is_cut(layout):
    syn = Synth(layout)
    m = syn.smap(0)
    a = syn.elem(m, 0, 0, val(1))
    b = syn.elem(m, 0, 0, val(2))
    c = syn.elem(m, 0, 0, val(3))   # chain c -> b -> a
    syn.set_next(a, b + syn.offs.map_node)   # a -> b again: a loop
    elems, st = walk(syn, m, 24)
    assert [e.kva for e in elems] == [c, b, a]
    assert st.cycles == 1 and not st.complete
    assert "cycle" in st.damage.items[0].reason and "1 chains cut at a cycle" in st.summary()


def test_self_loop(layout):
    syn = Synth(layout)
    m = syn.smap(0)
    a = syn.elem(m, 0, 0, val(1))
    syn.set_next(a, a + syn.offs.map_node)
    elems, st = walk(syn, m, 24)
    assert len(elems) == 1 and st.cycles == 1


def test_unreadable_element_ends_its_chain_only(layout):
    syn = Synth(layout)
    m = syn.smap(1)
    a = syn.elem(m, 0, 0, val(1))
    syn.set_next(a, UNMAPPED)
    syn.elem(m, 0, 0, val(2))
    syn.elem(m, 1, 0, val(3))
    elems, st = walk(syn, m, 24)
    assert sorted(e.value[0] for e in elems) == [1, 2, 3]
    assert st.chains_broken == 1 and st.damage.items[0].addr == UNMAPPED - syn.offs.map_node
    assert "1 chains broken" in st.summary()


def test_unreadable_bucket_is_skipped(layout):
    syn = Synth(layout)
    m = syn.smap(2)
    for b in range(4):
        syn.elem(m, b, 0, val(b))
    hole = syn.bucket_head(m, 1)
    elems, st = walk(syn, m, 24, reader=syn.reader(holes=[(hole, 8)]))
    assert sorted(e.value[0] for e in elems) == [0, 2, 3]
    assert st.buckets_skipped == 1 and st.buckets == 3
    assert "bucket 1" in st.damage.items[0].reason


def test_short_value_drops_the_element_and_keeps_the_chain(layout):
    syn = Synth(layout)
    m = syn.smap(0)
    syn.elem(m, 0, 0, val(1))
    b = syn.elem(m, 0, 0, val(2))
    syn.elem(m, 0, 0, val(3))
    hole = b + syn.offs.value + 20   # the last 4 value bytes of b are unmapped
    elems, st = walk(syn, m, 24, reader=syn.reader(holes=[(hole, 4)]))
    assert [e.value[0] for e in elems] == [3, 1]
    assert st.dropped_short == 1 and st.damage.items[0].addr == b


@pytest.mark.parametrize("log, ok", [(0, True), (16, True), (17, False), (31, False), (32, False),
                                     (0xFFFFFFFF, False)])
def test_bucket_log_limits(handmade_layout, log, ok):
    syn = Synth(handmade_layout, size=(4 << 20) if log > 16 else (8 << 20))
    m = syn.smap(log, buckets=ok)
    if not ok:   # a non-NULL buckets pointer, so the bound is what rejects the map
        syn.field(m, "bpf_local_storage_map", "buckets", BASE + 0x1000)
    elems, st = walk(syn, m, 8)
    assert elems == []
    if ok:
        assert st.rejected is None and st.buckets == 1 << log
    else:
        assert f"bucket_log {log}" in st.rejected and st.buckets == 0
        assert st.summary().startswith("not walked")


def test_map_level_rejections(layout):
    syn = Synth(layout)
    m = syn.smap(2, buckets=False)
    assert "NULL" in walk(syn, m, 8)[1].rejected
    assert "unreadable" in walk(syn, UNMAPPED, 8)[1].rejected
    assert "value_size" in walk(syn, syn.smap(1), ls.MAX_VALUE_SIZE + 1)[1].rejected


def test_visit_budget_is_shared_and_reported(layout):
    syn = Synth(layout)
    m1, m2 = syn.smap(1), syn.smap(1)
    for i in range(4):
        syn.elem(m1, i % 2, 0, val(i))
        syn.elem(m2, i % 2, 0, val(i))
    budget = ls.VisitBudget(6)
    e1, s1 = walk(syn, m1, 24, budget=budget)
    e2, s2 = walk(syn, m2, 24, budget=budget)
    assert len(e1) == 4 and s1.complete
    assert len(e2) == 2 and s2.visit_cap_hit and "visit limit" in s2.summary()


def test_element_of_another_map_is_flagged(layout):
    syn = Synth(layout)
    m = syn.smap(0)
    e = syn.elem(m, 0, 0, val(1))
    syn.wint(e + syn.offs.elem_smap, BASE + 8)
    elems, st = walk(syn, m, 24)
    assert len(elems) == 1 and st.smap_mismatch == 1 and "another map" in st.summary()


def test_problem_list_is_bounded(handmade_layout, monkeypatch):
    monkeypatch.setattr(ls, "MAX_PROBLEMS", 3)
    syn = Synth(handmade_layout)
    m = syn.smap(3)
    for b in range(8):
        syn.set_next(syn.elem(m, b, 0, val(b)), UNMAPPED)
    elems, st = walk(syn, m, 24)
    assert len(elems) == 8 and st.chains_broken == 8
    assert len(st.damage.items) == 3 and st.damage.dropped == 5


def test_walk_map_helper(layout):
    syn = Synth(layout)
    m = syn.smap(1)
    syn.elem(m, 1, 0, val(9))
    elems, st = ls.walk_map(syn.reader(), layout, m, 24)
    assert len(elems) == 1 and st.elements == 1


# --- owners ----------------------------------------------------------------------------------


def test_task_owner(layout):
    syn = Synth(layout)
    s_placeholder = BASE + 0x10
    t = syn.task(4242, 4240, "worker-thread-with-long-name", storage=s_placeholder)
    r = OwnerResolver(syn.reader(), layout)
    o = r.resolve("task", t, s_placeholder)
    assert (o.pid, o.tgid, o.comm, o.error, o.note) == (4242, 4240, "worker-thread-w", None, None)
    assert o.describe() == "worker-thread-w (pid 4242, tgid 4240)"
    o2 = r.resolve("task", t, BASE + 0x20)
    assert o2.pid == 4242 and "not" in o2.note      # no back pointer to this storage


def test_task_owner_bad_memory(layout):
    syn = Synth(layout)
    bad = syn.task(-5, 1, "x")
    r = OwnerResolver(syn.reader(), layout)
    assert "unreadable" in r.resolve("task", UNMAPPED).error
    assert "NULL" in r.resolve("task", 0).error
    assert "implausible" in r.resolve("task", bad).error
    assert "unknown owner kind" in r.resolve("queue", bad).error


def test_cgroup_owner(layout):
    syn = Synth(layout)
    root = syn.kernfs("", 1, 0)
    lab = syn.kernfs("lab", 28, root)
    batch = syn.kernfs("batch", 141, lab)
    r = OwnerResolver(syn.reader(), layout)
    o = r.resolve("cgroup", syn.cgroup(batch))
    assert (o.name, o.ident, o.error) == ("/lab/batch", 141, None)
    assert o.describe() == "/lab/batch (id 141)"
    o = r.resolve("cgroup", syn.cgroup(root))
    assert (o.name, o.ident) == ("/", 1)


def test_cgroup_owner_loops_and_bad_memory(layout):
    syn = Synth(layout)
    parent_member = "__parent" if layout.has("kernfs_node", "__parent") else "parent"
    a = syn.kernfs("a", 5, 0)
    b = syn.kernfs("b", 6, a)
    syn.field(a, "kernfs_node", parent_member, b)   # a <-> b
    r = OwnerResolver(syn.reader(), layout)
    o = r.resolve("cgroup", syn.cgroup(b))
    assert "loops" in o.error and o.ident == 6
    deep = syn.kernfs("", 1, 0)
    for i in range(100):
        deep = syn.kernfs(f"d{i}", 10 + i, deep)
    o = r.resolve("cgroup", syn.cgroup(deep))
    assert o.name.startswith("/.../") and o.name.endswith("/d99") and len(o.name) < 400
    assert "NULL" in r.resolve("cgroup", syn.cgroup(0)).error
    c = syn.cgroup(UNMAPPED)
    assert "unreadable" in r.resolve("cgroup", c).error


def test_inode_owner(layout):
    syn = Synth(layout)
    r = OwnerResolver(syn.reader(), layout)
    o = r.resolve("inode", syn.inode(1234, "ext4", "vda1", "/etc/passwd"))
    assert o.ident == 1234 and o.name == "/etc/passwd on ext4 (vda1)"
    assert o.describe() == "ino 1234 /etc/passwd on ext4 (vda1)"
    o = r.resolve("inode", syn.inode(99, "pipefs", "", None))
    assert o.ident == 99 and o.name == "on pipefs"


def test_socket_owner(layout):
    syn = Synth(layout)
    r = OwnerResolver(syn.reader(), layout)
    o = r.resolve("socket", syn.sock(2, 6, 1, "10.0.2.15", 22, "10.0.2.2", 51234, 1))
    assert o.name == "tcp 10.0.2.15:22 -> 10.0.2.2:51234 ESTABLISHED"
    o = r.resolve("socket", syn.sock(10, 17, 2, "fe80::1", 53, "::", 0, 7))
    assert o.name == "udp6 [fe80::1]:53 -> [::]:0"
    o = r.resolve("socket", syn.sock(1, 0, 1, "0.0.0.0", 0, "0.0.0.0", 0, 0))
    assert o.name == "unix stream"
    assert "unreadable" in r.resolve("socket", UNMAPPED).error
