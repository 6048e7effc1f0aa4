"""Kernel data structures over a Reader + Layout (drgn's ``helpers/linux`` in spirit).

Each generator walks one kernel structure, yields addresses, is bounded and cycle-checked, and
records what it could not read in a :class:`DamageLog` (one :class:`Damage` per skipped part).
No Volatility import.

    list_nodes / list_entries     struct list_head (circular)
    hlist_nodes                   struct hlist_head (NULL-terminated)
    hlist_nulls_nodes             struct hlist_nulls_head (odd nulls marker)
    hash_table_nodes              an array of hlist heads (kprobe_table, trampoline_table)
    parent_chain                  parent pointers up to the root
    follow                        any singly linked chain (the loop the above share)
    rb_nodes                      struct rb_root (in order)
    depth_first                   trees whose children come from another walk
    rhashtable_nodes              struct rhashtable (bucket tables, future_tbl)
    xa_entries / idr_entries      struct xarray / struct idr
    steps                         a chain whose next state a function computes (mount crossings)
    tree_nodes                    a tree whose children a function gives (cgroups, dentries)
    xa_lookup / idr_lookup        one index of them (SlotUnreadable when its path is not)
"""

from .damage import Damage, DamageLog
from .forest import depth_first
from .lists import (follow, hash_table_nodes, hlist_nodes, hlist_nulls_nodes, list_entries,
                    list_nodes, parent_chain)
from .rbtree import rb_nodes
from .rhashtable import rhashtable_nodes
from .walk import steps, tree_nodes
from .xarray import SlotUnreadable, idr_entries, idr_lookup, xa_entries, xa_lookup

__all__ = ["Damage", "DamageLog", "follow", "list_nodes", "list_entries", "hlist_nodes",
           "hash_table_nodes", "hlist_nulls_nodes", "parent_chain", "rb_nodes", "rhashtable_nodes",
           "xa_entries", "idr_entries", "steps", "tree_nodes", "depth_first", "xa_lookup", "idr_lookup",
           "SlotUnreadable"]
