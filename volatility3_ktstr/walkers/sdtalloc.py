"""sched_ext's arena allocator (``scx_allocator``, scx ``lib/sdt_alloc.bpf.c``): every live slot.

Structures (all pointers are ``__arena``, user-form 64-bit)::

    scx_allocator { struct sdt_pool pool; sdt_desc_t *root; }
    sdt_pool      { void *slab; u64 elem_size; u64 max_elems; u64 idx; }
    sdt_desc      { u64 allocated[8]; u64 nr_free; struct sdt_chunk *chunk; }
    sdt_chunk     { union { sdt_desc_t *descs[512]; struct sdt_data *data[512]; }; }
    sdt_data      { union sdt_id tid; [u64 urcu_link;] u64 payload[]; }   // sdt_id = {s32 idx, genn}

The tree has 3 levels of 512-entry chunks; a slot's index is ``pos0 << 18 | pos1 << 9 | pos2``.
At the two internal levels a set ``allocated`` bit only means "that subtree is full", so the walk
descends into every non-NULL child; at the leaf level the bitmap is the only liveness truth
(``scx_alloc_free_idx`` clears the bit but keeps ``data[pos]`` for reuse). The allocator sets the
bit before it stores ``data[pos]``, so a set bit with a NULL pointer is an allocation in flight:
skipped silently. ``pool.idx`` is the slab high-water mark, never a live count.

Offsets come from the program's BTF (:class:`SdtOffsets`). Fallbacks, for what programs leave
forward-declared: ``struct sdt_chunk`` FWD -> the union is at offset 0 (it is the only member);
``struct sdt_data`` FWD -> header = ``sizeof(union sdt_id)`` (8; scx versions with the urcu link
have a 16-byte header and declare the struct). ``scx_allocator``, ``sdt_pool``, ``sdt_desc`` must
be complete.

Reads: one per descriptor, one per chunk (its 512 pointers) and, for slots, one per arena page
(slots of a slab share pages).
"""

import re
import struct
from dataclasses import dataclass, field

from ..btf import Kind
from ..core import ReadError
from .arena import LOW32, ArenaInfo, arena_for_program

LEVELS = 3
ENTS_SHIFT = 9
ENTS = 1 << ENTS_SHIFT
BITMAP_WORDS = ENTS // 64
MIN_ELEM_SIZE = 16
MAX_ELEM_SIZE = 4096
SDT_ID_SIZE = 8
MAX_SKIPS = 10_000            # skip records kept per allocator (the count stays exact)
_PAGE_CACHE = 64              # arena pages kept while reading slots

# Types of the allocator library itself: never a payload candidate.
LIBRARY_TYPES = frozenset({
    "scx_allocator", "sdt_pool", "sdt_desc", "sdt_chunk", "sdt_data", "sdt_id",
    "scx_alloc_stats", "sdt_task_ctx", "scx_static",
})

_CHUNK = struct.Struct(f"<{ENTS}Q")
_HDR = struct.Struct("<ii")


class SdtError(Exception):
    """The program BTF lacks what the walk needs; the message names it."""


@dataclass(frozen=True)
class SdtOffsets:
    allocator_size: int
    pool: int
    root: int
    elem_size: int          # pool.elem_size, from the allocator's start
    desc_size: int
    desc_allocated: int
    desc_nr_free: int
    desc_chunk: int
    chunk_union: int        # offset of descs[]/data[] in sdt_chunk
    data_header: int        # sizeof(struct sdt_data): where the payload starts
    header_source: str      # "btf", "sdt_id (sdt_data is forward-declared)", "override"

    @classmethod
    def from_btf(cls, btf, header_override=None) -> "SdtOffsets":
        def full(name):
            try:
                return btf.struct(name)
            except KeyError:
                raise SdtError(f"program BTF has no complete struct {name}") from None

        def off(t, path):
            try:
                return btf.member_path(t.id, path)[0] // 8
            except KeyError:
                raise SdtError(f"struct {t.name} in the program BTF has no member {path}") from None

        alloc, pool, desc = full("scx_allocator"), full("sdt_pool"), full("sdt_desc")
        chunk_union = 0
        try:
            chunk = btf.struct("sdt_chunk")
            for name in ("descs", "data"):
                try:
                    chunk_union = btf.member_path(chunk.id, name)[0] // 8
                    break
                except KeyError:
                    continue
        except KeyError:
            pass    # forward-declared: the union is the struct's only member
        if header_override is not None:
            header, source = int(header_override), "override"
        else:
            try:
                header, source = btf.struct("sdt_data").size, "btf"
            except KeyError:
                try:
                    header = btf.struct("sdt_id").size
                except KeyError:
                    header = SDT_ID_SIZE
                source = "sizeof(union sdt_id): struct sdt_data is forward-declared"
        return cls(
            allocator_size=alloc.size,
            pool=off(alloc, "pool"),
            root=off(alloc, "root"),
            elem_size=off(alloc, "pool") + off(pool, "elem_size"),
            desc_size=desc.size,
            desc_allocated=off(desc, "allocated"),
            desc_nr_free=off(desc, "nr_free"),
            desc_chunk=off(desc, "chunk"),
            chunk_union=chunk_union,
            data_header=header,
            header_source=source,
        )


def _struct_named(btf, type_id, name, depth=20):
    t = btf.type(type_id)
    for _ in range(depth):   # typedef/const/volatile/restrict/type_tag chains
        if t is None:
            return False
        if t.kind in (Kind.TYPEDEF, Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG):
            t = btf.type(t.type)
            continue
        return t.kind == Kind.STRUCT and t.name == name
    return False


@dataclass(frozen=True)
class AllocatorVar:
    name: str
    offset: int     # in the DATASEC
    size: int


def find_allocators(btf, datasec_id):
    """Variables of the DATASEC whose type is ``struct scx_allocator`` (through modifiers)."""
    return [AllocatorVar(name, offset, size) for name, tid, offset, size in btf.datasec_vars(datasec_id)
            if _struct_named(btf, tid, "scx_allocator")]


@dataclass(slots=True)
class SdtEntry:
    idx: int            # tree position (27 bits)
    genn: int           # sdt_id.genn from the slot header
    hdr_idx: int        # sdt_id.idx from the slot header (== idx once the allocation completed)
    user_addr: int      # user-form address of the slot (struct sdt_data)
    payload: bytes


@dataclass
class SdtSkip:
    level: int          # tree level of the unreadable thing (3 = a slot)
    addr: int           # arena pointer that could not be followed
    idx_prefix: int     # first index the subtree would have covered
    reason: str


@dataclass
class AllocatorWalk:
    name: str
    elem_size: int = 0
    header: int = 0
    root: int = 0
    entries: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    nr_skipped: int = 0
    truncated: bool = False
    descs: int = 0
    error: str = None       # set when the allocator could not be walked at all

    @property
    def payload_size(self) -> int:
        return max(0, self.elem_size - self.header)


def allocator_fields(alloc_bytes, offs: SdtOffsets):
    """(elem_size, root) of an scx_allocator's bytes."""
    elem = int.from_bytes(alloc_bytes[offs.elem_size:offs.elem_size + 8], "little")
    root = int.from_bytes(alloc_bytes[offs.root:offs.root + 8], "little")
    return elem, root


class _Walker:
    __slots__ = ("reader", "arena", "offs", "walk", "max_entries", "pages", "seen_descs",
                 "seen_data", "page_size", "page_mask", "kbase", "upper")

    def __init__(self, reader, arena: ArenaInfo, offs, walk, max_entries):
        self.reader = reader
        self.arena = arena
        self.offs = offs
        self.walk = walk
        self.max_entries = max_entries
        self.pages = {}
        self.seen_descs = set()
        self.seen_data = set()
        self.page_size = arena.page_size
        self.page_mask = ~(arena.page_size - 1)
        self.kbase = arena.kern_vm_start
        self.upper = arena.user_upper

    def skip(self, level, addr, prefix, reason):
        w = self.walk
        w.nr_skipped += 1
        if len(w.skipped) < MAX_SKIPS:
            w.skipped.append(SdtSkip(level, addr, prefix, reason))

    def foreign(self, ptr):
        # Stored pointers are user-form; other upper bits mean corruption or another arena.
        return (ptr >> 32) not in (0, self.upper)

    def descend(self, ptr, level, prefix):
        """Visit the descriptor at ``ptr`` (level 0 = root). Depth is at most LEVELS."""
        offs = self.offs
        if self.foreign(ptr):
            self.skip(level, ptr, prefix, "descriptor pointer outside the arena")
            return
        key = ptr & LOW32
        if key in self.seen_descs:
            self.skip(level, ptr, prefix, "descriptor already visited (cycle or shared subtree)")
            return
        self.seen_descs.add(key)
        try:
            raw = self.reader.read(self.kbase + key, offs.desc_size)
        except ReadError as e:
            self.skip(level, ptr, prefix, f"descriptor unreadable ({e.reason})")
            return
        self.walk.descs += 1
        nr_free = int.from_bytes(raw[offs.desc_nr_free:offs.desc_nr_free + 8], "little")
        if nr_free > ENTS:
            self.skip(level, ptr, prefix, f"descriptor nr_free {nr_free} > {ENTS}")
            return
        chunk = int.from_bytes(raw[offs.desc_chunk:offs.desc_chunk + 8], "little")
        if not chunk:
            self.skip(level, ptr, prefix, "descriptor has no chunk")
            return
        if self.foreign(chunk):
            self.skip(level, chunk, prefix, "chunk pointer outside the arena")
            return
        try:
            ptrs = _CHUNK.unpack(self.reader.read(self.kbase + (chunk & LOW32) + offs.chunk_union,
                                                  _CHUNK.size))
        except ReadError as e:
            self.skip(level, chunk, prefix, f"chunk unreadable ({e.reason})")
            return
        shift = ENTS_SHIFT * (LEVELS - 1 - level)
        if level < LEVELS - 1:
            # Internal level: a set bit means "subtree full"; every non-NULL child is walked.
            for pos, child in enumerate(ptrs):
                if child:
                    self.descend(child, level + 1, prefix | (pos << shift))
                    if self.walk.truncated:
                        return
            return
        bits = struct.unpack_from(f"<{BITMAP_WORDS}Q", raw, offs.desc_allocated)
        self.leaves(bits, ptrs, prefix)

    def leaves(self, bits, ptrs, prefix):
        """Emit the live slots of one leaf chunk (the hot loop: locals only)."""
        walk = self.walk
        entries = walk.entries
        append = entries.append
        seen = self.seen_data
        kbase, upper, ubase = self.kbase, self.upper, self.arena.user_vm_start & ~LOW32
        elem, header = walk.elem_size, walk.header
        room = None if self.max_entries is None else self.max_entries - len(entries)
        unpack = _HDR.unpack_from
        slot_bytes = self.slot_bytes
        for w, word in enumerate(bits):
            while word:
                low = word & -word
                pos = (w << 6) + low.bit_length() - 1
                word ^= low
                data = ptrs[pos]
                if not data:
                    continue    # bit set before the pointer store: allocation in flight
                idx = prefix | pos
                if (data >> 32) not in (0, upper):
                    self.skip(LEVELS, data, idx, "slot pointer outside the arena")
                    continue
                key = data & LOW32
                if key in seen:
                    self.skip(LEVELS, data, idx, "slot pointer already used by another index")
                    continue
                if room is not None:
                    if room <= 0:
                        walk.truncated = True
                        return
                    room -= 1
                seen.add(key)
                try:
                    raw = slot_bytes(kbase + key, elem)
                except ReadError as e:
                    self.skip(LEVELS, data, idx, f"slot unreadable ({e.reason})")
                    continue
                hdr_idx, genn = unpack(raw, 0)
                append(SdtEntry(idx, genn, hdr_idx, ubase | key, raw[header:]))

    def slot_bytes(self, kva, size):
        """Slot bytes through a small cache of whole arena pages (slots of a slab share pages);
        slots that straddle a page, or pages not wholly readable, are read exactly."""
        page = kva & self.page_mask
        if kva + size <= page + self.page_size:
            buf = self.pages.get(page)
            if buf is None:
                if len(self.pages) >= _PAGE_CACHE:
                    self.pages.clear()
                try:
                    buf = self.reader.read(page, self.page_size)
                except ReadError:
                    buf = b""
                self.pages[page] = buf
            if buf:
                o = kva - page
                return buf[o:o + size]
        return self.reader.read(kva, size)


def walk_allocator(reader, arena: ArenaInfo, offs: SdtOffsets, alloc_bytes, name,
                   max_entries=None) -> AllocatorWalk:
    """Every live slot of the allocator whose bytes (``sizeof(struct scx_allocator)``, from the
    program's ``.bss``) are ``alloc_bytes``. Problems are recorded, never raised."""
    walk = AllocatorWalk(name=name, header=offs.data_header)
    if len(alloc_bytes) < offs.allocator_size:
        walk.error = f"allocator bytes short ({len(alloc_bytes)} < {offs.allocator_size})"
        return walk
    walk.elem_size, walk.root = allocator_fields(alloc_bytes, offs)
    if not walk.root and not walk.elem_size:
        walk.error = "allocator not initialised (root NULL, elem_size 0)"
        return walk
    if not MIN_ELEM_SIZE <= walk.elem_size <= MAX_ELEM_SIZE:
        walk.error = f"elem_size {walk.elem_size} outside {MIN_ELEM_SIZE}..{MAX_ELEM_SIZE}"
        return walk
    if walk.elem_size < offs.data_header:
        walk.error = f"elem_size {walk.elem_size} smaller than the {offs.data_header}-byte header"
        return walk
    if not walk.root:
        return walk     # initialised, nothing allocated yet
    if not arena.kern_vm_start:
        walk.error = f"arena map {arena.map_id} has no kernel window ({arena.error})"
        return walk
    _Walker(reader, arena, offs, walk, max_entries).descend(walk.root, 0, 0)
    return walk


# --- payload type ----------------------------------------------------------------------------

def _stems(allocator_name):
    stem = re.sub(r"_?alloc(ator)?$", "", allocator_name)
    out = [stem] if stem else []
    if stem.startswith("scx_") and len(stem) > 4:
        out.append(stem[4:])
    return out


def payload_candidates(btf, payload_size, is_foreign=None):
    """Named structs of exactly ``payload_size`` bytes defined by the program (its own ids, minus
    the allocator library's types and, via ``is_foreign(name)``, types the kernel defines)."""
    seen = {}
    for t in btf.own_types:
        if t.kind != Kind.STRUCT or not t.name or t.size != payload_size:
            continue
        if t.name in LIBRARY_TYPES or t.name in seen:
            continue
        if is_foreign is not None and is_foreign(t.name):
            continue
        seen[t.name] = t.id
    return seen


def discover_payload_type(btf, payload_size, allocator_name, is_foreign=None):
    """(type id, reason); type id 0 means "render as hex" and the reason says why.

    Candidates are :func:`payload_candidates`; one is taken as is; among several, the first
    rule with exactly one hit wins: the allocator's stem name (``scx_task_allocator`` ->
    ``scx_task``, ``task``), ``task_ctx``, ``*_arena_ctx``, ``*_task_ctx``, ``*_ctx``."""
    if payload_size <= 0:
        return 0, "payload size is 0"
    cands = payload_candidates(btf, payload_size, is_foreign)
    if not cands:
        return 0, f"no struct of {payload_size} bytes among the program's own types"
    if len(cands) == 1:
        name, tid = next(iter(cands.items()))
        return tid, f"only struct of {payload_size} bytes: {name}"
    rules = [(f"stem {s!r}", lambda n, s=s: n == s) for s in _stems(allocator_name)]
    rules += [("task_ctx", lambda n: n == "task_ctx"),
              ("*_arena_ctx", lambda n: n.endswith("_arena_ctx")),
              ("*_task_ctx", lambda n: n.endswith("_task_ctx")),
              ("*_ctx", lambda n: n.endswith("_ctx"))]
    for label, match in rules:
        hits = [n for n in cands if match(n)]
        if len(hits) == 1:
            return cands[hits[0]], f"{hits[0]} ({label} among {len(cands)} structs of {payload_size} bytes)"
    names = ", ".join(sorted(cands)[:6]) + (", ..." if len(cands) > 6 else "")
    return 0, f"ambiguous: {len(cands)} structs of {payload_size} bytes ({names})"


def type_by_name(btf, name):
    """Id of the struct/union/typedef ``name`` (a leading 'struct '/'union ' is allowed);
    the program's own definitions first. None when absent."""
    bare = re.sub(r"^(struct|union)\s+", "", name.strip())
    found = [t for t in btf.find(bare) if t.kind in (Kind.STRUCT, Kind.UNION, Kind.TYPEDEF)]
    found.sort(key=lambda t: (t.id < btf.start_id, t.kind == Kind.TYPEDEF))
    return found[0].id if found else None


@dataclass(frozen=True)
class Identity:
    """Where a payload says which task it belongs to: a pid-like int or a task pointer."""

    kind: str           # "pid" or "task"
    offset: int
    size: int
    signed: bool
    member: str


def payload_identity(btf, type_id):
    """An :class:`Identity` for payload type ``type_id`` (top-level members only), or None.

    Prefers an int member named pid/tid, then a pointer to ``struct task_struct``."""
    t = btf.resolve(type_id) if type_id else None
    if t is None or t.kind not in (Kind.STRUCT, Kind.UNION):
        return None
    ptr_hit = None
    for m in t.members:
        if m.bit_size or m.bit_offset % 8:
            continue
        mt = btf.resolve(m.type)
        if mt is None:
            continue
        if m.name in ("pid", "tid") and mt.kind == Kind.INT and mt.size in (4, 8):
            return Identity("pid", m.bit_offset // 8, mt.size, mt.is_signed, m.name)
        if ptr_hit is None and mt.kind == Kind.PTR and _struct_or_fwd_named(btf, mt.type, "task_struct"):
            ptr_hit = Identity("task", m.bit_offset // 8, 8, False, m.name)
    return ptr_hit


def _struct_or_fwd_named(btf, type_id, name):
    t = btf.type(type_id)
    for _ in range(20):
        if t is None:
            return False
        if t.kind in (Kind.TYPEDEF, Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG):
            t = btf.type(t.type)
            continue
        return t.kind in (Kind.STRUCT, Kind.FWD) and t.name == name
    return False


def identity_value(ident: Identity, payload: bytes):
    """The pid (``kind == 'pid'``) or task pointer read from a payload; None if it is short."""
    end = ident.offset + ident.size
    if len(payload) < end:
        return None
    return int.from_bytes(payload[ident.offset:end], "little", signed=ident.signed)


# --- arena pointer -> live slot (for other walkers) -------------------------------------------

@dataclass
class SlotHit:
    allocator: str
    entry: SdtEntry
    type_id: int            # payload type (0: hex)
    type_reason: str
    btf: object


class SdtSlots:
    """Live sdt_alloc slots of one program, keyed by arena offset, so that a ``struct sdt_data
    __arena *`` (or a pointer to its payload) found elsewhere can be recognised and rendered.

    Build with :meth:`from_program` (walks every allocator of the program's ``.bss``)."""

    def __init__(self, arena: ArenaInfo, btf):
        self.arena = arena
        self.btf = btf
        self.walks = []
        self._by_start = {}     # low 32 bits of slot start -> (walk, entry, type id, reason)

    @classmethod
    def from_program(cls, reader, btf, bss_datasec_id, bss_bytes, arena: ArenaInfo, *,
                     is_foreign=None, type_name=None, header_override=None, max_entries=None):
        """Walk every allocator in the program's ``.bss`` (``bss_bytes`` is the map value).
        Raises :class:`SdtError` when the BTF lacks the allocator types."""
        slots = cls(arena, btf)
        allocators = find_allocators(btf, bss_datasec_id)
        if not allocators:
            return slots
        offs = SdtOffsets.from_btf(btf, header_override)
        for var in allocators:
            walk = walk_allocator(reader, arena, offs, bss_bytes[var.offset:var.offset + var.size],
                                  var.name, max_entries)
            tid, reason = resolve_payload_type(btf, walk.payload_size, var.name, type_name, is_foreign)
            slots.add(walk, tid, reason)
        return slots

    def add(self, walk: AllocatorWalk, type_id, reason):
        self.walks.append((walk, type_id, reason))
        for e in walk.entries:
            self._by_start[e.user_addr & LOW32] = (walk, e, type_id, reason)

    def __len__(self):
        return len(self._by_start)

    def lookup(self, ptr):
        """The live slot ``ptr`` points at (its start, or its payload start), else None."""
        if not self.arena.owns(ptr):
            return None
        key = ptr & LOW32
        hit = self._by_start.get(key)
        if hit is None:
            for walk, *_ in self.walks:
                cand = self._by_start.get((key - walk.header) & LOW32)
                if cand is not None and cand[0] is walk:
                    hit = cand
                    break
        if hit is None:
            return None
        walk, entry, tid, reason = hit
        return SlotHit(walk.name, entry, tid, reason, self.btf)

    def render(self, hit: SlotHit, chase=None):
        """The payload of a hit: BTF-rendered value, or {"hex": [...], "reason": ...}."""
        return render_payload(self.btf, hit.type_id, hit.entry.payload, hit.type_reason, chase)


def resolve_payload_type(btf, payload_size, allocator_name, type_name=None, is_foreign=None):
    """(type id, reason) from an explicit ``type_name`` or :func:`discover_payload_type`."""
    if type_name:
        tid = type_by_name(btf, type_name)
        if tid is None:
            return 0, f"--type {type_name}: not in the program BTF"
        size = btf.size_of(tid)
        note = "" if size == payload_size else f" (type is {size} bytes, payload {payload_size})"
        return tid, f"--type {type_name}{note}"
    return discover_payload_type(btf, payload_size, allocator_name, is_foreign)


def render_payload(btf, type_id, payload, reason="", chase=None):
    from ..render import hex_list, render

    if type_id:
        return render(btf, type_id, payload, chase=chase)
    return {"hex": hex_list(payload), "reason": reason}


# --- schedulers in a dump ---------------------------------------------------------------------

@dataclass
class ProgramSdt:
    """One loaded BPF object that declares scx_allocator variables."""

    scheduler: str
    data_map: object                # BpfMap of the .bss (or .data) section holding them
    btf: object = None
    allocators: list = field(default_factory=list)
    arena: ArenaInfo = None
    arena_how: str = ""
    slots: SdtSlots = None
    error: str = None               # why the allocators could not be walked


def scheduler_name(data_map, maps):
    """The object's name: the section map's prefix (libbpf names it '<obj>.bss'), else the
    struct_ops map of the same BTF object, else '?'."""
    prefix = data_map.name.rsplit(".", 1)[0] if "." in data_map.name else ""
    if prefix:
        return prefix
    for m in maps:
        if m.type_name == "struct_ops" and m.btf_kva == data_map.btf_kva and m.name:
            return m.name
    return "?"


def find_programs(reader, layout, maps, btf_at, arenas, progs, *, prog_arenas=None,
                  is_foreign=None, type_name=None, header_override=None, max_entries=None,
                  walk=True):
    """Every section map (ARRAY whose BTF value type is a DATASEC) that holds scx_allocator
    variables, with its program BTF, arena and (``walk``) live slots.

    ``btf_at(kva)`` parses a program BTF (raising on failure); ``arenas`` are ArenaInfo records;
    ``progs`` BpfProg records and ``prog_arenas`` {prog kva: aux->arena} (arena attribution, see
    :func:`arena.arena_for_program`); ``is_foreign(name)`` says a struct is the kernel's
    (excluded from payload candidates)."""
    value_off = None
    out = []
    for m in maps:
        if m.type_name != "array" or not m.btf_kva or not m.btf_value_type_id or m.error:
            continue
        try:
            btf = btf_at(m.btf_kva)
            sec = btf.type(m.btf_value_type_id)
        except Exception as e:     # a broken BTF only hides this map; say so below
            if m.name.endswith(".bss"):
                out.append(ProgramSdt(scheduler_name(m, maps), m, error=f"program BTF: {e}"))
            continue
        if sec is None or sec.kind != Kind.DATASEC:
            continue
        allocators = find_allocators(btf, m.btf_value_type_id)
        if not allocators:
            continue
        prog = ProgramSdt(scheduler_name(m, maps), m, btf, allocators)
        out.append(prog)
        if value_off is None:
            value_off = layout.offset("bpf_array", "value")
        try:
            # Section maps have one element: index 0 sits at bpf_array.value.
            value = reader.read(m.kva + value_off, m.value_size)
        except ReadError as e:
            prog.error = f"{m.name} value unreadable: {e.reason}"
            continue
        try:
            offs = SdtOffsets.from_btf(btf, header_override)
        except SdtError as e:
            prog.error = str(e)
            continue
        a0 = allocators[0]
        _, root = allocator_fields(value[a0.offset:a0.offset + offs.allocator_size], offs)
        prog.arena, prog.arena_how = arena_for_program(arenas, progs, m.btf_kva, (m.kva,), root,
                                                       prog_arenas)
        if prog.arena is None:
            prog.error = prog.arena_how
            continue
        if walk:
            prog.slots = SdtSlots.from_program(reader, btf, m.btf_value_type_id, value, prog.arena,
                                               is_foreign=is_foreign, type_name=type_name,
                                               header_override=header_override,
                                               max_entries=max_entries)
    return out


# --- who a slot belongs to, and how to show it -------------------------------------------------

def pointer_members(btf, type_id, value_size):
    """(name, byte offset) of the named, 8-byte aligned pointer members (top level) of a map
    value type that fit in ``value_size``: where a ``struct sdt_data __arena *`` can be stored."""
    try:
        t = btf.resolve(type_id) if btf is not None and type_id else None
    except Exception:   # noqa: BLE001 - corrupt BTF: rendering reports it
        return ()
    if t is None or t.kind not in (Kind.STRUCT, Kind.UNION):
        return ()
    out = []
    for m in t.members:
        mt = btf.resolve(m.type)
        if (m.name and mt is not None and mt.kind == Kind.PTR and not m.bit_size
                and m.bit_offset % 64 == 0 and m.bit_offset // 8 + 8 <= value_size):
            out.append((m.name, m.bit_offset // 8))
    return tuple(out)


def task_storage_owners(reader, layout, maps, prog: ProgramSdt, resolver):
    """{slot user address: Owner} from the program's TASK_STORAGE maps (same BTF object) whose
    values point at live slots. ``resolver`` is an ``owners.OwnerResolver``."""
    from . import localstorage

    out = {}
    if prog.slots is None or not len(prog.slots):
        return out
    for m in maps:
        if m.type_name != "task_storage" or m.btf_kva != prog.data_map.btf_kva or m.error:
            continue
        offs = pointer_members(prog.btf, m.btf_value_type_id, m.value_size)
        if not offs:
            continue
        try:
            elems, _ = localstorage.walk_map(reader, layout, m.kva, m.value_size)
        except Exception:     # noqa: BLE001 - a map we cannot walk only loses the PID join
            continue
        for el in elems:
            if not el.owner:
                continue
            for _name, off in offs:
                ptr = int.from_bytes(el.value[off:off + 8], "little")
                hit = prog.slots.lookup(ptr) if ptr else None
                if hit is not None:
                    out[hit.entry.user_addr] = resolver.resolve("task", el.owner, el.storage)
    return out


def slot_task(reader, ident, entry, owner, task_pid_off):
    """(pid, comm, note) of a slot: the owning task (task storage), else what the payload says
    (a pid field, or a task pointer read through ``task_struct.pid`` at ``task_pid_off``)."""
    pid = comm = None
    note = ""
    if owner is not None and owner.pid is not None:
        pid, comm = owner.pid, owner.comm
    claimed = identity_value(ident, entry.payload) if ident else None
    if claimed is not None and ident.kind == "task":
        task, claimed = claimed, None
        if task and task_pid_off is not None:
            try:
                claimed = reader.s32(task + task_pid_off)
            except ReadError:
                note = f"payload {ident.member} {task:#x} unreadable"
    if pid is None:
        pid = claimed
    elif claimed is not None and claimed != pid:
        note = f"payload {ident.member} {claimed} but owned by pid {pid}"
    return pid, comm or "", note


def type_label(btf, type_id, reason):
    """Type column text: the C type, or ``hex (why)``."""
    return btf.type_name(type_id) if type_id else f"hex ({reason})"


def payload_text(btf, type_id, payload):
    """One-line payload: rendered with its BTF type, else plain hex."""
    if not type_id:
        return payload.hex()
    from ..render import render, render_text

    return render_text(render(btf, type_id, payload))
