"""Degraded dumps: registry pages excluded the way makedumpfile drops them (tests/helpers/
degrade.py), then every object still reachable another way is listed, and nothing unreadable is
called hidden.

Quick tier: the shared -d 31 vmcore (bpfhidden calls nothing hidden; what it cannot check is
unverifiable with the reason) and a copy of it without the map_idr, prog_idr and link_idr nodes
(maps/progs/links still list every object of truth, each saying it was found off-registry).
Slow tier: the same on the -d 1 kdump of the raw scx_sdt dump, where localstorage, sdtalloc,
arena and mapdump must find what they find on the intact file.
"""

import pytest

import dumps
import volrun
from helpers import degrade

VMCORE = "vmcore/x86_64/scx_sdt"
RAW = "x86_64/scx_sdt"
IDRS = ("map_idr", "prog_idr", "link_idr")


def _have(name):
    root = dumps.dumps_root()
    return root is not None and (root / dumps.base_name(name) / "truth.json").is_file()


def _kctx(path, name):
    from volatility3_ktstr.kernel import KernelContext

    _, plugins = volrun.open_in_process(path, ["maps"], [volrun.kernel_isf_dir(name)])
    return KernelContext.from_plugin(plugins["maps"])


def _rows(view, kctx, *args):
    names = view.GRID.names()
    return [dict(zip(names, r)) for _, r in view.rows(kctx, *args)]


def _without_idr_nodes(name, tmp_path_factory):
    """A copy of ``name``'s kdump file with the root node page of each IDR excluded."""
    src = dumps.dump_path(name)
    kctx = _kctx(src, dumps.base_name(name))
    pfns = []
    for idr in IDRS:
        a = kctx.symbol(idr)
        head = kctx.reader.u64(a + kctx.layout.offset("idr", "idr_rt") + kctx.layout.offset("xarray", "xa_head"))
        assert head & 3 == 2, f"{idr} holds no node in {name}"
        pfns.append(degrade.pfn_of(kctx, head - 2))
    out = tmp_path_factory.mktemp("degraded") / "vmcore.kdump"
    assert degrade.exclude_pfns(src, out, pfns), "the IDR node pages were not in the file"
    return out


@pytest.fixture(scope="module")
def degraded_vmcore(tmp_path_factory):
    if not _have(VMCORE):
        pytest.skip(f"KTSTR_DUMPS is unset or has no {VMCORE}")
    return _kctx(_without_idr_nodes(VMCORE, tmp_path_factory), VMCORE)


def test_shared_d31_vmcore_calls_nothing_hidden():
    if not _have(VMCORE):
        pytest.skip(f"KTSTR_DUMPS is unset or has no {VMCORE}")
    from volatility3_ktstr.views import bpfhidden

    rows = _rows(bpfhidden, _kctx(dumps.dump_path(VMCORE), VMCORE))
    assert not [r for r in rows if r["Verdict"] == "hidden"], rows
    summary = rows[-1]
    assert summary["Kind"] == "summary" and summary["Name"].startswith("no hidden objects")
    unverifiable = [r for r in rows if r["Verdict"] == "unverifiable"]
    # btf_idr's node is not in this -d 31 file: the program BTF reached through fds is unverifiable
    assert unverifiable and all("excluded from the dump" in r["Error"] for r in unverifiable), unverifiable
    assert "unverifiable" in summary["Name"]


def test_registries_unreadable_everything_still_listed(degraded_vmcore):
    from volatility3_ktstr.views import bpfhidden, bpfhooks, links, maps, progs

    truth = dumps.load_truth(VMCORE)
    kctx = degraded_vmcore
    map_rows = _rows(maps, kctx)
    listed = {r["ID"] for r in map_rows if r["ID"] >= 0}
    readable = {m.id for m in _kctx(dumps.dump_path(VMCORE), VMCORE).maps() if not m.error}
    assert readable and readable <= listed <= {m["id"] for m in truth["maps"]}
    objects = [r for r in map_rows if r["Address"] and r["ID"] != -1 or "not reached" in r["Error"]]
    assert all("not reached through map_idr" in r["Error"] and "unverifiable" in r["Error"]
               for r in objects), objects
    assert any(r["Error"].startswith("map_idr node skipped: excluded from the dump") for r in map_rows)
    assert any(r["Error"].startswith("coverage: map_idr: 0 of 1 nodes read") for r in map_rows)
    prog_ids = {r["ID"] for r in _rows(progs, kctx) if r["ID"] >= 0}
    assert prog_ids == {p["id"] for p in truth["progs"]} - {10}     # 10's bpf_prog_aux is excluded
    assert {r["ID"] for r in _rows(links, kctx) if r["ID"] >= 0} == {
        link["id"] for link in truth["bpftool"]["link_list"]}
    hidden_rows = _rows(bpfhidden, kctx)
    assert not [r for r in hidden_rows if r["Verdict"] == "hidden"]
    unverifiable = [r for r in hidden_rows if r["Verdict"] == "unverifiable" and r["Kind"] != "task"]
    assert len(unverifiable) >= len(listed) and all("unreadable" in r["Error"] for r in unverifiable)
    # hooks are walked over every program reachable (the union, not the broken prog_idr):
    # each program listed above has its row, with how it was found
    hook_rows = [r for r in _rows(bpfhooks, kctx) if r["ProgId"] >= 0]
    assert {r["ProgId"] for r in hook_rows} == prog_ids
    assert all("not reached through prog_idr" in r["Error"] for r in hook_rows), hook_rows


def test_slot_read_and_empty_is_hidden():
    """The readable-slot case stays "hidden": map_idr slot lookups on an intact IDR."""
    from volatility3_ktstr.bpf import objects

    kctx = _kctx(dumps.dump_path(RAW), RAW) if _have(RAW) else None
    if kctx is None:
        pytest.skip(f"no {RAW}")
    reg = objects.Registry("map", "map_idr", kctx.symbol("map_idr"), list(kctx.maps()))
    m = reg.records[0]
    assert objects.verdict(kctx.reader, kctx.layout, reg, m.kva, m.id)[0] == objects.REGISTERED
    others = objects.Registry("map", "map_idr", reg.addr, reg.records[1:])   # the walk "missed" it
    assert objects.verdict(kctx.reader, kctx.layout, others, m.kva, m.id)[0] == objects.REGISTERED
    ids = {r.id for r in reg.records}
    free = min(set(range(1, max(ids))) - ids)       # an id handed out earlier, its map freed
    v, why = objects.verdict(kctx.reader, kctx.layout, reg, 0xffff888000001000, free)
    assert v == objects.HIDDEN and "was read and is empty" in why
    v, why = objects.verdict(kctx.reader, kctx.layout, reg, 0xffff888000001000, max(ids) + 1000)
    assert v == objects.UNVERIFIABLE and "never handed out" in why
    v, why = objects.verdict(kctx.reader, kctx.layout, reg, 0xffff888000001000, m.id)
    assert v == objects.HIDDEN and f"holds {m.kva:#x}" in why


@pytest.mark.slow
def test_raw_dump_without_registry_nodes_plugins_still_work(tmp_path_factory):
    if not _have(RAW):
        pytest.skip(f"KTSTR_DUMPS is unset or has no {RAW}")
    from volatility3_ktstr.views import arena, localstorage, mapdump, sdtalloc

    name = RAW + "@kdump"
    intact = _kctx(dumps.dump_path(name), RAW)
    degraded = _kctx(_without_idr_nodes(name, tmp_path_factory), RAW)

    def elements(kctx):
        return sorted((r["MapId"], r["PID"], r["Value"]) for r in _rows(localstorage, kctx)
                      if r["OwnerKind"] not in ("summary", "problem"))

    assert elements(degraded) == elements(intact) and len(elements(intact)) >= len(
        dumps.load_truth(RAW)["task_storage"]) // 2

    def allocations(kctx):
        return sorted((r["Allocator"], r["Idx"], r["Genn"], r["Address"]) for r in _rows(sdtalloc, kctx)
                      if r["Scheduler"])

    assert allocations(degraded) == allocations(intact) and allocations(intact)

    def pages(kctx):
        return sorted((r["MapID"], r["UserAddr"], str(r["Physical"])) for r in _rows(arena, kctx)
                      if r["MapID"] >= 0)

    assert pages(degraded) == pages(intact) and pages(intact)

    def values(kctx):
        return sorted((r["MapId"], r["Index"], r["Value"]) for r in _rows(mapdump, kctx)
                      if r["MapId"] >= 0 and r["Index"] >= 0)

    assert values(degraded) == values(intact) and values(intact)


def test_task_cross_view_clean_and_unlinked():
    """No finding on the intact dump; a process unlinked from init_task.tasks (the classic
    rootkit trick, done here through a reader that shows its neighbour's link skipping it) is
    hidden: still on the pid IDR, scx_tasks and its css_set."""
    if not _have(RAW):
        pytest.skip(f"KTSTR_DUMPS is unset or has no {RAW}")
    from volatility3_ktstr.core import Reader
    from volatility3_ktstr.views import inventory
    from volatility3_ktstr.walkers import alltasks

    kctx = _kctx(dumps.dump_path(RAW), RAW)
    clean = inventory.tasks(kctx)
    assert clean.findings() == [] and clean.counts["pid_idr"] > 10
    lay = kctx.layout
    victim = next(t for t in clean.by_kva.values() if t.comm == "scx_sdt" and t.pid == t.tgid)
    tasks_off = lay.offset("task_struct", "tasks")
    prev = kctx.reader.ptr(victim.kva + tasks_off + lay.offset("list_head", "prev"))
    nxt = kctx.reader.ptr(victim.kva + tasks_off + lay.offset("list_head", "next"))
    at = prev + lay.offset("list_head", "next")

    class Unlinked(Reader):
        def read(self, addr, size):
            data = kctx.reader.read(addr, size)
            if addr <= at and at + 8 <= addr + size:
                data = data[:at - addr] + nxt.to_bytes(8, "little") + data[at - addr + 8:]
            return data

    cursor = dict(kctx.enum("scx_ent_flags") or ()).get("SCX_TASK_CURSOR", 0)
    seen = alltasks.collect(Unlinked(), lay, kctx.symbol, kctx.per_cpu_offsets(), cursor)
    found = {t.kva: t for t in seen.findings()}
    assert victim.kva in found
    t = found[victim.kva]
    assert t.verdict == "hidden" and t.missing_from == ["tasks"] and "pid_idr" in t.found_in
    assert all(f.tgid == victim.tgid for f in found.values())     # its threads, nothing else


def test_fds_of_processes_off_a_broken_task_list(tmp_path):
    """The task_struct page of the process before the scheduler's on init_task.tasks is
    excluded: the list walk stops there, the pid IDR still gives the scheduler, and bpffds
    lists its fds (saying how the process was found); bpfhidden calls no task hidden."""
    if not _have(VMCORE):
        pytest.skip(f"KTSTR_DUMPS is unset or has no {VMCORE}")
    from volatility3_ktstr.views import bpffds, bpfhidden, inventory

    src = dumps.dump_path(VMCORE)
    clean = _kctx(src, VMCORE)
    want = {(r["PID"], r["FD"], r["ID"]) for r in _rows(bpffds, clean) if r["PID"] >= 0}
    sched = next(t for t in inventory.tasks(clean).by_kva.values() if t.comm == "scx_sdt" and t.pid == t.tgid)
    lay = clean.layout
    tasks_off = lay.offset("task_struct", "tasks")
    prev_node = clean.reader.ptr(sched.kva + tasks_off + lay.offset("list_head", "prev"))
    pfn = degrade.pfn_of(clean, prev_node)
    if pfn in {degrade.pfn_of(clean, sched.kva + o) for o in range(0, lay.size("task_struct"), 4096)}:
        pytest.skip("the neighbour shares a page with the scheduler's task_struct")
    out = tmp_path / "vmcore.kdump"
    assert degrade.exclude_pfns(src, out, [pfn])
    kctx = _kctx(out, VMCORE)
    rows = _rows(bpffds, kctx)
    got = {(r["PID"], r["FD"], r["ID"]) for r in rows if r["PID"] >= 0}
    mine = {w for w in want if w[0] == sched.pid}
    assert mine and mine <= got
    assert all("not on init_task.tasks; found in" in r["Error"] for r in rows if r["PID"] == sched.pid)
    assert any(r["PID"] == -1 and "fd scan skipped" in r["Error"] for r in rows)
    hidden_rows = _rows(bpfhidden, kctx)
    assert not [r for r in hidden_rows if r["Verdict"] == "hidden"]
    assert any(r["Kind"] == "task" and r["ID"] == sched.pid and r["Verdict"] == "unverifiable"
               for r in hidden_rows)


def test_registry_heads_unreadable(tmp_path):
    """The kernel page holding map_idr, prog_idr and link_idr themselves is excluded: no exit-2
    error any more; every map and link still comes from the fds, the head's loss is a row."""
    if not _have(VMCORE):
        pytest.skip(f"KTSTR_DUMPS is unset or has no {VMCORE}")
    from volatility3_ktstr.views import links, maps

    src = dumps.dump_path(VMCORE)
    clean = _kctx(src, VMCORE)
    pfn = degrade.pfn_of(clean, clean.symbol("map_idr"))
    out = tmp_path / "vmcore.kdump"
    assert degrade.exclude_pfns(src, out, [pfn])
    kctx = _kctx(out, VMCORE)
    map_rows = _rows(maps, kctx)
    assert {r["ID"] for r in map_rows if r["ID"] >= 0} == {m.id for m in clean.maps() if not m.error}
    assert any("kernel symbol 'map_idr'" in r["Error"] and "excluded from the dump" in r["Error"]
               for r in map_rows if r["ID"] == -1)
    link_rows = _rows(links, kctx)
    assert {r["ID"] for r in link_rows if r["ID"] >= 0} == {link.id for link in clean.links()}
