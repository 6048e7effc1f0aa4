"""Rows of ``linux.ktstr.stacks``: every task's kernel stack (and each CPU's, from its registers
where the dump file has them), one row per frame under a row per task or CPU.

A task that is not running is unwound from its saved switch frame; frames in scheduler and
lock code are left out the way ``/proc/PID/stack`` leaves them out (``all_frames`` keeps them).
A task running on a CPU at the dump has a stale saved frame: with the CPU's registers (ELF
cores, kdump files: ``NT_PRSTATUS``) its stack comes from them, else the row says so. BPF
frames carry the program id and source line (``unwind.lineinfo``). No Volatility import.
"""

from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

from ..core import LayoutError, ReadError, Record
from ..kds import DamageLog
from ..unwind import Stack, code_names, cpu_stack, stack_of_task, visible_frames
from ..unwind.cpus import cpu_ranges, crash_note_states, running_tasks
from ..unwind.lineinfo import bpf_source
from ..walkers.tasks import processes, threads
from . import HEX, Grid, Kernel

GRID = Grid(("TID", int), ("PID", int), ("Comm", str), ("CPU", int), ("Frame", int),
            ("Address", HEX), ("Symbol", str), ("Kind", str), ("BpfProgId", int), ("Source", str),
            ("Note", str), note="Note")


def _tasks(kernel: Kernel, damage: DamageLog) -> List[Any]:
    init = kernel.require_symbol("init_task", "the task list")
    out = []
    for p in processes(kernel.reader, kernel.layout, init, damage):
        out.extend(threads(kernel.reader, kernel.layout, p, damage) if p.pid else [p])
    return out


def frame_rows(kernel: Kernel, stack: Stack, depth: int, all_frames: bool = False,
               **keys: Any) -> Iterator[Tuple[int, tuple]]:
    names = code_names(kernel)
    for i, f in enumerate(visible_frames(kernel, stack, all_frames)):
        n = names.name(f.ip, return_address=f.how != "regs")
        prog_id, source = None, n.serves or None
        if n.bpf is not None and n.bpf.aux:
            prog_id, source = bpf_source(kernel, n.bpf, f.ip)
        note = {"fp": "frame-pointer guess (no ORC data)", "pt_regs": "exception/IRQ frame (pt_regs)",
                "regs": "CPU registers"}.get(f.how, "")
        if not f.reliable and f.how != "fp":
            note = (note + "; " if note else "") + "after a frame-pointer guess"
        if f.stack and f.stack != "task stack":
            note = (note + "; " if note else "") + f"on the {f.stack}"
        yield depth, GRID.row(Frame=i, Address=f.ip, Symbol=n.text, Kind=n.kind,
                              BpfProgId=prog_id, Source=source, Note=note, **keys)


def rows(kernel: Kernel, pids: Iterable[int] = (), cpu_regs: Sequence[Any] = (),
         show_regs: bool = False, all_frames: bool = False) -> Iterator[Tuple[int, tuple]]:
    """``cpu_regs``: the file's per-CPU registers (``dumpfile.notes.CpuState``), [] for raw dumps."""
    want = set(pids or ())
    damage = DamageLog()
    on_cpu = running_tasks(kernel)
    running = {task: cpu for cpu, task in on_cpu.items()}
    # the file's registers first; the kernel's own crash_notes for CPUs the file lacks
    regs_by_cpu = {c.cpu: c for c in crash_note_states(kernel)}
    regs_by_cpu.update({c.cpu: c for c in cpu_regs})
    cpu_regs = [regs_by_cpu[c] for c in sorted(regs_by_cpu)]
    if show_regs:
        if not cpu_regs:
            yield 0, GRID.row(Note="the dump file carries no CPU registers (raw dump or LiME: no NT_PRSTATUS notes)")
        for c in cpu_regs:
            yield 0, GRID.row(CPU=c.cpu, Comm=f"CPU {c.cpu}", Note=", ".join(c.sources))
            for name, value in c.regs.items():
                yield 1, GRID.row(CPU=c.cpu, Symbol=name, Address=value)
        return
    for t in sorted(_tasks(kernel, damage), key=lambda t: (t.tgid, t.pid)):
        if want and t.pid not in want and t.tgid not in want:
            continue
        keys = dict(TID=t.pid, PID=t.tgid, Comm=t.comm)
        cpu = running.get(t.kva)
        stack = stack_of_task(kernel, t.kva, regs_by_cpu)
        if stack.error == "running":
            yield 0, GRID.row(CPU=cpu, Note=stack.stop, **keys)
            continue
        note = f"from {stack.start or 'nothing'}; stopped: {stack.stop}"
        yield 0, GRID.row(CPU=cpu, Note=note, **keys)
        yield from frame_rows(kernel, stack, 1, all_frames, **keys)
    for state in cpu_regs if not want else ():
        task = on_cpu.get(state.cpu)
        stack = _cpu_stack(kernel, state, task)
        comm = _comm(kernel, task)
        yield 0, GRID.row(CPU=state.cpu, Comm=f"CPU {state.cpu}" + (f" ({comm})" if comm else ""),
                          Note=f"from CPU registers ({', '.join(state.sources)}); stopped: {stack.stop}")
        yield from frame_rows(kernel, stack, 1, all_frames, CPU=state.cpu)
    for d in damage:
        yield 0, GRID.damage(d)
    for d in code_names(kernel).damage:
        yield 0, GRID.damage(d)


def _cpu_stack(kernel: Kernel, state: Any, task: Optional[int]) -> Stack:
    return cpu_stack(kernel, state.regs, extra=cpu_ranges(kernel, state.cpu, task))


def _comm(kernel: Kernel, task: Optional[int]) -> str:
    if not task:
        return ""
    try:
        return Record(kernel.reader, kernel.layout, "task_struct", task, ("comm",)).str("comm", "")
    except (ReadError, LayoutError):
        return ""


def stack_lines(kernel: Kernel, task: int, cpu_regs: Optional[Sequence[Any]] = None) -> List[str]:
    """A task's stack as text lines for other grids (``scxtasks --stacks``, stall chains): one
    per frame (``symbol+0xoff/0xsize``, BPF frames with program id and source), then where the
    walk started and why it stopped."""
    stack = stack_of_task(kernel, task, None if cpu_regs is None else {c.cpu: c for c in cpu_regs})
    names = code_names(kernel)
    out = []
    for f in visible_frames(kernel, stack):
        n = names.name(f.ip, return_address=f.how != "regs")
        text = n.text
        if n.bpf is not None and n.bpf.aux:
            prog_id, source = bpf_source(kernel, n.bpf, f.ip)
            text += f" (prog {prog_id}, {source})"
        elif n.serves:
            text += f" ({n.serves})"
        out.append(text)
    out.append(f"stack from {stack.start or 'nothing'}; stopped: {stack.stop}")
    return out
