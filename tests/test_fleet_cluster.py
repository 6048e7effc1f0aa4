"""ktstr-triage on Dask with real dumps (slow tier; skips without the fleet extra or dumps).

The fleet is the minimized dumps (smallest to read) plus a file that is no dump. One run on an
in-process local cluster is shared by the tests here: rows equal truth.json, outputs equal what
`vol -r json` prints, a rerun does no work, a hang is cut at --timeout; then the same fleet
(with two more copies) on a real `dask scheduler` and two `dask worker` processes on the
loopback, one worker killed mid-run: the same rows, none lost. The report is loaded by headless
Chromium: every page, its DOM, no request leaving the machine, a screenshot as an artefact.
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Found, not imported: collecting the quick tier must not pay for importing Dask.
if importlib.util.find_spec("distributed") is None or importlib.util.find_spec("pyarrow") is None:
    pytest.skip("the fleet extra (dask[distributed], pyarrow) is not installed",
                allow_module_level=True)

import dumps  # noqa: E402
import volrun  # noqa: E402
from helpers import browser  # noqa: E402
from helpers.fleet import comparable, truth_mismatches  # noqa: E402

pytestmark = pytest.mark.slow


def _fleet_dumps():
    names = [n for n in dumps.list_dumps() if dumps.minimized(n)]
    if not names:
        pytest.skip("no minimized dump under KTSTR_DUMPS")
    return names


@pytest.fixture(scope="module")
def fleet_env(tmp_path_factory):
    """Dumps (minimized, decompressed once by tests/dumps.py), their kernel ISF dirs, a
    non-dump; the fleet cache and Volatility's cache shared with the other tests' vol runs
    (ISF validations are by content, a minute of CPU each otherwise)."""
    if dumps.dumps_root() is None:
        pytest.skip("KTSTR_DUMPS is unset")
    names = _fleet_dumps()
    base = tmp_path_factory.mktemp("fleet")
    paths = {n: dumps.dump_path(n) for n in names}
    junk = base / "junk.raw"
    junk.write_bytes(os.urandom(2 << 20))
    symbol_dirs = sorted({str(volrun.kernel_isf_dir(n)) for n in names})
    env = {"XDG_CACHE_HOME": str(volrun.VOL_XDG),
           "KTSTR_FLEET_CACHE": str(volrun.CACHE / "fleet")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield {"names": names, "paths": paths, "junk": junk, "symbol_dirs": symbol_dirs,
           "base": base, "env": env}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _inputs(env, extra=()):
    from volatility3_ktstr.fleet import discover

    files = [str(env["paths"][n]) for n in env["names"]] + [str(env["junk"])] + list(extra)
    return discover.expand(files)


@pytest.fixture(scope="module")
def local_run(fleet_env):
    from volatility3_ktstr.fleet import engine, report

    out = fleet_env["base"] / "local"
    inputs = _inputs(fleet_env)
    rows, stats = engine.run(inputs, str(out), workers=2, symbol_dirs=fleet_env["symbol_dirs"],
                             timeout=600, progress=False)
    engine.write_table(rows, str(out))
    report.write_report(rows, str(out))
    return {"out": out, "rows": rows, "stats": stats, "inputs": inputs}


def test_rows_equal_truth(fleet_env, local_run):
    by_file = {r["file"]: r for r in local_run["rows"]}
    assert len(local_run["rows"]) == len(fleet_env["names"]) + 1
    assert local_run["stats"].kernels_prepared >= 1
    for name in fleet_env["names"]:
        row = by_file[str(fleet_env["paths"][name])]
        assert truth_mismatches(row, dumps.load_truth(name)) == [], name
        assert row["bpf_progs"] and row["per_plugin"] and row["peak_rss_mb"]
    junk = by_file[str(fleet_env["junk"])]
    assert junk["error"] and "banner" in junk["error"] and junk["sha256"]


def test_table_files(local_run):
    import pyarrow.parquet as pq

    table = pq.read_table(local_run["out"] / "triage.parquet").to_pylist()
    assert [r["file"] for r in table] == [r["file"] for r in local_run["rows"]]
    assert {"exit_kind", "stalled_tasks", "scxstate_seconds", "scxstate_peak_rss_mb",
            "suspicious_programs", "flagged_programs", "kernel_integrity", "unique_programs",
            "damage"} <= set(table[0])
    csv_lines = (local_run["out"] / "triage.csv").read_text().splitlines()
    assert len(csv_lines) == len(table) + 1


def test_outputs_are_what_vol_prints(fleet_env, local_run):
    from volatility3_ktstr.fleet import discover

    name = next(n for n in fleet_env["names"] if "exit" in n) if any(
        "exit" in n for n in fleet_env["names"]) else fleet_env["names"][0]
    row = next(r for r in local_run["rows"] if r["file"] == str(fleet_env["paths"][name]))
    folder = local_run["out"] / "dumps" / discover.safe_name(row["name"])
    res = volrun.run_vol(name, "linux.ktstr.scxstate").check()
    assert (folder / "linux.ktstr.scxstate.json").read_text() == res.stdout


def test_second_run_does_no_work(fleet_env, local_run):
    from volatility3_ktstr.fleet import engine

    rows, stats = engine.run(local_run["inputs"], str(local_run["out"]), workers=2,
                             symbol_dirs=fleet_env["symbol_dirs"], progress=False)
    assert (stats.triaged, stats.probed, stats.started_cluster) == (0, 0, False)
    assert stats.reused == len(local_run["inputs"])
    assert [comparable(r) for r in rows] == [comparable(r) for r in local_run["rows"]]


def test_hang_is_cut_at_timeout(fleet_env, tmp_path):
    from volatility3_ktstr.fleet import discover, engine

    one = discover.expand([str(fleet_env["paths"][fleet_env["names"][0]])])
    rows, _ = engine.run(one, str(tmp_path / "t"), workers=1, timeout=0.05,
                         symbol_dirs=fleet_env["symbol_dirs"], progress=False,
                         plugins=["linux.ktstr.arena", "linux.ktstr.scxstate"])
    assert rows[0]["error"].startswith("timed out after 0.05 s"), rows[0]["error"]


def _start(argv, env, log):
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_external_cluster_worker_killed(fleet_env, local_run, tmp_path):
    """A real scheduler and two workers on 127.0.0.1; one worker is killed when the first row
    comes back. Every dump still has its row, equal to the local run's row for that content."""
    from volatility3_ktstr.fleet import engine

    # Two more hosts: hard links of the fleet's dumps (same content, other names).
    extra = []
    for i, n in enumerate(fleet_env["names"][:2]):
        link = tmp_path / f"host{i}.raw"
        try:
            os.link(fleet_env["paths"][n], link)
        except OSError:
            pytest.skip("cannot hard-link the dump cache into the test folder")
        extra.append(str(link))
    inputs = _inputs(fleet_env, extra)
    env = dict(os.environ, **fleet_env["env"], DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="1",
               PYTHONPATH=os.pathsep.join([str(volrun.REPO)] + sys.path))
    sched_file = tmp_path / "scheduler.json"
    dask_bin = volrun.venv_bin("dask")
    log = open(tmp_path / "cluster.log", "w")
    procs = [_start([dask_bin, "scheduler", "--host", "127.0.0.1", "--port", "0",
                     "--no-dashboard", "--scheduler-file", str(sched_file)], env, log)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        workers = [_start([dask_bin, "worker", address, "--nthreads", "1", "--no-nanny",
                           "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}"],
                          env, log) for i in range(2)]
        procs += workers
        from distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        killed = []

        def kill_one(_row):
            if not killed:
                os.killpg(workers[0].pid, signal.SIGKILL)
                killed.append(time.monotonic())

        rows, stats = engine.run(inputs, str(tmp_path / "ext"), scheduler=address,
                                 symbol_dirs=fleet_env["symbol_dirs"], timeout=600,
                                 progress=False, on_row=kill_one)
    finally:
        for p in reversed(procs):
            _stop(p)
        log.close()
    assert killed and workers[0].poll() is not None
    assert len(rows) == len(inputs) and stats.triaged == len(inputs)
    # The hard links share their target's probe (one read, one SHA-256 per file identity).
    assert stats.probed == len(inputs) - len(extra)
    local = {r["sha256"]: comparable(r) for r in local_run["rows"]}
    for r in rows:
        assert comparable(r) == local[r["sha256"]], (r["name"], r.get("error"))


def test_report_in_chromium(local_run):
    if browser.chromium_paths() is None:
        pytest.skip("chromium and chromedriver are not installed (Debian: chromium "
                    "chromium-driver; .ci/run installs them)")
    out = local_run["out"]
    pages = [out / "index.html"] + sorted((out / "dumps").glob("*/index.html"))
    assert len(pages) == len(local_run["rows"]) + 1
    shots = Path(browser.artefact_dir())
    with browser.Browser() as b:
        b.get("about:blank")
        b.requests()                   # the browser's own start-up pages
        for page in pages:
            b.get(page.as_uri())
            assert b.js("return document.readyState") == "complete"
            leaving = [u for u in b.requests() if not u.startswith(("file://", "data:"))]
            assert leaving == [], f"{page}: requests that leave the machine: {leaving}"
            assert b.js("return performance.getEntriesByType('resource').length") == 0
            if page.name == "index.html" and page.parent == out:
                assert b.js("return document.querySelectorAll('#dumps tr').length") == \
                    len(local_run["rows"]) + 1
                assert b.js("return document.querySelectorAll('#cards .card').length") == 6
                assert "ERROR_BPF" in b.js("return document.getElementById('exitkinds')"
                                           ".innerText")
                b.screenshot(str(shots / "fleet-index.png"))
            else:
                verdict = b.js("return document.getElementById('verdict').innerText")
                assert verdict
                n_svg = b.js("return document.querySelectorAll('svg.chart').length")
                has_rows = b.js("return document.getElementById('facts') !== null")
                assert has_rows
                if b.js("return document.getElementById('verdict').className") != "err":
                    assert n_svg >= 4, page
                    # How long each CPU's runnable list waited (scxtasks), or why nothing.
                    assert b.js("return document.getElementById('runnable-ages') !== null")
                    b.screenshot(str(shots / f"fleet-{page.parent.name}.png"))
    assert (shots / "fleet-index.png").stat().st_size > 10_000


def test_dump_that_killed_its_workers_is_marked_and_retried_next_run(tmp_path):
    """What the engine does with Dask's verdict on a task whose workers died (KilledWorker,
    after allowed-failures retries): a row that says so, not stored as done, so the next run
    tries that dump again."""
    from distributed.scheduler import KilledWorker

    from volatility3_ktstr.fleet import engine

    result = engine._failure_row({"file": "/d/host.raw", "sha256": "ab" * 32, "format": "raw"},
                                 KilledWorker("triage-1", "tcp://127.0.0.1:1", 2))
    assert result["row"]["error"].startswith("worker died while triaging this dump, 2 times")
    store = engine.Store(tmp_path)
    row = store.put("host.raw", result, "k")
    assert row["error"] and store.row("ab" * 32, "k") is None


FORMS_OF = "x86_64/scx_sdt"
# What a file's form changes in its row: the file itself, and how the scan found the kernel.
FORM_COLUMNS = ("format", "size", "sha256")


def test_every_file_form_gives_the_rows_of_the_raw_dump(tmp_path, monkeypatch):
    """One dump as every form the package opens, triaged in one run with the arm64 dumps (two
    kernels, two architectures): raw, an ELF core with a VMCOREINFO note, LiME,
    kdump-compressed (makedumpfile's layout) and QEMU's flattened dump-guest-memory -z stream
    (CPU notes, no VMCOREINFO). One table per kernel; each form's row equals the raw dump's on
    every column a plugin feeds; every raw dump's row equals its truth, paging included."""
    if FORMS_OF not in dumps.list_dumps():
        pytest.skip(f"{FORMS_OF} is not under KTSTR_DUMPS")
    from volatility3_ktstr.fleet import discover, engine

    monkeypatch.setenv("XDG_CACHE_HOME", str(volrun.VOL_XDG))
    monkeypatch.setenv("KTSTR_FLEET_CACHE", str(volrun.CACHE / "fleet"))
    forms = {"raw": dumps.dump_path(FORMS_OF), "elf": dumps.elf_of(FORMS_OF),
             "lime": dumps.lime_of(FORMS_OF), "kdump": dumps.kdump_of(FORMS_OF),
             "qemu-flat": dumps.qemu_kdump_of(FORMS_OF, flat=True)}
    others = [n for n in dumps.full_dumps() if not n.startswith("x86_64/")]
    files = dict(forms, **{n: dumps.dump_path(n) for n in others})
    inputs = [discover.DumpInput(path=str(p), name=k) for k, p in files.items()]
    kernels = {dumps.load_truth(n)["kernel"]["meta"]["release"] for n in [FORMS_OF] + others}
    rows, stats = engine.run(inputs, str(tmp_path / "out"), workers=2, timeout=600,
                             symbol_dirs=sorted({str(volrun.kernel_isf_dir(n))
                                                 for n in [FORMS_OF] + others}),
                             progress=False)
    by = {r["name"]: r for r in rows}
    assert set(by) == set(files) and stats.kernels_prepared == len(kernels)
    assert {k: by[k]["format"] for k in forms} == {
        "raw": "raw", "elf": "elf", "lime": "lime", "kdump": "kdump", "qemu-flat": "kdump"}

    def plugin_columns(row):
        return {k: v for k, v in comparable(row).items() if k not in FORM_COLUMNS}

    base = plugin_columns(by["raw"])
    assert base["error"] is None and base["bpf_progs"] and base["schedulers"], base
    for form in forms:
        got = plugin_columns(by[form])
        assert got == base, (form, {k: (got.get(k), base.get(k)) for k in set(got) | set(base)
                                    if got.get(k) != base.get(k)})
    for name in [FORMS_OF] + others:
        row, truth = by["raw" if name == FORMS_OF else name], dumps.load_truth(name)
        assert truth_mismatches(row, truth) == [], name
        paging = truth.get("paging") or {}
        if paging.get("arch") == "arm64":
            want = (f"arm64, {paging['va_bits']}-bit VA, {paging['page_size'] // 1024} KiB pages, "
                    f"{paging['pgtable_levels_in_use']} levels"
                    + (", LPA2" if paging.get("lpa2_detected") else ""))
        elif paging.get("levels"):
            want = f"x86-64, {paging['levels']} levels" + (" (LA57)" if paging["levels"] == 5 else "")
        else:
            want = row["paging"]
        assert row["paging"] == want, name
