"""The one enumeration of BPF objects every listing plugin uses (``bpf.objects.Inventory``),
built from the kernel adapter once per adapter.

``maps(kctx, damage)``, ``progs(...)``, ``links(...)`` give what ``kctx.maps()`` etc. give on a
healthy dump (the registry, id order, its damage into ``damage``); when the registry walk
recorded damage, the objects reached only another way (fds, used_maps, links, hooks, slots,
kallsyms, pins) follow, each with an :class:`~volatility3_ktstr.bpf.objects.Entry` saying how.
No Volatility import.
"""

import types
import weakref

from ..bpf import objects as bpfobjects
from ..core import LayoutError
from ..walkers import arena as arenaw
from ..errors import KtstrError
from ..kds import DamageLog

_CACHE = weakref.WeakKeyDictionary()


def _state(kctx):
    try:
        return _CACHE.setdefault(kctx, {})
    except TypeError:       # an adapter that cannot be weakly referenced: no sharing
        return {}


def _registry(kctx, kind):
    st = _state(kctx)
    key = ("registry", kind)
    if key not in st:
        name = bpfobjects.REGISTRY_OF[kind]
        reg = bpfobjects.Registry(kind, name, kctx.symbol(name) or 0)
        try:
            if kind == "map":
                reg.records = list(kctx.maps(reg.damage))
            elif kind == "prog":
                reg.records = list(kctx.progs(reg.damage))
            elif kind == "link":
                reg.records = list(kctx.links(reg.damage))
            else:
                objs = kctx.btf_objects(reg.damage)
                if not objs and not reg.addr:
                    reg.error = "kernel symbol 'btf_idr' is not in the symbol table"
                reg.records = sorted(objs.items())
        except KtstrError as e:
            reg.error = str(e)
        st[key] = reg
    return st[key]


def registries(kctx, kinds=bpfobjects.KINDS):
    return {k: _registry(kctx, k) for k in kinds}


def inventory(kctx, kind="map", forensic=False) -> bpfobjects.Inventory:
    """The Inventory of ``kctx``: the ``kind`` registry alone while it was read whole, every
    registry and every other path once it was not (or with ``forensic``)."""
    st = _state(kctx)
    full = st.get("full")
    if full is not None:
        return full
    reg = _registry(kctx, kind)
    if reg.complete and not forensic:
        key = ("light", kind)
        if key not in st:
            # The registry alone: no BpfKernel needed (stand-in adapters of tests lack one).
            plain = types.SimpleNamespace(reader=kctx.reader, layout=kctx.layout)
            st[key] = bpfobjects.Inventory(plain, {kind: reg})
        return st[key]
    inv = bpfobjects.Inventory(kctx.bpf_kernel(), registries(kctx))
    from . import bpfhooks
    from . import bpfobjects as objs

    damage = inv.off_damage
    links, attachments, _links_ok = bpfhooks.collect(kctx, damage)
    fds, fd_damage = objs.fd_scan(kctx)
    pins, pin_damage = objs.pin_scan(kctx)
    inv.add_off_registry(links, attachments, fds, pins, damage)
    inv.fd_damage, inv.pin_damage = fd_damage, pin_damage
    st["full"] = inv
    return inv


def _listing(kctx, kind, damage, require):
    reg = _registry(kctx, kind)
    if reg.error and require and reg.absent:
        raise KtstrError(reg.error)     # no such registry (or type): nothing to list
    if damage is not None:
        damage.extend(reg.damage)
        if reg.error and not reg.absent:
            # the head itself is unreadable: the other paths still give the objects
            damage.add(reg.name, reg.addr, reg.error)
    inv = inventory(kctx, kind)
    return inv.records(kind)


def maps(kctx, damage=None, require=True):
    """Every BPF map reachable (registry first, id order); ``map_idr`` damage into ``damage``."""
    return _listing(kctx, "map", damage, require)


def progs(kctx, damage=None, require=True):
    return _listing(kctx, "prog", damage, require)


def links(kctx, damage=None, require=True):
    return _listing(kctx, "link", damage, require)


def arenas(kctx):
    """ArenaInfo of every arena map reachable (the union: an arena found off-registry counts)."""
    st = _state(kctx)
    if "arenas" not in st:
        st["arenas"] = arenaw.arena_infos(kctx.reader, kctx.layout, maps(kctx), kctx.page_size)
    return st["arenas"]


def prog_arenas(kctx):
    """(programs, {prog kva: prog->aux->arena}) over every program reachable; ([], {}) when no
    program can be listed (arena attribution then falls back to pointer ranges)."""
    st = _state(kctx)
    if "prog_arenas" not in st:
        try:
            found = progs(kctx)
        except (KtstrError, LayoutError):
            found = []
        st["prog_arenas"] = (found, {p.kva: arenaw.prog_arena_kva(kctx.reader, kctx.layout, p.aux_kva)
                                     for p in found})
    return st["prog_arenas"]


def entry(kctx, kind, kva):
    """The Entry of an object (None when no inventory has it)."""
    st = _state(kctx)
    inv = st.get("full") or st.get(("light", kind))
    return inv.entry(kind, kva) if inv is not None else None


def off_registry_note(kctx, kind, kva) -> str:
    e = entry(kctx, kind, kva)
    return e.note() if e is not None else ""


def coverage_rows(kctx, kind):
    """Texts for a listing's coverage rows: none on a healthy dump (registry read whole, every
    object readable), so its output stays as it was; otherwise how much was readable."""
    st = _state(kctx)
    full = st.get("full")
    inv = full or st.get(("light", kind))
    if inv is None:
        return []
    reg = inv.registries.get(kind)
    if reg is not None and reg.complete and not any(e.error for e in inv.entries(kind)):
        return []
    out = [f"coverage: {inv.coverage(kind)}"]
    if full is None:
        return out
    for what, log in (("off-registry walks", inv.off_damage),
                      ("fd scan", getattr(inv, "fd_damage", DamageLog())),
                      ("bpffs walk", getattr(inv, "pin_damage", DamageLog()))):
        if log:
            out.append(f"coverage: {what}: {log.summary()}")
    return out


def damage_texts(kctx, kinds=("map",)):
    """What a plugin that reads the ``kinds`` registries says about them after its own rows:
    each registry part skipped and the coverage line ([] on a healthy dump)."""
    out = []
    for kind in kinds:
        reg = _registry(kctx, kind)
        name = bpfobjects.REGISTRY_OF[kind]
        if reg.error:
            out.append(f"{name} not read: {reg.error}")
        for d in reg.damage:
            out.append(f"{name} node skipped: {d}")
        inventory(kctx, kind)
        out.extend(coverage_rows(kctx, kind)[:1])
    return out


def summary_of(kctx, kind="map") -> str:
    """"12 maps read (map_idr whole)" / "... (map_idr damaged: ...)": for "found nothing" rows."""
    reg = _registry(kctx, kind)
    inv = inventory(kctx, kind)
    noun = {"map": "maps", "prog": "programs", "link": "links", "btf": "BTF objects"}[kind]
    state = "read whole" if reg.complete else (f"not read: {reg.error}" if reg.error else
                                                f"damaged: {len(reg.damage)} parts skipped")
    return f"{len(inv.entries(kind))} {noun} reached ({reg.name} {state})"


def tasks(kctx):
    """The cross-view of the kernel's task lists (``walkers.alltasks.TaskLists``), once."""
    from ..walkers import alltasks

    st = _state(kctx)
    if "tasks" not in st:
        try:
            offsets = kctx.per_cpu_offsets()
        except KtstrError:
            offsets = []
        cursor = dict(kctx.enum("scx_ent_flags") or ()).get("SCX_TASK_CURSOR", 0) & 0xFFFFFFFF
        st["tasks"] = alltasks.collect(kctx.reader, kctx.layout, kctx.symbol, offsets, cursor)
    return st["tasks"]
