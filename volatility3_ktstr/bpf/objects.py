"""Every BPF map, program, link and BTF object the dump holds, by every path the package knows,
each with how it was found and a registry verdict.

The ID registries (``map_idr``, ``prog_idr``, ``link_idr``, ``btf_idr``) are the first path. A
makedumpfile ``-d 31`` dump may lack a registry node; the objects it held are still reachable
another way: each process's fds, programs' ``used_maps``, links, the hooks (cgroups, devices,
trampolines, struct_ops...), ``prog_array`` and map-in-map slots, ``bpf_kallsyms``, bpffs pins
(:func:`volatility3_ktstr.bpf.hidden.references` gathers them). :class:`Inventory` is their
union keyed by (kind, address).

Each object gets one of three verdicts against its registry (:func:`verdict`):

- ``registered``: the registry walk reached it (or its id's slot holds it);
- ``hidden``: the registry was readable exactly where it would be -- the slot for its id was
  read and holds something else or nothing (a rootkit's unlinked object) --, or the registry
  was read whole and its id is unknown;
- ``unverifiable``: the part of the registry that would hold it could not be read; the reason
  names that part and why (excluded by the dump level, unmapped, corrupt).

The off-registry paths cost a task walk, a bpffs walk and the hook walkers: a plugin only pays
for them when a registry walk recorded damage (or when it is a forensic one that needs them
anyway). No Volatility import.
"""

from dataclasses import dataclass, field
from typing import Optional

from ..core import ReadError, read_int
from ..kds import DamageLog, SlotUnreadable, idr_lookup
from ..kds.xarray import xa_node_counts
from . import hidden as bpfhidden
from . import progs as bpfprogs
from .links import LinkDecoder
from .maps import read_map

KINDS = ("map", "prog", "link", "btf")
REGISTRY_OF = {"map": "map_idr", "prog": "prog_idr", "link": "link_idr", "btf": "btf_idr"}
STRUCT_OF = {"map": "bpf_map", "prog": "bpf_prog", "link": "bpf_link", "btf": "btf"}

REGISTERED = "registered"
HIDDEN = "hidden"
UNVERIFIABLE = "unverifiable"


@dataclass
class Registry:
    """One ID registry as read: its records (BpfMap/BpfProg/BpfLink, or (id, kva) for BTF),
    what its walk skipped, or why it could not be read at all (``error``)."""

    kind: str
    name: str
    addr: int = 0
    records: list = field(default_factory=list)
    damage: DamageLog = field(default_factory=DamageLog)
    error: str = ""             # the registry was not read at all (no symbol, head unreadable)

    @property
    def readable(self) -> bool:
        return not self.error

    @property
    def absent(self) -> bool:
        """The kernel (or its symbol table) has no such registry: nothing is judged against it."""
        return not self.addr or "not in the symbol table" in self.error

    @property
    def complete(self) -> bool:
        return not self.error and not self.damage

    def kvas(self):
        return {kva for _id, kva in self.pairs()}

    def pairs(self):
        if self.kind == "btf":
            return list(self.records)
        return [(r.id, r.kva) for r in self.records]


@dataclass
class Entry:
    """One object: where it is, its record, every path that reached it, its verdict."""

    kind: str
    kva: int
    id: int = -1
    record: object = None       # BpfMap / BpfProg / BpfLink (None for BTF objects)
    via: list = field(default_factory=list)
    verdict: str = REGISTERED
    why: str = ""               # the verdict's reason (the unreadable part for unverifiable)
    error: str = ""

    @property
    def off_registry(self) -> bool:
        return self.verdict != REGISTERED

    def note(self) -> str:
        """What a plugin row says about an object its registry did not list ('' otherwise)."""
        if not self.off_registry:
            return ""
        reg = REGISTRY_OF[self.kind]
        via = "; ".join(self.via[:3]) + (f" (+{len(self.via) - 3} more)" if len(self.via) > 3 else "")
        return f"not reached through {reg}, found via {via}; {self.verdict}: {self.why}"


def verdict(reader, layout, registry: Registry, kva: int, obj_id: Optional[int]):
    """(verdict, reason) of the object at ``kva`` (id ``obj_id``, None/-1 when unknown)
    against ``registry``."""
    name = registry.name
    if kva in registry.kvas():
        return REGISTERED, name
    if registry.error:
        return UNVERIFIABLE, f"{name} not read ({registry.error})"
    if obj_id is None or obj_id < 0:
        if registry.complete:
            return HIDDEN, f"absent from {name} (read whole; its id is unreadable)"
        first = next(iter(registry.damage))
        return UNVERIFIABLE, f"id unreadable and {name} damaged ({first})"
    try:
        entry = idr_lookup(reader, layout, registry.addr, obj_id)
    except SlotUnreadable as e:
        return UNVERIFIABLE, f"{name} slot for id {obj_id} unreadable: {e}"
    if entry == kva:
        return REGISTERED, f"{name} slot {obj_id}"
    if entry == 0:
        return HIDDEN, f"{name} slot for id {obj_id} was read and is empty"
    return HIDDEN, f"{name} slot for id {obj_id} was read and holds {entry:#x}"


class Inventory:
    """The union of every path to BPF objects of one kernel (see the module docstring).

    ``registries`` are read first; ``add_off_registry`` merges what other paths reached.
    ``entries(kind)`` lists registry objects in id order, then off-registry ones by id."""

    def __init__(self, bk, registries):
        self.bk = bk
        self.registries = registries                # {kind: Registry}
        self.by_key = {}                            # (kind, kva) -> Entry
        self.off_walked = False
        self.off_damage = DamageLog()               # what the off-registry walks skipped
        self.fd_damage = DamageLog()                # ... the fd tables' walk
        self.pin_damage = DamageLog()               # ... the bpffs walk
        self.sources = ""                           # what the off-registry walks read
        for kind, reg in registries.items():
            for rec in reg.records:
                obj_id, kva = rec if kind == "btf" else (rec.id, rec.kva)
                self.by_key[(kind, kva)] = Entry(kind, kva, obj_id, None if kind == "btf" else rec,
                                                 [reg.name], REGISTERED, reg.name,
                                                 "" if kind == "btf" else (rec.error or ""))

    @property
    def damaged(self) -> bool:
        return any(not r.complete for r in self.registries.values())

    def entries(self, kind):
        reg = [e for e in self.by_key.values() if e.kind == kind and not e.off_registry]
        off = sorted((e for e in self.by_key.values() if e.kind == kind and e.off_registry),
                     key=lambda e: (e.id, e.kva))
        return reg + off

    def records(self, kind):
        return [e.record for e in self.entries(kind) if e.record is not None]

    def entry(self, kind, kva) -> Optional[Entry]:
        return self.by_key.get((kind, kva))

    def hidden(self):
        return [e for e in self.by_key.values() if e.verdict == HIDDEN]

    def unverifiable(self):
        return [e for e in self.by_key.values() if e.verdict == UNVERIFIABLE]

    # --- the other paths -------------------------------------------------------------------

    def add_off_registry(self, links=(), attachments=(), fds=(), pins=(), damage=None):
        """Merge the objects reachable from links, hooks, fds and pins (plus map slots,
        used_maps and bpf_kallsyms), following off-registry objects to what they hold."""
        damage = damage if damage is not None else self.off_damage
        bk = self.bk
        refs = bpfhidden.references(bk, links, attachments, fds, pins, damage)
        for (kind, kva), via in refs:
            e = self.by_key.get((kind, kva))
            if e is not None:
                _add_via(e, via)
        link_reg = self.registries.get("link")
        found = bpfhidden.hidden(bk, refs, [] if link_reg is None or not link_reg.readable
                                 else link_reg.records, damage)
        dec = LinkDecoder(bk)
        for f in found:
            e = self.by_key.get((f.kind, f.kva))
            if e is not None:
                continue
            record = self._read(dec, f.kind, f.kva)
            reg = self.registries.get(f.kind) or Registry(f.kind, REGISTRY_OF[f.kind],
                                                           error="not read")
            v, why = verdict(bk.reader, bk.layout, reg, f.kva, f.id if not f.error or f.id > 0 else -1)
            self.by_key[(f.kind, f.kva)] = Entry(f.kind, f.kva, f.id, record, list(f.via), v, why,
                                                 f.error)
        self._add_btf(fds)
        self.off_walked = True
        self.sources = (f"{len(links)} links, {len(attachments)} hook entries, {len(fds)} fds, "
                        f"{len(pins)} pins, map slots and bpf_kallsyms")

    def _read(self, dec, kind, kva):
        bk = self.bk
        if kind == "map":
            return read_map(bk.reader, bk.layout, kva, type_names=bk.map_type_names)
        if kind == "prog":
            return bpfprogs.read_prog(bk.reader, bk.layout, kva, type_names=bk.prog_type_names)
        return dec.read(kva)

    def _add_btf(self, fds):
        """BTF objects: fds on them, and the BTF of every map and program found."""
        reg = self.registries.get("btf")
        if reg is None or reg.absent:
            return
        refs = {}
        for f in fds:
            if f.kind == "btf" and f.obj:
                refs.setdefault(f.obj, []).append(f"fd {f.fd} of pid {f.pid} ({f.comm})")
        for e in list(self.by_key.values()):
            btf = getattr(e.record, "btf_kva", 0) if e.kind in ("map", "prog") else 0
            if btf:
                refs.setdefault(btf, []).append(f"{e.kind} {e.id} ({getattr(e.record, 'name', '')})")
        bk = self.bk
        off = bk.layout.offset("btf", "id") if bk.layout.has("btf", "id") else None
        for kva, via in refs.items():
            e = self.by_key.get(("btf", kva))
            if e is not None:
                for v in via:
                    _add_via(e, v)
                continue
            obj_id, error = -1, ""
            if off is not None:
                try:
                    obj_id = read_int(bk.reader, bk.layout, "btf", kva, "id")
                except ReadError as err:
                    error = f"struct btf unreadable: {err.reason}"
            v, why = verdict(bk.reader, bk.layout, reg, kva, obj_id)
            self.by_key[("btf", kva)] = Entry("btf", kva, obj_id, None, via[:bpfhidden.MAX_VIA],
                                              v, why, error)

    # --- coverage --------------------------------------------------------------------------

    def coverage(self, kind) -> str:
        """How much of what a listing of ``kind`` needed was readable, e.g. ``map_idr: 3 of 4
        nodes read; 12 of 16 maps reached (4 off-registry); 2 bpf_map structs excluded by
        dump level 31``."""
        reg = self.registries.get(kind)
        name = REGISTRY_OF[kind]
        parts = []
        if reg is None or reg.error:
            parts.append(f"{name}: not read ({reg.error if reg else 'not asked'})")
        else:
            read, total = idr_nodes(self.bk.reader, self.bk.layout, reg.addr)
            parts.append(f"{name}: {read} of {total} nodes read")
        entries = self.entries(kind)
        off = sum(1 for e in entries if e.off_registry)
        noun = {"map": "maps", "prog": "programs", "link": "links", "btf": "BTF objects"}[kind]
        text = f"{len(entries)} {noun} reached"
        if self.off_walked:
            text += f" ({off} off-registry"
            hid = sum(1 for e in entries if e.verdict == HIDDEN)
            unv = sum(1 for e in entries if e.verdict == UNVERIFIABLE)
            if off:
                text += f": {hid} hidden, {unv} unverifiable"
            text += ")"
        else:
            text += " (registry only)"
        parts.append(text)
        bad = {}
        for e in entries:
            if e.error:
                why = "excluded by dump level" if "excluded from the dump" in e.error else "unreadable"
                if "dump level" in e.error and why.startswith("excluded"):
                    why = "excluded by dump level " + e.error.rsplit("dump level ", 1)[1].rstrip(")")
                bad[why] = bad.get(why, 0) + 1
        for why, n in bad.items():
            parts.append(f"{n} {STRUCT_OF[kind]} struct{'s' if n != 1 else ''} {why}")
        return "; ".join(parts)


def _add_via(e, via):
    if via not in e.via and len(e.via) < bpfhidden.MAX_VIA:
        e.via.append(via)


def idr_nodes(reader, layout, idr):
    """(nodes read, nodes met) of the IDR at ``idr`` (an unreadable node counts as met)."""
    return xa_node_counts(reader, layout, idr + layout.offset("idr", "idr_rt"))
