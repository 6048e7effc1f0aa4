"""Who holds the locks sched_ext depends on, and who waits for them: a deadlock leaves no exit,
only lock words in memory.

- ``struct mutex`` (``scx_enable_mutex``, ``cgroup_mutex``): ``owner`` is the owning
  ``task_struct *`` with flag bits in its low bits (``MUTEX_FLAG_WAITERS``/``HANDOFF``/``PICKUP``,
  kernel/locking/mutex.h, ``MUTEX_FLAGS`` 0x07); waiters are ``struct mutex_waiter`` (``task``) on
  ``wait_list`` or, newer kernels, a headless ring from ``first_waiter``.
- ``struct percpu_rw_semaphore`` (``scx_fork_rwsem``): readers are the per-CPU ``read_count``
  summed, a writer blocks readers with ``block`` and waits in ``writer.task``; waiters queue on
  ``waiters`` (``wait_queue_entry.private`` is the task).
- ``struct rw_semaphore``: ``owner`` is a task pointer with ``RWSEM_READER_OWNED`` (bit 0) and
  ``RWSEM_NONSPINNABLE`` (bit 1) flags.
- queued spinlocks (``raw_spinlock_t``/``spinlock_t``: an rq's ``__lock``, a DSQ's ``lock``,
  ``scx_tasks_lock``...): no owner is recorded; ``locked`` says held, ``pending`` a spinner, and
  ``tail`` the last CPU queued (``(tail >> _Q_TAIL_IDX_BITS) - 1``, _Q_TAIL_IDX_BITS 2,
  include/asm-generic/qspinlock_types.h, when NR_CPUS < 16K gives the byte layout).

The flag masks are preprocessor constants (no BTF record of them), unchanged since 4.10 (mutex)
and 5.3 (rwsem). Member layouts come from the layout. No Volatility import.
"""

from dataclasses import dataclass, field

from .. import kds
from ..core import Layout, LayoutError, Reader, ReadError, Record, percpu_sum, read_int
from .symbols import MASK64

MUTEX_FLAGS = 0x07
RWSEM_OWNER_FLAGS = 0x07
RWSEM_READER_OWNED = 0x01
Q_TAIL_IDX_BITS = 2
MAX_WAITERS = 4096
READ_COUNT_SIZE = 4           # percpu_rw_semaphore.read_count: unsigned int __percpu * (checked)


@dataclass
class LockState:
    """One lock: held or not, by whom (a task address, or a CPU for an rq lock), who waits."""

    name: str
    kind: str                     # mutex, percpu_rwsem, rwsem, spinlock
    addr: int
    held: bool = None
    owner: int = None             # task_struct address
    flags: int = None             # low bits of the owner word
    readers: int = None           # percpu rwsem: readers inside
    spinner_cpu: int = None       # qspinlock: last CPU queued
    pending: int = None
    waiters: list = field(default_factory=list)   # task_struct addresses
    damage: kds.DamageLog = field(default_factory=kds.DamageLog)


def _counter(layout, struct, path):
    """``path`` or its atomic's ``counter``."""
    return path + ".counter" if layout.has(struct, path + ".counter") else path


def mutex_state(reader: Reader, layout: Layout, addr: int, name: str) -> LockState:
    s = LockState(name, "mutex", addr)
    try:
        word = read_int(reader, layout, "mutex", addr, _counter(layout, "mutex", "owner")) & MASK64
    except (ReadError, LayoutError) as e:
        s.damage.add(f"mutex {name}", addr, f"unreadable: {e}")
        return s
    s.owner, s.flags = word & ~MUTEX_FLAGS, word & MUTEX_FLAGS
    s.held = bool(s.owner)
    try:
        if layout.has("mutex", "wait_list"):
            s.waiters = [_waiter_task(reader, layout, w) for w in kds.list_entries(
                reader, layout, addr + layout.offset("mutex", "wait_list"), "mutex_waiter", "list",
                limit=MAX_WAITERS, damage=s.damage, what="mutex waiter")]
        elif layout.has("mutex", "first_waiter"):
            first = read_int(reader, layout, "mutex", addr, "first_waiter")
            if first:
                off = layout.offset("mutex_waiter", "list")
                ring = [n - off for n in kds.list_nodes(reader, layout, first + off, limit=MAX_WAITERS,
                                                         damage=s.damage, what="mutex waiter")]
                s.waiters = [_waiter_task(reader, layout, w) for w in [first] + ring]
    except ReadError as e:
        s.damage.add(f"mutex {name} waiter", e.addr, f"unreadable: {e.reason}")
    return s


def _waiter_task(reader, layout, waiter):
    return read_int(reader, layout, "mutex_waiter", waiter, "task")


def percpu_rwsem_state(reader: Reader, layout: Layout, addr: int, name: str,
                       percpu_offsets: list) -> LockState:
    s = LockState(name, "percpu_rwsem", addr)
    st = "percpu_rw_semaphore"
    try:
        r = Record(reader, layout, st, addr, [p for p in ("read_count", "writer.task",
                                                          _counter(layout, st, "block"))
                                              if layout.has(st, p)])
    except ReadError as e:
        s.damage.add(f"percpu_rw_semaphore {name}", addr, f"unreadable: {e.reason}")
        return s
    block = r.int(_counter(layout, st, "block"))
    s.owner = r.int("writer.task") or None
    base = r.int("read_count")
    pointee = layout.field(st, "read_count").type_name if layout.has(st, "read_count") else ""
    if base and pointee.startswith("unsigned int"):
        # one CPU's count can be negative (a reader that moved CPUs); the sum is what counts
        total = 0
        for cpu, off in enumerate(percpu_offsets):
            try:
                total += int.from_bytes(reader.read(percpu_sum(base, off), READ_COUNT_SIZE),
                                        "little", signed=True)
            except ReadError as e:
                s.damage.add(f"{name} read_count cpu{cpu}", e.addr, f"unreadable: {e.reason}")
        s.readers = total
    elif base:
        s.damage.add(f"{name} read_count", base, f"pointee {pointee!r}, not unsigned int", "corrupt")
    s.held = bool(block) or bool(s.readers)
    s.flags = block
    if layout.has(st, "waiters.head"):
        off = layout.offset("wait_queue_entry", "entry")
        for node in kds.list_nodes(reader, layout, addr + layout.offset(st, "waiters.head"),
                                   limit=MAX_WAITERS, damage=s.damage, what="rwsem waiter"):
            try:
                s.waiters.append(read_int(reader, layout, "wait_queue_entry", node - off, "private"))
            except ReadError as err:
                s.damage.add(f"{name} waiter", err.addr, f"unreadable: {err.reason}")
    return s


def rwsem_state(reader: Reader, layout: Layout, addr: int, name: str) -> LockState:
    s = LockState(name, "rwsem", addr)
    try:
        word = read_int(reader, layout, "rw_semaphore", addr,
                        _counter(layout, "rw_semaphore", "owner")) & MASK64
        count = read_int(reader, layout, "rw_semaphore", addr, _counter(layout, "rw_semaphore", "count"))
    except (ReadError, LayoutError) as e:
        s.damage.add(f"rw_semaphore {name}", addr, f"unreadable: {e}")
        return s
    s.flags = word & RWSEM_OWNER_FLAGS
    s.owner = word & ~RWSEM_OWNER_FLAGS or None
    s.held = bool(count)
    if layout.has("rw_semaphore", "wait_list"):
        off = layout.offset("rwsem_waiter", "list") if layout.has("rwsem_waiter", "list") else None
        if off is not None:
            for w in kds.list_nodes(reader, layout, addr + layout.offset("rw_semaphore", "wait_list"),
                                    limit=MAX_WAITERS, damage=s.damage, what="rwsem waiter"):
                try:
                    s.waiters.append(read_int(reader, layout, "rwsem_waiter", w - off, "task"))
                except ReadError as err:
                    s.damage.add(f"{name} waiter", err.addr, f"unreadable: {err.reason}")
    return s


def spinlock_state(reader: Reader, layout: Layout, struct: str, addr: int, path: str,
                   name: str) -> LockState:
    """The queued spinlock at ``struct``.``path`` (a raw_spinlock_t or spinlock_t member) of
    the object at ``addr``."""
    s = LockState(name, "spinlock", addr)
    raw = None
    for p in (path, path + ".raw_lock", path + ".rlock.raw_lock"):
        if not layout.has(struct, p + ".locked") and not layout.has(struct, p + ".val"):
            continue
        if layout.has(struct, p):
            raw = p
            break
    if raw is None:
        s.damage.add(f"{struct}.{path}", addr, "not a queued spinlock in this kernel", "corrupt")
        return s
    paths = [raw + "." + m for m in ("locked", "pending", "tail") if layout.has(struct, f"{raw}.{m}")]
    if not paths:
        paths = [raw + ".val.counter"] if layout.has(struct, raw + ".val.counter") else []
    try:
        r = Record(reader, layout, struct, addr, paths)
    except ReadError as e:
        s.damage.add(name, addr, f"unreadable: {e.reason}")
        return s
    if r.has(raw + ".locked"):
        s.held = bool(r.int(raw + ".locked"))
        s.pending = r.int(raw + ".pending")
        tail = r.int(raw + ".tail")
        if tail:
            s.spinner_cpu = (tail >> Q_TAIL_IDX_BITS) - 1
    elif paths:
        s.held = bool(r.int(paths[0]) & 0xFF)
    return s


def qspinlock_state(reader: Reader, layout: Layout, addr: int, name: str) -> LockState:
    """A ``struct qspinlock`` at ``addr`` by itself: a BPF program's ``bpf_spin_lock`` or
    ``bpf_res_spin_lock`` (the kernel takes both as its arch spinlock / rqspinlock_t, which is
    the queued spinlock) in a map value."""
    s = LockState(name, "spinlock", addr)
    paths = [m for m in ("locked", "pending", "tail") if layout.has("qspinlock", m)]
    if "locked" not in paths:
        s.damage.add(name, addr, "struct qspinlock has no 'locked' byte in this kernel", "corrupt")
        return s
    try:
        r = Record(reader, layout, "qspinlock", addr, paths)
    except ReadError as e:
        s.damage.add(name, addr, f"unreadable: {e.reason}")
        return s
    s.held = bool(r.int("locked"))
    s.pending = r.int("pending")
    tail = r.int("tail")
    if tail:
        s.spinner_cpu = (tail >> Q_TAIL_IDX_BITS) - 1
    return s
