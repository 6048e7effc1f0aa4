"""Red-black trees (include/linux/rbtree_types.h): in-order walk of a ``struct rb_root``.

``struct rb_node {__rb_parent_color, rb_right, rb_left}``; ``struct rb_root {rb_node}``;
``struct rb_root_cached {rb_root, rb_leftmost}`` holds an rb_root at its start. Offsets from
the layout. The walk is iterative (no recursion on guest data), bounded in nodes and depth
(an RB tree of 2^20 nodes is at most 40 deep; corrupt links may loop), and cycle-checked.
"""

from typing import Iterator, List, Optional, Set, Tuple

from ..core import Layout, ReadError, Reader
from .damage import DamageLog, log_of

MAX_NODES = 1 << 20
MAX_DEPTH = 128


def rb_nodes(reader: Reader, layout: Layout, root: int, *, limit: int = MAX_NODES,
             damage: Optional[DamageLog] = None, what: str = "rb_node") -> Iterator[int]:
    """Node addresses of the tree at ``root`` (a ``struct rb_root``) in key order."""
    damage = log_of(damage)
    f_left = layout.field("rb_node", "rb_left")
    f_right = layout.field("rb_node", "rb_right")
    lo = min(f_left.offset, f_right.offset)
    size = max(f_left.end, f_right.end) - lo
    try:
        node = reader.ptr(root + layout.offset("rb_root", "rb_node"))
    except ReadError as e:
        damage.add("rb_root", root, f"unreadable ({e.reason})")
        return
    seen: Set[int] = set()
    stack: List[Tuple[int, int]] = []          # (node, right child) waiting for their in-order visit
    while node or stack:
        while node:
            if node in seen:
                damage.add(what, node, "cycle (node already visited)", "cycle")
                node = 0
                break
            if len(seen) >= limit:
                damage.add(what, node, f"stopped after {limit} nodes", "bound")
                return
            if len(stack) >= MAX_DEPTH:
                damage.add(what, node, f"deeper than {MAX_DEPTH}: subtree skipped", "bound")
                node = 0
                break
            seen.add(node)
            try:
                raw = reader.read(node + lo, size)
            except ReadError as e:
                damage.add(what, node, f"unreadable ({e.reason}): subtree skipped")
                node = 0
                break
            stack.append((node, f_right.decode(raw, lo)))
            node = f_left.decode(raw, lo)
        if not stack:
            return
        node, right = stack.pop()
        yield node
        node = right
