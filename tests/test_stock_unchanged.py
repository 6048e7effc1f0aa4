"""With volatility3-ktstr installed (and its speed patches on) Volatility's own plugins print
what they print without them, and exit statuses and structured output are as before.

Quick tier: the bundled sample (an ELF core of the x86 dump, minimized to what pslist and our
plugins read) against a run without our package (VOLATILITY3_KTSTR_DISABLE=1). Slow tier: every
real dump, pslist against truth.json, against a run with the speed patches off
(VOLATILITY3_KTSTR_NO_PATCHES=speed; the compat patches stay, arm64 needs them to open at all)
and, where stock Volatility opens the dump (x86 4-level), against it."""

import json
import os
import subprocess

import pytest

import dumps
import volrun
from volatility3_ktstr import sample
from volatility3_ktstr import volpatches

REPO = volrun.REPO
SAMPLE_SYMBOLS = REPO / "symbols"
SPEED_OFF = {volpatches.ENV: "speed"}


@pytest.fixture(scope="module")
def sample_dump(tmp_path_factory):
    return sample.unpack(sample.DEFAULT_SAMPLE, cache=tmp_path_factory.mktemp("sample"))


def _run(dump, plugin, *args, renderer="json", env=None, name=None, symbol_dirs=(SAMPLE_SYMBOLS,)):
    return volrun.run_vol(dump, plugin, *args, renderer=renderer, symbol_dirs=symbol_dirs,
                          env=env, name=name)


def test_pslist_on_the_sample_same_as_without_our_package(sample_dump):
    """Twice with ours (the second run stacks from what the first remembered), once with the
    package switched off entirely (VOLATILITY3_KTSTR_DISABLE: stock Volatility)."""
    first = _run(sample_dump, "linux.pslist", renderer="quick")
    second = _run(sample_dump, "linux.pslist", renderer="quick")
    stock = _run(sample_dump, "linux.pslist", renderer="quick", env={"VOLATILITY3_KTSTR_DISABLE": "1"})
    assert first.rc == second.rc == stock.rc == 0, first.stderr[-2000:] + stock.stderr[-2000:]
    assert first.stdout == second.stdout == stock.stdout
    assert stock.stdout.count("\n") > 20


def test_json_output_complete_and_exit_zero(sample_dump):
    """-r json is written after the whole grid: it must arrive whole, with status 0."""
    res = _run(sample_dump, "linux.ktstr.sdtalloc")
    assert res.rc == 0, res.stderr[-2000:]
    assert res.stdout.rstrip().endswith("]")
    rows = json.loads(res.stdout)
    assert len(rows) == 76 and all("Idx" in r for r in rows)


def test_failing_plugin_exits_non_zero_with_its_line(sample_dump):
    res = _run(sample_dump, "linux.ktstr.sdtalloc", "--header-size", "999")
    assert res.rc == 2
    assert res.stderr.strip().splitlines()[-1].startswith("linux.ktstr.sdtalloc: error: --header-size")
    assert res.stdout.strip() in ("", "[]")


def test_unopenable_file_exits_one(tmp_path):
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"\0" * (1 << 20))
    res = _run(junk, "linux.pslist")
    assert res.rc == 1
    assert "Unable to validate the plugin requirements" in res.stderr


# --- every real dump (slow) ----------------------------------------------------------------------


def _leaders(truth):
    """Thread-group leaders of truth.json: {pid: task_struct.comm or None (older truth files)}."""
    return {t["tgid"]: t.get("task_comm") for t in truth["tasks"]
            if t.get("kind", "task") == "task" and t["tid"] == t["tgid"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", dumps.list_dumps() or [None])
def test_pslist_real_dump_truth_and_unpatched(name):
    if name is None:
        pytest.skip("no dumps (KTSTR_DUMPS unset or empty)")
    fast = volrun.run_vol(name, "linux.pslist").check()
    truth = dumps.load_truth(name)
    want = _leaders(truth)
    got = {r["PID"]: r["COMM"] for r in fast.rows}
    assert sorted(got) == sorted(want) and len(want) > 10
    assert all(got[pid] == comm for pid, comm in want.items() if comm is not None)
    plain = volrun.run_vol(name, "linux.pslist", env=SPEED_OFF).check()
    assert fast.stdout == plain.stdout
    if truth["run"]["arch"] == "x86_64" and truth["paging"].get("levels") == 4:
        # Stock Volatility reads these itself: same rows without our package at all.
        stock = volrun.run_vol(name, "linux.pslist", env={"VOLATILITY3_KTSTR_DISABLE": "1"}).check()
        assert fast.stdout == stock.stdout


# Volatility plugins that work on our ISF since it types symbols (issue 29). Same rows with the
# speed patches on and off; where they need no compat patch (no kallsyms: the two kallsyms
# patches are what make linux.kallsyms and linux.pscallstack read 6.15+ kernels at all), also
# the same rows as stock Volatility on the same ISF.
FIXED_WITHOUT_COMPAT = ("linux.boottime.Boottime", "linux.malware.hidden_modules.Hidden_modules",
                        "linux.malware.check_afinfo.Check_afinfo")
FIXED = FIXED_WITHOUT_COMPAT + ("linux.tracing.ftrace.CheckFtrace",
                                "linux.tracing.tracepoints.CheckTracepoints",
                                "linux.pscallstack.PsCallStack", "linux.kallsyms.Kallsyms")


@pytest.mark.slow
@pytest.mark.parametrize("plugin", FIXED)
def test_fixed_stock_plugins_same_rows_without_speed_patches(plugin):
    name = "x86_64/scx_sdt"
    if name not in dumps.list_dumps():
        pytest.skip(f"no {name} dump (KTSTR_DUMPS unset?)")
    fast = volrun.run_vol(name, plugin, timeout=1800).check()
    plain = volrun.run_vol(name, plugin, env=SPEED_OFF, timeout=1800).check()
    assert fast.stdout == plain.stdout
    if plugin in FIXED_WITHOUT_COMPAT:
        stock = volrun.run_vol(name, plugin, env={"VOLATILITY3_KTSTR_DISABLE": "1"}).check()
        assert fast.stdout == stock.stdout
