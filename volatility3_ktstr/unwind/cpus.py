"""What a CPU's stack walk needs besides its registers (no Volatility import): the task on it
(``rq->curr``), the stacks it may be on (the task's; per CPU the IRQ stack, x86-64's
exception (IST) stacks and entry stack of the cpu_entry_area, arm64's overflow and SDEI
stacks: each with its
size from the kernel, not assumed), and registers the
kernel itself saved in memory (``crash_notes``: NT_PRSTATUS notes written per CPU when a kdump
kernel took over; empty in a dump taken from outside, such as QEMU's).
"""

from typing import Any, Dict, List, Optional, Tuple

from ..btf import Kind
from ..core import LayoutError, ReadError, Record, read_int
from ..dumpfile.notes import CpuState, Note, cpu_states
from .bounds import DEFAULT_THREAD_PAGES, StackRange, task_stack_range

NOTE_ALIGN = 4            # ELF note fields are 4-byte aligned (include/uapi/linux/elf.h Elf64_Nhdr)
NOTE_HEADER = 12          # namesz, descsz, type: three u32
MAX_NOTE_BYTES = 4096
MAX_STACK_SIZE = 1 << 20
# arch/x86/kernel/dumpstack_64.c exception_stack_names, by cea_exception_stacks member
ESTACK_NAMES = {"DF": "#DF", "NMI": "NMI", "DB": "#DB", "MCE": "#MC", "VC": "#VC", "VC2": "#VC2"}


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


def thread_size(kernel: Any) -> Tuple[int, str]:
    """(THREAD_SIZE, where it came from): the init task's stack, which the linker script
    places as THREAD_SIZE bytes between ``__start_init_stack`` and ``__end_init_stack``
    (include/asm-generic/vmlinux.lds.h INIT_TASK_DATA); else the architectures' default."""

    def find() -> Tuple[int, str]:
        lo, hi = kernel.symbol("__start_init_stack"), kernel.symbol("__end_init_stack")
        if lo and hi and 0 < hi - lo <= MAX_STACK_SIZE and not (hi - lo) % kernel.page_size:
            return hi - lo, "THREAD_SIZE (init_stack)"
        return DEFAULT_THREAD_PAGES * kernel.page_size, "default THREAD_SIZE"

    return kernel.memo(("unwind", "thread_size"), find)


def variable_size(kernel: Any, name: str) -> Tuple[int, str]:
    """(bytes, source) of the global variable ``name``: its BTF VAR's type (the kernel's BTF),
    else the symbol's extent (to the next symbol: may include alignment padding); (0, "")
    when neither is known."""

    def find() -> Tuple[int, str]:
        try:
            btf = kernel.kernel_btf()
            for var in btf.find(name, Kind.VAR):
                size = btf.size_of(var.type)
                if 0 < size <= MAX_STACK_SIZE:
                    return size, f"BTF type of {name}"
        except Exception:     # KtstrError, BtfError, ReadError: no BTF in the dump
            pass
        size = kernel.symbol_size(name)
        if 0 < size <= MAX_STACK_SIZE:
            return size, f"extent of symbol {name}"
        return 0, ""

    return kernel.memo(("unwind", "variable_size", name), find)


def irq_stack_size(kernel: Any) -> Tuple[int, str]:
    """IRQ_STACK_SIZE: x86-64 ``struct irq_stack``'s ``stack[IRQ_STACK_SIZE]`` (the type of
    the per-CPU ``irq_stack_backing_store``) or that variable's size; arm64 allocates THREAD_SIZE
    (arch/arm64/include/asm/memory.h IRQ_STACK_SIZE)."""
    lay = kernel.layout
    if lay.has("irq_stack", "stack"):
        size = lay.field("irq_stack", "stack").size
        if 0 < size <= MAX_STACK_SIZE:
            return size, "struct irq_stack"
    if kernel.symbol("irq_stack_backing_store") is not None:
        size, source = variable_size(kernel, "irq_stack_backing_store")
        if size:
            return size, source
    return thread_size(kernel)


def irq_stack(kernel: Any, cpu: int) -> Optional[StackRange]:
    """CPU ``cpu``'s hard-IRQ stack: x86-64 ``hardirq_stack_ptr`` (its top word), arm64
    ``irq_stack_ptr`` (its base)."""
    for name, top in (("hardirq_stack_ptr", True), ("irq_stack_ptr", False)):
        if kernel.symbol(name) is None:
            continue
        ptr = _percpu_pointer(kernel, name, cpu)
        if not ptr:
            return None
        size, source = irq_stack_size(kernel)
        lo = ptr + kernel.reader.pointer_size - size if top else ptr
        return StackRange(lo, lo + size, "IRQ stack", source)
    return None


def _percpu_pointer(kernel: Any, name: str, cpu: int) -> int:
    """CPU ``cpu``'s value of the per-CPU pointer ``name``; 0 when absent or unreadable."""
    if kernel.symbol(name) is None:
        return 0
    try:
        return kernel.reader.ptr(kernel.percpu_address(name, cpu))
    except Exception:     # ReadError, KtstrError: no such CPU or unreadable
        return 0


def x86_exception_stacks(kernel: Any, cpu: int) -> List[StackRange]:
    """The IST stacks of CPU ``cpu``'s cpu_entry_area: each ``<X>_stack`` member of ``struct
    cea_exception_stacks`` at the per-CPU ``cea_exception_stacks`` pointer, named as the
    kernel names them (#DF, NMI, #DB, #MC, #VC, #VC2); the ``_guard`` members between them
    are unmapped guard pages and belong to no stack; a member of size 0 (no #VC stacks
    without SEV) is left out."""
    lay = kernel.layout
    if not lay.has("cea_exception_stacks"):
        return []
    base = _percpu_pointer(kernel, "cea_exception_stacks", cpu)
    if not base:
        return []
    out = []
    for member, f in lay.members("cea_exception_stacks"):
        if not member.endswith("_stack") or not 0 < f.size <= MAX_STACK_SIZE:
            continue
        short = member[:-len("_stack")]
        name = ESTACK_NAMES.get(short, short)
        out.append(StackRange(base + f.offset, base + f.end, f"{name} exception stack",
                              f"struct cea_exception_stacks.{member}"))
    return out


def x86_entry_stack(kernel: Any, cpu: int) -> Optional[StackRange]:
    """CPU ``cpu``'s entry trampoline stack (the cpu_entry_area's ``entry_stack_page``, where
    entries from user mode and SYSCALL start): the TSS ``sp0`` of the per-CPU ``cpu_tss_rw``
    points at its top on x86-64 (arch/x86/kernel/process.c), ``struct entry_stack``'s
    ``stack`` gives its size."""
    lay = kernel.layout
    if kernel.symbol("cpu_tss_rw") is None or not lay.has("tss_struct", "x86_tss.sp0"):
        return None
    if lay.has("entry_stack", "stack"):
        size = lay.field("entry_stack", "stack").size
    elif lay.has("entry_stack"):
        size = lay.size("entry_stack")
    else:
        return None
    try:
        top = read_int(kernel.reader, lay, "tss_struct", kernel.percpu_address("cpu_tss_rw", cpu), "x86_tss.sp0")
    except Exception:     # ReadError, KtstrError
        return None
    if not top or not 0 < size <= MAX_STACK_SIZE:
        return None
    return StackRange(top - size, top, "entry stack", "struct entry_stack")


def arm64_other_stacks(kernel: Any, cpu: int) -> List[StackRange]:
    """CPU ``cpu``'s overflow stack (the per-CPU array ``overflow_stack``: its size from BTF
    or the symbol) and SDEI stacks (``sdei_stack_normal_ptr``, ``sdei_stack_critical_ptr``:
    bases of SDEI_STACK_SIZE = THREAD_SIZE bytes, arch/arm64/kernel/sdei.c)."""
    out = []
    if kernel.symbol("overflow_stack") is not None:
        size, source = variable_size(kernel, "overflow_stack")
        try:
            lo = kernel.percpu_address("overflow_stack", cpu)
        except Exception:     # KtstrError: no such CPU
            lo = 0
        if size and lo:
            out.append(StackRange(lo, lo + size, "overflow stack", source))
    for name, what in (("sdei_stack_normal_ptr", "SDEI normal stack"),
                       ("sdei_stack_critical_ptr", "SDEI critical stack")):
        lo = _percpu_pointer(kernel, name, cpu)
        if lo:
            size, source = thread_size(kernel)
            out.append(StackRange(lo, lo + size, what, source))
    return out


def cpu_stacks(kernel: Any, cpu: int) -> List[StackRange]:
    """Every per-CPU stack of CPU ``cpu`` a walk from its registers may cross: the IRQ stack,
    then x86-64's exception (IST) stacks and entry stack, or arm64's overflow and SDEI stacks."""

    def build() -> List[StackRange]:
        out = []
        irq = irq_stack(kernel, cpu)
        if irq is not None:
            out.append(irq)
        if str(kernel.arch).lower() in ("arm64", "aarch64"):
            out.extend(arm64_other_stacks(kernel, cpu))
        else:
            out.extend(x86_exception_stacks(kernel, cpu))
            entry = x86_entry_stack(kernel, cpu)
            if entry is not None:
                out.append(entry)
        return out

    return kernel.memo(("unwind", "cpu_stacks", cpu), build)


def cpu_ranges(kernel: Any, cpu: int, task: Optional[int]) -> List[StackRange]:
    out = []
    if task:
        rng = task_stack_range(kernel.reader, kernel.layout, task, kernel.page_size)
        if rng is not None:
            out.append(rng)
    out.extend(cpu_stacks(kernel, cpu))
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
