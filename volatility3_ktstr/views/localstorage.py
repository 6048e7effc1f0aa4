"""Rows of ``linux.ktstr.localstorage``: every BPF task/cgroup/inode/socket storage element with
its owner named and its value typed by the map's program BTF (arena pointers followed into their
sdt_alloc slot); a summary row ends each map, ``verbose`` adds one row per skipped part.

Takes the kernel (``kernel_model.Kernel``); no Volatility import.
"""

import json
from typing import Any, Collection, List, Optional

from ..bpf.maps import LOCAL_STORAGE_TYPES
from ..core import LayoutError, ReadError
from ..errors import KtstrError
from ..render import Hex, hex_list, render, render_text
from ..walkers import arena as arenaw
from ..walkers import localstorage as ls
from ..walkers import sdtalloc, sdtpayload
from ..walkers.owners import OWNER_KINDS, Owner, OwnerResolver
from . import HEX, Grid
from . import sdtalloc as sdtviews
from . import Kernel, Rows, inventory
from .common import select_maps

GRID = Grid(
    ("MapId", int), ("MapName", str), ("OwnerKind", str), ("Owner", HEX), ("PID", int),
    ("TGID", int), ("Comm", str), ("OwnerId", int), ("OwnerName", str), ("Value", str),
    ("ValueHex", str), ("Formatted", str), ("Element", HEX), ("Note", str), note="Note")


def select(maps: List[Any], ids: Optional[List[int]] = None,
           names: Optional[List[str]] = None) -> List[Any]:
    """The local storage maps among ``maps`` matching the selectors (select_maps semantics)."""
    chosen_any, _missing = select_maps(maps, ids, names)
    chosen = [m for m in chosen_any if m.type_name in LOCAL_STORAGE_TYPES]
    if (ids or names) and not chosen:
        raise KtstrError("the selected maps are not local storage maps ("
                         + ", ".join(f"{m.id} {m.name}: {m.type_name}" for m in chosen_any) + ")")
    return chosen


def rows(kctx: Kernel, ids: Optional[List[int]] = None, names: Optional[List[str]] = None,
         pids: Optional[Collection[int]] = None, payload_type: Optional[str] = None,
         verbose: bool = False) -> Rows:
    maps = select(inventory.maps(kctx), ids, names)
    if not maps:
        yield 0, GRID.row(MapId=-1, MapName="", OwnerKind="summary", Owner=0, Element=0,
                          Note=f"no local storage map found; {inventory.summary_of(kctx)}")
        yield from _registry_rows(kctx)
        return
    kctx.require_type("bpf_local_storage_map")
    try:
        offs = ls.LocalStorageOffsets.from_layout(kctx.layout)
    except LayoutError as e:
        raise KtstrError(str(e)) from None
    pids = set(pids or ())
    budget = ls.VisitBudget()
    owners = OwnerResolver(kctx.reader, kctx.layout)
    arenas = ArenaContext(kctx, payload_type)
    for m in maps:
        yield from _map_rows(kctx, offs, m, budget, owners, pids, verbose, arenas)
    yield from _registry_rows(kctx)


def _registry_rows(kctx):
    for text in inventory.damage_texts(kctx):
        yield 0, GRID.row(MapId=-1, MapName="", OwnerKind="problem", Owner=0, Element=0, Note=text)


def _map_rows(kctx, offs, m, budget, owners, pids, verbose, arenas):
    kind = OWNER_KINDS.get(m.type_name, m.type_name)
    stats = ls.WalkStats()
    if m.error:
        stats.rejected = m.error
        elems = []
    else:
        elems = list(ls.walk(kctx.reader, offs, m.kva, m.value_size, stats, budget))
    values = ValueRenderer(kctx, m, *arenas.for_map(m))
    out = []
    for e in elems:
        if e.owner_error:   # a fresh record: resolver results are cached and shared
            owner = Owner(kind=kind, kva=0, error=e.owner_error)
        else:
            owner = owners.resolve(kind, e.owner, e.storage)
        if pids and not (kind == "task" and owner.pid in pids):
            continue
        text, hexed, formatted, vnote = values.render(e.value, owner)
        note = "; ".join(n for n in (owner.error, owner.note, vnote) if n)
        key = (owner.pid if owner.pid is not None else
               owner.ident if owner.ident is not None else 1 << 64, owner.kva, e.kva)
        out.append((key, GRID.row(
            MapId=m.id, MapName=m.name, OwnerKind=kind, Owner=owner.kva, PID=owner.pid,
            TGID=owner.tgid, Comm=owner.comm, OwnerId=owner.ident,
            OwnerName=owner.describe() if kind != "task" or owner.pid is None else owner.comm,
            Value=text, ValueHex=hexed, Formatted=formatted, Element=e.kva, Note=note)))
    out.sort(key=lambda r: r[0])
    for _, row in out:
        yield 0, row
    if verbose:
        for d in stats.damage:
            yield 0, _info_row(m, "problem", d.addr, f"{d.what}: {d.reason}")
        if stats.damage.dropped:
            yield 0, _info_row(m, "problem", 0, f"{stats.damage.dropped} more not listed")
    summary = stats.summary()
    for extra in (values.note, values.arena_note):
        if extra:
            summary += f"; {extra}"
    if stats.damage and not verbose:
        summary += " (--verbose for reasons)"
    found = inventory.off_registry_note(kctx, "map", m.kva)
    if found:
        summary += f"; {found}"
    yield 0, _info_row(m, "summary", m.kva, summary)


def _info_row(m, kind, addr, note):
    """A map's summary or problem row: Owner holds the map (summary) or the bad address."""
    return GRID.row(MapId=m.id, MapName=m.name, OwnerKind=kind, Owner=addr, Element=0, Note=note)


class ArenaContext:
    """Which arena (and which live sdt_alloc slots) a map's values may point into, found once
    per run and only when the dump has an arena map."""

    def __init__(self, kctx, payload_type=None):
        self.kctx, self.payload_type = kctx, payload_type
        self._state = None

    def _load(self):
        kctx = self.kctx
        self._state = ([], [], {}, [], None)
        try:
            arenas = inventory.arenas(kctx)
        except LayoutError as e:
            self._state = ([], [], {}, [], f"arena layout: {e}")
            return
        if not arenas:
            return
        progs, prog_arenas = inventory.prog_arenas(kctx)
        try:
            programs = sdtviews.sdt_programs(kctx, type_name=self.payload_type)
            problem = None
        except (ReadError, LayoutError, KtstrError, sdtalloc.SdtError) as e:
            programs, problem = [], f"sdt_alloc slots not walked: {e}"
        self._state = (arenas, progs, prog_arenas, programs, problem)

    def for_map(self, m):
        """(ArenaInfo or None, SdtSlots or None, note) for the values of map ``m``."""
        if self._state is None:
            self._load()
        arenas, progs, prog_arenas, programs, problem = self._state
        if not arenas or not m.btf_kva:
            return None, None, problem
        for prog in programs:
            if prog.data_map.btf_kva == m.btf_kva and prog.arena is not None:
                note = problem or (f"sdt_alloc slots not walked: {prog.error}" if prog.error else None)
                return prog.arena, prog.slots, note
        arena, _how = arenaw.arena_for_program(arenas, progs, m.btf_kva, (m.kva,),
                                               prog_arenas=prog_arenas)
        return arena, None, problem


class ValueRenderer:
    """Value bytes -> (text, hex, JSON) with the map's program BTF; hex when it has none.

    Pointers into the program's arena are followed (read through the arena's kernel window);
    one that points at a live sdt_alloc slot also gets the slot's typed payload."""

    MAX_CHASE = 4   # arena pointers followed in a row (lists in the arena stay short)

    def __init__(self, kctx, m, arena=None, slots=None, arena_note=None):
        self.reader = kctx.reader
        self.btf = None
        self.type_id = m.btf_value_type_id
        self.note = None
        self.arena = arena if arena is not None and arena.usable else None
        self.slots = slots
        self.arena_note = arena_note
        if m.btf_kva and self.type_id:
            try:
                self.btf = kctx.btf_at(m.btf_kva)
            except KtstrError as e:
                self.note = f"values as hex: {e}"
        elif not m.btf_kva:
            self.note = "values as hex: map has no BTF"
        self.pointers = sdtpayload.pointer_members(self.btf, self.type_id, m.value_size) if slots else ()

    def _chase(self, payloads):
        def chase(addr, size, _type_id):
            if self.arena is None or not self.arena.owns(addr) or size <= 0:
                return None   # only arena memory: kernel pointers (task_struct, ...) stay hex
            data = arenaw.read_arena(self.reader, self.arena, addr, size)
            hit = self.slots.lookup(addr) if self.slots is not None else None
            if hit is not None:
                payloads[f"{addr:#x}"] = self.slots.render(hit)
            return data
        return chase

    def render(self, value, owner=None):
        hexed = value.hex()
        shaped = {"owner": f"{owner.kva:#x}" if owner is not None else None,
                  "value": hex_list(value)}
        if self.btf is None:
            return value.hex(" "), hexed, _dumps(shaped), None
        payloads = {}
        try:
            typed = render(self.btf, self.type_id, value, chase=self._chase(payloads),
                           max_depth=self.MAX_CHASE)
        except Exception as e:  # a corrupt program BTF must cost one value, not the run
            return value.hex(" "), hexed, _dumps(shaped), f"render failed: {e}"
        if payloads:
            _attach_payloads(typed, payloads)
        if self.pointers and isinstance(typed, dict):
            self._slot_members(typed, value)
        shaped["formatted"] = {"value": typed}
        formatted = _dumps(shaped)
        if self.pointers:
            _compact_hex(typed)   # after the JSON: the text column gets "0011..." not a list
        return render_text(typed), hexed, formatted, None


    def _slot_members(self, typed, value):
        """Top-level pointer members that hold a live sdt_alloc slot (programs usually leave
        ``struct sdt_data`` a forward declaration, so the renderer cannot follow them)."""
        for name, off in self.pointers:
            ptr = int.from_bytes(value[off:off + 8], "little")
            hit = self.slots.lookup(ptr) if ptr else None
            if hit is None or not isinstance(typed.get(name), str):
                continue
            typed[name] = {"ptr": Hex(f"{ptr:#x}"),
                           "slot": {"allocator": hit.allocator, "idx": hit.entry.idx,
                                    "genn": hit.entry.genn},
                           "payload": self.slots.render(hit)}


def _compact_hex(value, depth=0):
    """Untyped slot payloads ({"hex": ["0x00", ...]}) as one hex string, for the text column."""
    if depth > 8 or not isinstance(value, dict):
        return
    for v in value.values():
        if isinstance(v, dict):
            p = v.get("payload")
            if isinstance(p, dict) and isinstance(p.get("hex"), list):
                p["hex"] = Hex("".join(x[2:] for x in p["hex"]))
            _compact_hex(v, depth + 1)


def _attach_payloads(value, payloads, depth=0):
    """Put each sdt_alloc slot's payload into the chased pointer that reached it
    (``{"ptr", "target"}``): the header's flexible ``payload[]`` is empty by itself."""
    if depth > 64:
        return
    if isinstance(value, dict):
        hit = payloads.get(value.get("ptr")) if "target" in value else None
        if hit is not None and isinstance(value["target"], dict):
            value["target"]["payload"] = hit
        for v in value.values():
            _attach_payloads(v, payloads, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _attach_payloads(v, payloads, depth + 1)


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
