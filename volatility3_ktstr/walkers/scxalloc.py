"""The scx library's arena allocators: buddy, stack and bump (sched-ext/scx ``lib/alloc/*.bpf.c``,
``scheds/include/lib/alloc/*.h``; before 2026 ``scx_buddy``/``scx_stk``/``scx_static`` in
``lib/sdt_alloc.bpf.c``). Every live block, and the invariants the allocators keep, checked.

Discovery is by type: a global variable of a BPF object (a VAR of one of its DATASECs, found
through the section maps; ``private(NAME)`` gives each its own ``.data.NAME`` map) whose type is
``struct buddy``/``scx_buddy``, ``struct stk``/``scx_stk`` or ``struct bump``/``scx_static``.

- **buddy** (2026): a list of 1 MiB chunks (``first_chunk``, ``chunk->next``). A chunk's first
  bytes are its own metadata (``orders[]``: one 4-bit order per 16-byte item, ``allocated[]``:
  one bit per item, ``freelists[order]``: first free item, ``BUDDY_CHUNK_ITEMS`` = empty), which
  ``buddy_chunk_get`` hands to itself as allocated blocks covering ``sizeof(struct buddy_chunk)``
  (their orders are never written). Blocks after it tile the chunk: a block starts at an item
  whose nibble gives its order; its bit says allocated. A free block's ``buddy_header
  {prev_index, next_index}`` lives ``BUDDY_HEADER_OFF`` bytes into the block.
- **scx_buddy** (2025): the same with ``order_indices[]`` for the free lists, headers at the
  block's start and no ``allocated`` bitmap: a block not on its free list counts as live.
- **stack**: a free stack of element pointers in page-sized segments (``first`` .. ``last``
  by ``next``); the elements on it are those of the segments before ``current`` plus
  ``current->elems[0:cind]``. Elements come from page runs of ``nr_pages_per_alloc`` pages cut
  into ``data_size`` pieces; a run is known when one of its elements is on the free stack.
- **bump**: ``[memory + sizeof(struct bump_ll), memory + off)`` is used; older regions are
  chained through the ``bump_ll`` at each region's start. Single blocks are not recorded, only
  references can split the range.

Constants the program's BTF does not carry (enums are dropped unless used) come from the library
version's definitions: ``BUDDY_MIN_ALLOC_BYTES`` 16, ``BUDDY_HEADER_OFF`` 8 (0 in 2025), the
chunk and item counts from the BTF array lengths. No Volatility import.
"""

import bisect
from operator import itemgetter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .. import kds
from ..btf import Kind
from ..btf.parser import paused_gc
from ..core import BtfLayout, Field, LayoutError, ReadError
from ..kds import Damage, DamageLog
from .arena import LOW32, ArenaInfo

# struct name -> (allocator kind, library generation)
STRUCTS = {
    "buddy": ("buddy", 2026), "scx_buddy": ("buddy", 2025),
    "stk": ("stack", 2026), "scx_stk": ("stack", 2025),
    "bump": ("bump", 2026), "scx_static": ("bump", 2025),
}
# Library definitions used when the program's BTF lacks the enum constant.
LIBRARY_CONSTANTS = {
    2026: {"min_alloc": ("BUDDY_MIN_ALLOC_BYTES", 16), "header_off": ("BUDDY_HEADER_OFF", 8)},
    2025: {"min_alloc": ("SCX_BUDDY_MIN_ALLOC_BYTES", 16), "header_off": ("", 0)},
}
MAX_CHUNKS = 1 << 12          # BUDDY_VADDR_SIZE allows 1024 chunks; room for corrupt counts
MAX_SEGMENTS = 1 << 16
MAX_BUMP_REGIONS = 1 << 12
MAX_DAMAGE = 2000
_PAGE_CACHE = 256


class AllocError(Exception):
    """The program BTF lacks what a walk needs; the message names it."""


class Block(tuple):
    """One block of an allocator: ``addr`` (user-form), ``size``, ``state`` (live/free/used
    for a bump range), ``order`` (buddy), ``chunk`` (the chunk, run or region holding it),
    ``note``. A tuple: walks make hundreds of thousands, and a tuple is the cheapest object."""

    __slots__ = ()

    def __new__(cls, addr: int, size: int, state: str = "live", order: Optional[int] = None,
                chunk: int = 0, note: str = "") -> "Block":
        return tuple.__new__(cls, (addr, size, state, order, chunk, note))

    addr = property(itemgetter(0))
    size = property(itemgetter(1))
    state = property(itemgetter(2))
    order = property(itemgetter(3))
    chunk = property(itemgetter(4))
    note = property(itemgetter(5))


@dataclass
class AllocatorVar:
    """One allocator variable of a BPF object."""

    name: str
    struct: str              # BTF struct name
    kind: str                # buddy / stack / bump
    generation: int
    section: str             # the section map's name
    map_kva: int
    var_kva: int             # kernel VA of the variable (inside the map value)
    value: bytes             # the variable's bytes
    btf: Any = None


@dataclass
class AllocatorWalk:
    var: AllocatorVar
    blocks: List[Block] = field(default_factory=list)
    freed: List[Block] = field(default_factory=list)
    damage: DamageLog = field(default_factory=lambda: DamageLog(MAX_DAMAGE))
    summary: str = ""
    error: Optional[Damage] = None
    chunks: List[int] = field(default_factory=list)
    truncated: bool = False
    # stack: (data_size, pages per run, page size) and the segments' (start, end)
    geometry: Optional[Tuple[int, int, int]] = None
    metadata: List[Tuple[int, int]] = field(default_factory=list)
    # (start, size) of the arena memory the allocator owns (buddy chunks, bump regions)
    regions: List[Tuple[int, int]] = field(default_factory=list)


def _constant(btf, name: str, default: int) -> Tuple[int, str]:
    if name:
        for t in btf.all_types():
            if t.kind in (Kind.ENUM, Kind.ENUM64):
                for n, v in t.values:
                    if n == name:
                        return v, "btf"
    return default, "library"


def _field(layout: BtfLayout, struct: str, *paths: str) -> Field:
    for p in paths:
        if layout.has(struct, p):
            return layout.field(struct, p)
    raise AllocError(f"struct {struct} in the program BTF has no member {' or '.join(paths)}")


def _size(layout: BtfLayout, struct: str) -> int:
    try:
        return layout.size(struct)
    except LayoutError:
        raise AllocError(f"program BTF has no complete struct {struct}") from None


def _ints(raw: bytes, f: Field) -> List[int]:
    """The elements of an integer array member (widths from the layout)."""
    es = f.elem_size
    base = f.offset
    return [int.from_bytes(raw[base + i * es:base + i * es + es], "little") for i in range(f.count)]


class _Pages:
    """Arena bytes through a cache of whole pages (headers, segments and blocks share pages)."""

    def __init__(self, reader, arena: ArenaInfo):
        self.reader = reader
        self.arena = arena
        self.page = arena.page_size
        self.cache: Dict[int, Optional[bytes]] = {}

    def read(self, ptr: int, size: int) -> bytes:
        kva = self.arena.kern_vm_start + (ptr & LOW32)
        page = kva - kva % self.page
        if kva + size <= page + self.page:
            buf = self.cache.get(page, b"")
            if buf == b"":
                if len(self.cache) >= _PAGE_CACHE:
                    self.cache.clear()
                try:
                    buf = self.reader.read(page, self.page)
                except ReadError:
                    buf = None
                self.cache[page] = buf
            if buf is not None:
                o = kva - page
                return buf[o:o + size]
        return self.reader.read(kva, size)


# --- discovery --------------------------------------------------------------------------------

def _struct_of(btf, type_id, depth=20):
    t = btf.type(type_id)
    for _ in range(depth):
        if t is None:
            return None
        if t.kind in (Kind.TYPEDEF, Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG):
            t = btf.type(t.type)
            continue
        return t if t.kind == Kind.STRUCT else None
    return None


def datasec_allocators(btf, datasec_id: int) -> List[Tuple[str, str, int, int]]:
    """(name, struct, offset, size) of the DATASEC's variables whose type is a library
    allocator struct (through typedefs and modifiers)."""
    out = []
    for name, tid, offset, size in btf.datasec_vars(datasec_id):
        st = _struct_of(btf, tid)
        if st is not None and st.name in STRUCTS:
            out.append((name, st.name, offset, size))
    return out


def find_allocators(reader, layout, section_maps: Iterable[Tuple[Any, Any]]) -> Tuple[List[AllocatorVar], DamageLog]:
    """Every allocator variable in the given (section map, program BTF) pairs; the map values
    are read once each (``bpf_array.value``, element 0)."""
    damage = DamageLog()
    out: List[AllocatorVar] = []
    value_off = None
    for m, btf in section_maps:
        found = datasec_allocators(btf, m.btf_value_type_id)
        if not found:
            continue
        if value_off is None:
            value_off = layout.offset("bpf_array", "value")
        try:
            value = reader.read(m.kva + value_off, m.value_size)
        except ReadError as e:
            damage.add(f"{m.name} value", e.addr, f"unreadable: {e.reason}")
            continue
        for name, struct, off, size in found:
            kind, gen = STRUCTS[struct]
            out.append(AllocatorVar(name, struct, kind, gen, m.name, m.kva,
                                    m.kva + value_off + off, value[off:off + size], btf))
    return out, damage


# --- buddy --------------------------------------------------------------------------------------

@dataclass
class BuddyLayout:
    chunk_size: int
    items: int
    orders_n: int
    min_alloc: int
    header_off: int
    data_start: int               # first item after the chunk's own metadata blocks
    header_blocks: List[Tuple[int, int]]  # (item, order) of the metadata blocks
    orders: Field
    allocated: Optional[Field]
    freelists: Field
    next: Field
    first_chunk: Field
    vaddr: Optional[Field]
    prev_index: Field
    next_index: Field
    header_size: int
    sources: str

    @classmethod
    def from_btf(cls, btf, generation: int) -> "BuddyLayout":
        lay = BtfLayout(btf)
        top = "buddy" if generation == 2026 else "scx_buddy"
        chunk = "buddy_chunk" if generation == 2026 else "scx_buddy_chunk"
        hdr = "buddy_header" if generation == 2026 else "scx_buddy_header"
        size = _size(lay, chunk)
        orders = _field(lay, chunk, "orders")
        allocated = _field(lay, chunk, "allocated") if generation == 2026 else None
        freelists = _field(lay, chunk, "freelists", "order_indices")
        items = orders.count * 2
        if allocated is not None and allocated.count * 8 != items:
            raise AllocError(f"struct {chunk}: allocated[{allocated.count}] does not match orders[{orders.count}]")
        consts = LIBRARY_CONSTANTS[generation]
        min_alloc, src1 = _constant(btf, *consts["min_alloc"])
        header_off, src2 = _constant(btf, *consts["header_off"])
        if min_alloc <= 0 or min_alloc & (min_alloc - 1):
            raise AllocError(f"minimum block {min_alloc} is not a power of two")
        try:
            prev_index, next_index = _field(lay, hdr, "prev_index"), _field(lay, hdr, "next_index")
            header_size = _size(lay, hdr)
        except AllocError:
            # The library's struct {u32 prev_index; u32 next_index;} when the BTF lacks it.
            prev_index, next_index = Field(0, 4), Field(4, 4)
            header_size = 8
        blocks = _metadata_blocks(size, min_alloc, freelists.count)
        data_start = sum(1 << o for _, o in blocks)
        return cls(size, items, freelists.count, min_alloc, header_off, data_start, blocks, orders,
                   allocated, freelists, _field(lay, chunk, "next"), _field(lay, top, "first_chunk"),
                   lay.field(top, "vaddr") if lay.has(top, "vaddr") else None,
                   prev_index, next_index, header_size,
                   f"sizes from BTF; min block {min_alloc} ({src1}), header offset {header_off} ({src2})")

    @property
    def chunk_bytes(self) -> int:
        return self.items * self.min_alloc


def _metadata_blocks(size: int, min_alloc: int, n_orders: int) -> List[Tuple[int, int]]:
    """The blocks ``buddy_chunk_get`` keeps for the chunk's own metadata: the largest power of
    two left, down to one minimum block (its carve loop)."""
    shift = min_alloc.bit_length() - 1
    out, idx, left = [], 0, size
    for _ in range(64):
        if not left:
            break
        power2 = left.bit_length() - 1
        if power2 >= shift:
            left -= 1 << power2
            order = power2 - shift
        else:
            left, order = 0, 0
        if order >= n_orders:
            raise AllocError(f"chunk metadata of {size} bytes needs order {order}")
        out.append((idx, order))
        idx += 1 << order
    return out


def walk_buddy(reader, arena: ArenaInfo, var: AllocatorVar, *, max_blocks: Optional[int] = None,
               freed: bool = False) -> AllocatorWalk:
    walk = AllocatorWalk(var)
    try:
        lay = BuddyLayout.from_btf(var.btf, var.generation)
    except (AllocError, LayoutError) as e:
        walk.error = Damage(var.name, var.var_kva, str(e), "corrupt")
        return walk
    first = lay.first_chunk.decode(var.value)
    if not first:
        walk.summary = "no chunk (allocator not initialised or destroyed)"
        return walk
    pages = _Pages(reader, arena)
    mask = lay.chunk_bytes - 1
    chunk_size = lay.chunk_size

    nexts: Dict[int, int] = {}

    def check(ptr):
        if not arena.owns(ptr):
            return f"chunk pointer {ptr:#x} outside the arena"
        if ptr & mask:
            return f"chunk pointer {ptr:#x} not aligned to {lay.chunk_bytes} bytes"
        return None

    def step(ptr):
        nxt = nexts.pop(ptr, 0)
        if not nxt:
            return None
        why = check(nxt)
        if why:
            walk.damage.add("chunk list", ptr, f"chunk {ptr:#x}: next: {why}", "corrupt")
            return None
        return nxt

    chase = DamageLog()
    room = [max_blocks]
    why = check(first)
    if why:
        walk.damage.add("chunk list", first, f"first chunk: {why}", "corrupt")
        first = 0
    for chunk in kds.steps(first, step, limit=MAX_CHUNKS, damage=chase, what="chunk") if first else ():
        walk.chunks.append(chunk)
        kva = arena.kern_vm_start + (chunk & LOW32)
        try:
            raw = reader.read(kva, chunk_size)
        except ReadError as e:
            # Part of the metadata is missing: the chunk's blocks are lost, but the list goes
            # on if the page holding ``next`` is there.
            walk.damage.add("chunk", chunk, f"chunk {chunk:#x}: metadata unreadable ({e.reason}); "
                            "its blocks are not listed", "unreadable")
            try:
                tail = reader.read(kva + lay.next.offset, lay.next.size)
                nexts[chunk] = lay.next.decode(tail, lay.next.offset)
            except ReadError:
                walk.damage.add("chunk list", chunk, f"chunk {chunk:#x}: next link unreadable; "
                                "later chunks are not reached", "unreadable")
            continue
        nexts[chunk] = lay.next.decode(raw)
        _buddy_chunk(pages, lay, chunk, raw, walk, freed, room)
    for d in chase:
        walk.damage.add("chunk list", d.addr, d.reason if d.kind != "cycle" else
                        f"chunk list cycle: chunk {d.addr:#x} reached twice", "corrupt")
    if lay.vaddr is not None:
        _check_carved(reader, arena, lay, var, walk, pages, freed, room)
    walk.regions = [(c, lay.chunk_bytes) for c in walk.chunks]
    walk.summary = (f"{len(walk.chunks)} chunks of {lay.chunk_bytes} bytes, {len(walk.blocks)} live blocks; "
                    + lay.sources)
    return walk


MAX_CARVED = 1024      # BUDDY_VADDR_SIZE / BUDDY_CHUNK_BYTES: chunks the reserved range holds


def _check_carved(reader, arena, lay: BuddyLayout, var: AllocatorVar, walk: AllocatorWalk, pages,
                  freed, room) -> None:
    """``buddy.vaddr`` counts the chunks carved from the reserved range, which starts one chunk
    into the arena (BUDDY_VADDR_OFFSET): chunk k is at ``(k + 1) * chunk bytes``. Chunks carved
    but not on the list (a broken ``next``) are walked from there and said so; list entries
    outside the carved range are reported."""
    if lay.vaddr is None:
        return
    vaddr = lay.vaddr.decode(var.value)
    cb = lay.chunk_bytes
    if vaddr % cb or vaddr // cb > MAX_CARVED:
        walk.damage.add("buddy", var.var_kva, f"vaddr {vaddr:#x} is not a whole number of chunks "
                        f"(at most {MAX_CARVED})", "corrupt")
        return
    carved = [arena.user_address((k + 1) * cb) for k in range(vaddr // cb)]
    listed = {arena.user_address(c) for c in walk.chunks}
    stray = sorted(listed - set(carved))
    if stray:
        walk.damage.add("chunk list", stray[0], f"{len(stray)} chunks on the list outside the "
                        f"{len(carved)} carved (buddy.vaddr {vaddr:#x}): {', '.join(f'{c:#x}' for c in stray[:4])}",
                        "corrupt")
    for c in carved:
        if c in listed:
            continue
        walk.damage.add("chunk list", c, f"chunk {c:#x} carved (buddy.vaddr {vaddr:#x}) but not on the "
                        "chunk list: walked from the carved range", "corrupt")
        try:
            raw = reader.read(arena.kern_vm_start + (c & LOW32), lay.chunk_size)
        except ReadError as e:
            walk.damage.add("chunk", c, f"chunk {c:#x}: metadata unreadable ({e.reason})", "unreadable")
            continue
        walk.chunks.append(c)
        _buddy_chunk(pages, lay, c, raw, walk, freed, room)


def _buddy_chunk(pages, lay: BuddyLayout, chunk: int, raw: bytes, walk: AllocatorWalk, want_freed, room):
    """Tile one chunk, walk its free lists and cross-check them (the hot loop: locals only;
    bits are tested in the bitmap's bytes, not in one 64k-bit integer)."""
    items = lay.items
    o0 = lay.orders.offset
    orders = raw[o0:o0 + lay.orders.size]
    abytes = raw[lay.allocated.offset:lay.allocated.end] if lay.allocated is not None else None
    heads = _ints(raw, lay.freelists)
    min_alloc = lay.min_alloc
    n_orders = lay.orders_n
    dmg = walk.damage

    # Free lists first: with no bitmap (2025) they decide liveness.
    on_list: Dict[int, int] = {}
    for order, head in enumerate(heads):
        _free_list(pages, lay, chunk, order, head, on_list, dmg)

    for i, _o in lay.header_blocks:
        if abytes is not None and not abytes[i >> 3] >> (i & 7) & 1:
            dmg.add("chunk", chunk, f"chunk {chunk:#x}: metadata block at item {i} is not marked allocated",
                    "corrupt", i)
        b = orders[i >> 1]
        if (b & 0xF if i & 1 else b >> 4) and abytes is not None:
            dmg.add("chunk", chunk, f"chunk {chunk:#x}: metadata block at item {i} has order "
                    f"{b & 0xF if i & 1 else b >> 4} (never set by the library): the chunk header "
                    "was handed out as a block", "corrupt", i)
    if abytes is not None:
        for idx in sorted(on_list):
            if abytes[idx >> 3] >> (idx & 7) & 1:
                dmg.add("block", chunk + idx * min_alloc, f"chunk {chunk:#x}: item {idx} is allocated "
                        f"and on the order-{on_list[idx]} free list", "corrupt", idx)
    starts = sorted(on_list)
    first_live = len(walk.blocks)
    blocks, freed = walk.blocks, walk.freed
    append = blocks.append
    new = tuple.__new__
    left = room[0] if room[0] is not None else -1
    idx = lay.data_start
    for _ in range(items):
        if idx >= items:
            break
        b = orders[idx >> 1]
        order = b & 0xF if idx & 1 else b >> 4
        n = 1 << order
        if order >= n_orders or idx & (n - 1) or idx + n > items:
            why = (f"order {order} out of range" if order >= n_orders else
                   f"order {order} block at item {idx} is misaligned" if idx & (n - 1) else
                   f"order {order} block at item {idx} runs past the chunk end")
            nxt = _resync(idx, abytes, starts, items)
            dmg.add("chunk", chunk, f"chunk {chunk:#x}: orders do not tile the chunk: {why}; "
                    f"items {idx}..{nxt - 1} skipped", "corrupt", idx)
            idx = nxt
            continue
        if abytes[idx >> 3] >> (idx & 7) & 1 if abytes is not None else idx not in on_list:
            if left == 0:
                walk.truncated = True
                break
            left -= 1
            append(new(Block, (chunk + idx * min_alloc, min_alloc << order, "live", order, chunk, "")))
        else:
            listed = on_list.get(idx)
            if listed != order:
                dmg.add("block", chunk + idx * min_alloc, f"chunk {chunk:#x}: free block at item {idx} "
                        f"(order {order}) " + ("is on no free list (leaked)" if listed is None else
                                               f"is on the order-{listed} free list"), "corrupt", idx)
            if want_freed:
                freed.append(Block(chunk + idx * min_alloc, min_alloc << order, "free", order, chunk))
        idx += n
    if room[0] is not None:
        room[0] = max(left, 0)
    if abytes is None or walk.truncated:
        return
    # Stray allocated bits: the bitmap holds more bits than block starts (cheap count first).
    live_here = len(walk.blocks) - first_live + len(lay.header_blocks)
    if int.from_bytes(abytes, "little").bit_count() == live_here:
        return
    expected = bytearray(len(abytes))
    for i, _o in lay.header_blocks:
        expected[i >> 3] |= 1 << (i & 7)
    base_item = chunk
    for blk in walk.blocks[first_live:]:
        i = (blk[0] - base_item) // min_alloc
        expected[i >> 3] |= 1 << (i & 7)
    stray = []
    for j, byte in enumerate(abytes):
        extra = byte & ~expected[j]
        for k in range(8):
            if extra >> k & 1:
                stray.append(j << 3 | k)
    for i in stray[:16]:
        where = "inside the chunk metadata" if i < lay.data_start else "inside a block"
        dmg.add("chunk", chunk, f"chunk {chunk:#x}: allocated bit for item {i} {where} "
                "(not the start of a block)", "corrupt", i)
    if len(stray) > 16:
        dmg.add("chunk", chunk, f"chunk {chunk:#x}: {len(stray) - 16} more stray allocated bits", "corrupt")


def _resync(idx, abytes, starts, items):
    """The next item after a tiling break where a block is known to start: the next set
    allocated bit or free-list entry."""
    cands = []
    if abytes is not None:
        j = idx + 1
        while j < items:
            byte = abytes[j >> 3] >> (j & 7)
            if byte:
                cands.append(j + ((byte & -byte).bit_length() - 1))
                break
            j = (j | 7) + 1
    k = bisect.bisect_right(starts, idx)
    if k < len(starts):
        cands.append(starts[k])
    return min(cands) if cands else items


def _free_list(pages, lay: BuddyLayout, chunk: int, order: int, head: int, on_list: Dict[int, int],
               dmg: DamageLog) -> None:
    items = lay.items
    if head == items:
        return
    hsize = lay.header_size
    pf, nf = lay.prev_index, lay.next_index
    base = chunk + lay.header_off
    step_bytes = lay.min_alloc
    read = pages.read

    def bad(idx, why):
        dmg.add("free list", chunk + (idx % items) * lay.min_alloc,
                f"chunk {chunk:#x} order-{order} free list: {why}", "corrupt", idx)

    # States are (item, its prev_index, its next_index): one header read per entry.
    def step(state):
        idx, _p, nxt = state
        if nxt == items:
            return None
        if nxt >= items:
            bad(idx, f"link from item {idx} to {nxt} is outside the chunk ({items} items)")
            return None
        raw = read(base + nxt * step_bytes, hsize)
        return nxt, pf.decode(raw), nf.decode(raw)

    if head >= items:
        bad(head, f"head {head} is outside the chunk ({items} items)")
        return
    chase = DamageLog()
    try:
        raw = read(base + head * step_bytes, hsize)
    except ReadError as e:
        bad(head, f"header of item {head} unreadable ({e.reason})")
        return
    prev = items
    check_prev = lay.allocated is not None      # the 2025 layout did not keep prev links
    align = (1 << order) - 1
    data_start = lay.data_start
    for idx, p, _nxt in kds.steps((head, pf.decode(raw), nf.decode(raw)), step, limit=items,
                                  damage=chase, what="free list"):
        if idx in on_list:
            bad(idx, f"item {idx} is on the order-{on_list[idx]} list already (cycle or shared entry)")
            return
        on_list[idx] = order
        if idx < data_start:
            bad(idx, f"entry item {idx} is inside the chunk's metadata (items 0..{data_start - 1}): "
                "the chunk header was handed out as a block")
        elif idx & align:
            bad(idx, f"entry item {idx} is not aligned to order {order}")
        if check_prev and p != prev:
            bad(idx, f"item {idx} prev_index {p} but reached from {prev if prev != items else 'the head'}")
        prev = idx
    for d in chase:
        bad(prev, "cycle" if d.kind == "cycle" else d.reason)


# --- stack ------------------------------------------------------------------------------------

def walk_stack(reader, arena: ArenaInfo, var: AllocatorVar, *, max_blocks: Optional[int] = None,
               freed: bool = False) -> AllocatorWalk:
    walk = AllocatorWalk(var)
    lay = BtfLayout(var.btf)
    seg_name = "stk_seg" if var.generation == 2026 else "scx_stk_seg"
    try:
        f = {n: _field(lay, var.struct, n) for n in ("first", "last", "current", "cind", "capacity",
                                                     "available", "data_size", "nr_pages_per_alloc",
                                                     "reserve")}
        elems, snext, sprev = (_field(lay, seg_name, "elems"), _field(lay, seg_name, "next"),
                               _field(lay, seg_name, "prev"))
        seg_size = _size(lay, seg_name)
    except (AllocError, LayoutError) as exc:
        walk.error = Damage(var.name, var.var_kva, str(exc), "corrupt")
        return walk
    v = {n: fl.decode(var.value) for n, fl in f.items()}
    seg_max = elems.count
    data_size, nr_pages = v["data_size"], v["nr_pages_per_alloc"]
    page = arena.page_size
    if not v["first"]:
        walk.summary = "no segment (nothing allocated yet)"
        return walk
    # stk_fill_new_elems refuses runs of more than STK_SEG_MAX elements.
    if not 0 < data_size <= 1 << 20 or not 0 < nr_pages <= 1 << 10 \
            or nr_pages * page // data_size > seg_max:
        walk.error = Damage(var.name, var.var_kva, f"data_size {data_size} / nr_pages_per_alloc "
                            f"{nr_pages} implausible (more than {seg_max} elements per run)", "corrupt")
        return walk

    def read_seg(ptr):
        if not arena.owns(ptr):
            raise ReadError(ptr, seg_size, f"segment pointer {ptr:#x} outside the arena")
        return ptr, reader.read(arena.kern_vm_start + (ptr & LOW32), seg_size)

    def step(state):
        nxt = snext.decode(state[1])
        return read_seg(nxt) if nxt else None

    def chain(head, what):
        out, chase = [], DamageLog()
        try:
            first = read_seg(head)
        except ReadError as e:
            walk.damage.add(what, head, e.reason, "corrupt" if "outside" in e.reason else "unreadable")
            return out, False
        for s in kds.steps(first, step, limit=MAX_SEGMENTS, damage=chase, what=what):
            out.append(s)
        for d in chase:
            walk.damage.add(what, d.addr, f"{what}: " + ("cycle" if d.kind == "cycle" else d.reason),
                            "corrupt" if d.kind in ("cycle", "bound") or "outside" in d.reason else d.kind)
        return out, not chase

    segs, whole = chain(v["first"], "segment list")
    seg_addrs = [a for a, _ in segs]
    prev = 0
    for a, raw in segs:
        p = sprev.decode(raw)
        if p != prev:
            walk.damage.add("segment", a, f"segment {a:#x} prev {p:#x}, reached from {prev:#x}", "corrupt")
        prev = a
    if whole and seg_addrs and seg_addrs[-1] != v["last"]:
        walk.damage.add("segment list", v["last"], f"last is {v['last']:#x}, the list ends at {seg_addrs[-1]:#x}",
                        "corrupt")
    reserve = []
    if v["reserve"]:
        reserve, _ = chain(v["reserve"], "reserve list")
    # Elements on the free stack.
    free: Dict[int, int] = {}
    cur = v["current"]
    if cur not in seg_addrs:
        walk.damage.add("stack", cur, f"current segment {cur:#x} is not on the segment list: "
                        "the free elements are unknown", "corrupt")
        pos = -1
    else:
        pos = seg_addrs.index(cur)
    cind = v["cind"]
    if pos >= 0 and cind > seg_max:
        walk.damage.add("stack", cur, f"cind {cind} > {seg_max} elements per segment", "corrupt")
        pos = -1
    if pos >= 0:
        for k in range(pos + 1):
            raw = segs[k][1]
            n = seg_max if k < pos else cind
            for i, elem in enumerate(_ints(raw, elems)[:n]):
                if not elem or not arena.owns(elem):
                    walk.damage.add("stack", segs[k][0], f"segment {segs[k][0]:#x} slot {i}: element "
                                    f"{elem:#x} outside the arena", "corrupt", i)
                    continue
                key = arena.user_address(elem)
                if key in free:
                    walk.damage.add("stack", key, f"element {key:#x} is on the free stack twice", "corrupt")
                free[key] = i
        on_stack = len(free)
        if v["available"] != on_stack and whole:
            walk.damage.add("stack", var.var_kva, f"available {v['available']} but {on_stack} elements "
                            "on the free stack", "corrupt")
        slots = len(segs) * seg_max
        if whole and v["capacity"] != slots - v["available"]:
            walk.damage.add("stack", var.var_kva, f"capacity {v['capacity']} but {len(segs)} segments of "
                            f"{seg_max} slots hold {v['available']} elements", "corrupt")
    # Element runs: the page runs the free elements come from.
    run = nr_pages * page
    per_run = run // data_size
    runs: Dict[int, int] = {}
    for fe in free:
        base = _run_base(fe, data_size, page, nr_pages, runs)
        if base is None:
            walk.damage.add("stack", fe, f"element {fe:#x} fits no run of {nr_pages} pages of "
                            f"{data_size}-byte elements", "corrupt")
            continue
        runs[base] = runs.get(base, 0) + 1
    meta = sorted((a, a + seg_size) for a in seg_addrs + [a for a, _ in reserve])
    meta_starts = [s for s, _ in meta]
    for base in sorted(runs):
        for k in range(per_run):
            el = base + k * data_size
            if el in free:
                if freed:
                    walk.freed.append(Block(el, data_size, "free", chunk=base))
                continue
            j = bisect.bisect_right(meta_starts, el + data_size - 1) - 1
            if j >= 0 and meta[j][1] > el:
                continue   # an element repurposed as a segment (stk_free with no capacity)
            if max_blocks is not None and len(walk.blocks) >= max_blocks:
                walk.truncated = True
                break
            walk.blocks.append(Block(el, data_size, "live", chunk=base))
    walk.chunks = sorted(runs)
    walk.geometry = (data_size, nr_pages, page)
    walk.metadata = meta
    walk.summary = (f"{len(segs)} segments, {len(free)} free elements, {len(runs)} element runs of "
                    f"{per_run} x {data_size} bytes known (a run whose elements are all allocated "
                    "has none on the free stack and is not seen)")
    return walk


def add_referenced_runs(walk: AllocatorWalk, addrs: Iterable[int], claimed: "BlockIndex") -> int:
    """Element runs of a stack allocator that only references reveal (every element of a run
    allocated: none is on the free stack). A referenced address that no allocator's memory
    holds and that is a whole number of elements into a page run adds that run; its elements
    become live blocks with a note saying so. Returns the number of runs added."""
    if walk.geometry is None or walk.error is not None:
        return 0
    data_size, nr_pages, page = walk.geometry
    known: Dict[int, int] = {r: 1 for r in walk.chunks}
    meta_starts = [s for s, _ in walk.metadata]
    added = []
    for a in sorted(addrs):
        if claimed.find(a) is not None:
            continue
        j = bisect.bisect_right(meta_starts, a) - 1
        if j >= 0 and walk.metadata[j][1] > a:
            continue
        base = _run_base(a, data_size, page, nr_pages, known)
        if base is None or base in known or (a - base) % data_size:
            continue
        known[base] = 1
        added.append(base)
    for base in added:
        for k in range(nr_pages * page // data_size):
            el = base + k * data_size
            j = bisect.bisect_right(meta_starts, el + data_size - 1) - 1
            if j >= 0 and walk.metadata[j][1] > el or claimed.find(el) is not None:
                continue
            walk.blocks.append(Block(el, data_size, "live", chunk=base,
                                     note="run seen only through a reference (no element of it is free)"))
    walk.chunks = sorted(known)
    return len(added)


def _run_base(e: int, data_size: int, page: int, nr_pages: int, runs: Dict[int, int]) -> Optional[int]:
    """The start of the page run holding element ``e``: page-aligned, ``e`` a whole number of
    elements into it; among several, one already known, else the lowest."""
    first_page = e - e % page
    cands = []
    for j in range(nr_pages):
        base = first_page - j * page
        if (e - base) % data_size == 0 and e - base + data_size <= nr_pages * page:
            cands.append(base)
    for c in cands:
        if c in runs:
            return c
    return min(cands) if cands else None


# --- bump -------------------------------------------------------------------------------------

def walk_bump(reader, arena: ArenaInfo, var: AllocatorVar, *, max_blocks: Optional[int] = None,
              freed: bool = False) -> AllocatorWalk:
    walk = AllocatorWalk(var)
    lay = BtfLayout(var.btf)
    try:
        fmax = _field(lay, var.struct, "max_contig_bytes", "max_alloc_bytes")
        fmem, foff = _field(lay, var.struct, "memory"), _field(lay, var.struct, "off")
    except AllocError as e:
        walk.error = Damage(var.name, var.var_kva, str(e), "corrupt")
        return walk
    fcur = lay.field(var.struct, "cur_memusage") if lay.has(var.struct, "cur_memusage") else None
    maxb, mem, off = fmax.decode(var.value), fmem.decode(var.value), foff.decode(var.value)
    if var.generation == 2026:
        try:
            ll, ll_next = _size(lay, "bump_ll"), _field(lay, "bump_ll", "next")
        except AllocError:
            ll, ll_next = arena_ptr_size(), Field(0, arena_ptr_size())
    else:
        ll, ll_next = 0, None
    if not mem:
        walk.summary = "no region (allocator not initialised)"
        return walk
    if not arena.owns(mem):
        walk.error = Damage(var.name, mem, f"memory {mem:#x} outside the arena", "corrupt")
        return walk
    end = off
    if off > maxb:
        walk.damage.add("bump", var.var_kva, f"off {off} beyond max_contig_bytes {maxb}", "corrupt")
        end = maxb
    regions = [mem]
    if ll_next is not None:
        def step(r):
            raw = reader.read(arena.kern_vm_start + (r & LOW32), ll_next.end)
            nxt = ll_next.decode(raw)
            if nxt and not arena.owns(nxt):
                raise ReadError(nxt, 0, f"region link {nxt:#x} outside the arena")
            return nxt or None
        chase = DamageLog()
        regions = list(kds.steps(mem, step, limit=MAX_BUMP_REGIONS, damage=chase, what="bump region"))
        for d in chase:
            walk.damage.add("bump region", d.addr, "region chain " + ("cycle" if d.kind == "cycle" else d.reason),
                            "corrupt")
    if fcur is not None and not walk.damage:
        cur = fcur.decode(var.value)
        if cur != maxb * len(regions):
            walk.damage.add("bump", var.var_kva, f"cur_memusage {cur} but {len(regions)} regions of {maxb} "
                            "bytes on the chain", "corrupt")
    walk.blocks.append(Block(arena.user_address(mem) + ll, max(0, end - ll), "used", chunk=mem,
                             note="current region"))
    for r in regions[1:]:
        walk.blocks.append(Block(arena.user_address(r) + ll, max(0, maxb - ll), "used", chunk=r,
                                 note="older region (used up to at most its end)"))
    walk.chunks = regions
    walk.regions = [(arena.user_address(r), maxb) for r in regions]
    walk.summary = f"{len(regions)} regions of {maxb} bytes, {end} bytes used in the current one"
    return walk


def arena_ptr_size() -> int:
    """An ``__arena`` pointer's width (BPF pointers are 64-bit on every architecture)."""
    return 8


WALKERS: Dict[str, Callable[..., AllocatorWalk]] = {
    "buddy": walk_buddy, "stack": walk_stack, "bump": walk_bump,
}


def walk(reader, arena: ArenaInfo, var: AllocatorVar, **kw: Any) -> AllocatorWalk:
    """Walk one allocator; never raises on guest data (damage and errors are recorded)."""
    try:
        # Blocks are many small tuples and none is garbage: the cyclic GC's passes over them
        # would cost a quarter of the walk.
        with paused_gc():
            return WALKERS[var.kind](reader, arena, var, **kw)
    except (ReadError, LayoutError, AllocError, KeyError, ValueError, IndexError) as e:
        w = AllocatorWalk(var)
        w.error = Damage(var.name, var.var_kva, f"walk stopped: {e}", "corrupt")
        return w


# --- bump blocks from references ----------------------------------------------------------------

def split_used(block: Block, starts: Iterable[int]) -> List[Block]:
    """A bump range cut at referenced addresses inside it: one block per reference, reaching
    to the next one (the last to the range's end); the part before the first is kept as is."""
    inside = sorted({s for s in starts if block.addr <= s < block.addr + block.size})
    if not inside:
        return [block]
    out = []
    if inside[0] > block.addr:
        out.append(Block(block.addr, inside[0] - block.addr, "used", chunk=block.chunk,
                         note="no reference into this part"))
    ends = inside[1:] + [block.addr + block.size]
    for s, e in zip(inside, ends):
        out.append(Block(s, e - s, "live", chunk=block.chunk,
                         note="extent to the next referenced block (bump keeps no sizes)"))
    return out


class BlockIndex:
    """Blocks by address: which block holds an address."""

    def __init__(self, blocks: Iterable[Tuple[int, int, Any]]):
        self.items = sorted(blocks, key=lambda b: b[0])
        self.starts = [b[0] for b in self.items]

    def find(self, addr: int) -> Optional[Tuple[int, int, Any]]:
        j = bisect.bisect_right(self.starts, addr) - 1
        if j >= 0:
            start, size, obj = self.items[j]
            if start <= addr < start + max(size, 1):
                return self.items[j]
        return None

