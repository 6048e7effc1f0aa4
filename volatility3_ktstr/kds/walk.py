"""Generic bounded, cycle-checked walks for structures that are not one pointer chain.

- ``steps``: a chain whose next state a function computes from the current one (a path that
  crosses mounts: (mount, dentry) pairs; any walk whose link is more than one pointer).
- ``tree_nodes``: a tree whose children a function gives (cgroups through
  ``css.children``, dentries through ``d_children``): depth first, pre-order, children in the
  order given.

Both are bounded (``limit`` states/nodes, ``max_depth``), detect cycles, and record what stopped
them in a :class:`DamageLog` (kinds ``bound``, ``cycle``, ``unreadable``) instead of raising.
"""

from typing import Callable, Hashable, Iterable, Iterator, Optional, Set, Tuple, TypeVar

from ..core import ReadError
from .damage import DamageLog, log_of

S = TypeVar("S", bound=Hashable)

MAX_STEPS = 1 << 12
MAX_TREE = 1 << 17
MAX_TREE_DEPTH = 64


def steps(first: S, step: Callable[[S], Optional[S]], *, limit: int = MAX_STEPS,
          damage: Optional[DamageLog] = None, what: str = "step") -> Iterator[S]:
    """``first``, ``step(first)``, ... until ``step`` returns None. A ``ReadError`` from ``step``
    ends the walk as damage (kind ``unreadable``); so do a state seen before (``cycle``) and
    more than ``limit`` states (``bound``)."""
    damage = log_of(damage)
    seen: Set[S] = set()
    cur: Optional[S] = first
    while cur is not None:
        if cur in seen:
            damage.add(what, _addr(cur), "cycle (state already visited)", "cycle")
            return
        if len(seen) >= limit:
            damage.add(what, _addr(cur), f"stopped after {limit} steps", "bound")
            return
        seen.add(cur)
        yield cur
        try:
            cur = step(cur)
        except ReadError as e:
            damage.add(what, _addr(cur), f"unreadable ({e.reason})")
            return


def tree_nodes(root: int, children: Callable[[int], Iterable[int]], *, limit: int = MAX_TREE,
               max_depth: int = MAX_TREE_DEPTH, damage: Optional[DamageLog] = None,
               what: str = "tree node") -> Iterator[Tuple[int, int, int]]:
    """(node, depth, parent) of the tree under ``root`` (itself first, depth 0, parent 0),
    depth first. ``children(node)`` is asked after the node was yielded (a caller may decide
    from what it read whether to descend) and may be a kds generator itself; its damage is
    its own. A node visited twice is a cycle (skipped), nodes at ``max_depth`` are not
    expanded (damage when they have any), more than ``limit`` nodes end the walk."""
    damage = log_of(damage)
    stack = [(root, 0, 0)]
    seen: Set[int] = set()
    while stack:
        node, depth, parent = stack.pop()
        if node in seen:
            damage.add(what, node, f"cycle ({what} already visited)", "cycle")
            continue
        if len(seen) >= limit:
            damage.add(what, node, f"stopped after {limit} {what}s", "bound")
            return
        seen.add(node)
        yield node, depth, parent
        if depth >= max_depth:
            if next(iter(children(node)), None) is not None:
                damage.add(what, node, f"deeper than {max_depth}: children skipped", "bound")
            continue
        stack.extend((kid, depth + 1, node) for kid in reversed(list(children(node))))


def _addr(state) -> int:
    """The address a damage record names for a state (its first int)."""
    if isinstance(state, tuple):
        state = next((s for s in state if isinstance(s, int)), 0)
    return state if isinstance(state, int) else 0
