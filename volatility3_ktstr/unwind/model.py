"""What an unwind gives: frames (innermost first) and why the walk stopped (no Volatility import)."""

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

from ..core import ReadError
from .bounds import StackRange


@dataclass(frozen=True)
class Frame:
    """One return address on a stack.

    ``ip``: the address (a return address, or the CPU's pc for the first frame of a running
    CPU); ``sp``: the stack pointer of the frame; ``how``: how the unwinder got here
    (``switch`` the saved switch frame, ``regs`` CPU registers, ``orc``, ``fp`` frame pointer,
    ``pt_regs`` an exception/IRQ frame, ``record`` an arm64 frame record); ``reliable``: False
    once a guess (frame-pointer fallback) was used on the way; ``stack``: the known stack
    ``sp`` lies on (``StackRange.what``: "task stack", "IRQ stack", "NMI exception stack"...),
    "" when on none."""

    ip: int
    sp: int
    how: str
    reliable: bool = True
    stack: str = ""


@dataclass
class Stack:
    """The frames of one task or CPU and where/why the walk ended.

    ``ok``: the walk reached a known end (user-mode registers, the end-of-stack marker, the
    final frame record); otherwise ``stop`` says where and why it stopped."""

    frames: List[Frame] = field(default_factory=list)
    start: str = ""
    stop: str = ""
    ok: bool = False
    stack_lo: int = 0
    stack_hi: int = 0
    error: Optional[str] = None

    def ips(self) -> List[int]:
        return [f.ip for f in self.frames]


class StopWalk(Exception):
    """Raised inside an unwinder step: the walk ends here, ``reason`` says why; ``ok`` when it
    is the stack's normal end."""

    def __init__(self, reason: str, ok: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ok = ok


class StackWalker:
    """What the architecture unwinders share: the stacks a walk may read, why it stopped, and
    the step wrapper that turns a StopWalk or an unreadable read into that reason."""

    UNREADABLE = "unreadable stack memory"      # how a failed read is named in ``stop``
    SLOT = 8                                    # bytes a stack read must find on one stack

    def __init__(self, stacks: Sequence[StackRange]) -> None:
        self.stacks = list(stacks)
        self.stop = ""
        self.ok = False

    def on_stack(self, addr: int, size: Optional[int] = None) -> Optional[StackRange]:
        for s in self.stacks:
            if s.holds(addr, self.SLOT if size is None else size):
                return s
        return None

    def stack_name(self, sp: int) -> str:
        s = self.on_stack(sp, 0)
        return s.what if s is not None else ""

    def step(self, st: Any) -> Any:
        try:
            return self._step(st)
        except StopWalk as e:
            self.stop, self.ok = e.reason, e.ok
        except ReadError as e:
            self.stop = f"{self.UNREADABLE} at {e.addr:#x} ({e.reason})"
        return None

    def _step(self, st: Any) -> Any:
        raise NotImplementedError
