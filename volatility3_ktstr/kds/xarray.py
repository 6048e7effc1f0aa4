"""XArray and IDR walks (lib/xarray.c, lib/idr.c): ``map_idr``, ``prog_idr``, ``link_idr``...

An IDR is an XArray (``idr.idr_rt``) plus ``idr_base``. XArray entries are tagged pointers: a
node pointer has low bits 0b10 and is > 4096 (smaller 0b10 values are sibling/retry markers), a
value entry has bit 0 set. A ``struct xa_node`` holds ``1 << XA_CHUNK_SHIFT`` slots (64 unless
the kernel was built with a small base); the slot count comes from the layout. IDRs replaced
radix trees in 4.11 (same node layout under ``radix_tree_node`` before 4.20).
"""

from typing import Iterator, Optional, Tuple

from ..core import Layout, Reader, read_int
from .damage import DamageLog, log_of

MAX_DEPTH = 16
MAX_ENTRIES = 1 << 20
MAX_NODES = 1 << 16


def is_node(entry: int) -> bool:
    return entry & 3 == 2 and entry > 4096


def is_internal(entry: int) -> bool:
    return entry & 3 == 2


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
    off_shift = layout.offset("xa_node", "shift")
    f_slots = layout.field("xa_node", "slots")
    off_slots = f_slots.offset
    nslots = (layout.size("xa_node") - off_slots) // 8
    nslots = 64 if nslots <= 0 else min(nslots, 64)
    chunk_shift = max(1, nslots.bit_length() - 1)
    node_size = off_slots + 8 * (1 << chunk_shift)
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
