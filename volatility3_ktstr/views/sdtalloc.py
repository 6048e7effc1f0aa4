"""Rows of ``linux.ktstr.sdtalloc``: every live allocation of every sched_ext scx_allocator
(scheduler, allocator, idx, genn, user address, owning task, payload typed by the scheduler's
BTF); skipped subtrees, empty or broken allocators are rows with the reason in Note.

Takes the kernel (``kernel_model.Kernel``); no Volatility import.
"""

from typing import Any, List, Optional

from ..errors import KtstrError
from ..walkers import owners, sdtalloc, sdtpayload
from . import HEX, Grid, Kernel, Rows, inventory

GRID = Grid(("Scheduler", str), ("Allocator", str), ("Idx", int), ("Genn", int), ("Address", HEX),
            ("PID", int), ("Comm", str), ("Type", str), ("Payload", str), ("Note", str), note="Note")


def sdt_programs(kernel: Kernel, type_name: Optional[str] = None, walk: bool = True,
                 **kwargs: Any) -> List[Any]:
    """The loaded BPF objects that declare ``struct scx_allocator`` variables, with their
    arenas and (``walk``) live sdt_alloc slots (walkers.sdtalloc.find_programs); cached in the
    kernel's memo per set of arguments. Structs the kernel also has are not payload candidates
    (a scheduler's BTF carries vmlinux.h's types)."""
    key = ("sdt", type_name, walk, tuple(sorted(kwargs.items())))

    def find():
        progs, prog_arenas = inventory.prog_arenas(kernel)
        return sdtalloc.find_programs(
            kernel.reader, kernel.layout, inventory.maps(kernel), kernel.btf_at,
            inventory.arenas(kernel), progs,
            prog_arenas=prog_arenas, is_foreign=kernel.layout.has, type_name=type_name,
            walk=walk, **kwargs)

    return kernel.memo(key, find)


def programs(kctx: Kernel, type_name: Optional[str] = None, max_entries: Optional[int] = None,
             header_size: Optional[int] = None) -> List[Any]:
    """The schedulers' allocator programs, options checked (one-line errors)."""
    if max_entries is not None and max_entries < 0:
        raise KtstrError("--max-entries must be >= 0")
    if header_size is not None and not 0 <= header_size < sdtalloc.MIN_ELEM_SIZE:
        raise KtstrError(f"--header-size must be 0..{sdtalloc.MIN_ELEM_SIZE - 1}")
    # Program BTFs carry copies of the kernel structs they touch (vmlinux.h); a payload is a
    # struct the program defines, so find_programs drops names the kernel ISF also has.
    return sdt_programs(kctx, type_name=type_name, header_override=header_size, max_entries=max_entries)


def rows(kctx: Kernel, type_name: Optional[str] = None, max_entries: Optional[int] = None,
         header_size: Optional[int] = None) -> Rows:
    progs = programs(kctx, type_name, max_entries, header_size)
    if not progs:
        damaged = inventory.damage_texts(kctx, ("map", "prog"))
        why = f"; {inventory.summary_of(kctx)}: {'; '.join(damaged)}" if damaged else ""
        raise KtstrError("no BPF program in the dump declares a struct scx_allocator variable "
                         f"(no sched_ext scheduler using sdt_alloc is loaded{why})")
    maps = inventory.maps(kctx)
    resolver = owners.OwnerResolver(kctx.reader, kctx.layout)
    task_pid = kctx.layout.field("task_struct", "pid") if kctx.layout.has("task_struct", "pid") else None
    for prog in progs:
        if prog.error or prog.slots is None:
            for var in prog.allocators or [None]:
                yield 0, _problem(prog, var.name if var else "?", 0, 0, prog.error or "not walked")
            continue
        owner_of = sdtpayload.task_storage_owners(kctx.reader, kctx.layout, maps, prog, resolver)
        for walk, type_id, reason in prog.slots.walks:
            yield from _walk_rows(kctx, prog, walk, type_id, reason, owner_of, task_pid)
    for text in inventory.damage_texts(kctx, ("map", "prog")):
        yield 0, GRID.row(Scheduler="", Allocator="", Idx=0, Address=0, Comm="", Type="", Payload="",
                          Note=text)


def _walk_rows(kctx, prog, walk, type_id, reason, owner_of, task_pid):
    if walk.error:
        yield 0, _problem(prog, walk.name, 0, walk.root, walk.error)
        return
    if not walk.entries and not walk.damage:
        yield 0, _problem(prog, walk.name, 0, walk.root, f"no live allocations (elem_size {walk.elem_size})")
        return
    label = sdtpayload.type_label(prog.btf, type_id, reason)
    ident = sdtpayload.payload_identity(prog.btf, type_id) if type_id else None
    for e in walk.entries:
        pid, comm, note = sdtpayload.slot_task(kctx.reader, ident, e, owner_of.get(e.user_addr), task_pid)
        if e.hdr_idx != e.idx:
            note = "; ".join(n for n in (note, f"header idx {e.hdr_idx} != {e.idx} (allocation in flight)") if n)
        yield 0, GRID.row(Scheduler=prog.scheduler, Allocator=walk.name, Idx=e.idx, Genn=e.genn,
                          Address=e.user_addr, PID=pid, Comm=comm, Type=label,
                          Payload=sdtpayload.payload_text(prog.btf, type_id, e.payload), Note=note)
    for d in walk.damage:
        yield 0, _problem(prog, walk.name, d.index or 0, d.addr, f"skipped {d.what}: {d.reason}")
    if walk.damage.dropped:
        yield 0, _problem(prog, walk.name, 0, 0, f"{walk.damage.dropped} more subtrees skipped")
    if walk.truncated:
        yield 0, _problem(prog, walk.name, 0, 0, f"stopped at --max-entries {len(walk.entries)}")


def _problem(prog, allocator, idx, addr, damage):
    """A row with no slot: ``damage`` (a Damage, or text) in Note, the one damage-row shape."""
    return GRID.damage(damage, Scheduler=prog.scheduler, Allocator=allocator, Idx=idx,
                       Address=addr, Comm="", Type="", Payload="")
