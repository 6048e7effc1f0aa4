"""scxstate's invariant checks (sched_ext/invariants.py), each on a synthetic kernel image that
breaks exactly that invariant (tests/helpers/scxmem.py: the padded synthetic kernel and the real
7.2 x86-64 BTF), and silent on a consistent one. On the real dumps: tests/test_scx_e2e.py."""

import pytest

from helpers.scxmem import kernel, real, synth, w  # noqa: F401 (fixtures)
from helpers.scxmem import scx_kernel
from volatility3_ktstr.views import scxstate


def live(w):
    sch = w.sched("sdt")
    w.set_root(sch)
    w.link_all(sch)
    w.static_key("__scx_enabled", True)
    w.glob("jiffies_64", 100000)
    return sch


def local_dsq(w, cpu):
    return w.rq(cpu) + w.L.offset("rq", "scx.local_dsq")


def broken(w):
    rows = [dict(zip(scxstate.GRID.names(), r)) for _, r in scxstate.rows(scx_kernel(w))]
    inv = [r for r in rows if r["Section"] == "invariants"]
    assert inv[0]["Key"] == "checked"
    return [(r["Object"], r["Key"], r["Value"]) for r in inv[1:]]


def queued(w):
    return w.enum("scx_ent_flags", "SCX_TASK_QUEUED")


def consistent(w):
    """Tasks where they belong: one on cpu0's local DSQ and its runnable_list, one running on
    cpu1, one asleep."""
    live(w)
    a = w.task(10, "a", cpu=0, flags=queued(w))
    w.make_runnable(a, 0, 99990)
    w.enqueue(a, local_dsq(w, 0))
    b = w.task(11, "b", cpu=1, flags=queued(w))
    w.mem.set("rq", w.rq(1), "curr", b)
    w.task(12, "c", cpu=0)
    return a, b


def test_consistent_image_is_silent(w):
    consistent(w)
    assert broken(w) == []


def test_dsq_nr(w):
    consistent(w)
    w.mem.set("scx_dispatch_q", local_dsq(w, 0), "nr", 3)
    (got,) = broken(w)
    assert got[0] == "dsq_nr" and got[2] == "nr is 3 but the list holds 1 tasks"
    assert "cpu 0" in got[1]


def test_task_dsq(w):
    a, _ = consistent(w)
    w.mem.set("task_struct", a, "scx.dsq", local_dsq(w, 1))
    (got,) = broken(w)
    assert got[0] == "task_dsq" and got[1].startswith("task 10 a, dsq ")
    assert got[2] == f"on this DSQ's list at position 0 but its scx.dsq is {local_dsq(w, 1):#x}"


def test_queued_nowhere(w):
    consistent(w)
    w.task(13, "lost", cpu=1, flags=queued(w))
    (got,) = broken(w)
    assert got[:2] == ("queued_nowhere", "task 13 lost, cpu 1")
    assert "ops_state NONE, scx.dsq NULL" in got[2]


def test_queued_but_held_by_the_bpf_scheduler_is_not_lost(w):
    consistent(w)
    w.task(13, "held", cpu=1, flags=queued(w), ops_state=w.enum("scx_ops_state", "SCX_OPSS_QUEUED"))
    assert broken(w) == []


def test_runnable_nowhere(w):
    consistent(w)
    t = w.task(14, "stuck", cpu=0)
    w.make_runnable(t, 0, 99995)
    (got,) = broken(w)
    assert got[:2] == ("runnable_nowhere", "task 14 stuck, cpu 0")


def test_runnable_order(w):
    consistent(w)
    t = w.task(15, "early", cpu=0, flags=queued(w))
    w.make_runnable(t, 0, 99980)            # appended after a task runnable since 99990
    w.enqueue(t, local_dsq(w, 0))
    (got,) = broken(w)
    assert got[:2] == ("runnable_order", "task 15 early, cpu 0")
    assert got[2] == "position 1: runnable_at 99980 is before 99990 of 10 a at position 0"
