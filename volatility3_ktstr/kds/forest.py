"""Trees whose children are found by another walk (a ``children`` list per node, the chunks
of a radix tree): depth first, each node once, bounded in depth and in nodes.

The caller gives ``children(node)`` (an iterable, typically a :func:`list_entries` walk or the
pointers of one chunk); :func:`depth_first` adds what a hand-rolled recursion forgets: a node met
a second time (a cycle, or a subtree linked twice) is damage and is not walked again, a node
deeper than ``max_depth`` is damage, and the walk stops after ``limit`` nodes.
"""

from .damage import log_of

MAX_NODES = 1 << 20


def depth_first(roots, children, *, max_depth, limit=MAX_NODES, damage=None, what="tree node",
                key=None, addr=None, index=None):
    """Yield (node, depth, parent) for the roots (depth 0, parent None) and everything below
    them, pre-order, children in the order ``children(node)`` gives them.

    ``children(node, depth)`` returns the child nodes; ``key(node)`` the identity used for the
    visited check (the node itself by default: e.g. the low bits of a tagged pointer); nodes
    that are not addresses give ``addr(node)`` (and ``index(node)``) for their damage. Nodes at
    ``max_depth`` are yielded but not expanded (damage of kind "bound" when they have children)."""
    damage = log_of(damage)
    key = key or (lambda n: n)
    addr = addr or (lambda n: n)
    index = index or (lambda n: None)
    visited = set()
    stack = [(r, 0, None) for r in reversed(list(roots))]
    while stack:
        node, depth, parent = stack.pop()
        k = key(node)
        if k in visited:
            damage.add(what, addr(node), "already visited (cycle or shared subtree)", "cycle",
                       index(node))
            continue
        if len(visited) >= limit:
            damage.add(what, addr(node), f"more than {limit} nodes", "bound", index(node))
            return
        visited.add(k)
        yield node, depth, parent
        kids = list(children(node, depth))
        if kids and depth >= max_depth:
            damage.add(what, addr(node), f"deeper than {max_depth}: children not walked", "bound",
                       index(node))
            continue
        stack.extend((c, depth + 1, node) for c in reversed(kids))
