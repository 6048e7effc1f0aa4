"""What a CPU's stack walk needs besides its registers (no Volatility import): the task on it
(``rq->curr``), the stacks it may be on (the task's, its per-CPU IRQ stack), and registers the
kernel itself saved in memory (``crash_notes``: NT_PRSTATUS notes written per CPU when a kdump
kernel took over; empty in a dump taken from outside, such as QEMU's).
"""

from typing import Any, Dict, List, Optional

from ..core import LayoutError, ReadError, Record
from ..dumpfile.notes import CpuState, Note, cpu_states
from .bounds import DEFAULT_THREAD_PAGES, StackRange, task_stack_range

NOTE_ALIGN = 4            # ELF note fields are 4-byte aligned (include/uapi/linux/elf.h Elf64_Nhdr)
NOTE_HEADER = 12          # namesz, descsz, type: three u32
MAX_NOTE_BYTES = 4096


def running_tasks(kernel: Any) -> Dict[int, int]:
    """{CPU: task address} of every CPU's ``rq->curr``."""

    def read() -> Dict[int, int]:
        out: Dict[int, int] = {}
        if kernel.symbol("runqueues") is None or not kernel.layout.has("rq", "curr"):
            return out
        try:
            addrs = kernel.percpu_addresses("runqueues")
        except Exception:     # KtstrError: no per-CPU offsets
            return out
        for cpu, rq in enumerate(addrs):
            try:
                curr = Record(kernel.reader, kernel.layout, "rq", rq, ("curr",)).int("curr")
            except (ReadError, LayoutError):
                continue
            if curr:
                out[cpu] = curr
        return out

    return kernel.memo(("unwind", "rq_curr"), read)


def irq_stack(kernel: Any, cpu: int) -> Optional[StackRange]:
    """CPU ``cpu``'s hard-IRQ stack: x86-64 ``hardirq_stack_ptr`` (its top word), arm64
    ``irq_stack_ptr`` (its base); IRQ_STACK_SIZE is THREAD_SIZE on both (page_64_types.h,
    arm64 memory.h), taken as the default thread size."""
    size = DEFAULT_THREAD_PAGES * kernel.page_size
    for name, top in (("hardirq_stack_ptr", True), ("irq_stack_ptr", False)):
        if kernel.symbol(name) is None:
            continue
        try:
            ptr = kernel.reader.ptr(kernel.percpu_address(name, cpu))
        except Exception:     # ReadError, KtstrError: no such CPU or unreadable
            return None
        if not ptr:
            return None
        lo = ptr + kernel.reader.pointer_size - size if top else ptr
        return StackRange(lo, lo + size, "IRQ stack", "default THREAD_SIZE")
    return None


def cpu_ranges(kernel: Any, cpu: int, task: Optional[int]) -> List[StackRange]:
    out = []
    if task:
        rng = task_stack_range(kernel.reader, kernel.layout, task, kernel.page_size)
        if rng is not None:
            out.append(rng)
    irq = irq_stack(kernel, cpu)
    if irq is not None:
        out.append(irq)
    return out


def crash_note_states(kernel: Any) -> List[CpuState]:
    """Each CPU's registers from the kernel's ``crash_notes`` (per-CPU ELF note buffers), for
    the CPUs whose buffer holds an NT_PRSTATUS; [] when none does (no crash happened)."""
    addr = kernel.symbol("crash_notes")
    if addr is None:
        return []
    try:
        base = kernel.reader.ptr(addr)
        offsets = kernel.per_cpu_offsets()
    except Exception:     # ReadError, KtstrError
        return []
    out = []
    for cpu in range(len(offsets)):
        try:
            raw = kernel.reader.read(kernel.percpu_address(base, cpu), MAX_NOTE_BYTES)
        except Exception:     # ReadError, KtstrError
            continue
        note = _first_note(raw)
        if note is None:
            continue
        for state in cpu_states([note]):
            state.cpu = cpu
            state.sources = ["crash_notes"]
            out.append(state)
    return out


def _first_note(raw: bytes) -> Optional[Note]:
    if len(raw) < NOTE_HEADER:
        return None
    namesz, descsz, ntype = (int.from_bytes(raw[i:i + 4], "little") for i in (0, 4, 8))
    if not 0 < namesz <= 16 or not 0 < descsz <= len(raw):
        return None
    name_end = NOTE_HEADER + namesz
    desc = NOTE_HEADER + (namesz + NOTE_ALIGN - 1) // NOTE_ALIGN * NOTE_ALIGN
    if desc + descsz > len(raw):
        return None
    return Note(raw[NOTE_HEADER:name_end].rstrip(b"\0"), raw[desc:desc + descsz], ntype)
