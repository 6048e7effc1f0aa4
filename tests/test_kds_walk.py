"""kds.steps and kds.tree_nodes: order, bounds, cycles, unreadable steps."""

from volatility3_ktstr.core import ReadError
from volatility3_ktstr.kds import DamageLog, steps, tree_nodes


def test_steps_follow_until_none():
    chain = {1: 2, 2: 3, 3: None}
    assert list(steps(1, chain.get)) == [1, 2, 3]


def test_steps_cycle_bound_and_unreadable_are_damage():
    d = DamageLog()
    assert list(steps(1, {1: 2, 2: 1}.get, damage=d)) == [1, 2]
    assert [x.kind for x in d] == ["cycle"]
    d = DamageLog()
    assert list(steps(0, lambda s: s + 1, limit=5, damage=d)) == [0, 1, 2, 3, 4]
    assert [x.kind for x in d] == ["bound"]

    def bad(s):
        if s == 2:
            raise ReadError(0x2000, 8)
        return s + 1

    d = DamageLog()
    assert list(steps((1, 0x1000), lambda s: (bad(s[0]), s[1]), damage=d)) == [(1, 0x1000), (2, 0x1000)]
    assert [x.kind for x in d] == ["unreadable"] and next(iter(d)).addr == 2


TREE = {1: [2, 5], 2: [3, 4], 5: [6]}


def test_tree_nodes_preorder_with_parents_and_depths():
    got = list(tree_nodes(1, lambda n: TREE.get(n, ())))
    assert got == [(1, 0, 0), (2, 1, 1), (3, 2, 2), (4, 2, 2), (5, 1, 1), (6, 2, 5)]


def test_tree_nodes_cycle_depth_and_bound():
    d = DamageLog()
    cyclic = {1: [2], 2: [1, 3]}
    assert [n for n, _, _ in tree_nodes(1, lambda n: cyclic.get(n, ()), damage=d, what="cgroup")] == [1, 2, 3]
    assert [(x.kind, x.reason) for x in d] == [("cycle", "cycle (cgroup already visited)")]
    d = DamageLog()
    assert [n for n, _, _ in tree_nodes(1, lambda n: TREE.get(n, ()), max_depth=1, damage=d)] == [1, 2, 5]
    # the leaves at the cut have no children: only 2 and 5 are reported
    assert sorted(x.addr for x in d) == [2, 5] and {x.kind for x in d} == {"bound"}
    d = DamageLog()
    assert len(list(tree_nodes(1, lambda n: TREE.get(n, ()), limit=3, damage=d))) == 3
    assert [x.kind for x in d] == ["bound"]


def test_tree_nodes_asks_children_after_the_node_is_consumed():
    expand = set()
    got = []
    for n, _, _ in tree_nodes(1, lambda n: TREE.get(n, ()) if n in expand else ()):
        got.append(n)
        if n in (1, 5):
            expand.add(n)
    assert got == [1, 2, 5, 6]
