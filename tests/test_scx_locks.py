"""scxstate's locks section (sched_ext/locks.py) on kernel memory laid out from the real 7.2
x86-64 BTF (tests/helpers/scxmem.py with the real kernel; the padded synthetic kernel has no lock
types): a mutex owner with flag bits and its waiters (first_waiter ring), a percpu rwsem writer
blocking readers, per-CPU readers, a held rq lock with a queued spinner, a held DSQ lock; and
nothing reported when every lock is free."""

import pytest

from helpers.scxmem import kernel, real, synth, w  # noqa: F401 (fixtures)
from helpers.scxmem import scx_kernel
from volatility3_ktstr.views import scxstate


@pytest.fixture
def rw(real):  # noqa: F811 - the real-BTF world only
    from helpers.scxmem import ScxWorld
    world = ScxWorld(real)
    if not world.L.has("mutex", "owner") or not world.L.has("rq", "__lock.raw_lock.locked"):
        pytest.skip("kernel BTF without the lock layouts")
    return world


def lock_rows(world):
    rows = [(d, dict(zip(scxstate.GRID.names(), r))) for d, r in scxstate.rows(scx_kernel(world))]
    return [(d, r["Object"], r["Key"], r["Value"]) for d, r in rows if r["Section"] == "locks"]


def live(world):
    sch = world.sched("sdt")
    world.set_root(sch)
    world.link_all(sch)
    world.static_key("__scx_enabled", True)


def test_all_free_is_one_summary_row(rw):
    live(rw)
    rw.syms["scx_enable_mutex"] = rw.mem.alloc("mutex")
    (only,) = lock_rows(rw)
    assert only[2] == "checked" and only[3].endswith(": none held or waited for")
    # the mutex, 2 rq locks, the global, 2 local and 2 bypass DSQs
    assert only[3].startswith("8 locks (scx_enable_mutex, rq cpu0, rq cpu1, dsq 0x8000000000000001")


def test_mutex_owner_flags_and_waiters(rw):
    live(rw)
    mem, L = rw.mem, rw.L
    owner = rw.task(77, "scx_loader")
    a, b = rw.task(78, "waiter_a"), rw.task(79, "waiter_b")
    m = mem.alloc("mutex")
    rw.syms["scx_enable_mutex"] = m
    mem.set("mutex", m, "owner.counter", owner | 0x1)       # MUTEX_FLAG_WAITERS
    off = L.offset("mutex_waiter", "list")
    wa, wb = mem.alloc("mutex_waiter"), mem.alloc("mutex_waiter")
    mem.set("mutex_waiter", wa, "task", a)
    mem.set("mutex_waiter", wb, "task", b)
    mem.list_init(wa + off)
    mem.list_add_tail(wa + off, wb + off)
    mem.set("mutex", m, "first_waiter", wa)
    rows = lock_rows(rw)
    got = {(o, k): v for _, o, k, v in rows}
    assert got[("scx_enable_mutex", "owner")] == "77 scx_loader (flags WAITERS)"
    assert got[("scx_enable_mutex", "waiter[0]")] == "78 waiter_a"
    assert got[("scx_enable_mutex", "waiter[1]")] == "79 waiter_b"
    assert rows[0][3].endswith(": 1 held or waited for")


def test_percpu_rwsem_writer_and_readers(rw):
    live(rw)
    mem = rw.mem
    writer = rw.task(90, "scx_enable")
    sem = mem.alloc("percpu_rw_semaphore")
    rw.syms["scx_fork_rwsem"] = sem
    counts = rw.pcpu_link + rw.pc_alloc(4, align=4)
    for cpu, n in enumerate((2, -1)):
        mem.write(counts + rw.offsets[cpu], (n & 0xFFFFFFFF).to_bytes(4, "little"))
    mem.set("percpu_rw_semaphore", sem, "read_count", counts)
    mem.set("percpu_rw_semaphore", sem, "writer.task", writer)
    mem.set("percpu_rw_semaphore", sem, "block.counter", 1)
    mem.list_init(sem + rw.L.offset("percpu_rw_semaphore", "waiters.head"))
    got = {(o, k): v for _, o, k, v in lock_rows(rw)}
    assert got[("scx_fork_rwsem", "readers")] == "1"
    assert got[("scx_fork_rwsem", "writer")] == "90 scx_enable (readers blocked)"


def test_rq_and_dsq_spinlocks(rw):
    live(rw)
    mem = rw.mem
    mem.set("rq", rw.rq(1), "__lock.raw_lock.locked", 1)
    mem.set("rq", rw.rq(1), "__lock.raw_lock.tail", (0 + 1) << 2)     # cpu0 queued
    dsq = rw.rq(0) + rw.L.offset("rq", "scx.local_dsq")
    mem.set("scx_dispatch_q", dsq, "lock.raw_lock.locked", 1)
    got = {(o, k): v for _, o, k, v in lock_rows(rw)}
    assert got[("rq cpu1", "state")] == "held (rq cpu1's lock), last queued spinner cpu0"
    assert ("rq cpu0", "state") not in got
    (dsq_lock,) = [v for (o, k), v in got.items() if o.endswith("cpu0") and o.startswith("dsq")]
    assert dsq_lock.startswith("held (dsq ")


def test_bpf_program_spinlocks(rw):
    """A scheduler's own locks: ``private(x) struct bpf_res_spin_lock x[2]`` in a section map
    (``.data.x``, typed by the program's BTF); element 1 held with cpu1 queued."""
    from helpers.btf import BtfBuilder
    from volatility3_ktstr.btf import Btf
    live(rw)
    b = BtfBuilder()
    u32 = b.int("unsigned int", 4)
    lock_t = b.struct("bpf_res_spin_lock", 4, [("val", u32, 0)])
    arr = b.array(lock_t, u32, 2)
    var = b.var("qa_q_lock", arr)
    sec = b.datasec(".data.qa_q_lock", 8, [(var, 0, 8)])
    btf = Btf.parse(b.build(), source="scheduler program")
    kva_btf = 0xFFFF888000F00000
    rw.btfs[kva_btf] = btf
    voff = rw.L.offset("bpf_array", "value")
    m = rw.bpf_map(30, ".data.qa_q_lock", "array", 8, "bpf_array", extra=voff + 8, btf_kva=kva_btf,
                   value_type_id=sec)
    lock1 = m + voff + 4
    rw.mem.set("qspinlock", lock1, "locked", 1)
    rw.mem.set("qspinlock", lock1, "tail", (1 + 1) << 2)
    got = {(o, k): v for _, o, k, v in lock_rows(rw)}
    assert got[(".data.qa_q_lock qa_q_lock[1]", "state")] == (
        "held (.data.qa_q_lock qa_q_lock[1]'s lock), last queued spinner cpu1")
    assert (".data.qa_q_lock qa_q_lock[0]", "state") not in got
