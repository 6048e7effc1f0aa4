"""A careful rootkit's DKOM on the real zoo dump: every program of the zoo taken out of
``prog_idr``, its links out of ``link_idr``, every fd reaching it closed and its ``bpf_ksym`` off
``bpf_kallsyms`` (tests/helpers/dkom.py). ``bpfhidden`` must still report every one of them as
hidden, with the hook that runs it as evidence; the hook-side walkers (bpf/probes.py) are what
reach the kprobe, kretprobe, kprobe_multi, tracepoint, raw_tp, tp_btf, perf_event, uprobe,
uprobe_multi and netfilter programs. One patched view, one bpfhidden run.
"""

import pytest

import dumps
from helpers.dkom import PatchedReader, hide_programs

ZOO = "x86_64/scx_sdt_zoo"

# what each zoo program's hook-side evidence must name (the kernel structure read)
EVIDENCE = {
    "zoo_kprobe": "kprobe_table -> trace_kprobe",
    "zoo_kretprobe": "kprobe_table -> trace_kprobe",
    "zoo_kmulti": "fprobe_table -> bpf_kprobe_multi_link",
    "zoo_tp": "trace_event_call->prog_array",
    "zoo_raw_tp": "tracepoint sched_switch->funcs",
    "zoo_tp_btf": "tracepoint sched_process_fork->funcs",
    "zoo_perf": "perf_event_context (cpu",
    "zoo_uprobe": "uprobes_tree -> trace_uprobe",
    "zoo_umulti": "uprobes_tree -> bpf_uprobe",
    "zoo_nf": "net->nf.hooks_ipv4[1]",
    "zoo_fentry": "bpf_trampoline->progs_hlist",
    "zoo_fexit": "bpf_trampoline->progs_hlist",
    "zoo_lsm_file_op": "bpf_trampoline->progs_hlist",
    "zoo_lsm_cgroup": "cgroup->bpf.progs",
    "zoo_cg_ingress": "cgroup->bpf.progs",
    "zoo_cg_egress": "cgroup->bpf.progs",
    "zoo_cg_legacy": "cgroup->bpf.progs",
    "zoo_cg_sock_cre": "cgroup->bpf.progs",
    "zoo_cg_connect4": "cgroup->bpf.progs",
    "zoo_cg_dev": "cgroup->bpf.progs",
    "zoo_cg_sysctl": "cgroup->bpf.progs",
    "zoo_sockops": "cgroup->bpf.progs",
    "zoo_xdp": "net_device->xdp_state",
    "zoo_tcx_in": "net_device->tcx_ingress",
    "zoo_tcx_eg": "net_device->tcx_egress",
    "zoo_tcx_legacy": "net_device->tcx_egress",
    "zoo_sk_lookup": "net->bpf.run_array",
    "zoo_flow": "net->bpf.run_array",
    "zoo_sk_verdict": "bpf_stab->progs.stream_verdict",
    "zoo_tail": "prog_array zoo_jmp",
    "zoo_iter_task": "hidden link at",      # an iterator has no hook: its link, found by its pin
}


def _available():
    root = dumps.dumps_root()
    return root is not None and (root / ZOO / "truth.json").is_file()


pytestmark = pytest.mark.skipif(not _available(), reason=f"KTSTR_DUMPS is unset or has no {ZOO}")


@pytest.fixture(scope="module")
def kctx():
    from helpers.vol_kctx import open_kctx

    return open_kctx(ZOO)


@pytest.fixture(scope="module")
def hidden_rows(kctx):
    from volatility3_ktstr.views import bpfhidden

    truth = dumps.load_truth(ZOO)
    ids = [p["id"] for p in truth["progs"] if p["name"] in EVIDENCE]
    words = hide_programs(kctx, ids)
    patched = kctx.with_reader(PatchedReader(kctx.reader, words))
    names = [c.name for c in bpfhidden.GRID.columns]
    return [dict(zip(names, values)) for _level, values in bpfhidden.rows(patched)]


def test_the_patch_hides_what_a_listing_starts_from(kctx):
    """The patched view lists none of the programs through prog_idr, links, fds or kallsyms."""
    from volatility3_ktstr.bpf import hidden as bpfhidden_mod

    truth = dumps.load_truth(ZOO)
    ids = [p["id"] for p in truth["progs"] if p["name"] in EVIDENCE]
    patched = kctx.with_reader(PatchedReader(kctx.reader, hide_programs(kctx, ids)))
    bk = patched.bpf_kernel()
    assert not {p.id for p in bk.progs} & set(ids)
    assert not {p for p, _n in bpfhidden_mod.kallsyms_progs(bk)} & {p.kva for p in kctx.bpf_kernel().progs
                                                                    if p.id in ids}


def test_every_zoo_program_is_reported_hidden_with_its_hook(hidden_rows):
    truth = dumps.load_truth(ZOO)
    by_id = {r["ID"]: r for r in hidden_rows if r["Kind"] == "prog"}
    missing, weak = [], []
    for p in truth["progs"]:
        want = EVIDENCE.get(p["name"])
        if want is None:
            continue
        r = by_id.get(p["id"])
        if r is None or r["Verdict"] != "hidden" or r["Name"] != p["name"]:
            missing.append(p["name"])
        elif want not in r["FoundVia"]:
            weak.append((p["name"], r["FoundVia"]))
    assert not missing, missing
    assert not weak, weak
    # nothing but the zoo's programs and their links (and what the summary counts) is hidden
    names = {p["name"] for p in truth["progs"] if p["name"] in EVIDENCE}
    other = [r for r in hidden_rows if r["Kind"] == "prog" and r["Name"] not in names]
    assert not other, other
    iter_link = next(r for r in hidden_rows if r["Kind"] == "link" and r["Name"] == "iter:task")
    assert "pin /sys/fs/bpf/zoo/task_iter_link" in iter_link["FoundVia"]
    summary = next(r for r in hidden_rows if r["Kind"] == "summary")
    assert summary["ID"] >= len(names)


def test_no_evidence_comes_from_the_removed_paths(hidden_rows):
    """The paths the rootkit removed (fds, kallsyms, link_idr) are not what found them."""
    for r in hidden_rows:
        if r["Kind"] == "prog":
            assert "bpf_kallsyms" not in r["FoundVia"], r
            assert " fd " not in f" {r['FoundVia']}", r


def test_a_loader_off_the_task_list_still_holds_its_fds(kctx):
    """bpf_zoo unlinked from init_task.tasks: its fds are still read (from the pid IDR and the
    other task lists) and named as held by a process missing from the task list; bpfhidden
    reports the process."""
    from helpers.dkom import unlink_task
    from volatility3_ktstr.views import bpffds, bpfhidden

    truth = dumps.load_truth(ZOO)
    loader = next(h["pid"] for t in truth["links"] if t["owner"] == "bpf_zoo" for h in t["fd_holders"])
    patched = kctx.with_reader(PatchedReader(kctx.reader, unlink_task(kctx, loader)))
    names = [c.name for c in bpffds.GRID.columns]
    rows = [dict(zip(names, v)) for _l, v in bpffds.rows(patched)]
    mine = [r for r in rows if r.get("PID") == loader]
    want = {h["fd"] for t in truth["links"] for h in t["fd_holders"] if h["pid"] == loader}
    assert want <= {r["FD"] for r in mine}
    assert all("not on init_task.tasks" in r["Error"] for r in mine)
    names = [c.name for c in bpfhidden.GRID.columns]
    hidden = [dict(zip(names, v)) for _l, v in bpfhidden.rows(patched)]
    task = [r for r in hidden if r["Kind"] == "task" and r["ID"] == loader]
    assert task and task[0]["Verdict"] == "hidden"


def test_a_link_whose_program_is_hidden_names_it(kctx):
    """Only the program's prog_idr slot gone: its link (still in link_idr) shows the program's
    id and name as read through the link, and says it is not in prog_idr."""
    from helpers.dkom import idr_slot
    from volatility3_ktstr.views import links

    truth = dumps.load_truth(ZOO)
    t = next(x for x in truth["links"] if x["prog_name"] == "zoo_kprobe")
    words = {idr_slot(kctx.reader, kctx.layout, kctx.symbol("prog_idr"), t["prog_id"]): 0}
    patched = kctx.with_reader(PatchedReader(kctx.reader, words))
    names = [c.name for c in links.GRID.columns]
    row = next(dict(zip(names, v)) for _l, v in links.rows(patched) if v[0] == t["id"])
    assert row["ProgId"] == t["prog_id"] and row["ProgName"] == "zoo_kprobe"
    assert f"(id {t['prog_id']}) is not in prog_idr" in row["Error"]
