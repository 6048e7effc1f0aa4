"""Red-black trees (include/linux/rbtree_types.h): in-order walk of a ``struct rb_root``.

``struct rb_node {__rb_parent_color, rb_right, rb_left}``; ``struct rb_root {rb_node}``;
``struct rb_root_cached {rb_root, rb_leftmost}`` holds an rb_root at its start. Offsets from
the layout. The walk is iterative (no recursion on guest data), bounded in nodes and depth
(an RB tree of 2^20 nodes is at most 40 deep; corrupt links may loop), and cycle-checked.
"""

from ..core import ReadError
from .damage import log_of

MAX_NODES = 1 << 20
MAX_DEPTH = 128


def rb_nodes(reader, layout, root, *, limit=MAX_NODES, damage=None, what="rb_node"):
    """Node addresses of the tree at ``root`` (a ``struct rb_root``) in key order."""
    damage = log_of(damage)
    off_left = layout.offset("rb_node", "rb_left")
    off_right = layout.offset("rb_node", "rb_right")
    lo = min(off_left, off_right)
    size = max(off_left, off_right) + 8 - lo
    try:
        node = reader.ptr(root + layout.offset("rb_root", "rb_node"))
    except ReadError as e:
        damage.add("rb_root", root, f"unreadable ({e.reason})")
        return
    seen = set()
    stack = []          # (node, right child) waiting for their in-order visit
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
            stack.append((node, int.from_bytes(raw[off_right - lo:off_right - lo + 8], "little")))
            node = int.from_bytes(raw[off_left - lo:off_left - lo + 8], "little")
        if not stack:
            return
        node, right = stack.pop()
        yield node
        node = right
