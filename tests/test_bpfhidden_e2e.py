"""Hidden BPF objects planted in real memory: an object unlinked from its IDR is still found.

The zoo dump is opened once in-process; each case reads it through a reader that shows one
IDR slot as NULL (what a rootkit unlinking an object from ``prog_idr``/``map_idr``/``link_idr``
leaves behind), re-reads the registries through it and runs the cross-view. The unlinked object
must be reported, with the paths the case expects, and nothing else; the intact dump reports
nothing (plus: every real dump, through the plugin, in test_bpfforensics_e2e).
"""

import pytest

import dumps
from helpers.dkom import PatchedReader, idr_slot
from helpers.vol_kctx import open_kctx
from volatility3_ktstr.bpf import bpffs, hidden, hooks
from volatility3_ktstr.bpf import fds as bpffds
from volatility3_ktstr.bpf import links as bpflinks

ZOO = "x86_64/scx_sdt_zoo"


def _available():
    root = dumps.dumps_root()
    return root is not None and (root / ZOO / "truth.json").is_file()


pytestmark = pytest.mark.skipif(not _available(), reason=f"KTSTR_DUMPS is unset or has no {ZOO}")


@pytest.fixture(scope="module")
def kctx():
    # the in-process zoo kernel the other zoo tests share (helpers/vol_kctx.py)
    return open_kctx(ZOO)


def cross_view(kctx, words=None):
    """The hidden objects of the dump as seen through ``words`` patched in."""
    bk = kctx.with_reader(PatchedReader(kctx.reader, words or {})).bpf_kernel()
    links = list(bpflinks.iter_links(bk, kctx.symbol("link_idr")))
    fds = list(bpffds.bpf_fds(bk, kctx.symbol("init_task"), perf=True))
    attachments = list(hooks.HookWalker(bk).all([f.obj for f in fds if f.kind == "perf"]))
    pins = list(bpffs.pins(bk))
    refs = hidden.references(bk, links, attachments, fds, pins)
    return {(f.kind, f.id): f for f in hidden.hidden(bk, refs, links)}


def unlink(kctx, registry, object_id):
    idr = kctx.symbol(registry)
    return {idr_slot(kctx.reader, kctx.layout, idr, object_id): 0}


def truth_id(kind, name):
    t = dumps.load_truth(ZOO)
    return next(o["id"] for o in t[kind + "s"] if o["name"] == name)


def test_clean_dump_has_nothing_hidden(kctx):
    assert cross_view(kctx) == {}


def _via(found, *parts):
    text = " | ".join(found.via)
    return all(p in text for p in parts)


def test_unlinked_kprobe_program_is_found_through_link_fd_and_kallsyms(kctx):
    pid = truth_id("prog", "zoo_kprobe")
    got = cross_view(kctx, unlink(kctx, "prog_idr", pid))
    assert set(got) == {("prog", pid)}
    f = got[("prog", pid)]
    assert f.name == "zoo_kprobe" and not f.error
    assert _via(f, "link 2 (perf_event)", "pid 146 (bpf_zoo)", "bpf_kallsyms")


def test_unlinked_tail_call_target_is_found_through_its_slot_and_pin(kctx):
    pid = truth_id("prog", "zoo_tail")
    got = cross_view(kctx, unlink(kctx, "prog_idr", pid))
    assert set(got) == {("prog", pid)}
    assert _via(got[("prog", pid)], "(zoo_jmp) slot 0", "pin /sys/fs/bpf/zoo/zoo_tail")


def test_unlinked_legacy_cgroup_program_is_found_through_the_cgroup(kctx):
    pid = truth_id("prog", "zoo_cg_legacy")
    got = cross_view(kctx, unlink(kctx, "prog_idr", pid))
    assert set(got) == {("prog", pid)}
    assert _via(got[("prog", pid)], "cgroup cgroup:/lab/batch via cgroup->bpf.progs")


def test_unlinked_pinned_only_map_is_found_through_its_pin(kctx):
    mid = truth_id("map", "zoo_pinonly")
    got = cross_view(kctx, unlink(kctx, "map_idr", mid))
    assert set(got) == {("map", mid)}
    assert _via(got[("map", mid)], "pin /sys/fs/bpf/zoo/pinonly_map")


def test_unlinked_inner_map_is_found_through_the_outer_map(kctx):
    mid = truth_id("map", "zoo_inner_a")
    got = cross_view(kctx, unlink(kctx, "map_idr", mid))
    assert ("map", mid) in got
    assert _via(got[("map", mid)], "(zoo_outer) slot")


def test_unlinked_pinned_link_is_found_through_its_pin(kctx):
    t = dumps.load_truth(ZOO)
    link = next(x for x in t["links"] if x["pinned_at"] and not x["fd_holders"])
    got = cross_view(kctx, unlink(kctx, "link_idr", link["id"]))
    assert set(got) == {("link", link["id"])}
    assert _via(got[("link", link["id"])], f"pin {link['pinned_at'][0]}")
