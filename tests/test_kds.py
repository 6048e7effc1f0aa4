"""kds generators on synthetic kernels laid out with padding (no member at its kernel offset),
plus the real kernel BTF when present: order, bounds, cycles, NULL links, unreadable nodes."""

import pytest

from helpers.synth import MINI_KERNEL, SynthKernel
from volatility3_ktstr import kds
from volatility3_ktstr.core import BtfLayout, ReadError, Reader, Record

DECLS = MINI_KERNEL + """
struct item { int id; struct list_head link; struct hlist_node hnode; struct rb_node rb;
              struct rhash_head rh; struct item *parent; u32 flags : 3; s16 delta; char name[8]; };
"""


@pytest.fixture(params=[8, 0], ids=["padded", "natural"])
def k(request):
    return SynthKernel(DECLS, pad=request.param)


def items(k, mem, n):
    return [mem.new("item", id=i, name=f"i{i}") for i in range(n)]


def ids(k, mem, addrs):
    return [Record(mem, k.layout, "item", a).int("id") for a in addrs]


# --- list_head ---------------------------------------------------------------------------------


def test_list_entries_in_order(k):
    mem = k.memory()
    head = mem.list_init(mem.alloc("list_head"))
    objs = items(k, mem, 5)
    for o in objs:
        mem.list_add_tail(head, o + k.layout.offset("item", "link"))
    damage = kds.DamageLog()
    got = list(kds.list_entries(mem, k.layout, head, "item", "link", damage=damage))
    assert got == objs and not damage
    assert ids(k, mem, got) == [0, 1, 2, 3, 4]


def test_list_window_reads_container_fields(k):
    mem = k.memory()
    head = mem.list_init(mem.alloc("list_head"))
    objs = items(k, mem, 3)
    for o in objs:
        mem.list_add_tail(head, o + k.layout.offset("item", "link"))
    f = k.layout.field("item", "id")
    got = [(a, f.decode(raw, 0)) for a, raw in
           kds.list_entries(mem, k.layout, head, "item", "link", window=(0, k.layout.size("item")))]
    assert got == [(o, i) for i, o in enumerate(objs)]


def test_list_empty_cycle_null_unreadable_bound(k):
    L = k.layout
    mem = k.memory()
    head = mem.list_init(mem.alloc("list_head"))
    assert list(kds.list_nodes(mem, L, head)) == []
    a, b, c = (o + L.offset("item", "link") for o in items(k, mem, 3))
    for n in (a, b, c):
        mem.list_add_tail(head, n)
    nxt = L.offset("list_head", "next")
    # cycle: c -> b (never back to head)
    mem.u64(c + nxt, b)
    d = kds.DamageLog()
    assert list(kds.list_nodes(mem, L, head, damage=d)) == [a, b, c]
    assert [x.reason for x in d] == ["cycle (node already visited)"] and d.items[0].addr == b
    # NULL link
    mem.u64(b + nxt, 0)
    d = kds.DamageLog()
    assert list(kds.list_nodes(mem, L, head, damage=d)) == [a, b]
    assert "NULL" in str(d.items[0])
    # unreadable node
    mem.u64(b + nxt, mem.hole())
    d = kds.DamageLog()
    assert list(kds.list_nodes(mem, L, head, damage=d)) == [a, b]
    assert d.items[0].addr == mem.hole() and "unreadable" in d.items[0].reason
    # bound
    mem.u64(b + nxt, c)
    mem.u64(c + nxt, head)
    d = kds.DamageLog()
    assert list(kds.list_nodes(mem, L, head, limit=2, damage=d)) == [a, b]
    assert "stopped after 2" in d.items[0].reason
    # unreadable head
    d = kds.DamageLog()
    assert list(kds.list_nodes(mem, L, mem.hole(), damage=d)) == [] and d.items[0].what == "list head"


# --- hlist, hlist_nulls, parent chains ------------------------------------------------------------


def test_hlist_and_nulls(k):
    L = k.layout
    mem = k.memory()
    head = mem.alloc("hlist_head")
    objs = items(k, mem, 3)
    nodes = [o + L.offset("item", "hnode") for o in objs]
    for n in nodes:
        mem.hlist_add_head(head, n)
    assert list(kds.hlist_nodes(mem, L, head)) == nodes[::-1]
    # the same nodes as a nulls chain: the last link is an odd marker, not NULL
    nh = mem.alloc("hlist_nulls_head")
    nxt = L.offset("hlist_nulls_node", "next")
    mem.u64(nh + L.offset("hlist_nulls_head", "first"), nodes[0])
    mem.u64(nodes[0] + nxt, nodes[1])
    mem.u64(nodes[1] + nxt, (7 << 1) | 1)
    d = kds.DamageLog()
    assert list(kds.hlist_nulls_nodes(mem, L, nh, damage=d)) == nodes[:2] and not d
    mem.u64(nodes[1] + nxt, 0)      # a NULL inside a nulls chain is damage
    d = kds.DamageLog()
    assert list(kds.hlist_nulls_nodes(mem, L, nh, damage=d)) == nodes[:2] and len(d) == 1


def test_hash_table_nodes_buckets_and_total_bound(k):
    """Every bucket's chain in bucket order; the bound is on the whole table, with one damage
    entry naming the table, and a chain cut in one bucket leaves the other buckets walked."""
    L = k.layout
    mem = k.memory()
    table = mem.alloc("hlist_head", count=4)
    hs = L.size("hlist_head")
    objs = items(k, mem, 6)
    nodes = [o + L.offset("item", "hnode") for o in objs]
    for i, n in enumerate(nodes):                   # buckets 0, 2, 3 (1 stays empty)
        mem.hlist_add_head(table + (0, 2, 3)[i % 3] * hs, n)
    d = kds.DamageLog()
    got = list(kds.hash_table_nodes(mem, L, table, 4, damage=d))
    assert got == [nodes[3], nodes[0], nodes[4], nodes[1], nodes[5], nodes[2]] and not d
    d = kds.DamageLog()
    assert list(kds.hash_table_nodes(mem, L, table, 4, limit=4, damage=d, what="item",
                                     table_name="item_table")) == got[:4]
    assert [x.what for x in d] == ["item_table"] and "more than 4 item" in d.items[0].reason
    # The heads are read in bulk (one read for the table); a block of heads that cannot be
    # read whole is read head by head, with the same nodes.
    reads = []

    class Counting(Reader):
        def read(self, addr, size):
            reads.append((addr, size))
            if size > 8 and addr == table and fail_bulk:
                raise ReadError(addr, size, "block unreadable")
            return mem.read(addr, size)

    for fail_bulk in (False, True):
        reads.clear()
        d = kds.DamageLog()
        assert list(kds.hash_table_nodes(Counting(), L, table, 4, damage=d)) == got and not d
        head_reads = [r for r in reads if table <= r[0] < table + 4 * hs]
        assert head_reads == ([(table, 4 * hs)] if not fail_bulk else
                              [(table, 4 * hs)] + [(table + i * hs + L.offset("hlist_head", "first"), 8)
                                                   for i in range(4)]), head_reads
    mem.u64(nodes[3] + L.offset("hlist_node", "next"), 0xdead0000)   # bucket 0 cut
    d = kds.DamageLog()
    assert list(kds.hash_table_nodes(mem, L, table, 4, damage=d)) == [nodes[3]] + got[2:]
    assert len(d) == 1


def test_parent_chain(k):
    L = k.layout
    mem = k.memory()
    a, b, c = items(k, mem, 3)
    off = L.offset("item", "parent")
    mem.set("item", c, "parent", b)
    mem.set("item", b, "parent", a)
    mem.set("item", a, "parent", a)          # a root pointing at itself (dentry style)
    assert list(kds.parent_chain(mem, c, off)) == [c, b, a]
    mem.set("item", a, "parent", c)          # a cycle
    d = kds.DamageLog()
    assert list(kds.parent_chain(mem, c, off, damage=d)) == [c, b, a] and "cycle" in d.items[0].reason
    d = kds.DamageLog()
    assert list(kds.parent_chain(mem, c, off, limit=2, damage=d)) == [c, b] and len(d) == 1


# --- rbtree -------------------------------------------------------------------------------------


def _rb_build(k, mem, keys):
    """A binary search tree (colour bits are irrelevant to the walk) of items keyed by id."""
    L = k.layout
    root = mem.alloc("rb_root")
    objs = {}
    top = 0
    left, right = L.offset("rb_node", "rb_left"), L.offset("rb_node", "rb_right")
    node_off = L.offset("item", "rb")
    for key in keys:
        o = mem.new("item", id=key)
        objs[key] = o
        n = o + node_off
        if not top:
            top = n
            continue
        cur = top
        while True:
            ck = Record(mem, L, "item", cur - node_off).int("id")
            side = left if key < ck else right
            child = mem.u64(cur + side)
            if not child:
                mem.u64(cur + side, n)
                break
            cur = child
    mem.u64(root + L.offset("rb_root", "rb_node"), top)
    return root, objs, node_off


def test_rb_in_order_and_damage(k):
    mem = k.memory()
    keys = [50, 20, 80, 10, 30, 70, 90, 25]
    root, objs, node_off = _rb_build(k, mem, keys)
    got = [Record(mem, k.layout, "item", n - node_off).int("id") for n in kds.rb_nodes(mem, k.layout, root)]
    assert got == sorted(keys)
    # an unreadable right subtree of 20 (30, 25) is skipped and reported; the rest stays
    n20 = objs[20] + node_off
    mem.u64(n20 + k.layout.offset("rb_node", "rb_right"), mem.hole())
    d = kds.DamageLog()
    got = [Record(mem, k.layout, "item", n - node_off).int("id") for n in kds.rb_nodes(mem, k.layout, root, damage=d)]
    assert got == [10, 20, 50, 70, 80, 90] and len(d) == 1 and "subtree skipped" in d.items[0].reason
    # a cycle (90's left child is the root) is cut
    mem.u64(objs[90] + node_off + k.layout.offset("rb_node", "rb_left"), objs[50] + node_off)
    d = kds.DamageLog()
    assert len(list(kds.rb_nodes(mem, k.layout, root, damage=d))) == 6 and any("cycle" in x.reason for x in d)


# --- rhashtable ---------------------------------------------------------------------------------


def test_rhashtable_future_table_and_nulls(k):
    L = k.layout
    mem = k.memory()
    ht = mem.alloc("rhashtable")
    nb = 4
    base = L.offset("bucket_table", "buckets")
    t1 = mem.alloc(base + 8 * nb)
    t2 = mem.alloc(base + 8 * nb)
    mem.set("bucket_table", t1, "size", nb)
    mem.set("bucket_table", t2, "size", nb)
    mem.set("bucket_table", t1, "future_tbl", t2)
    mem.set("rhashtable", ht, "tbl", t1)
    objs = items(k, mem, 4)
    rh = [o + L.offset("item", "rh") for o in objs]
    nxt = L.offset("rhash_head", "next")
    # table 1: bucket 0 = rh0 -> rh1 -> nulls; bucket 2 = rh2 (head with the lock bit set)
    mem.u64(t1 + base, rh[0])
    mem.u64(rh[0] + nxt, rh[1])
    mem.u64(rh[1] + nxt, 1)
    mem.u64(t1 + base + 16, rh[2] | 1)
    mem.u64(rh[2] + nxt, 5)
    # table 2 (rehash in flight): rh1 again and rh3
    mem.u64(t2 + base + 8, rh[3])
    mem.u64(rh[3] + nxt, rh[1])
    d = kds.DamageLog()
    assert sorted(kds.rhashtable_nodes(mem, L, ht, damage=d)) == sorted(rh) and not d
    mem.set("bucket_table", t2, "size", 3)   # not a power of two
    d = kds.DamageLog()
    assert sorted(kds.rhashtable_nodes(mem, L, ht, damage=d)) == sorted(rh[:3]) and "implausible" in str(d.items[0])


# --- xarray / idr -------------------------------------------------------------------------------


def test_idr_two_levels_and_bad_node(k):
    L = k.layout
    mem = k.memory()
    idr = mem.alloc("idr")
    mem.set("idr", idr, "idr_base", 1)
    top = mem.alloc("xa_node")
    mem.set("xa_node", top, "shift", 6)
    leaves = [mem.alloc("xa_node"), mem.alloc("xa_node")]
    slots = L.offset("xa_node", "slots")
    mem.u64(top + slots + 0, leaves[0] | 2)
    mem.u64(top + slots + 8 * 3, leaves[1] | 2)
    objs = items(k, mem, 3)
    mem.u64(leaves[0] + slots + 8 * 5, objs[0])
    mem.u64(leaves[0] + slots + 8 * 6, 0x7)            # a value entry: not an object
    mem.u64(leaves[1] + slots + 8 * 0, objs[1])
    mem.u64(leaves[1] + slots + 8 * 63, objs[2])
    mem.set("idr", idr, "idr_rt.xa_head", top | 2)
    d = kds.DamageLog()
    got = list(kds.idr_entries(mem, L, idr, damage=d))
    assert got == [(1 + 5, objs[0]), (1 + 192, objs[1]), (1 + 255, objs[2])] and not d
    mem.set("xa_node", leaves[0], "shift", 5)          # corrupt: not a multiple of the chunk
    d = kds.DamageLog()
    assert [i for i, _ in kds.idr_entries(mem, L, idr, damage=d)] == [193, 256]
    assert "implausible shift" in str(d.items[0])


# --- Record / Field ----------------------------------------------------------------------------


def test_record_decodes_widths_signs_bitfields(k):
    mem = k.memory()
    o = mem.new("item", id=-5, flags=6, delta=-2, name="abc")
    r = Record(mem, k.layout, "item", o)
    assert (r.int("id"), r.int("flags"), r.int("delta"), r.str("name")) == (-5, 6, -2, "abc")
    assert r.int("no_such", default=42) == 42
    part = Record(mem, k.layout, "item", o, paths=["flags", "delta"])
    assert part.int("delta") == -2 and len(part.data) < k.layout.size("item")


def test_damage_log_bounded_summary():
    d = kds.DamageLog(limit=2)
    for i in range(5):
        d.add("bucket", 0x1000 + i, "unreadable")
    assert len(d) == 5 and len(d.items) == 2 and d.summary() == "5 parts skipped (bucket: 2, 3 more)"
    assert str(d.items[0]) == "bucket at 0x1000: unreadable"


def test_real_kernel_btf_field_kinds(amd64_kernel_btf):
    L = BtfLayout(amd64_kernel_btf)
    assert L.field("task_struct", "comm").kind == "array" and L.field("task_struct", "comm").size == 16
    assert L.field("task_struct", "pid").signed and L.field("task_struct", "pid").size == 4
    assert L.field("list_head", "next").kind == "pointer"
    assert L.field("sched_ext_ops", "dispatch").kind == "function"
    assert L.variants("bucket")[0] == "bucket" and L.variants("no_such_struct") == []


# --- depth_first: trees whose children come from another walk ----------------------------------


def test_depth_first_order_cycles_depth_and_bound():
    tree = {1: [2, 5], 2: [3, 4], 3: [], 4: [], 5: [6], 6: [7], 7: [8], 8: []}
    got = list(kds.depth_first([1], lambda n, d: tree[n], max_depth=8))
    assert got == [(1, 0, None), (2, 1, 1), (3, 2, 2), (4, 2, 2), (5, 1, 1), (6, 2, 5), (7, 3, 6),
                   (8, 4, 7)]
    # a child linking back to the root, a subtree linked twice: each node once, the rest damage
    tree[4], tree[6] = [1], [7, 2]
    damage = kds.DamageLog()
    got = [n for n, _, _ in kds.depth_first([1], lambda n, d: tree[n], max_depth=8, damage=damage)]
    assert got == [1, 2, 3, 4, 5, 6, 7, 8]
    assert sorted((d.addr, d.kind) for d in damage) == [(1, "cycle"), (2, "cycle")]
    # depth: nodes at max_depth are yielded, their children are not walked
    damage = kds.DamageLog()
    got = [n for n, _, _ in kds.depth_first([5], lambda n, d: tree[n], max_depth=1, damage=damage)]
    assert got == [5, 6] and [(d.addr, d.kind) for d in damage] == [(6, "bound")]
    # bound on nodes, and node identity / address / index from the caller
    damage = kds.DamageLog()
    got = list(kds.depth_first([(1, 10)], lambda n, d: [(c, 10 * c) for c in tree[n[0]]], max_depth=8,
                               limit=3, damage=damage, key=lambda n: n[0], addr=lambda n: n[0] + 0x1000,
                               index=lambda n: n[1]))
    assert [n for n, _, _ in got] == [(1, 10), (2, 20), (3, 30)]
    assert [(d.addr, d.kind, d.index) for d in damage] == [(0x1004, "bound", 40)]
