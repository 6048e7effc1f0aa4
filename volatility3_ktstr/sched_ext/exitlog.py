"""A sched_ext exit as the kernel log records it (the printk ring buffer, :mod:`walkers.printk`).

``sched_ext: BPF scheduler "<name>" disabled (<reason>)``; errors add ``sched_ext: <name>:
<msg>`` and the backtrace lines. Kernels before 6.12 printed ``... errored, disabling`` then
``sched_ext: <reason> (<msg>)``. No Volatility import.
"""

import re
from typing import Optional
from dataclasses import dataclass, field

MAX_LOG_FOLLOW = 160          # continuation records (backtrace lines) kept after an exit line

DISABLED_RE = re.compile(r'^sched_ext: BPF scheduler "(?P<name>.*)" disabled \((?P<reason>.*)\)\s*$')
ERRORED_RE = re.compile(r'^sched_ext: BPF scheduler "(?P<name>.*)" errored, disabling\s*$')
ENABLED_RE = re.compile(r'^sched_ext: BPF scheduler "(?P<name>.*)" enabled')

@dataclass
class LogExit:
    """A scheduler exit the kernel log records."""

    name: str
    reason: Optional[str]
    msg: Optional[str] = None
    seq: Optional[int] = None
    ts_nsec: Optional[int] = None
    error: bool = False
    backtrace: list = field(default_factory=list)


def sched_ext_records(records: list, follow: int = MAX_LOG_FOLLOW) -> list:
    """The records about sched_ext: every ``sched_ext:`` line, and after each the indented
    continuation lines (backtraces) of the same caller."""
    out = []
    last_caller, budget = None, 0
    for r in records:
        if r.text.startswith("sched_ext:"):
            out.append(r)
            last_caller, budget = r.caller_id, follow
        elif budget and r.caller_id == last_caller and r.text[:1] in (" ", "\t"):
            out.append(r)
            budget -= 1
        else:
            budget = 0
    return out


def log_exits(records: list) -> list[LogExit]:
    """[LogExit] from :func:`sched_ext_records` output, oldest first."""
    exits = []
    pending = None      # pre-6.12: "errored, disabling" then "sched_ext: <reason> (<msg>)"
    for r in records:
        text = r.text.rstrip("\n")
        m = DISABLED_RE.match(text)
        if m:
            pending = None
            exits.append(LogExit(m["name"], m["reason"], seq=r.seq, ts_nsec=r.ts_nsec))
            continue
        m = ERRORED_RE.match(text)
        if m:
            pending = LogExit(m["name"], None, seq=r.seq, ts_nsec=r.ts_nsec, error=True)
            exits.append(pending)
            continue
        if not exits:
            continue
        last = exits[-1]
        if text[:1] in (" ", "\t"):
            last.backtrace.append(text.strip())
            last.error = True
        elif pending is not None and pending.reason is None and text.startswith("sched_ext: "):
            body = text[len("sched_ext: "):]
            mm = re.match(r"^(?P<reason>.*?) \((?P<msg>.*)\)$", body)
            pending.reason, pending.msg = (mm["reason"], mm["msg"]) if mm else (body, None)
        elif text.startswith(f"sched_ext: {last.name}: ") and last.msg is None:
            last.msg = text[len(f"sched_ext: {last.name}: "):]
            last.error = True
    return exits
