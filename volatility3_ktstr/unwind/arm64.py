"""arm64 kernel stack unwinding over AAPCS64 frame records (no Volatility import).

Follows arch/arm64/kernel/stacktrace.c: a sleeping task starts from ``thread.cpu_context``
(pc, fp = x29, sp), a CPU from its registers (pc, x29, sp). Each frame record at ``fp`` is
{previous fp, lr}; the return address has its pointer-authentication bits stripped (the bits
above the kernel's VA size are set again, as ``ptrauth_strip_kernel_insn_pac`` does). Records
must lie on a known stack, 8-byte aligned, and move up the stack; the walk ends at the final
record (fp 0: ``task_pt_regs(task)->stackframe`` on current kernels), else says why it stopped.
"""

from typing import Any, List, NamedTuple, Optional, Sequence

from ..core import ReadError, Record
from ..kds import DamageLog, steps
from .bounds import StackRange
from .model import Frame, Stack, StackWalker, StopWalk
from .naming import code_names

MASK64 = (1 << 64) - 1
DEFAULT_VA_BITS = 48
# arch/arm64/include/asm/stacktrace/frame.h: the type of a zeroed record in pt_regs (6.13+)
META_FINAL, META_PT_REGS = 1, 2
FP_REGISTER = 29


class State(NamedTuple):
    pc: int
    fp: int
    sp: int
    how: str


def va_bits(kernel: Any) -> int:
    """The kernel's VA size: ``vabits_actual`` in memory, else the address width of the table."""
    addr = kernel.symbol("vabits_actual")
    if addr is not None:
        try:
            v = kernel.reader.ptr(addr)
            if 36 <= v <= 52:
                return v
        except ReadError:
            pass
    mask = kernel.address_mask
    if mask < MASK64:
        return (mask + 1).bit_length() - 1
    return DEFAULT_VA_BITS


def strip_pac(addr: int, bits: int) -> int:
    """A kernel return address without its PAC: bits [63:bits] copied from bit 55."""
    high = MASK64 & ~((1 << bits) - 1)
    return (addr | high) if addr >> 55 & 1 else (addr & ~high)


class Arm64Unwinder(StackWalker):
    UNREADABLE = "unreadable frame record"
    SLOT = 16

    def __init__(self, kernel: Any, stacks: Sequence[StackRange]) -> None:
        super().__init__(stacks)
        self.kernel = kernel
        self.reader = kernel.reader
        self.names = code_names(kernel)
        self.bits = kernel.memo(("unwind", "va_bits"), lambda: va_bits(kernel))

    def _step(self, st: State) -> Optional[State]:
        fp = st.fp
        if fp == 0:
            raise StopWalk("end of stack (final frame record)", ok=True)
        if fp & 7:
            raise StopWalk(f"misaligned frame pointer {fp:#x}")
        if self.on_stack(fp) is None:
            raise StopWalk(f"frame record {fp:#x} is outside the known stacks")
        lay = self.kernel.layout
        if lay.has("frame_record", "lr"):
            rec = Record(self.reader, lay, "frame_record", fp)
            nxt, lr = rec.int("fp"), rec.int("lr")
        else:
            nxt = self.reader.ptr(fp)
            lr = self.reader.ptr(fp + self.reader.pointer_size)
        if nxt == 0 and lr == 0:
            return self._zero_record(fp)
        if nxt and nxt <= fp and self.on_stack(nxt) is self.on_stack(fp):
            raise StopWalk(f"frame pointer did not grow ({fp:#x} -> {nxt:#x})")
        pc = strip_pac(lr, self.bits)
        if not self.names.is_code(pc):
            raise StopWalk(f"return address {pc:#x} is no kernel or BPF code")
        return State(pc, nxt, fp, "record")

    def _zero_record(self, fp: int) -> Optional[State]:
        """A zeroed record: the stack's final one, or (6.13+, ``struct frame_record_meta``
        type PT_REGS) an exception boundary inside a ``struct pt_regs``: the walk goes on from
        the interrupted pc and its x29."""
        lay = self.kernel.layout
        if not (lay.has("frame_record_meta", "type") and lay.has("pt_regs", "stackframe")):
            raise StopWalk("end of stack (final frame record)", ok=True)
        kind = Record(self.reader, lay, "frame_record_meta", fp, ("type",)).int("type")
        if kind != META_PT_REGS:
            raise StopWalk("end of stack (final frame record)", ok=True)
        regs = fp - lay.offset("pt_regs", "stackframe")
        if self.on_stack(regs, lay.size("pt_regs")) is None:
            raise StopWalk(f"pt_regs at {regs:#x} is outside the known stacks")
        r = Record(self.reader, lay, "pt_regs", regs)
        gprs = lay.field("pt_regs", "regs")
        x29 = int.from_bytes(r.bytes("regs")[gprs.elem_size * FP_REGISTER:gprs.elem_size * (FP_REGISTER + 1)], "little")
        pc = strip_pac(r.int("pc"), self.bits)
        if not self.names.is_code(pc):
            raise StopWalk(f"exception pc {pc:#x} is no kernel or BPF code")
        return State(pc, x29, regs, "pt_regs")

    def _walk(self, first: State, max_frames: int, start: str) -> Stack:
        damage = DamageLog()
        frames: List[Frame] = []
        for st in steps(first, self.step, limit=max_frames, damage=damage, what="frame record"):
            frames.append(Frame(st.pc, st.sp, st.how, True, self.stack_name(st.sp)))
        stack = Stack(frames, start=start)
        if damage:
            stack.stop = f"{next(iter(damage)).reason} after {len(frames)} frames"
        else:
            stack.stop, stack.ok = self.stop or "end of stack", self.ok
        return stack

    def walk_task(self, task: int, max_frames: int) -> Stack:
        lay = self.kernel.layout
        base = "thread.cpu_context"
        r = Record(self.reader, lay, "task_struct", task, (f"{base}.pc", f"{base}.fp", f"{base}.sp"))
        pc = strip_pac(r.int(f"{base}.pc"), self.bits)
        return self._walk(State(pc, r.int(f"{base}.fp"), r.int(f"{base}.sp"), "switch"), max_frames,
                          "saved switch frame (thread.cpu_context)")

    def walk_regs(self, regs: dict, max_frames: int) -> Stack:
        pc = strip_pac(regs["pc"], self.bits)
        return self._walk(State(pc, regs.get("x29", 0), regs.get("sp", 0), "regs"), max_frames,
                          "CPU registers")
