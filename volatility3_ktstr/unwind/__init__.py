"""Kernel stacks from a dump alone: where a walk starts (a sleeping task's saved switch frame,
a CPU's registers), how it walks (x86-64 ORC + frame pointers + pt_regs; arm64 frame records),
how a frame is named (kallsyms style, BPF programs with id and source line). No Volatility import.

Entry points: :func:`task_stack` (a task that is not running), :func:`cpu_stack` (a CPU from its
registers), :func:`stack_of_task` (either, as the task's state asks), :func:`visible_frames`
(what /proc/PID/stack shows), :func:`frame_text` / :class:`naming.CodeNames` (names),
:func:`bpf_frame_text`, all over a ``kernel_model.Kernel``.
"""

from typing import Any, Dict, List, Optional

from ..core import LayoutError, ReadError
from .bounds import StackRange, task_stack_range
from .model import Frame, Stack
from .naming import CodeNames, FrameName, code_names, in_ranges, sched_ranges

__all__ = ["Frame", "Stack", "StackRange", "task_stack", "cpu_stack", "stack_of_task", "code_names",
           "CodeNames", "FrameName", "visible_frames", "frame_text", "bpf_frame_text"]


def _arch(kernel: Any) -> str:
    return "arm64" if str(kernel.arch).lower() in ("arm64", "aarch64") else "x86_64"


def task_stack(kernel: Any, task: int, max_frames: int = 128) -> Stack:
    """The kernel stack of the task at ``task`` from its saved switch frame (valid while the
    task is not running on a CPU). Never raises for bad memory: the Stack says why it stopped."""
    rng = task_stack_range(kernel.reader, kernel.layout, task, kernel.page_size)
    if rng is None:
        return Stack(stop="no kernel stack (task->stack NULL or unreadable)", error="no stack")
    try:
        if _arch(kernel) == "arm64":
            from . import arm64

            st = arm64.Arm64Unwinder(kernel, [rng]).walk_task(task, max_frames)
        else:
            from . import x86_64

            first = x86_64.sleeping_start(kernel.reader, kernel.layout, task)
            if first.ip in (kernel.symbol("ret_from_fork_asm"), kernel.symbol("ret_from_fork")):
                # a task that never ran: its frame "returns" to the entry code's first
                # instruction, looked up as is (unwind_orc.c __unwind_start)
                first = first._replace(signal=True)
            st = _x86(kernel, [rng]).walk(first, max_frames)
            st.start = "saved switch frame (thread.sp)"
    except ReadError as e:
        return Stack(stop=f"saved frame unreadable at {e.addr:#x} ({e.reason})", error="unreadable",
                     stack_lo=rng.lo, stack_hi=rng.hi)
    except LayoutError as e:
        return Stack(stop=f"kernel types lack what the unwinder needs: {e}", error="layout")
    st.stack_lo, st.stack_hi = rng.lo, rng.hi
    return st


def _x86(kernel: Any, stacks: List[StackRange]):
    from . import x86_64
    from .orc import kernel_orc

    names = code_names(kernel)
    return x86_64.X86Unwinder(kernel.reader, kernel.layout, kernel_orc(kernel), names.is_code, stacks)


def cpu_stack(kernel: Any, regs: Dict[str, int], task: Optional[int] = None,
              extra: Optional[List[StackRange]] = None, max_frames: int = 128) -> Stack:
    """The stack of a CPU from its registers (NT_PRSTATUS names: rip/rsp/rbp on x86-64,
    pc/sp/x29 on arm64); ``task``: the task running there (its stack bounds the walk)."""
    pc = regs.get("pc", regs.get("rip", 0))
    if not pc:
        return Stack(stop="the CPU's registers hold no pc (zero: the file saved no state for it)",
                     error="no registers")
    stacks: List[StackRange] = list(extra or ())
    if task:
        rng = task_stack_range(kernel.reader, kernel.layout, task, kernel.page_size)
        if rng is not None:
            stacks.append(rng)
    try:
        if _arch(kernel) == "arm64":
            from . import arm64

            st = arm64.Arm64Unwinder(kernel, stacks).walk_regs(regs, max_frames)
        else:
            from . import x86_64

            st = _x86(kernel, stacks).walk(x86_64.regs_start(regs), max_frames)
            st.start = "CPU registers"
    except ReadError as e:
        return Stack(stop=f"unreadable at {e.addr:#x} ({e.reason})", error="unreadable")
    except (LayoutError, KeyError) as e:
        return Stack(stop=f"cannot start from these registers: {e}", error="layout")
    return st


def visible_frames(kernel: Any, stack: Stack, all_frames: bool = False) -> List[Frame]:
    """The frames ``/proc/PID/stack`` shows: those in scheduler/lock code left out
    (``stack_trace_save_tsk``), unless ``all_frames``."""
    if all_frames:
        return list(stack.frames)
    skip = sched_ranges(kernel)
    return [f for f in stack.frames if not in_ranges(f.ip - 1 if f.how != "regs" else f.ip, skip)]


def frame_text(kernel: Any, frame: Frame) -> str:
    return code_names(kernel).name(frame.ip, return_address=frame.how != "regs").text


def bpf_frame_text(kernel: Any, ip: int) -> Optional[str]:
    """``bpf_prog_<tag>_<name>+0xoff (prog ID, file:line:col)`` for a return address in BPF
    code (trampolines and dispatchers by their kallsyms name and what they serve: ``(trampoline
    of do_unlinkat: fentry 1)``), None outside BPF code. What
    scxstate's exit backtrace shows for the frames kernel symbols do not cover."""
    from .lineinfo import bpf_source

    sym = code_names(kernel).bpf_symbol(ip - 1)
    if sym is None:
        return None
    text = f"{sym.name}+{ip - sym.start:#x}"
    if not sym.aux:
        from .bpf_images import serves

        what = serves(kernel, sym)
        return f"{text} ({what})" if what else text
    prog_id, source = bpf_source(kernel, sym, ip)
    return f"{text} (prog {prog_id}, {source})"


def stack_of_task(kernel: Any, task: int, regs_by_cpu: Optional[Dict[int, Any]] = None,
                  max_frames: int = 128) -> Stack:
    """The stack of the task at ``task`` whatever its state: a task running on a CPU at the
    dump (``rq->curr``) from that CPU's registers (``regs_by_cpu``: {cpu: CpuState}; by
    default the file's notes, ``kernel.cpu_states()``; the kernel's ``crash_notes`` too), else from its saved switch
    frame. A running task without registers gets an empty Stack saying so (its saved frame is
    stale)."""
    from .cpus import cpu_ranges, crash_note_states, running_tasks

    cpu = next((c for c, t in running_tasks(kernel).items() if t == task), None)
    if cpu is None:
        return task_stack(kernel, task, max_frames)
    regs = dict(kernel.memo(("unwind", "crash_notes"),
                            lambda: {s.cpu: s for s in crash_note_states(kernel)}))
    if regs_by_cpu is None:
        regs_by_cpu = {s.cpu: s for s in kernel.cpu_states()}
    regs.update(regs_by_cpu)
    state = regs.get(cpu)
    if state is None:
        return Stack(stop=f"running on CPU {cpu} at the dump: its saved switch frame is stale and the "
                          f"dump file has no registers for that CPU (raw dumps have none)",
                     error="running")
    return cpu_stack(kernel, state.regs, extra=cpu_ranges(kernel, cpu, task), max_frames=max_frames)
