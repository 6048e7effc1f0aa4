"""The real kdump-compressed vmcore (vmcore/x86_64/scx_sdt: makedumpfile 1.7.8 -z -d 31) against
its truth.json, through plain `vol -f vmcore <plugin>`.

makedumpfile 1.7.8 does not know this 7.2 kernel's page layout and left out, besides the
pages -d 31 should exclude, a few in-use kernel pages (e.g. the second page of 26 of the 77
task_structs, two bpf_map structs, one page of the scheduler's BTF object). So:

- the raw-dump checks that hold whatever those pages held run here unchanged (reused from the
  raw-dump test modules): scheduler state, tasks under sched_ext, arena pages;
- for everything else each truth entry is either reported exactly as the truth says, or its
  row names the exclusion (``excluded from the dump (makedumpfile dump level 31)``), and every
  address such a row names is checked, with the kdump reader alone, to hold an excluded page;
- no row on this vmcore reports any other kind of damage.

The kdump reader itself is checked against truth on every raw-dump check through the
``x86_64/scx_sdt@kdump`` variant (the raw dump converted to a kdump file) in those modules.
"""

import json
import re

import pytest

import dumps
import volrun
from helpers.truth import expected_processes, listed_processes
from volatility3_ktstr import dumpfile, vmcoreinfo

VMCORES = dumps.list_vmcores()
pytestmark = pytest.mark.slow
PLUGINS = ("maps", "progs", "mapdump", "localstorage", "scxstate", "scxtasks", "sdtalloc", "arena")
EXCLUDED = "excluded from the dump (makedumpfile dump level 31)"
CLAIM = re.compile(r"cannot read (\d+) bytes at (0x[0-9a-f]+): excluded from the dump")
DAMAGE_WORDS = ("unreadable", "cannot read", "corrupt", "truncated", "skipped", "broken")


@pytest.fixture(scope="module", params=VMCORES or [None])
def vmcore(request):
    if request.param is None:
        pytest.skip("no vmcore/<arch>/<name> with truth.json under KTSTR_DUMPS"
                    if dumps.dumps_root() else "KTSTR_DUMPS is unset")
    return request.param


class Pages:
    """Which pages of the vmcore are excluded, by kernel direct-map address (kdump reader only)."""

    def __init__(self, name):
        truth = dumps.load_truth(name)
        self.img = dumpfile.open_image(str(dumps.dump_path(name)))
        info = vmcoreinfo.best(self.img.vmcoreinfo_texts())
        at = vmcoreinfo.kernel_pa(info, truth["kernel"]["kallsyms_runtime"]["page_offset_base"])
        self.page_offset = int.from_bytes(self.img.read(at, 8, pad=False), "little")

    def any_excluded(self, va, size):
        pa = va - self.page_offset
        first, last = pa >> self.img.page_shift, (pa + max(size, 1) - 1) >> self.img.page_shift
        return 0 <= pa and any(self.img.page_state(p) == "excluded" for p in range(first, last + 1))


_pages = {}


def pages_of(name):
    if name not in _pages:
        _pages[name] = Pages(name)
    return _pages[name]


_rows = {}


def plugin_rows(name, plugin):
    if (name, plugin) not in _rows:
        _rows[name, plugin] = volrun.run_vol(name, f"linux.ktstr.{plugin}").check().rows
    return _rows[name, plugin]


def row_text(row):
    return json.dumps({k: v for k, v in row.items() if not k.startswith("__")})


# --- raw-dump checks that hold at -d 31 -------------------------------------------------------
#
# They run in their own modules with the vmcores among their params (dumps.vmcore_params()):
# test_scx_e2e (scheduler vs sysfs, tasks under sched_ext, --all, running tasks), test_maps_e2e
# (every map has mapdump rows, hash elements equal truth) and test_arena_e2e (all of it).


# --- what the exclusion hides is named, and only that -------------------------------------------


@pytest.mark.parametrize("plugin", PLUGINS)
def test_damage_rows_name_excluded_pages_only(vmcore, plugin):
    pages = pages_of(vmcore)
    for row in plugin_rows(vmcore, plugin):
        text = row_text(row)
        if not any(w in text for w in DAMAGE_WORDS):
            continue
        assert EXCLUDED in text, f"{plugin}: damage other than the dump level: {text[:400]}"
        for size, addr in CLAIM.findall(text):
            assert pages.any_excluded(int(addr, 16), int(size)), \
                f"{plugin}: {addr}+{size} holds no excluded page: {text[:300]}"


def _excused(pages, row):
    """A row that says its struct (at row["Address"]) is on an excluded page, and it is."""
    text = row_text(row)
    return EXCLUDED in text and pages.any_excluded(row.get("Address") or 0, 256)


def _coverage_names_exclusions(rows, struct):
    """The one row without an id is the coverage line: the registry whole, the structs the dump
    level took counted (README, Dump levels)."""
    extra = [r for r in rows if r["ID"] < 0]
    assert len(extra) == 1 and extra[0]["Error"].startswith("coverage: ") and \
        f"{struct} struct" in extra[0]["Error"] and "excluded by dump level" in extra[0]["Error"], extra


def test_maps_equal_truth_or_named_excluded(vmcore):
    truth, pages = dumps.load_truth(vmcore), pages_of(vmcore)
    got = {r["ID"]: r for r in plugin_rows(vmcore, "maps") if r["ID"] >= 0}
    assert set(got) == {m["id"] for m in truth["maps"]}
    _coverage_names_exclusions(plugin_rows(vmcore, "maps"), "bpf_map")
    whole = 0
    for m in truth["maps"]:
        r = got[m["id"]]
        if _excused(pages, r) and r["Name"] == "":
            continue
        assert (r["Name"], r["Type"], r["KeySize"], r["ValueSize"], r["MaxEntries"], r["BtfId"]) == \
            (m["name"], m["type_name"], m["key_size"], m["value_size"], m["max_entries"], m["btf_id"]), r
        whole += 1
    assert whole >= len(truth["maps"]) * 0.7


def test_progs_equal_truth_or_named_excluded(vmcore):
    truth, pages = dumps.load_truth(vmcore), pages_of(vmcore)
    got = {r["ID"]: r for r in plugin_rows(vmcore, "progs") if r["ID"] >= 0}
    assert set(got) == {p["id"] for p in truth["progs"]}
    _coverage_names_exclusions(plugin_rows(vmcore, "progs"), "bpf_prog")
    for p in truth["progs"]:
        r = got[p["id"]]
        assert (r["Type"], r["Tag"], r["JitedLen"], r["XlatedLen"]) == \
            (p["type_name"], p["tag"], p["jited_prog_len"], p["xlated_prog_len"]), r
        if r["Error"]:
            assert EXCLUDED in r["Error"], r
        else:
            assert (r["Name"], r["BtfId"]) == (p["name"], p["btf_id"]), r


def test_bpftriage_flags_nothing_it_could_not_read(vmcore):
    """A program whose bpf_prog_aux page is excluded has unknown BTF and func_info, not none:
    bpftriage must not call its loader stripped; and its flags on the scheduler's programs are
    those the whole raw dump of the same kind of machine gives (none), or name the exclusion."""
    truth = dumps.load_truth(vmcore)
    btf = {p["id"]: p.get("btf_id") for p in truth["progs"]}
    rows = [r for r in plugin_rows(vmcore, "bpftriage") if r["Kind"] == "prog"]
    for r in rows:
        if r["Flag"] in ("no-btf", "no-func-info"):
            assert not btf.get(r["ID"]) and EXCLUDED not in (r["Error"] or ""), r
        if r["Flag"] == "unheld":
            assert EXCLUDED in (r["Evidence"] or ""), r
    summary = next(r for r in plugin_rows(vmcore, "bpftriage") if r["Kind"] == "summary")
    assert summary["Name"].endswith(f"of {len(truth['progs'])} programs flagged"), summary


def test_task_storage_elements_all_listed(vmcore):
    truth = dumps.load_truth(vmcore)
    rows = [r for r in plugin_rows(vmcore, "localstorage") if r.get("Element")]
    assert len(rows) == len(truth["task_storage"])
    named = [r for r in rows if not r.get("Note")]
    assert all(EXCLUDED in r["Note"] for r in rows if r.get("Note"))
    assert len(named) >= len(rows) // 2


def test_pslist_lists_only_true_processes(vmcore):
    """Volatility's pslist follows init_task.tasks; the list breaks at the first task whose
    excluded page holds its list node, so it lists a true subset (no wrong rows)."""
    truth = dumps.load_truth(vmcore)
    res = volrun.run_vol(dumps.dump_path(vmcore), "linux.pslist", name=vmcore)
    listed = listed_processes(res)
    expected = expected_processes(truth)
    assert listed and set(listed) <= set(expected)
    ppid = {t["tgid"]: t["ppid"] for t in truth["tasks"] if t["tid"] == t["tgid"]}
    assert all(ppid[row["PID"]] == row["PPID"] for row in res.rows)
    if len(listed) < len(expected):
        per_task = truth["sdt"]["per_task"]
        pages = pages_of(vmcore)
        assert any(pages.any_excluded(int(str(t["task_struct"]), 0), 8192) for t in per_task)
