"""Name the kernel object that owns a BPF local storage: a task, cgroup, inode or socket.

:class:`OwnerResolver` takes a Reader and the kernel Layout. Each kind's offsets are resolved
on first use, so a kernel lacking (say) ``struct sock`` only leaves socket owners unnamed. An
owner that cannot be named keeps its address and says why (``Owner.error``). Every walk up a
parent chain is bounded and cycle-checked.
"""

import ipaddress
from dataclasses import dataclass
from typing import List, Optional

from ..core import LayoutError, ReadError, Reader
from ..kds import DamageLog, parent_chain

# Map type name -> owner kind.
OWNER_KINDS = {"task_storage": "task", "cgrp_storage": "cgroup", "inode_storage": "inode",
               "sk_storage": "socket"}

MAX_DEPTH = 64       # parents followed for a cgroup or dentry path
MAX_NAME = 256       # bytes of one path component
PID_MAX_LIMIT = 4 * 1024 * 1024

# uapi constants (stable ABI), only for display.
_FAMILIES = {1: "unix", 2: "inet", 10: "inet6", 16: "netlink", 17: "packet", 40: "vsock",
             44: "xdp"}
_PROTOCOLS = {0: "ip", 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 136: "udplite",
              255: "raw", 262: "mptcp"}
_SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw", 4: "rdm", 5: "seqpacket", 6: "dccp", 10: "packet"}
_TCP_STATES = (None, "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
               "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV")


@dataclass
class Owner:
    kind: str                # task, cgroup, inode, socket (or the map type when unknown)
    kva: int
    pid: Optional[int] = None          # task
    tgid: Optional[int] = None         # task
    comm: Optional[str] = None         # task
    ident: Optional[int] = None        # cgroup id (kernfs node id) / inode number
    name: Optional[str] = None         # cgroup path / inode path / socket endpoints
    error: Optional[str] = None        # why (part of) the owner could not be named
    note: Optional[str] = None         # a consistency remark (e.g. no back pointer to the storage)

    def describe(self) -> str:
        """One line for the text column."""
        if self.kind == "task" and self.pid is not None:
            return f"{self.comm} (pid {self.pid}, tgid {self.tgid})"
        if self.kind == "cgroup" and (self.name or self.ident is not None):
            return f"{self.name or '?'} (id {self.ident})"
        if self.kind == "inode" and self.ident is not None:
            return f"ino {self.ident}" + (f" {self.name}" if self.name else "")
        if self.name:
            return self.name
        return f"<{self.error or 'unresolved'}>"


class _Offsets:
    """Members of one owner kind, resolved together as :class:`Field` s (offset, width,
    signedness; struct sizes as ints); a LayoutError is kept as the reason."""

    def __init__(self, layout, spec):
        self.error = None
        try:
            for attr, (struct, paths, optional) in spec.items():
                if optional and not any(layout.has(struct, p) for p in paths):
                    setattr(self, attr, None)
                elif paths is None:
                    setattr(self, attr, layout.size(struct))
                else:
                    setattr(self, attr, layout.first_field(struct, *paths))
        except LayoutError as e:
            self.error = f"kernel layout: {e}"


_TASK = {
    "pid": ("task_struct", ("pid",), False),
    "tgid": ("task_struct", ("tgid",), False),
    "comm": ("task_struct", ("comm",), False),
    "storage": ("task_struct", ("bpf_storage",), True),
}
_CGROUP = {
    "kn": ("cgroup", ("kn",), False),
    "storage": ("cgroup", ("bpf_cgrp_storage",), True),
    "kn_size": ("kernfs_node", None, False),
    # kernfs_node.parent became __parent (RCU-protected) in 6.15.
    "kn_parent": ("kernfs_node", ("__parent", "parent"), False),
    "kn_name": ("kernfs_node", ("name",), False),
    "kn_id": ("kernfs_node", ("id",), False),
}
_INODE = {
    "ino": ("inode", ("i_ino",), False),
    "sb": ("inode", ("i_sb",), False),
    "dentry_first": ("inode", ("i_dentry",), True),   # hlist_head: .first at 0
    "sb_type": ("super_block", ("s_type",), False),
    "sb_id": ("super_block", ("s_id",), True),
    "fs_name": ("file_system_type", ("name",), False),
    "d_alias": ("dentry", ("d_alias", "d_u.d_alias"), True),
    "d_parent": ("dentry", ("d_parent",), True),
    "d_name": ("dentry", ("d_name.name",), True),
}
_SOCK = {
    "common_size": ("sock_common", None, False),
    "family": ("sock_common", ("skc_family",), False),
    "state": ("sock_common", ("skc_state",), False),
    "daddr": ("sock_common", ("skc_daddr",), False),
    "saddr": ("sock_common", ("skc_rcv_saddr",), False),
    "dport": ("sock_common", ("skc_dport",), False),
    "num": ("sock_common", ("skc_num",), False),
    "v6_daddr": ("sock_common", ("skc_v6_daddr",), True),
    "v6_saddr": ("sock_common", ("skc_v6_rcv_saddr",), True),
    "common": ("sock", ("__sk_common",), False),
    "protocol": ("sock", ("sk_protocol",), True),
    "type": ("sock", ("sk_type",), True),
    "storage": ("sock", ("sk_bpf_storage",), True),
}


def _span(*fields):
    """(start, length) of the bytes holding ``fields`` (one read for all of them)."""
    lo = min(f.offset for f in fields)
    return lo, max(f.end for f in fields) - lo


def _bytes(raw, f, base=0):
    return raw[f.offset - base:f.end - base]


class OwnerResolver:
    """Resolve owner pointers of one kernel, caching per (kind, address)."""

    def __init__(self, reader, layout):
        self.reader = reader
        self.layout = layout
        self._offs = {}
        self._cache = {}

    def offsets(self, kind):
        o = self._offs.get(kind)
        if o is None:
            spec = {"task": _TASK, "cgroup": _CGROUP, "inode": _INODE, "socket": _SOCK}[kind]
            o = self._offs[kind] = _Offsets(self.layout, spec)
        return o

    def resolve(self, kind, kva, storage=None) -> Owner:
        """The owner of ``kind`` at ``kva``; ``storage`` (the bpf_local_storage) enables the
        back-pointer check. Never raises for bad memory."""
        key = (kind, kva, storage)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._resolve(kind, kva, storage)
        return hit

    def _resolve(self, kind, kva, storage):
        owner = Owner(kind=kind, kva=kva)
        if kind not in OWNER_KINDS.values():
            owner.error = f"unknown owner kind {kind!r}"
            return owner
        if not kva:
            owner.error = "owner pointer is NULL"
            return owner
        offs = self.offsets(kind)
        if offs.error:
            owner.error = offs.error
            return owner
        try:
            getattr(self, "_" + kind)(owner, offs)
        except ReadError as e:
            owner.error = f"{kind} at {kva:#x} unreadable: {e.reason}"
        if storage and getattr(offs, "storage", None) is not None and owner.error is None:
            self._check_back_pointer(owner, offs.storage.offset, storage)
        return owner

    def _check_back_pointer(self, owner, off, storage):
        try:
            back = self.reader.u64(owner.kva + off)
        except ReadError as e:
            owner.note = f"storage back pointer unreadable: {e.reason}"
            return
        if back != storage:
            owner.note = (f"owner's storage pointer is {back:#x}, not {storage:#x} "
                          "(owner being torn down, or a stale element)")

    # --- kinds ---------------------------------------------------------------------------

    def _task(self, owner, o):
        lo, size = _span(o.pid, o.tgid, o.comm)
        raw = self.reader.read(owner.kva + lo, size)
        pid, tgid = o.pid.decode(raw, lo), o.tgid.decode(raw, lo)
        comm = _bytes(raw, o.comm, lo).split(b"\0", 1)[0]
        if not (0 <= pid < PID_MAX_LIMIT and 0 <= tgid < PID_MAX_LIMIT):
            owner.error = f"implausible pid {pid} / tgid {tgid} (not a task_struct?)"
            return
        owner.pid, owner.tgid = pid, tgid
        owner.comm = comm.decode("utf-8", "replace")

    def _cgroup(self, owner, o):
        kn = self.reader.u64(owner.kva + o.kn.offset)
        if not kn:
            owner.error = "cgroup->kn is NULL"
            return
        parts = []
        damage = DamageLog()
        chain = parent_chain(self.reader, kn, o.kn_parent.offset, limit=MAX_DEPTH + 1, damage=damage,
                             what="kernfs node")
        for i, node in enumerate(chain):
            raw = self.reader.read(node, o.kn_size)
            if i == 0:
                owner.ident = o.kn_id.decode(raw)
            if not o.kn_parent.decode(raw):   # the hierarchy root: not part of the path
                break
            name_ptr = o.kn_name.decode(raw)
            parts.append(self.reader.cstring(name_ptr, MAX_NAME) if name_ptr else "?")
        for d in damage:
            if d.kind == "cycle":
                owner.error = f"kernfs parent chain loops at {d.addr:#x}"
            elif d.kind == "bound":
                parts.append("...")
            else:
                raise ReadError(d.addr, 8, d.reason)
        owner.name = "/" + "/".join(reversed(parts))

    def _inode(self, owner, o):
        lo, size = _span(o.ino, o.sb)
        raw = self.reader.read(owner.kva + lo, size)
        owner.ident = o.ino.decode(raw, lo)
        sb = o.sb.decode(raw, lo)
        where = []
        if sb:
            try:
                fstype = self.reader.u64(sb + o.sb_type.offset)
                name_ptr = self.reader.u64(fstype + o.fs_name.offset) if fstype else 0
                if name_ptr:
                    where.append(self.reader.cstring(name_ptr, 64))
                if o.sb_id is not None:
                    sid = self.reader.read(sb + o.sb_id.offset, o.sb_id.size).split(b"\0", 1)[0]
                    if sid:
                        where.append(f"({sid.decode('utf-8', 'replace')})")
            except ReadError as e:
                where.append(f"<superblock unreadable: {e.reason}>")
        path = self._dentry_path(owner.kva, o)
        owner.name = " ".join(p for p in (path, f"on {' '.join(where)}" if where else "") if p)

    def _dentry_path(self, inode, o):
        """Path of one dentry alias of the inode, within its filesystem; '' when unreachable."""
        if None in (o.dentry_first, o.d_alias, o.d_parent, o.d_name):
            return ""
        try:
            first = self.reader.u64(inode + o.dentry_first.offset)
        except ReadError:
            return ""
        if not first:
            return ""   # no cached dentry (e.g. an anonymous or evicted inode)
        return dentry_path(self.reader, first - o.d_alias.offset, o.d_parent.offset, o.d_name.offset)

    def _socket(self, owner, o):
        base = owner.kva + o.common.offset
        raw = self.reader.read(base, o.common_size)
        family = o.family.decode(raw)
        proto = stype = None
        if o.protocol is not None:
            fields = [f for f in (o.protocol, o.type) if f is not None]
            lo, size = _span(*fields)
            extra = self.reader.read(owner.kva + lo, size)
            proto = o.protocol.decode(extra, lo)
            if o.type is not None:
                stype = o.type.decode(extra, lo)
        fam = _FAMILIES.get(family, f"family {family}")
        words = [fam]
        if proto is not None and family in (2, 10):
            words[0] = _PROTOCOLS.get(proto, f"proto {proto}") + ("6" if family == 10 else "")
        elif stype is not None:
            words.append(_SOCK_TYPES.get(stype, f"type {stype}"))
        if family in (2, 10):
            lport = o.num.decode(raw)
            rport = int.from_bytes(_bytes(raw, o.dport), "big")   # __be16
            if family == 10 and o.v6_saddr is not None:
                src = ipaddress.IPv6Address(_bytes(raw, o.v6_saddr))
                dst = ipaddress.IPv6Address(_bytes(raw, o.v6_daddr))
                local, remote = f"[{src}]:{lport}", f"[{dst}]:{rport}"
            else:
                src = ipaddress.IPv4Address(_bytes(raw, o.saddr))
                dst = ipaddress.IPv4Address(_bytes(raw, o.daddr))
                local, remote = f"{src}:{lport}", f"{dst}:{rport}"
            words.append(f"{local} -> {remote}")
            state = o.state.decode(raw)
            if proto in (6, 262) or proto is None:
                name = _TCP_STATES[state] if 0 < state < len(_TCP_STATES) else None
                words.append(name or f"state {state}")
        owner.ident = None
        owner.name = " ".join(words)


def dentry_path(reader: Reader, dentry: int, parent_off: int, name_off: int,
                max_depth: int = MAX_DEPTH) -> str:
    """Path of ``dentry`` within its filesystem ("/a/b"), following ``d_parent`` up to the root
    (a dentry that is its own parent). Damage shows in the path: "<dentry chain loops>/...",
    "<dentry unreadable: ...>/...", ".../" when deeper than ``max_depth``."""
    parts: List[str] = []
    damage = DamageLog()
    for node in parent_chain(reader, dentry, parent_off, limit=max_depth, damage=damage, what="dentry"):
        try:
            parent = reader.u64(node + parent_off)
            if not parent or parent == node:   # the filesystem root
                return "/" + "/".join(reversed(parts))
            name_ptr = reader.u64(node + name_off)
            parts.append(reader.cstring(name_ptr, MAX_NAME) if name_ptr else "?")
        except ReadError as e:
            return f"<dentry unreadable: {e.reason}>/" + "/".join(reversed(parts))
    for d in damage:
        if d.kind == "cycle":
            return "<dentry chain loops>/" + "/".join(reversed(parts))
        if d.kind != "bound":
            return f"<dentry unreadable: {d.reason}>/" + "/".join(reversed(parts))
    return ".../" + "/".join(reversed(parts))
