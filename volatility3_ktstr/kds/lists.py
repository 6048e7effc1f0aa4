"""Linked lists of include/linux/types.h and list_nulls.h, and parent-pointer chains.

- ``struct list_head {next, prev}``: circular, the head is not an entry.
- ``struct hlist_head {first}`` / ``struct hlist_node {next, pprev}``: NULL-terminated.
- ``struct hlist_nulls_head {first}`` / ``hlist_nulls_node {next, pprev}``: terminated by an odd
  "nulls" marker (``(value << 1) | 1``), used by RCU hash tables that recycle elements.
- parent chains (``cgroup.kn->parent``, ``dentry.d_parent``): a root points at NULL or at itself.

Every generator is bounded (``limit`` nodes), detects cycles, and records what stopped it in a
:class:`DamageLog` instead of raising: a broken link ends that walk only. Offsets come from the
layout (``list_head.next`` ...); these types have not changed since 2.6, but nothing assumes it.
"""

from typing import Any, Callable, Iterator, Optional, Set, Tuple

from ..core import Layout, ReadError, Reader
from .damage import DamageLog, log_of

MAX_LIST = 1 << 20
HEADS_READ = 1 << 16       # bytes of hash-table bucket heads read at once


def follow(reader: Reader, first: int, next_off: int, stop: Callable[[int], bool], *, limit: int = MAX_LIST,
           damage: Optional[DamageLog] = None, what: str = "node",
           window: Optional[Tuple[int, int]] = None) -> Iterator[Any]:
    """The loop every singly-followed chain shares: follow the pointer at ``next_off`` from
    ``first`` until ``stop(addr)``; yields nodes, or (node, bytes) with ``window=(start, size)``.

    With a window, a node whose window is unreadable but whose ``next`` pointer is readable is
    yielded as (node, None) and the walk goes on (the caller decides what a short node means,
    e.g. an element whose large value crosses into an unmapped page)."""
    damage = log_of(damage)
    lo, size = window if window is not None else (next_off, 8)
    # One read covering both the caller's window and the next pointer, wherever each lies.
    end = max(lo + size, next_off + 8)
    lo = min(lo, next_off)
    size = end - lo
    seen: Set[int] = set()
    cur = first
    while not stop(cur):
        if not cur:
            damage.add(what, 0, "NULL link (list cut)", "null")
            return
        if cur in seen:
            damage.add(what, cur, "cycle (node already visited)", "cycle")
            return
        if len(seen) >= limit:
            damage.add(what, cur, f"stopped after {limit} nodes", "bound")
            return
        seen.add(cur)
        try:
            raw = reader.read(cur + lo, size)
        except ReadError as e:
            if window is None or size == 8:
                damage.add(what, cur, f"node unreadable ({e.reason})")
                return
            try:
                nxt = reader.ptr(cur + next_off)
            except ReadError:
                damage.add(what, cur, f"node unreadable ({e.reason})")
                return
            yield cur, None
            cur = nxt
            continue
        yield (cur, raw) if window is not None else cur
        cur = int.from_bytes(raw[next_off - lo:next_off - lo + 8], "little")


def list_nodes(reader: Reader, layout: Layout, head: int, *, limit: int = MAX_LIST,
               damage: Optional[DamageLog] = None, what: str = "list node",
               window: Optional[Tuple[int, int]] = None) -> Iterator[Any]:
    """Nodes of the circular ``struct list_head`` list at ``head`` (the head excluded), in
    ``next`` order. With ``window=(start, size)`` (relative to each node) yields (node, bytes)
    from one read per node, the bytes covering the ``next`` pointer and whatever the caller
    asked for around it."""
    damage = log_of(damage)
    next_off = layout.offset("list_head", "next")
    try:
        first = reader.ptr(head + next_off)
    except ReadError as e:
        damage.add("list head", head, f"unreadable ({e.reason})")
        return
    yield from follow(reader, first, next_off, lambda a: a == head, limit=limit, damage=damage,
                     what=what, window=window)


def list_entries(reader: Reader, layout: Layout, head: int, struct: str, member: str, *,
                 window: Optional[Tuple[int, int]] = None, **kw: Any) -> Iterator[Any]:
    """Addresses of the ``struct`` objects linked on ``head`` through their ``member`` list_head
    (``list_for_each_entry``). ``window`` is relative to the object: yields (object, bytes)."""
    off = layout.offset(struct, member)
    if window is None:
        for node in list_nodes(reader, layout, head, **kw):
            yield node - off
    else:
        for node, raw in list_nodes(reader, layout, head, window=(window[0] - off, window[1]), **kw):
            yield node - off, raw


def hlist_nodes(reader: Reader, layout: Layout, head: Optional[int] = None, *,
                first: Optional[int] = None, limit: int = MAX_LIST,
                damage: Optional[DamageLog] = None, what: str = "hlist node",
                window: Optional[Tuple[int, int]] = None) -> Iterator[Any]:
    """Nodes of the NULL-terminated ``struct hlist_head`` chain at ``head`` (or starting at
    ``first``, for callers that read bucket heads in bulk)."""
    damage = log_of(damage)
    if first is None:
        assert head is not None, "a head or a first node"
        try:
            first = reader.ptr(head + layout.offset("hlist_head", "first"))
        except ReadError as e:
            damage.add("hlist head", head, f"unreadable ({e.reason})")
            return
    yield from follow(reader, first, layout.offset("hlist_node", "next"), lambda a: a == 0,
                     limit=limit, damage=damage, what=what, window=window)


def hash_table_nodes(reader: Reader, layout: Layout, table: int, buckets: int, *,
                     stride: Optional[int] = None, head_offset: int = 0, limit: int = MAX_LIST,
                     damage: Optional[DamageLog] = None, what: str = "hlist node",
                     table_name: str = "hash table") -> Iterator[Any]:
    """Nodes of a kernel hash table: ``buckets`` hlist heads at ``table`` (``stride`` bytes
    apart, default one ``struct hlist_head``; the head ``head_offset`` into each bucket), at
    most ``limit`` nodes in all (each chain bounded by the same ``limit``). Past the bound the
    walk stops with one damage entry naming ``table_name``. The heads are read in bulk; where
    a block of them is unreadable, each head of it is tried alone (and named if it fails)."""
    damage = log_of(damage)
    stride = stride or layout.size("hlist_head")
    f_first = layout.field("hlist_head", "first")
    per_read = max(1, HEADS_READ // stride)
    count = 0
    for lo in range(0, max(buckets, 0), per_read):
        n = min(per_read, buckets - lo)
        try:
            raw: Optional[bytes] = reader.read(table + lo * stride, n * stride)
        except ReadError:
            raw = None
        for i in range(n):
            if raw is None:
                chain = hlist_nodes(reader, layout, table + (lo + i) * stride + head_offset,
                                    limit=limit, damage=damage, what=what)
            else:
                first = f_first.decode(raw, -(i * stride + head_offset))
                if not first:
                    continue
                chain = hlist_nodes(reader, layout, first=first, limit=limit, damage=damage,
                                    what=what)
            for node in chain:
                count += 1
                if count > limit:
                    damage.add(table_name, node, f"more than {limit} {what} nodes", "bound")
                    return
                yield node


def _is_nulls(addr):
    return addr & 1 == 1


def hlist_nulls_nodes(reader: Reader, layout: Layout, head: Optional[int] = None, *,
                      first: Optional[int] = None, limit: int = MAX_LIST,
                      damage: Optional[DamageLog] = None, what: str = "hlist_nulls node",
                      window: Optional[Tuple[int, int]] = None) -> Iterator[Any]:
    """Nodes of the ``struct hlist_nulls_head`` chain at ``head`` (or starting at ``first``,
    for callers that already read the head), ending at the odd nulls marker. A NULL link is
    damage (a nulls chain never holds one)."""
    damage = log_of(damage)
    if first is None:
        assert head is not None, "a head or a first node"
        try:
            first = reader.ptr(head + layout.offset("hlist_nulls_head", "first"))
        except ReadError as e:
            damage.add("hlist_nulls head", head, f"unreadable ({e.reason})")
            return
    yield from follow(reader, first, layout.offset("hlist_nulls_node", "next"), _is_nulls,
                     limit=limit, damage=damage, what=what, window=window)


def parent_chain(reader: Reader, addr: int, parent_offset: int, *, limit: int = 256,
                 damage: Optional[DamageLog] = None, what: str = "parent link") -> Iterator[int]:
    """``addr`` and its ancestors through the pointer at ``parent_offset`` (``kernfs_node.parent``,
    ``dentry.d_parent``), up to the root (whose parent is NULL or itself)."""
    damage = log_of(damage)
    seen: Set[int] = set()
    cur = addr
    while cur:
        if cur in seen:
            damage.add(what, cur, "cycle (ancestor already visited)", "cycle")
            return
        if len(seen) >= limit:
            damage.add(what, cur, f"deeper than {limit}", "bound")
            return
        seen.add(cur)
        yield cur
        try:
            parent = reader.ptr(cur + parent_offset)
        except ReadError as e:
            damage.add(what, cur, f"unreadable ({e.reason})")
            return
        if parent == cur:
            return
        cur = parent
