"""Per-CPU addresses on every kernel line (issue 31).

On x86-64 before 6.15 the per-CPU section is linked at 0: ``__per_cpu_start`` is 0 and per-CPU
symbols (``runqueues``) are offsets below the kernel text that KASLR does not move; the address
of CPU n's copy is that offset plus ``__per_cpu_offset[n]``. arm64 and x86-64 6.15+ link the
section inside the kernel image: its symbols move with the slide like any other.
"""

import pytest

from helpers.scxmem import ScxWorld, kernel, real, scx_kernel, synth  # noqa: F401
from helpers.synth import Memory
from volatility3_ktstr.errors import KtstrError
from volatility3_ktstr.kernel_model import Kernel
from volatility3_ktstr.views import scxstate, scxtasks

SLIDE = 0x1E000000
TEXT = 0xFFFFFFFF81000000


def table_kernel(symbols, slide=SLIDE, offsets=(0x10000, 0x20000)):
    mem = Memory(None, base=0xFFFF888000100000, size=0x10000)
    mem.write(mem.base, b"".join(o.to_bytes(8, "little") for o in offsets))
    symbols = dict(symbols, __per_cpu_offset=mem.base - slide)
    return Kernel(mem, None, symbols, slide=slide)


def test_zero_based_percpu_symbols_are_not_slid():
    k = table_kernel({"__per_cpu_start": 0, "__per_cpu_end": 0x3A000, "runqueues": 0x2C000,
                      "_text": TEXT - SLIDE, "jiffies_64": TEXT + 0x1000 - SLIDE})
    assert k.percpu_zero_based()
    assert k.symbol("runqueues") == 0x2C000                  # an offset, as the kernel's &runqueues
    assert k.symbol("jiffies_64") == TEXT + 0x1000           # ordinary symbols move
    assert k.percpu_address("runqueues", 1) == 0x2C000 + 0x20000
    assert k.percpu_addresses("runqueues") == [0x3C000, 0x4C000]
    assert k.percpu_address(0x500, 0) == 0x10500             # a __percpu pointer from memory
    with pytest.raises(KtstrError, match="cpu 2"):
        k.percpu_address("runqueues", 2)
    with pytest.raises(KtstrError, match="'nope'"):
        k.percpu_address("nope", 0)


def test_percpu_section_in_the_image_moves_with_the_slide():
    # arm64, x86-64 6.15+: __per_cpu_start is a kernel address
    k = table_kernel({"__per_cpu_start": TEXT + 0x2000000 - SLIDE, "__per_cpu_end": TEXT + 0x2040000 - SLIDE,
                      "runqueues": TEXT + 0x202C000 - SLIDE, "_text": TEXT - SLIDE})
    assert not k.percpu_zero_based()
    assert k.symbol("runqueues") == TEXT + 0x202C000
    assert k.percpu_address("runqueues", 0) == TEXT + 0x202C000 + 0x10000


def test_zero_based_section_known_from_its_end_below_the_text():
    # a table without __per_cpu_start (kallsyms without absolute symbols)
    k = table_kernel({"__per_cpu_end": 0x3A000, "runqueues": 0x2C000, "_stext": TEXT - SLIDE})
    assert k.percpu_zero_based() and k.symbol("runqueues") == 0x2C000
    # no section bounds at all: today's rule (everything slides)
    k = table_kernel({"runqueues": 0x2C000})
    assert not k.percpu_zero_based() and k.symbol("runqueues") == 0x2C000 + SLIDE


def scenario(world):
    """A live scheduler with tasks on both CPUs' runnable lists, event counters and a DSQ."""
    sch = world.sched("sdt")
    world.set_root(sch)
    world.link_all(sch)
    world.static_key("__scx_enabled", True)
    world.glob("scx_enable_seq", 1)
    world.glob("jiffies_64", 100000)
    world.glob("scx_watchdog_timestamp", 99000)
    a = world.task(10, "fresh", sched=sch)
    b = world.task(11, "starved", sched=sch)
    c = world.task(12, "other", cpu=1, sched=sch)
    world.make_runnable(b, 0, 100000 - 8000)
    world.make_runnable(a, 0, 100000 - 10)
    world.make_runnable(c, 1, 100000 - 7500)
    world.mem.set("rq", world.rq(1), "nr_running", 3)
    world.mem.set("rq", world.rq(1), "curr", c)
    world.events(sch, [{"SCX_EV_SELECT_CPU_FALLBACK": 3}, {"SCX_EV_SELECT_CPU_FALLBACK": 4}])
    return sch


def rows_of(k):
    state = [tuple(r) for _, r in scxstate.rows(k)]
    tasks = [tuple(r) for _, r in scxtasks.rows(k)]
    return state, tasks


def test_cpu_rows_on_a_612_style_kernel_read_the_right_rq(kernel, monkeypatch):  # noqa: F811
    """Linux 6.12 x86-64 (zero-based per-CPU section) with a KASLR slide: the `cpu` rows and the
    watchdog's runnable lists read the same run queues as on a 7.x kernel (issue 31)."""
    new = ScxWorld(kernel)
    scenario(new)
    old = ScxWorld(kernel, zero_based_percpu=True)
    scenario(old)
    assert old.rq(1) == new.rq(1) and old.offsets != new.offsets
    k = scx_kernel(old, slide=SLIDE)
    assert k.percpu_zero_based() and k.symbol("runqueues") < 0x100000
    assert k.percpu_addresses("runqueues") == [old.rq(0), old.rq(1)]
    want = rows_of(scx_kernel(new, slide=SLIDE))
    got = rows_of(k)
    assert got == want
    cols = scxstate.GRID.names()
    cpu = [dict(zip(cols, r)) for r in got[0] if r[cols.index("Section")] == "cpu"]
    assert {r["Key"] for r in cpu} >= {"nr_running", "curr", "flags"}
    assert not [r for r in cpu if r["Key"] == "error"]
    assert [r["Address"] for r in cpu if r["Key"] == "nr_running"] == [old.rq(0), old.rq(1)]
    assert any(r["Key"] == "nr_running" and r["Value"] == "3" for r in cpu)
    runnable = [r for r in got[0] if str(r[cols.index("Key")]).startswith("runnable[")]
    assert len(runnable) == 3
    # The rule this replaces (slide every symbol) reads nothing there: the test can fail.
    monkeypatch.setattr(Kernel, "_percpu_end", lambda self: None)
    broken = rows_of(scx_kernel(old, slide=SLIDE))
    assert broken != want
    assert any(r[cols.index("Section")] == "cpu" and "unreadable" in str(r[cols.index("Value")])
               for r in broken[0])

