"""Every ``struct scx_sched`` in memory, and how each was reached.

Paths: ``scx_root`` (the root scheduler); ``scx_sched_all`` (7.x: every scheduler through
``scx_sched.all``); each scheduler's ``children`` (linked by ``sibling``); and the sched_ext
struct_ops maps: the kernel copy of a struct_ops ``sched_ext_ops`` points back at its scheduler
through ``ops.priv`` until the BPF link is detached, which keeps a disabled scheduler (``scx_root``
NULL, off ``scx_sched_all``) reachable with its exit info.
"""

from dataclasses import dataclass, field
from typing import Any

from collections.abc import Iterable

from .. import kds
from ..core import Layout, LayoutError, Reader, ReadError, Record
from ..kds import DamageLog
from .state import MAX_SUB_DEPTH, sched_ops_addr
from .struct_ops import SCX_VALUE_STRUCT, struct_ops_kdata, struct_ops_sched

MAX_SCHEDS = 1024            # schedulers over all discovery paths


@dataclass
class SchedRef:
    """A scheduler found in memory and how: ``via`` lists the paths that reach it
    (``scx_root``, ``scx_sched_all``, ``children of 0x...``, ``struct_ops map <id> <name>``)."""

    addr: int
    via: list = field(default_factory=list)
    depth: int = 0                 # nesting under the first scheduler that reaches it
    parent: int = None


def sub_scheds(reader: Reader, layout: Layout, root: int, max_depth: int = MAX_SUB_DEPTH,
               max_total: int = MAX_SCHEDS, damage: DamageLog | None = None) -> list[tuple]:
    """Sub-schedulers under ``root`` (``scx_sched.children``, linked by ``sibling``), depth
    first: [(scx_sched address, depth, parent)]; what could not be walked goes to ``damage``.
    Kernels without sub-schedulers give []."""
    damage = damage if damage is not None else kds.DamageLog()
    if not root or not (layout.has("scx_sched", "children") and layout.has("scx_sched", "sibling")):
        return []
    children_off = layout.offset("scx_sched", "children")

    def children(sch, depth):
        return kds.list_entries(reader, layout, sch + children_off, "scx_sched", "sibling",
                                limit=max_total, damage=damage, what=f"children list of {sch:#x}")

    return [(sch, depth, parent) for sch, depth, parent in
            kds.depth_first([root], children, max_depth=max_depth, limit=max_total, damage=damage,
                            what="sub-scheduler") if depth]


def find_scheds(reader: Reader, layout: Layout, syms: dict, extra: Iterable[tuple[int, str]] = (),
                damage: DamageLog | None = None) -> list[SchedRef]:
    """Every ``struct scx_sched`` reachable: ``scx_root``, the ``scx_sched_all`` list, the
    ``children`` of each, and ``extra`` [(address, how)] (the ``ops.priv`` of struct_ops maps).
    Returns [SchedRef], root first, then each tree depth first; [] on kernels without
    ``struct scx_sched``."""
    damage = damage if damage is not None else kds.DamageLog()
    if not layout.has("scx_sched"):
        return []
    refs = {}

    def add(addr, how, depth=0, parent=None):
        if not addr:
            return None
        ref = refs.get(addr)
        if ref is None:
            if len(refs) >= MAX_SCHEDS:
                damage.add("scheduler", addr, f"more than {MAX_SCHEDS} schedulers", "bound")
                return None
            ref = refs[addr] = SchedRef(addr, depth=depth, parent=parent)
        if how not in ref.via:
            ref.via.append(how)
        return ref

    if syms.get("root") is not None:
        try:
            add(reader.ptr(syms["root"]), "scx_root")
        except ReadError as e:
            damage.add("scx_root", syms["root"], f"unreadable ({e.reason})")
    if syms.get("sched_all") is not None and layout.has("scx_sched", "all"):
        for sch in kds.list_entries(reader, layout, syms["sched_all"], "scx_sched", "all",
                                    limit=MAX_SCHEDS, damage=damage, what="scx_sched_all node"):
            add(sch, "scx_sched_all")
    for addr, how in extra:
        add(addr, how)
    for top in list(refs):
        for child, depth, parent in sub_scheds(reader, layout, top, damage=damage):
            ref = add(child, f"children of {parent:#x}", depth, parent)
            if ref is not None and ref.parent is None:
                ref.depth, ref.parent = depth, parent
    return tree_order(refs)


def tree_order(refs: dict[int, SchedRef]) -> list[SchedRef]:
    """Each top-level scheduler followed by its descendants (depth first). Every ref has one
    parent, so a walk down from the top-level ones meets each once; refs on a parent cycle
    (unreachable from the top) are listed last."""
    kids = {}
    for ref in refs.values():
        kids.setdefault(ref.parent, []).append(ref)
    out = []
    stack = [(r, 0) for r in reversed(list(refs.values())) if r.parent is None or r.parent not in refs]
    while stack:
        ref, depth = stack.pop()
        out.append(ref)
        if depth < MAX_SUB_DEPTH:
            stack.extend((k, depth + 1) for k in reversed(kids.get(ref.addr, ())))
    listed = {r.addr for r in out}
    return out + [r for r in refs.values() if r.addr not in listed]


# --- the struct_ops maps of BPF schedulers ------------------------------------------------------


@dataclass
class SchedOpsMap:
    """A struct_ops map holding a ``sched_ext_ops`` (a BPF scheduler's registration)."""

    map: Any                 # BpfMap
    st_map: int              # struct bpf_struct_ops_map address
    kdata: int               # the kernel copy of the ops
    priv: int = None         # ops.priv: the scx_sched it registered (None: kernel without priv)


def _same_ops(reader, layout, sch, kdata):
    """The scx_sched at ``sch`` copied its ops from ``kdata`` (same name)."""
    if not layout.has("scx_sched", "ops"):
        return False
    name = Record(reader, layout, "sched_ext_ops", kdata, ["name"]).str("name")
    mine = Record(reader, layout, "sched_ext_ops", sched_ops_addr(layout, sch), ["name"]).str("name")
    return bool(name) and name == mine


def sched_ops_maps(reader: Reader, layout: Layout, maps: Iterable, damage: DamageLog) -> list[SchedOpsMap]:
    """Every struct_ops map of ``maps`` whose value is a ``sched_ext_ops``, with ``ops.priv``
    (kept only when it points at a ``scx_sched`` whose ops carry the same name)."""
    out = []
    if not layout.has("bpf_struct_ops_map"):
        return out
    off = layout.offset("bpf_struct_ops_map", "map")
    size = layout.size(SCX_VALUE_STRUCT) if layout.has(SCX_VALUE_STRUCT) else None
    for m in maps:
        # Other struct_ops (tcp_congestion_ops, ...) have values of other sizes.
        if m.type_name != "struct_ops" or m.error or (size and m.value_size != size):
            continue
        st_map = m.kva - off
        om = SchedOpsMap(m, st_map, struct_ops_kdata(layout, st_map, SCX_VALUE_STRUCT))
        try:
            priv = struct_ops_sched(reader, layout, st_map, SCX_VALUE_STRUCT)
            if priv and _same_ops(reader, layout, priv, om.kdata):
                om.priv = priv
            elif priv:
                damage.add(f"struct_ops map {m.id} ops.priv", priv,
                           "is not a scheduler with these ops", "corrupt")
        except (ReadError, LayoutError) as e:
            damage.add(f"struct_ops map {m.id} ops.priv", 0, f"unreadable: {e}")
        out.append(om)
    return out
