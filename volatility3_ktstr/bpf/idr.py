"""IDR / XArray walks (lib/xarray.c, lib/idr.c) over raw reads.

An IDR is an XArray (``idr.idr_rt``) plus ``idr_base``. Entries are tagged pointers: a node
pointer has low bits 0b10 and is > 4096 (smaller 0b10 values are sibling/retry markers), a
value entry has bit 0 set. Nodes hold ``1 << XA_CHUNK_SHIFT`` slots (64 normally).
"""

from dataclasses import dataclass, field

MAX_DEPTH = 16
DEFAULT_MAX_ENTRIES = 1 << 20
DEFAULT_MAX_NODES = 1 << 16


def is_node(entry):
    return entry & 3 == 2 and entry > 4096


def is_internal(entry):
    return entry & 3 == 2


@dataclass
class WalkStats:
    """What a walk could not read; reported by plugins so damage is never silent."""

    nodes: int = 0
    bad_nodes: list = field(default_factory=list)   # (node address, reason)
    truncated: bool = False


def xa_entries(reader, layout, xa_addr, max_entries=DEFAULT_MAX_ENTRIES, stats=None):
    """Yield (index, entry) for every normal (pointer) entry of the XArray at ``xa_addr``."""
    stats = stats if stats is not None else WalkStats()
    head = reader.u64(xa_addr + layout.offset("xarray", "xa_head"))
    if head == 0:
        return
    if not is_node(head):
        if not head & 1 and not is_internal(head):
            yield 0, head
        return
    off_shift = layout.offset("xa_node", "shift")
    off_slots = layout.offset("xa_node", "slots")
    nslots = (layout.size("xa_node") - off_slots) // 8
    nslots = 64 if nslots <= 0 else min(nslots, 64)
    chunk_shift = max(1, nslots.bit_length() - 1)
    node_size = off_slots + 8 * (1 << chunk_shift)
    seen = set()
    emitted = 0
    stack = [(head - 2, 0, 0)]
    while stack:
        node, base_index, depth = stack.pop()
        if node in seen or depth > MAX_DEPTH:
            stats.bad_nodes.append((node, "cycle" if node in seen else "too deep"))
            continue
        seen.add(node)
        stats.nodes += 1
        if stats.nodes > DEFAULT_MAX_NODES:
            stats.truncated = True
            return
        try:
            raw = reader.read(node, node_size)
        except Exception as e:  # ReadError; kept broad so one bad node never ends the walk
            stats.bad_nodes.append((node, str(e)))
            continue
        shift = raw[off_shift]
        if shift >= 64 or shift % chunk_shift:
            stats.bad_nodes.append((node, f"implausible shift {shift}"))
            continue
        children = []
        for slot in range(1 << chunk_shift):
            e = int.from_bytes(raw[off_slots + 8 * slot:off_slots + 8 * slot + 8], "little")
            if e == 0:
                continue
            index = base_index + (slot << shift)
            if is_node(e):
                if shift == 0:
                    stats.bad_nodes.append((node, "node entry at the leaf level"))
                    continue
                children.append((e - 2, index, depth + 1))
            elif is_internal(e) or e & 1:
                continue   # sibling/retry markers and value entries are not objects
            else:
                yield index, e
                emitted += 1
                if emitted >= max_entries:
                    stats.truncated = True
                    return
        stack.extend(reversed(children))


def idr_entries(reader, layout, idr_addr, max_entries=DEFAULT_MAX_ENTRIES, stats=None):
    """Yield (id, pointer) for every object in the IDR at ``idr_addr``, in id order."""
    base = 0
    if layout.has("idr", "idr_base"):
        base = reader.u32(idr_addr + layout.offset("idr", "idr_base"))
    xa = idr_addr + layout.offset("idr", "idr_rt")
    for index, ptr in xa_entries(reader, layout, xa, max_entries, stats):
        yield index + base, ptr
