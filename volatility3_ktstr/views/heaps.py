"""Rows of ``linux.ktstr.heaps``: every block of every arena allocator in the dump: the scx
library's buddy, stack and bump allocators (walkers/scxalloc.py) and sdt_alloc slots
(walkers/sdtalloc.py), one row per live block (arena address, size, buddy order, kernel VA,
physical address, type, who points into it, value), freed blocks on request, each allocator's
summary row, and broken invariants as damage rows naming the chunk and the evidence.

Typing: a block that a typed pointer reaches (a map value member, a task-storage value member,
a member of another typed block) is rendered with the pointee type; a block only reached by an
untyped u64 is hex, the ReferencedFrom column saying from where. Takes the kernel
(``kernel_model.Kernel``); no Volatility import.
"""

import bisect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..btf import Kind
from ..core import LayoutError, ReadError
from ..errors import KtstrError
from ..kds import Damage
from ..walkers import arena as arenaw
from ..walkers import scxalloc
from ..walkers.sections import section_maps
from . import HEX, Grid, Kernel, Rows, inventory

GRID = Grid(("Program", str), ("Allocator", str), ("Kind", str), ("State", str), ("Address", HEX),
            ("Size", int), ("Order", int), ("Chunk", HEX), ("KernelVA", HEX), ("Physical", HEX),
            ("Type", str), ("ReferencedFrom", str), ("Value", str), ("Note", str), note="Note")

KINDS = ("buddy", "stack", "bump", "sdt_alloc")
MAX_REF_ENTRIES = 4096        # map elements scanned per map for references
MAX_SLOTS = 512               # pointer-like members per value type
HEX_BYTES = 32                # bytes of an untyped block shown
MAX_REFS_SHOWN = 4


@dataclass
class Reference:
    source: str        # "lab_alloc_blocks[3].addr"
    type_id: int       # pointee type (0: untyped)


@dataclass
class ProgramHeaps:
    name: str
    btf_kva: int
    btf: Any
    arena: Any                  # ArenaInfo, or None when the program's arena is unknown
    arena_how: str
    walks: List[scxalloc.AllocatorWalk] = field(default_factory=list)
    refs: Dict[int, List[Reference]] = field(default_factory=dict)


def pointer_slots(btf, type_id: int, limit: int = MAX_SLOTS) -> List[Tuple[int, int, str, int]]:
    """(offset, size, member path, pointee type id) of the pointer members and 8-byte unsigned
    integers (where BPF programs keep ``__arena`` addresses as u64) of a value type, through
    nested structs and arrays; pointee 0 for untyped."""
    out: List[Tuple[int, int, str, int]] = []

    def visit(tid, off, path, depth):
        if len(out) >= limit or depth > 8:
            return
        t = btf.resolve(tid)
        if t is None:
            return
        if t.kind == Kind.PTR:
            pointee = btf.resolve(t.type)
            typed = t.type
            if pointee is not None and pointee.kind == Kind.FWD and pointee.name:
                # A forward declaration: the body elsewhere in the same BTF, if any.
                try:
                    pointee = btf.struct(pointee.name)
                    typed = pointee.id
                except KeyError:
                    pointee = None
            if pointee is None or pointee.kind not in (Kind.STRUCT, Kind.UNION) or not pointee.size:
                typed = 0
            out.append((off, btf.pointer_size, path, typed))
        elif t.kind == Kind.INT and t.size == 8 and not t.is_signed:
            out.append((off, 8, path, 0))
        elif t.kind in (Kind.STRUCT, Kind.UNION):
            for m in t.members:
                if m.bit_size or m.bit_offset % 8:
                    continue
                visit(m.type, off + m.bit_offset // 8, f"{path}.{m.name}" if path else m.name, depth + 1)
        elif t.kind == Kind.ARRAY:
            es = btf.size_of(t.type)
            if es and es % 8 == 0:
                for i in range(min(t.nelems, limit)):
                    visit(t.type, off + i * es, f"{path}[{i}]", depth + 1)
        elif t.kind == Kind.DATASEC:
            for name, vt, voff, _size in btf.datasec_vars(t.id):
                visit(vt, off + voff, name, depth + 1)

    try:
        visit(type_id, 0, "", 0)
    except Exception:   # noqa: BLE001 - a corrupt program BTF only loses references
        return out
    return out


def _value_refs(arena, slots, value: bytes, label: str, refs: Dict[int, List[Reference]]) -> List[Tuple[int, int]]:
    """Record the arena addresses a value holds in ``refs``; returns the (address, pointee
    type) pairs found."""
    upper = arena.user_upper
    found = []
    for off, size, path, tid in slots:
        if off + size > len(value):
            continue
        v = int.from_bytes(value[off:off + size], "little")
        if v and upper and v >> 32 == upper and arena.owns(v):
            refs.setdefault(v, []).append(Reference(f"{label}.{path}" if path else label, tid))
            found.append((v, tid))
    return found


def collect_references(kctx: Kernel, prog: ProgramHeaps, maps: List[Any]) -> None:
    """Arena addresses stored in the program's ARRAY and TASK_STORAGE map values."""
    from ..bpf import values
    from ..walkers import localstorage

    if prog.arena is None:
        return
    for m in maps:
        if m.btf_kva != prog.btf_kva or m.error or not m.btf_value_type_id:
            continue
        slots = pointer_slots(prog.btf, m.btf_value_type_id)
        if not slots:
            continue
        try:
            if m.type_name == "array":
                for e in values.array_entries(kctx.reader, kctx.layout, m, limit=MAX_REF_ENTRIES):
                    if e.value is not None:
                        label = m.name if m.max_entries == 1 else f"{m.name}[{e.index}]"
                        _value_refs(prog.arena, slots, e.value, label, prog.refs)
            elif m.type_name == "task_storage":
                elems, _ = localstorage.walk_map(kctx.reader, kctx.layout, m.kva, m.value_size)
                for el in elems:
                    _value_refs(prog.arena, slots, el.value, f"{m.name}[task {el.owner:#x}]", prog.refs)
        except Exception:   # noqa: BLE001 - a map we cannot read only loses its references
            continue
    _typed_block_refs(kctx, prog)


MAX_TYPED = 1 << 14           # typed objects followed per program
MAX_TYPED_DEPTH = 4


def _typed_block_refs(kctx: Kernel, prog: ProgramHeaps) -> None:
    """References stored in arena objects that typed pointers reach (a block holding a
    ``struct X *`` to another block), followed a few levels deep."""
    from .. import kds

    arena, btf = prog.arena, prog.btf
    # Nodes are ints (type id << 64 | address); 0 is the root above the map references.
    roots = sorted({r.type_id << 64 | a for a, rs in prog.refs.items() for r in rs if r.type_id})
    slots_of: Dict[int, Any] = {}

    def children(node: int) -> List[int]:
        if node == 0:
            return roots
        addr, tid = node & ((1 << 64) - 1), node >> 64
        if tid not in slots_of:
            slots_of[tid] = pointer_slots(btf, tid)
        size = btf.size_of(tid)
        try:
            raw = kctx.reader.read(arena.to_kernel(addr), size)
        except ReadError:
            return []
        found = _value_refs(arena, slots_of[tid], raw, f"{btf.type_name(tid)} at {addr:#x}", prog.refs)
        return sorted({t << 64 | a for a, t in found if t})

    for _ in kds.tree_nodes(0, children, limit=MAX_TYPED, max_depth=MAX_TYPED_DEPTH,
                            what="typed arena object"):
        pass


def programs(kctx: Kernel, kinds=KINDS, max_blocks: Optional[int] = None,
             freed: bool = False) -> Tuple[List[ProgramHeaps], List[Damage]]:
    maps = inventory.maps(kctx)
    damage: List[Damage] = []
    pairs = []
    for m, btf, e in section_maps(maps, kctx.btf_at):
        if e is not None:
            damage.append(Damage(m.name, m.kva, f"program BTF: {e}", "corrupt"))
        else:
            pairs.append((m, btf))
    found, dlog = scxalloc.find_allocators(kctx.reader, kctx.layout, pairs)
    damage.extend(dlog)
    progs, prog_arenas = inventory.prog_arenas(kctx)
    arenas = inventory.arenas(kctx)
    by_btf: Dict[int, ProgramHeaps] = {}
    kva_of = {m.kva: m for m in maps}
    for var in found:
        m = kva_of.get(var.map_kva)
        btf_kva = m.btf_kva if m is not None else 0
        prog = by_btf.get(btf_kva)
        if prog is None:
            pointer = _first_pointer(var)
            arena, how = arenaw.arena_for_program(arenas, progs, btf_kva, (var.map_kva,), pointer,
                                                  prog_arenas)
            prog = ProgramHeaps(_program_name(btf_kva, maps, progs), btf_kva, var.btf, arena, how)
            by_btf[btf_kva] = prog
        if var.kind not in kinds:
            continue
        if prog.arena is None or not prog.arena.usable:
            w = scxalloc.AllocatorWalk(var)
            w.error = Damage(var.name, var.var_kva, prog.arena_how if prog.arena is None
                             else f"arena map {prog.arena.map_id}: {prog.arena.error}", "corrupt")
            prog.walks.append(w)
            continue
        prog.walks.append(scxalloc.walk(kctx.reader, prog.arena, var, max_blocks=max_blocks, freed=freed))
    out = list(by_btf.values())
    for prog in out:
        collect_references(kctx, prog, maps)
        stacks = [w for w in prog.walks if w.var.kind == "stack" and w.error is None]
        if len(stacks) == 1 and prog.refs:
            # Runs whose elements are all allocated show only through references; with one
            # stack allocator in the program, unclaimed referenced element addresses are its.
            owned = [(start, size, None) for w in prog.walks if w.var.kind != "stack"
                     for start, size in w.regions]
            owned.extend(_arena_globals(prog))
            typed_refs = [a for a, rs in prog.refs.items() if any(r.type_id for r in rs)]
            n = scxalloc.add_referenced_runs(stacks[0], typed_refs, scxalloc.BlockIndex(owned))
            if n:
                stacks[0].summary += f"; {n} more runs seen through references"
    return out, damage


def _arena_globals(prog: ProgramHeaps) -> List[Tuple[int, int, Any]]:
    """The arena globals (``__arena`` variables, the ``.addr_space.1`` DATASEC), which libbpf
    puts at the end of the arena."""
    out: List[Tuple[int, int, Any]] = []
    arena = prog.arena
    for t in prog.btf.own_types:
        if t.kind == Kind.DATASEC and t.name.startswith(".addr_space") and 0 < t.size <= arena.size:
            out.append((arenaw.globals_address(arena, t.size), t.size + arena.page_size, None))
    return out


def _first_pointer(var: scxalloc.AllocatorVar) -> Optional[int]:
    for off, size, _path, _tid in pointer_slots(var.btf, var.btf.struct(var.struct).id):
        v = int.from_bytes(var.value[off:off + size], "little")
        if v >> 32:         # user-form arena pointers only (not counters such as buddy.vaddr)
            return v
    return None


def _program_name(btf_kva: int, maps, progs) -> str:
    """The BPF object's name as libbpf prefixes its section maps (``lab_allo.bss``: 8
    characters), else its programs' names."""
    for m in maps:
        if m.btf_kva == btf_kva and not m.name.startswith(".") and "." in m.name:
            return m.name.rsplit(".", 1)[0]
    kvas = {m.kva for m in maps if m.btf_kva == btf_kva}
    names = sorted({p.name for p in progs if p.name and (p.btf_kva == btf_kva or kvas & set(p.used_map_kvas))})
    if names:
        return names[0] + (f" (+{len(names) - 1})" if len(names) > 1 else "")
    return "?"


class _Typed:
    """Rendering a block: with the type a pointer gives it, else hex."""

    def __init__(self, kctx, prog: Any):
        self.kctx = kctx
        self.prog = prog
        self.pagemap: Optional[Dict[int, int]] = None
        self.ref_addrs = sorted(getattr(prog, "refs", {}))

    def phys(self, kva: int):
        if self.pagemap is None:
            try:
                self.pagemap = {p.kernel_va: p.phys for p in arenaw.mapped_pages(self.prog.arena, self.kctx.mapping)}
            except Exception:   # noqa: BLE001 - no translation: the column stays empty
                self.pagemap = {}
        ps = self.prog.arena.page_size
        base = self.pagemap.get(kva - kva % ps)
        return None if base is None else base + kva % ps

    def block_refs(self, addr: int, size: int) -> List[Tuple[int, Reference]]:
        refs = self.prog.refs
        j = bisect.bisect_left(self.ref_addrs, addr)
        out = []
        while j < len(self.ref_addrs) and self.ref_addrs[j] < addr + max(size, 1):
            a = self.ref_addrs[j]
            out.extend((a, r) for r in refs[a])
            j += 1
        return out


def _render(kctx, prog: ProgramHeaps, block: scxalloc.Block, refs) -> Tuple[str, str, str]:
    """(type, referenced from, value) of a block."""
    from ..render import render, render_text

    typed = next(((a, r) for a, r in refs if r.type_id and a == block.addr), None)
    shown = ", ".join(f"{r.source}" + (f"+{a - block.addr:#x}" if a != block.addr else "")
                      for a, r in refs[:MAX_REFS_SHOWN])
    if len(refs) > MAX_REFS_SHOWN:
        shown += f", +{len(refs) - MAX_REFS_SHOWN} more"
    kva = prog.arena.to_kernel(block.addr)
    if typed is not None:
        tid = typed[1].type_id
        size = min(prog.btf.size_of(tid), block.size) if block.size else prog.btf.size_of(tid)
        try:
            raw = kctx.reader.read(kva, size)
            return prog.btf.type_name(tid), shown, render_text(render(prog.btf, tid, raw), 1024)
        except ReadError as e:
            return prog.btf.type_name(tid), shown, f"unreadable ({e.reason})"
        except Exception as e:   # noqa: BLE001 - a type that does not render: hex below
            why = f"render failed: {e}"
    else:
        why = "referenced only by untyped values" if refs else "no typed pointer reaches it"
    n = min(block.size, HEX_BYTES)
    try:
        raw = kctx.reader.read(kva, n) if n else b""
        text = raw.hex() + ("..." if block.size > n else "")
    except ReadError as e:
        text = f"unreadable ({e.reason})"
    return f"hex ({why})", shown, text


def rows(kctx: Kernel, kind: Optional[str] = None, freed: bool = False,
         max_blocks: Optional[int] = None) -> Rows:
    if kind is not None and kind not in KINDS:
        raise KtstrError(f"--kind must be one of {', '.join(KINDS)}")
    if max_blocks is not None and max_blocks < 0:
        raise KtstrError("--max-blocks must be >= 0")
    kinds = (kind,) if kind else KINDS
    kctx.require_type("bpf_arena")
    progs, damage = programs(kctx, kinds, max_blocks, freed)
    sdt = _sdt_programs(kctx) if "sdt_alloc" in kinds else []
    if not any(p.walks for p in progs) and not sdt:
        damaged = inventory.damage_texts(kctx, ("map", "prog"))
        why = f"; {inventory.summary_of(kctx)}: {'; '.join(damaged)}" if damaged else ""
        raise KtstrError("no BPF program in the dump declares an arena allocator variable (struct buddy, "
                         f"stk, bump, scx_buddy, scx_stk, scx_static or scx_allocator){why}")
    for prog in progs:
        yield from _program_rows(kctx, prog)
    yield from _sdt_rows(kctx, sdt, freed)
    for d in damage:
        yield 0, GRID.damage(d, Program="", Allocator=d.what, Kind="", State="damage", Address=0)
    for text in inventory.damage_texts(kctx, ("map", "prog")):
        yield 0, GRID.damage(text, Program="", Allocator="", Kind="", State="damage", Address=0)


def _program_rows(kctx, prog: ProgramHeaps) -> Rows:
    typed = _Typed(kctx, prog)
    for w in prog.walks:
        var = w.var
        label = f"{var.name} ({var.section})"
        base = dict(Program=prog.name, Allocator=label, Kind=var.kind)
        if w.error is not None:
            yield 0, GRID.damage(w.error, State="damage", Address=0, **base)
            continue
        how = f"struct {var.struct}; arena map {prog.arena.map_id} ({prog.arena_how})"
        blocks = w.blocks
        if var.kind == "bump":
            starts = [a for a in prog.refs]
            blocks = [b for blk in blocks for b in scxalloc.split_used(blk, starts)]
        yield 0, GRID.row(State="allocator", Address=0, Size=sum(b.state == "live" for b in blocks),
                          KernelVA=var.var_kva, Chunk=w.chunks[0] if w.chunks else 0,
                          Note=f"{w.summary}; {how}" if w.summary else how, **base)
        for b in sorted(blocks + w.freed, key=lambda b: b.addr):
            kva = prog.arena.to_kernel(b.addr)
            refs = typed.block_refs(b.addr, b.size)
            tname, refd, value = _render(kctx, prog, b, refs) if b.state != "free" else ("", "", "")
            yield 0, GRID.row(State=b.state, Address=b.addr, Size=b.size, Order=b.order, Chunk=b.chunk,
                              KernelVA=kva, Physical=typed.phys(kva), Type=tname, ReferencedFrom=refd,
                              Value=value, Note=b.note, **base)
        for d in w.damage:
            yield 0, GRID.damage(d, State="damage", Address=d.addr, **base)
        if w.damage.dropped:
            yield 0, GRID.damage(f"{w.damage.dropped} more problems", State="damage", Address=0, **base)
        if w.truncated:
            yield 0, GRID.damage(f"stopped at --max-blocks", State="damage", Address=0, **base)


def _sdt_programs(kctx):
    from . import sdtalloc

    try:
        return sdtalloc.sdt_programs(kctx)
    except (KtstrError, LayoutError):
        return []


def _sdt_rows(kctx, progs, freed) -> Rows:
    from ..walkers import sdtpayload

    for prog in progs:
        base = dict(Program=prog.scheduler, Kind="sdt_alloc")
        if prog.error or prog.slots is None:
            for var in prog.allocators or [None]:
                yield 0, GRID.damage(prog.error or "not walked", Allocator=var.name if var else "?",
                                     State="damage", Address=0, **base)
            continue
        typed = _Typed(kctx, _Shim(prog))
        for walk, type_id, reason in prog.slots.walks:
            alloc = f"{walk.name} ({prog.data_map.name})"
            if walk.error:
                yield 0, GRID.damage(walk.error, Allocator=alloc, State="damage", Address=walk.root, **base)
                continue
            yield 0, GRID.row(Allocator=alloc, State="allocator", Address=0, Size=len(walk.entries),
                              Note=f"scx_allocator; elem_size {walk.elem_size}; arena map "
                                   f"{prog.arena.map_id} ({prog.arena_how})", **base)
            label = sdtpayload.type_label(prog.btf, type_id, reason)
            for e in walk.entries:
                kva = prog.arena.to_kernel(e.user_addr)
                yield 0, GRID.row(Allocator=alloc, State="live", Address=e.user_addr, Size=walk.elem_size,
                                  KernelVA=kva, Physical=typed.phys(kva), Type=label,
                                  Value=sdtpayload.payload_text(prog.btf, type_id, e.payload),
                                  Note=f"idx {e.idx} genn {e.genn}", **base)
            for d in walk.damage:
                yield 0, GRID.damage(d, Allocator=alloc, State="damage", Address=d.addr, **base)


class _Shim:
    """The part of ProgramHeaps that physical translation needs, for an sdt_alloc program."""

    def __init__(self, sdt_prog):
        self.arena = sdt_prog.arena
