"""Rows of ``linux.ktstr.sdtalloc``: every live allocation of every sched_ext scx_allocator
(scheduler, allocator, idx, genn, user address, owning task, payload typed by the scheduler's
BTF); skipped subtrees, empty or broken allocators are rows with the reason in Note.

Takes the kernel adapter (``KernelContext``); no Volatility import.
"""

from ..errors import KtstrError
from ..walkers import owners, sdtalloc
from . import HEX, Grid, inventory

GRID = Grid(("Scheduler", str), ("Allocator", str), ("Idx", int), ("Genn", int), ("Address", HEX),
            ("PID", int), ("Comm", str), ("Type", str), ("Payload", str), ("Note", str), note="Note")

_LEVEL_NAMES = {0: "root", 1: "level-1 subtree", 2: "leaf subtree", 3: "slot"}


def programs(kctx, type_name=None, max_entries=None, header_size=None):
    """The schedulers' allocator programs, options checked (one-line errors)."""
    if max_entries is not None and max_entries < 0:
        raise KtstrError("--max-entries must be >= 0")
    if header_size is not None and not 0 <= header_size < sdtalloc.MIN_ELEM_SIZE:
        raise KtstrError(f"--header-size must be 0..{sdtalloc.MIN_ELEM_SIZE - 1}")
    # Program BTFs carry copies of the kernel structs they touch (vmlinux.h); a payload is a
    # struct the program defines, so sdt_programs drops names the kernel ISF also has.
    return kctx.sdt_programs(type_name=type_name, header_override=header_size, max_entries=max_entries)


def rows(kctx, type_name=None, max_entries=None, header_size=None):
    progs = programs(kctx, type_name, max_entries, header_size)
    if not progs:
        damaged = inventory.damage_texts(kctx, ("map", "prog"))
        why = f"; {inventory.summary_of(kctx)}: {'; '.join(damaged)}" if damaged else ""
        raise KtstrError("no BPF program in the dump declares a struct scx_allocator variable "
                         f"(no sched_ext scheduler using sdt_alloc is loaded{why})")
    maps = inventory.maps(kctx)
    resolver = owners.OwnerResolver(kctx.reader, kctx.layout)
    task_pid = kctx.layout.offset("task_struct", "pid") if kctx.layout.has("task_struct", "pid") else None
    for prog in progs:
        if prog.error or prog.slots is None:
            for var in prog.allocators or [None]:
                yield 0, _problem(prog, var.name if var else "?", 0, 0, prog.error or "not walked")
            continue
        owner_of = sdtalloc.task_storage_owners(kctx.reader, kctx.layout, maps, prog, resolver)
        for walk, type_id, reason in prog.slots.walks:
            yield from _walk_rows(kctx, prog, walk, type_id, reason, owner_of, task_pid)
    for text in inventory.damage_texts(kctx, ("map", "prog")):
        yield 0, GRID.row(Scheduler="", Allocator="", Idx=0, Address=0, Comm="", Type="", Payload="",
                          Note=text)


def _walk_rows(kctx, prog, walk, type_id, reason, owner_of, task_pid):
    if walk.error:
        yield 0, _problem(prog, walk.name, 0, walk.root, walk.error)
        return
    if not walk.entries and not walk.nr_skipped:
        yield 0, _problem(prog, walk.name, 0, walk.root, f"no live allocations (elem_size {walk.elem_size})")
        return
    label = sdtalloc.type_label(prog.btf, type_id, reason)
    ident = sdtalloc.payload_identity(prog.btf, type_id) if type_id else None
    for e in walk.entries:
        pid, comm, note = sdtalloc.slot_task(kctx.reader, ident, e, owner_of.get(e.user_addr), task_pid)
        if e.hdr_idx != e.idx:
            note = "; ".join(n for n in (note, f"header idx {e.hdr_idx} != {e.idx} (allocation in flight)") if n)
        yield 0, GRID.row(Scheduler=prog.scheduler, Allocator=walk.name, Idx=e.idx, Genn=e.genn,
                          Address=e.user_addr, PID=pid, Comm=comm, Type=label,
                          Payload=sdtalloc.payload_text(prog.btf, type_id, e.payload), Note=note)
    for s in walk.skipped:
        yield 0, _problem(prog, walk.name, s.idx_prefix, s.addr,
                          f"skipped {_LEVEL_NAMES.get(s.level, s.level)}: {s.reason}")
    lost = walk.nr_skipped - len(walk.skipped)
    if lost:
        yield 0, _problem(prog, walk.name, 0, 0, f"{lost} more subtrees skipped")
    if walk.truncated:
        yield 0, _problem(prog, walk.name, 0, 0, f"stopped at --max-entries {len(walk.entries)}")


def _problem(prog, allocator, idx, addr, note):
    return GRID.row(Scheduler=prog.scheduler, Allocator=allocator, Idx=idx, Address=addr, Comm="",
                    Type="", Payload="", Note=note)
