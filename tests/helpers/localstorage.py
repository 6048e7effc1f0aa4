"""BPF local storage material: a hand-made kernel BTF with non-kernel offsets and :class:`Synth`,
local-storage maps, elements and their owners (task, cgroup, inode, socket) written into a
:class:`helpers.synth.Memory` through any layout (the hand-made one or the real kernel BTF).

The hand-made BTF differs from the kernel where walkers could cheat: ``map_node`` not at 0, the
bucket list not at 0, a 24-byte bucket stride, the old ``kernfs_node.parent`` name, ``pid``
after ``tgid``.
"""

import ipaddress

from volatility3_ktstr.btf import Btf
from volatility3_ktstr.walkers import localstorage as ls

from .btf import CHAR, BtfBuilder
from .synth import Memory

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
    """Local-storage guest memory on a :class:`Memory`, built from a layout only: maps, elements,
    owners. ``reader(holes)`` unmaps ranges."""

    def __init__(self, layout, size=4 << 20):
        self.L = layout
        self.offs = ls.LocalStorageOffsets.from_layout(layout)
        self.mem = Memory(layout, base=BASE, size=size)

    def alloc(self, size, align=64):
        return self.mem.alloc(size, align=align)

    def write(self, addr, data):
        self.mem.write(addr, data)

    def wint(self, addr, value, width=8):
        self.mem.write(addr, (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little"))

    def rint(self, addr, width=8):
        return int.from_bytes(self.mem.read(addr, width), "little")

    def field(self, kva, struct, path, value):
        """Member ``path`` of ``struct`` at ``kva`` := value (width from the layout)."""
        self.mem.set(struct, kva, path, value)

    def string(self, s):
        return self.mem.string(s)

    def reader(self, holes=()):
        """A live view (later writes show) with ``holes`` [(addr, size)] unmapped."""
        return self.mem.with_holes(holes) if holes else self.mem

    # --- local storage ---------------------------------------------------------------------

    def smap(self, log, buckets=True):
        m = self.alloc(self.L.size("bpf_local_storage_map"))
        self.field(m, "bpf_local_storage_map", "bucket_log", log)
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
        self.field(t, "task_struct", "pid", pid)
        self.field(t, "task_struct", "tgid", tgid)
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
        self.field(c, "sock_common", "skc_family", family)
        self.field(c, "sock_common", "skc_state", state)
        self.field(c, "sock_common", "skc_num", sport)
        self.field(c, "sock_common", "skc_dport", dport.to_bytes(2, "big"))
        if family == 10:
            self.field(c, "sock_common", "skc_v6_rcv_saddr", ipaddress.IPv6Address(saddr).packed)
            self.field(c, "sock_common", "skc_v6_daddr", ipaddress.IPv6Address(daddr).packed)
        else:
            self.field(c, "sock_common", "skc_rcv_saddr", ipaddress.IPv4Address(saddr).packed)
            self.field(c, "sock_common", "skc_daddr", ipaddress.IPv4Address(daddr).packed)
        self.field(s, "sock", "sk_protocol", proto)
        self.field(s, "sock", "sk_type", stype)
        return s


def val(i, n=24):
    return bytes([i & 0xFF]) * n
