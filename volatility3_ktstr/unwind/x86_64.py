"""x86-64 kernel stack unwinding: ORC, frame pointers where ORC has nothing (BPF code), and
``pt_regs`` frames at entry code (no Volatility import).

Follows arch/x86/kernel/unwind_orc.c: a sleeping task starts from its saved switch frame
(``thread.sp`` -> ``struct inactive_task_frame``: bp, ret_addr; sp just above it), a CPU from
its registers. Each step looks up the ORC entry of ``ip - 1`` (``ip`` in a signal frame), finds
the caller's sp from sp/bp (+ offset, or through memory), then the return address below it
(CALL), or a ``struct pt_regs`` there (REGS) or its iret part (REGS_PARTIAL); the caller's bp
from the entry. Every read must lie on a known stack; sp must grow on one stack; the walk ends
at user-mode registers, an END_OF_STACK entry, or an address that is no kernel/BPF code.
"""

from typing import List, NamedTuple, Optional, Sequence

from ..core import Layout, Reader, Record
from ..kds import DamageLog, steps
from . import orc as O
from .bounds import StackRange
from .model import Frame, Stack, StackWalker, StopWalk

MAX_FRAMES = 128


class State(NamedTuple):
    ip: int
    sp: int
    bp: int
    regs: int            # address of the struct pt_regs this frame came from (0: none)
    full_regs: bool
    signal: bool
    how: str
    reliable: bool


class X86Unwinder(StackWalker):
    def __init__(self, reader: Reader, layout: Layout, tables: "O.OrcTables", is_code,
                 stacks: Sequence[StackRange]) -> None:
        super().__init__(stacks)
        self.reader = reader
        self.layout = layout
        self.tables = tables
        self.is_code = is_code
        self.regs_off = {n: layout.offset("pt_regs", n) for n in
                         ("r10", "r13", "di", "dx", "ax", "bp", "ip", "sp", "cs")}
        self.regs_size = layout.size("pt_regs")

    def deref(self, addr: int) -> int:
        if self.on_stack(addr) is None:
            raise StopWalk(f"stack slot {addr:#x} is outside the known stacks")
        return self.reader.ptr(addr)

    def _regs(self, addr: int) -> Record:
        if self.on_stack(addr, self.regs_size) is None:
            raise StopWalk(f"pt_regs at {addr:#x} is outside the known stacks")
        return Record(self.reader, self.layout, "pt_regs", addr)

    def get_reg(self, st: State, name: str) -> Optional[int]:
        if not st.regs:
            return None
        off = self.regs_off[name]
        if not st.full_regs and off < self.regs_off["ip"]:
            return None
        return self._regs(st.regs).int(name)

    def _step(self, st: State) -> Optional[State]:
        if st.regs:
            cs = self._regs(st.regs).int("cs")
            if cs & 3:
                raise StopWalk("user-mode registers (entry from user space)", ok=True)
        entry = self.tables.find(st.ip if st.signal else st.ip - 1)
        reliable = st.reliable
        if entry is None:
            entry, reliable = O.FP_ENTRY, False
        elif entry.type == O.TYPE_UNDEFINED:
            raise StopWalk(f"no ORC data for {st.ip:#x} (undefined entry)")
        elif entry.type == O.TYPE_END_OF_STACK:
            raise StopWalk("end of stack (ORC end marker)", ok=True)
        r = entry.sp_reg
        indirect = False
        if r == O.REG_SP:
            sp = st.sp + entry.sp_offset
        elif r == O.REG_BP:
            sp = st.bp + entry.sp_offset
        elif r == O.REG_SP_INDIRECT:
            sp, indirect = st.sp, True
        elif r == O.REG_BP_INDIRECT:
            sp, indirect = st.bp + entry.sp_offset, True
        elif r in self.regs_off and r not in ("bp", "ip", "sp", "cs"):
            v = self.get_reg(st, r)
            if v is None:
                raise StopWalk(f"ORC wants {r} at {st.ip:#x}, which no pt_regs holds")
            sp = v
        else:
            raise StopWalk(f"unknown ORC sp register {r} at {st.ip:#x}")
        if indirect:
            sp = self.deref(sp)
            if r == O.REG_SP_INDIRECT:
                sp += entry.sp_offset
        sp &= (1 << 64) - 1
        if entry.type == O.TYPE_CALL:
            ip = self.deref(sp - 8)
            regs, full, how = 0, False, "orc" if reliable else "fp"
            new_sp = sp
        elif entry.type == O.TYPE_REGS:
            rec = self._regs(sp)
            ip, new_sp = rec.int("ip"), rec.int("sp")
            regs, full, how = sp, True, "pt_regs"
        elif entry.type == O.TYPE_REGS_PARTIAL:
            base = sp - self.regs_off["ip"]
            rec = self._regs(base)
            ip, new_sp = rec.int("ip"), rec.int("sp")
            regs, full, how = base, False, "pt_regs"
        else:
            raise StopWalk(f"unknown ORC type {entry.type} at {st.ip:#x}")
        b = entry.bp_reg
        bp = st.bp
        if b == O.REG_UNDEFINED:
            v = self.get_reg(st, "bp")
            if v is not None:
                bp = v
        elif b == O.REG_PREV_SP:
            bp = self.deref(sp + entry.bp_offset)
        elif b == O.REG_BP:
            bp = self.deref(st.bp + entry.bp_offset)
        else:
            raise StopWalk(f"unknown ORC bp register {b} at {st.ip:#x}")
        if regs:
            cs = self._regs(regs).int("cs")
            if cs & 3:
                raise StopWalk("user-mode registers (entry from user space)", ok=True)
        old, new = self.on_stack(st.sp), self.on_stack(new_sp)
        if old is not None and old is new and new_sp <= st.sp:
            raise StopWalk(f"stack pointer did not grow ({st.sp:#x} -> {new_sp:#x}): bad ORC data or frame")
        if not self.is_code(ip):
            if ip == 0 and regs:
                raise StopWalk("end of stack (empty pt_regs)", ok=True)
            raise StopWalk(f"return address {ip:#x} is no kernel or BPF code")
        return State(ip, new_sp, bp, regs, full, entry.type != O.TYPE_CALL, how, reliable)

    def walk(self, first: State, max_frames: int = MAX_FRAMES) -> Stack:
        damage = DamageLog()
        frames: List[Frame] = []
        for st in steps(first, self.step, limit=max_frames, damage=damage, what="stack frame"):
            frames.append(Frame(st.ip, st.sp, st.how, st.reliable, self.stack_name(st.sp)))
        stack = Stack(frames)
        if damage:
            d = next(iter(damage))
            stack.stop = f"{d.reason} after {len(frames)} frames"
        else:
            stack.stop, stack.ok = self.stop or "end of stack", self.ok
        return stack


def sleeping_start(reader: Reader, layout: Layout, task: int) -> State:
    """The first state of a task that is not running: its saved switch frame."""
    sp = Record(reader, layout, "task_struct", task, ("thread.sp",)).int("thread.sp")
    frame = Record(reader, layout, "inactive_task_frame", sp)
    ip = frame.int("ret_addr")
    return State(ip, sp + layout.size("inactive_task_frame"), frame.int("bp"), 0, False, False,
                 "switch", True)


def regs_start(regs: dict) -> State:
    """The first state of a CPU from its registers (NT_PRSTATUS names)."""
    return State(regs["rip"], regs["rsp"], regs.get("rbp", 0), 0, False, True, "regs", True)
