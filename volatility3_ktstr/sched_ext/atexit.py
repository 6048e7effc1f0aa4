"""The state at the moment of a sched_ext exit: the debug dump text chosen among its copies,
parsed (:mod:`.dumptext`), with the time of the exit and whether the scheduler was torn down
before the memory dump was taken.

The debug dump survives in up to two places: the kernel's ``scx_exit_info.dump`` (alive while
the ``scx_sched`` is, e.g. held by the struct_ops map) and the scheduler's ``<uei>_dump`` copy
that ``ops.exit`` made (``UEI_RECORD``). The kernel copy of the scheduler still loaded is the
newest; otherwise the copy whose kind, reason and message are those of the last exit the kernel
log records wins (a uei copy of an older load loses), the kernel's first on a tie. Copies with
the same text are named as its sources, never shown twice. No Volatility import.
"""

import re
from dataclasses import dataclass, field

from .dumptext import DebugDump, parse_debug_dump
from .exitlog import log_exits, sched_ext_records

STALL_TASK_RE = re.compile(r"(?P<comm>[^\s(]+?)\[(?P<pid>\d+)\] failed to run for")


@dataclass
class DumpCopy:
    """One place the debug dump text survives."""

    where: str                  # "scx_exit_info.dump of qmap", "uei_dump in map .data.uei_dump"
    text: str
    kind: int = None
    reason: str = None
    msg: str = None
    addr: int = None
    live: bool = False          # the kernel copy of the scheduler still loaded


@dataclass
class ExitState:
    """The chosen debug dump, parsed; the other copies (same text or not); when and how."""

    dump: DebugDump = None
    chosen: DumpCopy = None
    same: list = field(default_factory=list)        # copies with the same text
    differing: list = field(default_factory=list)   # copies with another text (older exits)
    time_ns: int = None         # printk time of the kernel's "disabled" line
    torn_down: bool = None      # scx_root NULL (or no scx_ops) at the dump
    stall_pid: int = None       # the task a watchdog exit names in its message
    kind: int = None
    reason: str = None
    msg: str = None

    @property
    def tag(self) -> str:
        """``exit`` or ``exit [  21.425321]`` (the kernel log's time of the exit)."""
        if self.time_ns is None:
            return "exit"
        return f"exit [{self.time_ns // 1_000_000_000:5d}.{self.time_ns % 1_000_000_000 // 1000:06d}]"


def dump_copies(inv, ueis: list) -> list[DumpCopy]:
    """Every copy of the debug dump text in memory (kernel ones first)."""
    out = []
    for name, _how, st in inv.exit_sources():
        ei = st.exit
        if ei is not None and ei.dump:
            live = inv.loaded() and st is inv.root
            out.append(DumpCopy(f"scx_exit_info.dump of {name}", ei.dump, ei.kind, ei.reason,
                                ei.msg, ei.addr, live=live))
    for u in ueis:
        if u.dump:
            out.append(DumpCopy(f"{u.var}_dump in map {u.dump_map} ({u.var} in map {u.map_name})",
                                u.dump, u.kind, u.reason, u.msg))
    return out


def choose(copies: list[DumpCopy], last_exit=None) -> tuple:
    """(chosen copy, same-text copies, differing copies); see the module doc for the order."""
    if not copies:
        return None, [], []

    def score(c):
        log_match = last_exit is not None and c.reason == last_exit.reason and \
            (last_exit.msg is None or c.msg == last_exit.msg)
        return (c.live, log_match)
    best = max(copies, key=score)      # max keeps the first of equals: kernel copies first
    same = [c for c in copies if c is not best and c.text == best.text]
    differing = [c for c in copies if c is not best and c.text != best.text]
    return best, same, differing


def exit_state(inv, ueis: list, log_records: list | None) -> ExitState:
    """The :class:`ExitState` of the inventory ``inv`` (``postmortem.Inventory``)."""
    es = ExitState(torn_down=not inv.loaded())
    exits = log_exits(sched_ext_records(log_records)) if log_records else []
    last = exits[-1] if exits else None
    es.chosen, es.same, es.differing = choose(dump_copies(inv, ueis), last)
    if es.chosen is not None:
        es.dump = parse_debug_dump(es.chosen.text)
        es.kind = es.dump.kind if es.dump.kind is not None else es.chosen.kind
        es.reason = es.dump.reason or es.chosen.reason
        es.msg = es.dump.msg or es.chosen.msg
    elif last is not None:
        es.reason, es.msg = last.reason, last.msg
    if last is not None and (es.reason is None or last.reason == es.reason):
        es.time_ns = last.ts_nsec
    m = STALL_TASK_RE.search(es.msg or "")
    if m:
        es.stall_pid = int(m["pid"])
    return es


def exit_state_of(inv) -> ExitState:
    """:func:`exit_state` with the user exit infos and the kernel log read from ``inv.sx``."""
    sx = inv.sx
    log = sx.kernel_log()
    return exit_state(inv, sx.user_exit_infos(), None if log.unavailable else log.records)
