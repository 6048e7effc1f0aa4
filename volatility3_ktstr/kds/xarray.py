"""XArray and IDR walks (lib/xarray.c, lib/idr.c): ``map_idr``, ``prog_idr``, ``link_idr``...

An IDR is an XArray (``idr.idr_rt``) plus ``idr_base``. XArray entries are tagged pointers: a
node pointer has low bits 0b10 and is > 4096 (smaller 0b10 values are sibling/retry markers), a
value entry has bit 0 set. A ``struct xa_node`` holds ``1 << XA_CHUNK_SHIFT`` slots (64 unless
the kernel was built with a small base); the slot count comes from the layout. IDRs replaced
radix trees in 4.11 (same node layout under ``radix_tree_node`` before 4.20).
"""

from typing import Iterator, Optional, Tuple

from ..core import Field, Layout, Reader, read_int
from .damage import DamageLog, log_of

MAX_DEPTH = 16
MAX_ENTRIES = 1 << 20
MAX_NODES = 1 << 16


def is_node(entry: int) -> bool:
    return entry & 3 == 2 and entry > 4096


def is_internal(entry: int) -> bool:
    return entry & 3 == 2


def implausible_node(raw: bytes, layout: Layout, xa: int, off_slots: int,
                     nslots: int) -> Optional[str]:
    """Why the bytes of an xa_node cannot be a live node of the xarray at ``xa`` (None when
    they can): the kernel frees a node once it holds no entry (xas_delete_node), and sets
    ``node->array`` to its xarray. A zeroed page (a minimized dump's, or memory reused) fails
    the first; a node of another xarray the second."""
    if not any(raw[off_slots:off_slots + 8 * nslots]):
        return "node holds no entry (zeroed or freed memory)"
    if layout.has("xa_node", "array"):
        f = layout.field("xa_node", "array")
        array = f.decode(raw)
        if array and array != xa:
            return f"node belongs to the xarray at {array:#x}, not {xa:#x} (reused memory)"
    return None


def _node_geometry(layout: Layout) -> Tuple[int, Field, int, int]:
    """(offset of shift, the slots field, bits of index per level, bytes to read per node) of
    ``struct xa_node``: XA_CHUNK_SHIFT follows from the slots array the layout declares (64
    slots, 6 bits, unless the kernel was built with CONFIG_BASE_SMALL)."""
    f_slots = layout.field("xa_node", "slots")
    nslots = (layout.size("xa_node") - f_slots.offset) // 8
    nslots = 64 if nslots <= 0 else min(nslots, 64)
    chunk_shift = max(1, nslots.bit_length() - 1)
    return (layout.offset("xa_node", "shift"), f_slots, chunk_shift,
            f_slots.offset + 8 * (1 << chunk_shift))


def xa_entries(reader: Reader, layout: Layout, xa: int, *, limit: int = MAX_ENTRIES,
               damage: Optional[DamageLog] = None, what: str = "xa_node") -> Iterator[Tuple[int, int]]:
    """(index, entry) for every normal (pointer) entry of the ``struct xarray`` at ``xa``, in
    index order."""
    damage = log_of(damage)
    head = read_int(reader, layout, "xarray", xa, "xa_head")
    if head == 0:
        return
    if not is_node(head):
        if not head & 1 and not is_internal(head):
            yield 0, head
        return
    off_shift, f_slots, chunk_shift, node_size = _node_geometry(layout)
    off_slots = f_slots.offset
    seen = set()
    emitted = 0
    stack = [(head - 2, 0, 0)]
    while stack:
        node, base_index, depth = stack.pop()
        if node in seen:
            damage.add(what, node, "cycle (node already visited)", "cycle")
            continue
        if depth > MAX_DEPTH:
            damage.add(what, node, f"deeper than {MAX_DEPTH}", "bound")
            continue
        seen.add(node)
        if len(seen) > MAX_NODES:
            damage.add(what, node, f"stopped after {MAX_NODES} nodes", "bound")
            return
        try:
            raw = reader.read(node, node_size)
        except Exception as err:  # ReadError; broad so one bad node never ends the walk
            damage.add(what, node, str(getattr(err, "reason", err)))
            continue
        shift = raw[off_shift]
        if shift >= 64 or shift % chunk_shift:
            damage.add(what, node, f"implausible shift {shift}", "corrupt")
            continue
        bad = implausible_node(raw, layout, xa, off_slots, 1 << chunk_shift)
        if bad:
            damage.add(what, node, bad, "corrupt")
            continue
        children = []
        for slot in range(1 << chunk_shift):
            at = off_slots + 8 * slot
            e = int.from_bytes(raw[at:at + f_slots.elem_size], "little")
            if e == 0:
                continue
            index = base_index + (slot << shift)
            if is_node(e):
                if shift == 0:
                    damage.add(what, node, "node entry at the leaf level", "corrupt")
                    continue
                children.append((e - 2, index, depth + 1))
            elif is_internal(e) or e & 1:
                continue   # sibling/retry markers and value entries are not objects
            else:
                yield index, e
                emitted += 1
                if emitted >= limit:
                    damage.add(what, node, f"stopped after {limit} entries", "bound")
                    return
        stack.extend(reversed(children))


def idr_entries(reader: Reader, layout: Layout, idr: int, *, limit: int = MAX_ENTRIES,
                damage: Optional[DamageLog] = None) -> Iterator[Tuple[int, int]]:
    """(id, pointer) for every object in the ``struct idr`` at ``idr``, in id order."""
    base = 0
    if layout.has("idr", "idr_base"):
        base = read_int(reader, layout, "idr", idr, "idr_base")
    xa = idr + layout.offset("idr", "idr_rt")
    for index, ptr in xa_entries(reader, layout, xa, limit=limit, damage=damage):
        yield index + base, ptr


class SlotUnreadable(Exception):
    """The path to an XArray index could not be read: ``addr`` is the part that failed,
    ``reason`` why (excluded by the dump level, unmapped, corrupt)."""

    def __init__(self, what, addr, reason):
        super().__init__(f"{what} at {addr:#x}: {reason}" if addr else f"{what}: {reason}")
        self.what = what
        self.addr = addr
        self.reason = reason


def xa_lookup(reader, layout, xa, index, what="xa_node"):
    """The entry at ``index`` of the ``struct xarray`` at ``xa`` (0 when the slot is empty or
    the tree does not reach that far), reading only the nodes on the way to it.

    Raises :class:`SlotUnreadable` naming the node that could not be read (or was implausible):
    then nothing is known about the slot. This is what tells "absent from the registry" (the
    slot was read and holds something else) from "unverifiable" (the slot was not readable)."""
    try:
        entry = read_int(reader, layout, "xarray", xa, "xa_head")
    except Exception as e:  # ReadError
        raise SlotUnreadable("xarray head", xa, str(getattr(e, "reason", e))) from None
    if not is_node(entry):
        return entry if index == 0 and not is_internal(entry) and not entry & 1 else 0
    off_shift, f_slots, chunk_shift, node_size = _node_geometry(layout)
    off_slots = f_slots.offset
    for depth in range(MAX_DEPTH + 1):
        node = entry - 2
        try:
            raw = reader.read(node, node_size)
        except Exception as e:  # ReadError
            raise SlotUnreadable(what, node, str(getattr(e, "reason", e))) from None
        shift = raw[off_shift]
        if shift >= 64 or shift % chunk_shift:
            raise SlotUnreadable(what, node, f"implausible shift {shift}")
        bad = implausible_node(raw, layout, xa, off_slots, 1 << chunk_shift)
        if bad:
            raise SlotUnreadable(what, node, bad)
        if depth == 0 and index >> (shift + chunk_shift):
            return 0            # beyond what the tree covers: no such index
        slot = (index >> shift) & ((1 << chunk_shift) - 1)
        at = off_slots + 8 * slot
        entry = int.from_bytes(raw[at:at + f_slots.elem_size], "little")
        if not is_node(entry):
            return 0 if is_internal(entry) or entry & 1 else entry
        if shift == 0:
            raise SlotUnreadable(what, node, "node entry at the leaf level")
    raise SlotUnreadable(what, entry - 2, f"deeper than {MAX_DEPTH}")


def idr_lookup(reader, layout, idr, obj_id):
    """The pointer the ``struct idr`` at ``idr`` holds for ``obj_id`` (0: none); raises
    :class:`SlotUnreadable` when the way to its slot cannot be read."""
    base = 0
    if layout.has("idr", "idr_base"):
        try:
            base = read_int(reader, layout, "idr", idr, "idr_base")
        except Exception as e:  # ReadError
            raise SlotUnreadable("idr", idr, str(getattr(e, "reason", e))) from None
    if obj_id < base:
        return 0
    if layout.has("idr", "idr_next"):
        # idr_alloc_cyclic() (every BPF registry) leaves idr_next one past the last id it
        # handed out: a registry that never reached this id is stale or zeroed, not a witness.
        try:
            nxt = read_int(reader, layout, "idr", idr, "idr_next")
        except Exception as e:  # ReadError
            raise SlotUnreadable("idr", idr, str(getattr(e, "reason", e))) from None
        if obj_id >= nxt:
            raise SlotUnreadable("idr", idr, f"its idr_next is {nxt}: it never handed out id "
                                 f"{obj_id} (stale or zeroed memory)")
    return xa_lookup(reader, layout, idr + layout.offset("idr", "idr_rt"), obj_id - base)


def xa_node_counts(reader: Reader, layout: Layout, xa: int) -> Tuple[int, int]:
    """(nodes read, nodes met) of the ``struct xarray`` at ``xa``: how much of a registry was
    readable (an unreadable node counts as met, not read; a head that is no node is one)."""
    try:
        head = read_int(reader, layout, "xarray", xa, "xa_head")
    except Exception:  # ReadError
        return 0, 1
    if not is_node(head):
        return 1, 1
    off_shift, f_slots, chunk_shift, _size = _node_geometry(layout)
    nslots = 1 << chunk_shift
    read = met = 0
    stack, seen = [head - 2], set()
    while stack and met < MAX_NODES:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        met += 1
        try:
            raw = reader.read(node, f_slots.offset + 8 * nslots)
        except Exception:  # ReadError
            continue
        read += 1
        if raw[off_shift] == 0:
            continue
        for slot in range(nslots):
            at = f_slots.offset + 8 * slot
            e = int.from_bytes(raw[at:at + f_slots.elem_size], "little")
            if is_node(e):
                stack.append(e - 2)
    return read, met
