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

import struct
from dataclasses import dataclass, field

from .. import kds
from ..btf import Kind
from ..core import Field, ReadError
from ..core.layout import btf_field
from ..kds import Damage, DamageLog
from .arena import LOW32, ArenaInfo, arena_for_program
from .sdtpayload import render_payload, resolve_payload_type
from .sections import section_maps

LEVELS = 3
ENTS_SHIFT = 9
ENTS = 1 << ENTS_SHIFT
BITMAP_WORDS = ENTS // 64
MIN_ELEM_SIZE = 16
MAX_ELEM_SIZE = 4096
SDT_ID_SIZE = 8
MAX_SKIPS = 10_000            # damage records kept per allocator (the count stays exact)
_PAGE_CACHE = 64              # arena pages kept while reading slots
# What a skipped part of the tree is, by level (LEVELS: a slot).
LEVEL_NAMES = {0: "root", 1: "level-1 subtree", 2: "leaf subtree", 3: "slot"}

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
    root_field: Field = None        # scx_allocator.root, in the allocator's bytes
    elem_size_field: Field = None   # scx_allocator.pool.elem_size, in the allocator's bytes
    nr_free_field: Field = None     # sdt_desc.nr_free
    chunk_field: Field = None       # sdt_desc.chunk

    @classmethod
    def from_btf(cls, btf, header_override=None) -> "SdtOffsets":
        def full(name):
            try:
                return btf.struct(name)
            except KeyError:
                raise SdtError(f"program BTF has no complete struct {name}") from None

        def member(t, path):
            try:
                bit, m = btf.member_path(t.id, path)
            except KeyError:
                raise SdtError(f"struct {t.name} in the program BTF has no member {path}") from None
            return btf_field(btf, m.type, bit, m.bit_size)

        def off(t, path):
            return member(t, path).offset

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
            root_field=member(alloc, "root"),
            elem_size_field=member(alloc, "pool.elem_size"),
            nr_free_field=member(desc, "nr_free"),
            chunk_field=member(desc, "chunk"),
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
class AllocatorWalk:
    name: str
    elem_size: int = 0
    header: int = 0
    root: int = 0
    entries: list = field(default_factory=list)
    # Skipped parts: ``what`` is a LEVEL_NAMES name, ``addr`` the arena pointer that could not
    # be followed, ``index`` the first slot index the part would have covered.
    damage: DamageLog = field(default_factory=lambda: DamageLog(MAX_SKIPS))
    truncated: bool = False
    descs: int = 0
    error: Damage = None    # set when the allocator could not be walked at all

    @property
    def payload_size(self) -> int:
        return max(0, self.elem_size - self.header)


def allocator_fields(alloc_bytes, offs: SdtOffsets):
    """(elem_size, root) of an scx_allocator's bytes."""
    return offs.elem_size_field.decode(alloc_bytes), offs.root_field.decode(alloc_bytes)


class _Walker:
    __slots__ = ("reader", "arena", "offs", "walk", "max_entries", "pages", "claimed",
                 "page_size", "page_mask", "kbase", "upper")

    def __init__(self, reader, arena: ArenaInfo, offs, walk, max_entries):
        self.reader = reader
        self.arena = arena
        self.offs = offs
        self.walk = walk
        self.max_entries = max_entries
        self.pages = {}
        self.claimed = {}       # slot (low 32 bits) -> the index whose leaf holds it
        self.page_size = arena.page_size
        self.page_mask = ~(arena.page_size - 1)
        self.kbase = arena.kern_vm_start
        self.upper = arena.user_upper

    def skip(self, level, addr, prefix, reason, kind="unreadable"):
        self.walk.damage.add(LEVEL_NAMES.get(level, str(level)), addr, reason, kind, prefix)

    def foreign(self, ptr):
        # Stored pointers are user-form; other upper bits mean corruption or another arena.
        return (ptr >> 32) not in (0, self.upper)

    def run(self, root):
        """Walk the tree from the root descriptor: descriptors through kds.depth_first (each
        once, at most LEVELS deep), slots of each leaf as it is reached."""
        if self.foreign(root):
            self.skip(0, root, 0, "descriptor pointer outside the arena", "corrupt")
            return
        for _ in kds.depth_first([(root, 0)], self.children, max_depth=LEVELS - 1,
                                 damage=self.walk.damage, what="descriptor",
                                 key=lambda n: n[0] & LOW32, addr=lambda n: n[0],
                                 index=lambda n: n[1]):
            if self.walk.truncated:
                return

    def children(self, node, level):
        """The child descriptors of the descriptor ``node`` = (pointer, first index) at
        ``level`` (0 = root); at the leaf level its live slots are collected instead."""
        ptr, prefix = node
        offs = self.offs
        try:
            raw = self.reader.read(self.kbase + (ptr & LOW32), offs.desc_size)
        except ReadError as e:
            self.skip(level, ptr, prefix, f"descriptor unreadable ({e.reason})")
            return []
        self.walk.descs += 1
        nr_free = offs.nr_free_field.decode(raw)
        if nr_free > ENTS:
            self.skip(level, ptr, prefix, f"descriptor nr_free {nr_free} > {ENTS}", "corrupt")
            return []
        chunk = offs.chunk_field.decode(raw)
        if not chunk:
            self.skip(level, ptr, prefix, "descriptor has no chunk", "null")
            return []
        if self.foreign(chunk):
            self.skip(level, chunk, prefix, "chunk pointer outside the arena", "corrupt")
            return []
        try:
            ptrs = _CHUNK.unpack(self.reader.read(self.kbase + (chunk & LOW32) + offs.chunk_union,
                                                  _CHUNK.size))
        except ReadError as e:
            self.skip(level, chunk, prefix, f"chunk unreadable ({e.reason})")
            return []
        if level < LEVELS - 1:
            # Internal level: a set bit means "subtree full"; every non-NULL child is walked.
            shift = ENTS_SHIFT * (LEVELS - 1 - level)
            out = []
            for pos, child in enumerate(ptrs):
                if not child:
                    continue
                if self.foreign(child):
                    self.skip(level + 1, child, prefix | (pos << shift),
                              "descriptor pointer outside the arena", "corrupt")
                else:
                    out.append((child, prefix | (pos << shift)))
            return out
        bits = struct.unpack_from(f"<{BITMAP_WORDS}Q", raw, offs.desc_allocated)
        self.leaves(bits, ptrs, prefix)
        return []

    def leaves(self, bits, ptrs, prefix):
        """Emit the live slots of one leaf chunk (the hot loop: locals only)."""
        walk = self.walk
        entries = walk.entries
        append = entries.append
        claimed = self.claimed
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
                    self.skip(LEVELS, data, idx, "slot pointer outside the arena", "corrupt")
                    continue
                key = data & LOW32
                if key in claimed:
                    self.skip(LEVELS, data, idx, "slot pointer already used by another index", "corrupt")
                    continue
                if room is not None:
                    if room <= 0:
                        walk.truncated = True
                        return
                    room -= 1
                claimed[key] = idx
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

    def fail(reason, kind="corrupt"):
        walk.error = Damage("allocator", 0, reason, kind)
        return walk

    if len(alloc_bytes) < offs.allocator_size:
        return fail(f"allocator bytes short ({len(alloc_bytes)} < {offs.allocator_size})")
    walk.elem_size, walk.root = allocator_fields(alloc_bytes, offs)
    if not walk.root and not walk.elem_size:
        return fail("allocator not initialised (root NULL, elem_size 0)", "null")
    if not MIN_ELEM_SIZE <= walk.elem_size <= MAX_ELEM_SIZE:
        return fail(f"elem_size {walk.elem_size} outside {MIN_ELEM_SIZE}..{MAX_ELEM_SIZE}")
    if walk.elem_size < offs.data_header:
        return fail(f"elem_size {walk.elem_size} smaller than the {offs.data_header}-byte header")
    if not walk.root:
        return walk     # initialised, nothing allocated yet
    if not arena.kern_vm_start:
        return fail(f"arena map {arena.map_id} has no kernel window ({arena.error})", "unreadable")
    _Walker(reader, arena, offs, walk, max_entries).run(walk.root)
    return walk



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
    error: Damage = None            # why the allocators could not be walked


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
    for m, btf, e in section_maps(maps, btf_at):
        if e is not None:          # a broken BTF only hides this map; say so below
            if m.name.endswith(".bss"):
                out.append(ProgramSdt(scheduler_name(m, maps), m,
                                      error=Damage(m.name, m.kva, f"program BTF: {e}", "corrupt")))
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
            prog.error = Damage(f"{m.name} value", e.addr, f"unreadable: {e.reason}")
            continue
        try:
            offs = SdtOffsets.from_btf(btf, header_override)
        except SdtError as e:
            prog.error = Damage(m.name, m.kva, str(e), "corrupt")
            continue
        a0 = allocators[0]
        _, root = allocator_fields(value[a0.offset:a0.offset + offs.allocator_size], offs)
        prog.arena, prog.arena_how = arena_for_program(arenas, progs, m.btf_kva, (m.kva,), root,
                                                       prog_arenas)
        if prog.arena is None:
            prog.error = Damage(m.name, m.kva, prog.arena_how, "corrupt")
            continue
        if walk:
            prog.slots = SdtSlots.from_program(reader, btf, m.btf_value_type_id, value, prog.arena,
                                               is_foreign=is_foreign, type_name=type_name,
                                               header_override=header_override,
                                               max_entries=max_entries)
    return out
