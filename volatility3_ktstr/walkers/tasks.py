"""Processes and their open files: ``init_task.tasks`` and each process's fd table.

- Processes: ``init_task`` and every ``task_struct`` on its ``tasks`` list (thread-group
  leaders; threads are not on that list).
- Threads of a process: ``signal->thread_head`` through ``task_struct.thread_node`` (6.7+),
  else the ``thread_group`` ring (older kernels). Only needed when a leader has exited and its
  ``files`` is gone.
- Open files: ``task->files`` (``struct files_struct``) -> ``fdt`` (``struct fdtable``:
  ``max_fds``, ``fd`` = array of ``struct file *``); threads share one ``files_struct``.

No Volatility import; bounded and cycle-checked (``kds`` generators); what cannot be read is
reported in the :class:`DamageLog` given.
"""

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Tuple

from ..core import Layout, ReadError, Reader, Record
from ..kds import DamageLog, list_entries

MAX_TASKS = 1 << 17          # processes on init_task.tasks
MAX_THREADS = 1 << 16        # threads of one process
MAX_FDS = 1 << 20            # fs.nr_open default is 1M
FD_CHUNK = 1 << 15           # bytes of fd array per read
PID_MAX_LIMIT = 4 * 1024 * 1024

TASK_PATHS = ("pid", "tgid", "comm", "files", "signal", "group_leader")


@dataclass
class Task:
    kva: int
    pid: int
    tgid: int
    comm: str
    files: int


def read_task(reader: Reader, layout: Layout, kva: int) -> Optional[Task]:
    """The :class:`Task` at ``kva`` (ReadError when unreadable; None when implausible)."""
    r = Record(reader, layout, "task_struct", kva, TASK_PATHS)
    pid, tgid = r.int("pid"), r.int("tgid")
    if not (0 <= pid < PID_MAX_LIMIT and 0 <= tgid < PID_MAX_LIMIT):
        return None
    return Task(kva, pid, tgid, r.str("comm", ""), r.int("files"))


def processes(reader: Reader, layout: Layout, init_task: int, damage: Optional[DamageLog] = None,
              limit: int = MAX_TASKS) -> Iterator[Task]:
    """:class:`Task` of ``init_task`` and every thread-group leader on its ``tasks`` list."""
    damage = damage if damage is not None else DamageLog()
    head = init_task + layout.offset("task_struct", "tasks")
    for kva in [init_task] + list(list_entries(reader, layout, head, "task_struct", "tasks",
                                               limit=limit, damage=damage, what="task (tasks list)")):
        try:
            t = read_task(reader, layout, kva)
        except ReadError as e:
            damage.add("task_struct", kva, f"unreadable ({e.reason})")
            continue
        if t is None:
            damage.add("task_struct", kva, "implausible pid/tgid (not a task_struct?)")
            continue
        yield t


def threads(reader: Reader, layout: Layout, leader: Task, damage: Optional[DamageLog] = None,
            limit: int = MAX_THREADS) -> Iterator[Task]:
    """:class:`Task` of every thread of the process led by ``leader`` (a Task)."""
    damage = damage if damage is not None else DamageLog()
    kvas: Iterable[int] = []
    if layout.has("signal_struct", "thread_head") and layout.has("task_struct", "thread_node"):
        try:
            sig = reader.ptr(leader.kva + layout.offset("task_struct", "signal"))
        except ReadError as e:
            damage.add("task_struct.signal", leader.kva, f"unreadable ({e.reason})")
            return
        if not sig:
            return
        head = sig + layout.offset("signal_struct", "thread_head")
        kvas = list_entries(reader, layout, head, "task_struct", "thread_node", limit=limit,
                            damage=damage, what="thread (signal->thread_head)")
    elif layout.has("task_struct", "thread_group"):
        # The ring has no separate head: the leader's own node serves as one.
        head = leader.kva + layout.offset("task_struct", "thread_group")
        kvas = [leader.kva] + list(list_entries(reader, layout, head, "task_struct", "thread_group",
                                                limit=limit, damage=damage, what="thread"))
    for kva in kvas:
        try:
            t = read_task(reader, layout, kva)
        except ReadError as e:
            damage.add("task_struct", kva, f"unreadable ({e.reason})")
            continue
        if t is not None:
            yield t


def fd_files(reader: Reader, layout: Layout, files: int, damage: Optional[DamageLog] = None,
             limit: int = MAX_FDS) -> Iterator[Tuple[int, int]]:
    """(fd, ``struct file *``) of every open fd of the ``struct files_struct`` at ``files``."""
    damage = damage if damage is not None else DamageLog()
    try:
        fdt = reader.ptr(files + layout.offset("files_struct", "fdt"))
        r = Record(reader, layout, "fdtable", fdt, ("max_fds", "fd"))
    except ReadError as e:
        damage.add("files_struct", files, f"fd table unreadable ({e.reason})")
        return
    max_fds, array = r.int("max_fds"), r.int("fd")
    # alloc_fdtable() sizes tables in whole longs of the open_fds bitmap (the embedded table
    # holds NR_OPEN_DEFAULT = BITS_PER_LONG): any other count is not a live fdtable.
    if max_fds % (8 * reader.pointer_size):
        damage.add("fdtable", fdt, f"max_fds {max_fds} is not a multiple of {8 * reader.pointer_size}: "
                   "table skipped", "corrupt")
        return
    if max_fds > limit:
        damage.add("fdtable", fdt, f"max_fds {max_fds} implausible: first {limit} read")
        max_fds = limit
    if not array:
        return
    per = FD_CHUNK // 8
    for first in range(0, max_fds, per):
        n = min(per, max_fds - first)
        raw = reader.try_read(array + 8 * first, 8 * n)
        if raw is None:
            damage.add("fd array", array + 8 * first, f"fds {first}..{first + n - 1} unreadable")
            continue
        for i in range(n):
            f = int.from_bytes(raw[8 * i:8 * i + 8], "little")
            if f:
                yield first + i, f
