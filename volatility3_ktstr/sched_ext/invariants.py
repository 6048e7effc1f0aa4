"""Invariants of sched_ext's bookkeeping whose breakage loses a task (the bugs behind "task stuck
in dispatch" and lost wakeups), each checked from memory and reported with its evidence.

- ``dsq_nr``: a DSQ's ``nr`` equals the length of its task list (cursors not counted).
- ``task_dsq``: every task on a DSQ's list points back at that DSQ (``p->scx.dsq``).
- ``queued_nowhere``: a task flagged ``SCX_TASK_QUEUED`` (enqueued on sched_ext) is on a DSQ,
  held by the BPF scheduler (``ops_state`` not NONE: QUEUEING, QUEUED, DISPATCHING), or running.
- ``runnable_nowhere``: a task of the ext class on its rq (``on_rq``) and on its CPU's
  ``runnable_list`` is on a DSQ, held by the BPF scheduler, or running.
- ``runnable_order``: a CPU's ``runnable_list`` is in ``runnable_at`` order (jiffies compared
  as the kernel does, modulo 2^64): tasks are appended when they become runnable.

Inputs are the records the walkers produced (``Dsq`` with their walks, ``ScxTask``, the CPUs'
current tasks); nothing here reads memory. No Volatility import.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .symbols import MASK64

CHECKS = ("dsq_nr", "task_dsq", "queued_nowhere", "runnable_nowhere", "runnable_order")


@dataclass
class Violation:
    check: str
    evidence: str
    task: int | None = None       # task_struct address
    pid: int | None = None
    comm: str | None = None
    dsq: int | None = None        # scx_dispatch_q address
    dsq_id: int | None = None
    cpu: int | None = None

    def where(self) -> str:
        """``pid 12 comm, dsq 0x... @addr, cpu 1`` (what is known)."""
        parts = []
        if self.pid is not None:
            parts.append(f"task {self.pid} {self.comm}")
        if self.dsq is not None:
            parts.append(f"dsq {self.dsq_id:#x}" if self.dsq_id is not None else f"dsq @{self.dsq:#x}")
        if self.cpu is not None:
            parts.append(f"cpu {self.cpu}")
        return ", ".join(parts)


def _task_fields(t) -> dict:
    return dict(task=t.addr, pid=t.pid, comm=t.comm)


def dsq_checks(dsqs: Iterable, task_of: Callable) -> list[Violation]:
    """``dsq_nr`` and ``task_dsq`` over walked DSQs (``Dsq`` records; an unreadable or
    partly walked DSQ is not judged). ``task_of(addr)`` gives the ``ScxTask``."""
    out = []
    for d in dsqs:
        w = d.walk
        if d.damage or w is None or w.damage:
            continue
        if d.nr is not None and d.nr != len(w.tasks):
            out.append(Violation("dsq_nr", f"nr is {d.nr} but the list holds {len(w.tasks)} tasks",
                                 dsq=d.addr, dsq_id=d.id, cpu=d.cpu))
        for pos, addr in enumerate(w.tasks):
            t = task_of(addr)
            if t.damage or t.dsq == d.addr:
                continue
            other = f"{t.dsq:#x}" if t.dsq else "NULL"
            out.append(Violation("task_dsq", f"on this DSQ's list at position {pos} but its "
                                             f"scx.dsq is {other}", dsq=d.addr, dsq_id=d.id,
                                 cpu=d.cpu if d.cpu is not None else t.cpu, **_task_fields(t)))
    return out


def task_checks(tasks: Iterable, running: dict, on_dsq: set, ext_class: int | None,
                queued_flag: int | None, opss_none: int, opss_mask: int) -> list[Violation]:
    """``queued_nowhere`` and ``runnable_nowhere`` over ``tasks`` (``ScxTask``); ``running``:
    task address -> CPU it is current on; ``on_dsq``: addresses found on any DSQ list;
    ``opss_none`` / ``opss_mask``: SCX_OPSS_NONE and the state bits of ``ops_state``."""
    out = []
    for t in tasks:
        if t.damage or t.addr in running or t.dsq or t.addr in on_dsq:
            continue
        if t.ops_state is None or (t.ops_state & opss_mask) != opss_none:
            continue          # the BPF scheduler holds it (or it is on its way there)
        if queued_flag and t.flags is not None and t.flags & queued_flag:
            out.append(Violation("queued_nowhere", f"SCX_TASK_QUEUED (flags {t.flags:#x}), ops_state "
                                                   "NONE, scx.dsq NULL, not current on any CPU",
                                 cpu=t.cpu, **_task_fields(t)))
        elif (ext_class is not None and t.sched_class == ext_class and t.on_rq
              and t.runnable_linked):
            out.append(Violation("runnable_nowhere", f"ext class, on_rq {t.on_rq}, on cpu {t.cpu}'s "
                                                     "runnable_list, ops_state NONE, scx.dsq NULL, "
                                                     "not current on any CPU",
                                 cpu=t.cpu, **_task_fields(t)))
    return out


def runnable_order(cpu: int, tasks: list) -> list[Violation]:
    """``runnable_order`` over one CPU's runnable_list (``ScxTask`` in list order)."""
    out = []
    prev = None
    for pos, t in enumerate(tasks):
        if t.damage or t.runnable_at is None:
            prev = None
            continue
        if prev is not None and ((t.runnable_at - prev.runnable_at) & MASK64) >> 63:
            out.append(Violation("runnable_order", f"position {pos}: runnable_at {t.runnable_at} is "
                                                   f"before {prev.runnable_at} of {prev.pid} {prev.comm} "
                                                   f"at position {pos - 1}", cpu=cpu, **_task_fields(t)))
        prev = t
    return out
