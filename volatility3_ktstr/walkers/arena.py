"""BPF arenas (BPF_MAP_TYPE_ARENA): where an arena lives in the kernel and how to read it.

Kernel layout (kernel/bpf/arena.c): ``struct bpf_arena`` embeds the ``bpf_map`` at offset 0 (so
the map's address is the arena's) and holds ``user_vm_start``/``user_vm_end`` (the user mapping,
``map_extra``) and ``kern_vm`` (a ``vm_struct`` reserving 4 GiB plus a guard). The kernel maps an
arena page at ``kern_vm_start + lower_32_bits(user address)`` where ``kern_vm_start =
kern_vm->addr + GUARD_SZ / 2`` and ``GUARD_SZ = round_up(1 << 16, 2 * PAGE_SIZE)`` (the guard
covers the 16-bit ``off`` of a BPF load/store on either side).

``__arena`` pointers that BPF programs store are user-form (``user_vm_start``'s upper 32 bits |
32-bit offset); only the low 32 bits matter for translation, which is why the same pointer reads
the same bytes through the kernel window. Pages that were never faulted in are simply unmapped.

Nothing here imports Volatility: reads go through a :class:`Reader` on kernel virtual addresses,
and page listing takes a ``mapping(offset, length)`` callable shaped like a Volatility layer's
``mapping(..., ignore_errors=True)``.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ..core import Layout, LayoutError, ReadError, Reader, read_int
from ..errors import KtstrError

LOW32 = 0xFFFF_FFFF
ARENA_MAX_SPAN = 1 << 32      # an arena never exceeds 4 GiB (low-32 addressing)
_GUARD_REACH = 1 << 16        # a BPF insn's 16-bit offset: what the guard must absorb


def guard_half(page_size: int) -> int:
    """Half the guard region in front of an arena's kernel window (depends on the page size)."""
    two_pages = 2 * page_size
    return ((_GUARD_REACH + two_pages - 1) // two_pages * two_pages) // 2


@dataclass
class ArenaInfo:
    """One arena map. ``kern_vm_start`` is 0 when the kernel window could not be read
    (``error`` says why); ``user_vm_start`` is kept even then."""

    map_id: int
    map_kva: int
    name: str = ""
    user_vm_start: int = 0
    size: int = 0                 # bytes of user VA the arena spans
    kern_vm_start: int = 0        # kernel VA of arena offset 0
    vm_addr: int = 0              # kern_vm->addr (start of the guard)
    page_size: int = 4096
    max_entries: int = 0          # pages the map was created with
    error: Optional[str] = None

    @property
    def usable(self) -> bool:
        return bool(self.kern_vm_start) and self.error is None

    @property
    def user_upper(self) -> int:
        """Upper 32 bits every user-form pointer into this arena carries."""
        return self.user_vm_start >> 32

    def to_kernel(self, ptr: int) -> int:
        return arena_to_kernel(self, ptr)

    def user_address(self, ptr: int) -> int:
        """Canonical user-form address of an arena pointer (32-bit offsets are widened)."""
        return (self.user_vm_start & ~LOW32) | (ptr & LOW32)

    def owns(self, ptr: int) -> bool:
        """Whether ``ptr`` (user form, or a bare 32-bit offset) falls inside this arena."""
        if ptr >> 32 not in (0, self.user_upper):
            return False
        u = self.user_address(ptr)
        return self.user_vm_start <= u < self.user_vm_start + (self.size or ARENA_MAX_SPAN)


def globals_address(info: ArenaInfo, globals_size: int) -> int:
    """User-form address of an arena's globals (the ``__arena`` variables, a program's
    ``.addr_space.1`` DATASEC of ``globals_size`` bytes): libbpf places them at the end of the
    arena, at ``mmap size - round_up(size, page size)`` from ``user_vm_start``."""
    span = info.size or ARENA_MAX_SPAN
    page = info.page_size or 4096
    return info.user_vm_start + span - (globals_size + page - 1) // page * page


def arena_to_kernel(info: ArenaInfo, ptr: int) -> int:
    """Kernel virtual address of an ``__arena`` pointer (user form or 32-bit offset)."""
    return info.kern_vm_start + (ptr & LOW32)


def read_arena(reader, info: ArenaInfo, ptr: int, size: int) -> bytes:
    """``size`` bytes at arena pointer ``ptr``; ReadError when unmapped or the window is unknown."""
    if not info.kern_vm_start:
        raise ReadError(ptr, size, f"arena map {info.map_id} has no kernel window")
    return reader.read(info.kern_vm_start + (ptr & LOW32), size)


@dataclass(frozen=True)
class ArenaOffsets:
    """Kernel offsets an arena needs (from the kernel ISF/BTF)."""

    arena_size: int
    user_vm_start: int
    user_vm_end: int          # -1 when the kernel lacks the member
    kern_vm: int
    vm_addr: int
    vm_struct_size: int

    @classmethod
    def from_layout(cls, layout) -> "ArenaOffsets":
        try:
            return cls(
                arena_size=layout.size("bpf_arena"),
                user_vm_start=layout.offset("bpf_arena", "user_vm_start"),
                user_vm_end=layout.offset("bpf_arena", "user_vm_end")
                if layout.has("bpf_arena", "user_vm_end") else -1,
                kern_vm=layout.offset("bpf_arena", "kern_vm"),
                vm_addr=layout.offset("vm_struct", "addr"),
                vm_struct_size=layout.size("vm_struct"),
            )
        except LayoutError as e:
            raise LayoutError(f"BPF arena layout: {e}") from None


def _u64(raw, off):
    return int.from_bytes(raw[off:off + 8], "little")


def read_arena_info(reader, layout, map_kva, map_id, page_size, max_entries=0, name="",
                    offsets: ArenaOffsets = None) -> ArenaInfo:
    """The arena whose ``bpf_map`` is at ``map_kva``: one bulk read of ``struct bpf_arena`` and
    one of its ``vm_struct``. Unreadable parts set ``error`` instead of raising."""
    offs = offsets or ArenaOffsets.from_layout(layout)
    info = ArenaInfo(map_id=map_id, map_kva=map_kva, name=name, page_size=page_size,
                     max_entries=max_entries)
    declared = min(max_entries * page_size, ARENA_MAX_SPAN) if max_entries else 0
    try:
        raw = reader.read(map_kva, offs.arena_size)
    except ReadError as e:
        info.error = f"struct bpf_arena unreadable: {e.reason}"
        info.size = declared
        return info
    info.user_vm_start = _u64(raw, offs.user_vm_start)
    end = _u64(raw, offs.user_vm_end) if offs.user_vm_end >= 0 else 0
    # user_vm_end is authoritative when sane; otherwise the declared page count.
    span = end - info.user_vm_start
    info.size = span if 0 < span <= ARENA_MAX_SPAN else declared
    kern_vm = _u64(raw, offs.kern_vm)
    if not kern_vm:
        info.error = "bpf_arena.kern_vm is NULL"
        return info
    try:
        vm = reader.read(kern_vm, offs.vm_struct_size)
    except ReadError as e:
        info.error = f"arena vm_struct at {kern_vm:#x} unreadable: {e.reason}"
        return info
    info.vm_addr = _u64(vm, offs.vm_addr)
    if not info.vm_addr:
        info.error = "arena vm_struct.addr is NULL"
        return info
    info.kern_vm_start = info.vm_addr + guard_half(page_size)
    return info


def arena_infos(reader: Reader, layout: Layout, maps: Iterable[Any], page_size: int) -> List[ArenaInfo]:
    """ArenaInfo for every ``arena`` map among ``maps`` (BpfMap records)."""
    offs = None
    out = []
    for m in maps:
        if m.type_name != "arena":
            continue
        if offs is None:
            offs = ArenaOffsets.from_layout(layout)
        out.append(read_arena_info(reader, layout, m.kva, m.id, page_size, m.max_entries, m.name, offs))
    return out


def kernel_arenas(kernel):
    """ArenaInfo of every arena map of ``kernel`` (a ``kernel_model.Kernel``), read once."""
    return kernel.memo(("arena", "infos"), lambda: arena_infos(
        kernel.reader, kernel.layout, kernel.maps(), kernel.page_size))


def kernel_prog_arenas(kernel):
    """(programs, {prog kva: prog->aux->arena}) of ``kernel`` for arena attribution, read once;
    ([], {}) when the program registry cannot be read (attribution falls back to pointer
    ranges)."""

    def read():
        try:
            progs = kernel.progs()
        except (KtstrError, LayoutError):
            return [], {}
        return progs, {p.kva: prog_arena_kva(kernel.reader, kernel.layout, p.aux_kva) for p in progs}

    return kernel.memo(("arena", "prog_arenas"), read)


@dataclass
class ArenaPage:
    user_addr: int      # user-form address of the page
    kernel_va: int      # where the kernel maps it
    phys: int           # offset in the layer below the kernel's (physical address)
    layer: str = ""


def mapped_pages(info: ArenaInfo, mapping: Callable[..., Iterable[Any]],
                 limit: Optional[int] = None) -> Iterator["ArenaPage"]:
    """Pages of the arena that are mapped, in address order.

    ``mapping(offset, length)`` yields ``(offset, sublength, mapped_offset, mapped_length,
    layer)`` for the mapped parts of a kernel VA range (a Volatility layer's ``mapping`` with
    ``ignore_errors=True``). Runs are split into pages; at most ``limit`` pages are yielded.
    """
    if not info.kern_vm_start or not info.size:
        return
    page = info.page_size
    base = info.kern_vm_start
    # The window starts at the low 32 bits of user_vm_start (usually 0).
    start = base + (info.user_vm_start & LOW32)
    user_base = info.user_vm_start - (info.user_vm_start & LOW32)
    n = 0
    for off, sublen, mapped, _mlen, layer in mapping(start, info.size):
        # A run is virtually and physically contiguous; bounded by the arena size.
        first = off - (off % page)
        end = off + sublen
        va = first
        while va < end:
            if limit is not None and n >= limit:
                return
            yield ArenaPage(user_addr=user_base + (va - base), kernel_va=va,
                            phys=mapped + (va - off), layer=layer)
            n += 1
            va += page


# --- which arena a program uses ---------------------------------------------------------------

def prog_arena_kva(reader, layout, aux_kva) -> int:
    """``bpf_prog_aux.arena`` (the arena a program was verified against); 0 when the kernel
    lacks the member or it is unreadable."""
    if not aux_kva or not layout.has("bpf_prog_aux", "arena"):
        return 0
    try:
        return read_int(reader, layout, "bpf_prog_aux", aux_kva, "arena")
    except ReadError:
        return 0


def arena_for_program(arenas: List[ArenaInfo], progs: Iterable[Any], btf_kva: int,
                      map_kvas: Iterable[int] = (), pointer: Optional[int] = None,
                      prog_arenas: Optional[Dict[int, int]] = None) -> Tuple[Optional[ArenaInfo], str]:
    """(ArenaInfo or None, how) for the program whose BTF object is ``btf_kva`` (or which uses
    one of ``map_kvas``).

    ``progs``: BpfProg records (``btf_kva``, ``used_map_kvas``, ``name``, ``kva``);
    ``prog_arenas``: {prog kva: bpf_prog_aux.arena}. Tried in order: ``aux->arena`` of those
    programs, arena maps in their ``used_maps``, arenas whose user range holds ``pointer`` (an
    arena pointer the program stored), the only arena of the dump."""
    prog_arenas = prog_arenas or {}
    by_kva = {a.map_kva: a for a in arenas}
    mine = [p for p in progs if (btf_kva and p.btf_kva == btf_kva)
            or any(k in p.used_map_kvas for k in map_kvas)]
    for label, refs in (("bpf_prog_aux.arena", lambda p: (prog_arenas.get(p.kva, 0),)),
                        ("bpf_prog_aux.used_maps", lambda p: p.used_map_kvas)):
        kvas = {k for p in mine for k in refs(p)}
        hits = [by_kva[k] for k in sorted(kvas) if k in by_kva]
        if len(hits) == 1:
            names = sorted({p.name for p in mine if p.name and hits[0].map_kva in refs(p)})
            more = f" (+{len(names) - 3})" if len(names) > 3 else ""
            return hits[0], f"{label} of {', '.join(names[:3]) or 'its programs'}{more}"
    if pointer:
        hits = [a for a in arenas if a.owns(pointer)]
        if len(hits) == 1:
            return hits[0], "the only arena whose range holds the allocator's pointers"
    if len(arenas) == 1:
        return arenas[0], "the only arena map"
    return None, f"cannot tell which of {len(arenas)} arena maps the program uses"
