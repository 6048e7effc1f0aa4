"""End to end: `vol` with volatility3-ktstr vs stock Volatility 3's own linux.pslist.

    KTSTR_DUMPS=/path/to/dumps python bench/e2e_bench.py [--dumps x86_64/scx_sdt,...]
        [--plugins linux.ktstr.sdtalloc,...] [--repeat 3] [--cold]

For each dump it runs, as separate processes, every ``linux.ktstr.*`` plugin and
``linux.pslist`` with this checkout's venv (ours), and ``linux.pslist`` in a stock venv that
has Volatility 3 only (same Volatility version and Python; built once under
``~/.cache/ktstr-bench/``). Runs are interleaved (B A A A A A B A A A A A per round: B the
stock pslist, A ours) so that load from other processes hits both sides alike; figures are
medians over ``--repeat`` rounds. CPU is user+sys of the process (os.wait4), RSS its peak.

Caches are warm (the issue's "second run"): one untimed run per venv and dump first (it also
writes Python bytecode: PYTHONDONTWRITEBYTECODE and PYTHONUNBUFFERED are dropped). Both
sides read the same symbol folder (the dumps' kernel ISFs, built like the tests build them)
and each venv has its own XDG cache. ``--cold`` also times a first run of ours on a dump after
removing ktstr's own caches (compact ISF copies, scan hints), Volatility's validation cache
kept.

Targets (issue 14), per ``linux.ktstr`` plugin and dump: CPU <= 2.0 s, peak RSS <= 250 MB,
CPU <= 0.35 x the stock pslist's; for ``linux.pslist`` with our package ("stock plugins get
faster too"): less CPU and no more RSS than stock's. The table says which hold, and whether
our pslist prints what stock pslist prints (on LA57 and arm64 dumps stock Volatility finds no
usable kernel layer and lists nothing, so there the line counts are shown). Exit status 1 when
a target is missed.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import dumps  # noqa: E402
import volrun  # noqa: E402

BENCH = Path(os.environ.get("KTSTR_BENCH_CACHE", "~/.cache/ktstr-bench")).expanduser()
DEFAULT_DUMPS = ["x86_64/scx_sdt", "x86_64/scx_sdt_la57", "arm64/scx_sdt_lpa2"]
PLUGINS = volrun.ktstr_plugins()      # every linux.ktstr plugin in the tree
STOCK = "linux.pslist"
MAX_CPU, MAX_RSS_MB, MAX_RATIO = 2.0, 250, 0.35


def volatility_version(python):
    out = subprocess.run([python, "-c", "import volatility3.framework.constants._version as v; "
                          "print(v.PACKAGE_VERSION)"], capture_output=True, text=True, check=True,
                         cwd=str(BENCH))
    return out.stdout.strip()


def stock_venv():
    """A venv with Volatility 3 only (the version ours runs), made once and checked each time."""
    BENCH.mkdir(parents=True, exist_ok=True)    # also the cwd of the probes (not this checkout)
    ours = volatility_version(sys.executable)
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    venv = BENCH / f"stock-venv-py{py}-vol{ours}"
    python = venv / "bin" / "python"
    if not python.exists():
        base = getattr(sys, "_base_executable", None) or sys.executable
        print(f"building {venv} (volatility3=={ours}, no volatility3-ktstr)", file=sys.stderr)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"volatility3=={ours}"], check=True)
    if volatility_version(str(python)) != ours:
        raise SystemExit(f"{venv}: not volatility3 {ours}; remove it to rebuild")
    probe = subprocess.run([str(python), "-c", "import volatility3_ktstr"], capture_output=True,
                           cwd=str(BENCH))
    if probe.returncode == 0:
        raise SystemExit(f"{venv} can import volatility3_ktstr: not a stock venv")
    return venv / "bin" / "vol"


def symbol_dir(names):
    """One folder with every dump's kernel ISF (same -s for every run: Volatility re-indexes
    its identifier cache whenever the set of symbol folders changes)."""
    out = BENCH / "symbols" / "linux"
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        for isf in (volrun.kernel_isf_dir(name) / "linux").glob("*.json.xz"):
            dst = out / isf.name
            if not dst.exists() or dst.stat().st_size != isf.stat().st_size:
                shutil.copyfile(isf, dst)
    return out.parent


def run(vol, xdg, symbols, dump, plugin):
    """(cpu s, wall s, peak RSS MB, rc, stdout) of one `vol -q -f dump plugin`."""
    env = dict(os.environ, XDG_CACHE_HOME=str(xdg))
    # As a user runs vol: bytecode cached (the warm-up run writes it), stdout buffered.
    for var in ("VOLATILITY3_KTSTR_DISABLE", "VOLATILITY3_KTSTR_NO_PATCHES",
                "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"):
        env.pop(var, None)
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(vol), "-q", "-s", str(symbols), "-f", str(dump), plugin],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=str(BENCH))
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024, proc.returncode, out


def fmt_row(cells, widths):
    return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dumps", default=",".join(DEFAULT_DUMPS), help="comma-separated dump names, or 'all'")
    p.add_argument("--plugins", default=",".join(PLUGINS + [STOCK]), help="ours to time (comma-separated)")
    p.add_argument("--repeat", type=int, default=3, help="rounds (medians over them)")
    p.add_argument("--cold", action="store_true", help="also time a first run without ktstr's caches")
    args = p.parse_args(argv)
    if dumps.dumps_root() is None:
        raise SystemExit("KTSTR_DUMPS is not set (the dumps folder)")
    names = dumps.list_dumps() if args.dumps == "all" else args.dumps.split(",")
    plugins = args.plugins.split(",")

    stock_vol = stock_venv()
    ours_vol = Path(sys.executable).parent / "vol"
    symbols = symbol_dir(names)
    xdg_ours, xdg_stock = BENCH / "xdg-ours", BENCH / "xdg-stock"
    header = ["dump", "plugin", "CPU s", "wall s", "RSS MB", "x stock", "targets"]
    widths = [20, 30, 6, 6, 6, 7, 30]
    rows = []
    for name in names:
        dump = dumps.dump_path(name)
        for vol, xdg in ((ours_vol, xdg_ours), (stock_vol, xdg_stock)):
            warm = run(vol, xdg, symbols, dump, STOCK)
            if warm[3] != 0:
                raise SystemExit(f"{vol} {STOCK} on {name} exited {warm[3]}")
        cold = None
        if args.cold:
            shutil.rmtree(xdg_ours / "volatility3" / "ktstr-isf", ignore_errors=True)
            hints = xdg_ours / "volatility3" / "ktstr-stack-hints.json"
            if hints.exists():
                hints.unlink()
            cold = run(ours_vol, xdg_ours, symbols, dump, plugins[0])
        ours = {pl: [] for pl in plugins}
        stock = []
        outputs = {}
        half = (len(plugins) + 1) // 2
        for _ in range(args.repeat):
            for chunk in (plugins[:half], plugins[half:]):
                cpu, wall, rss, rc, out = run(stock_vol, xdg_stock, symbols, dump, STOCK)
                stock.append((cpu, wall, rss))
                outputs["stock"] = out
                for pl in chunk:
                    cpu, wall, rss, rc, out = run(ours_vol, xdg_ours, symbols, dump, pl)
                    ours[pl].append((cpu, wall, rss, rc))
                    if pl == STOCK:
                        outputs["ours"] = out
        med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
        s_cpu = med(stock, 0)
        rows.append([name, f"{STOCK} (stock venv)", f"{s_cpu:.2f}", f"{med(stock, 1):.2f}",
                     f"{med(stock, 2):.0f}", "1.00", ""])
        for pl in plugins:
            cpu, wall, rss = med(ours[pl], 0), med(ours[pl], 1), med(ours[pl], 2)
            rcs = sorted({x[3] for x in ours[pl]})
            if pl == STOCK:   # a stock plugin with our package: faster than stock, no bigger
                checks = (("ratio", cpu < s_cpu), ("rss", rss <= med(stock, 2)))
            else:
                checks = (("cpu", cpu <= MAX_CPU), ("rss", rss <= MAX_RSS_MB),
                          ("ratio", cpu <= MAX_RATIO * s_cpu))
            fails = [t for t, ok in checks if not ok]
            note = "ok" if not fails else "MISSED " + ",".join(fails)
            if rcs != [0]:
                note += f" (exit {rcs})"
            if pl == STOCK and "ours" in outputs:
                if outputs["ours"] == outputs["stock"]:
                    note += "; same output"
                else:  # stock Volatility has no LA57/AArch64 layer: it lists nothing there
                    lines = [outputs[k].count(b"\n") for k in ("stock", "ours")]
                    note += f"; output: stock {lines[0]} lines, ours {lines[1]}"
            rows.append([name, pl, f"{cpu:.2f}", f"{wall:.2f}", f"{rss:.0f}", f"{cpu / s_cpu:.2f}", note])
        if cold is not None:
            rows.append([name, f"{plugins[0]} (1st run)", f"{cold[0]:.2f}", f"{cold[1]:.2f}",
                         f"{cold[2]:.0f}", f"{cold[0] / s_cpu:.2f}", "no ktstr caches"])
        print(f"{name}: done", file=sys.stderr)

    print(f"vol end to end, warm caches, medians of {args.repeat} interleaved rounds; "
          f"targets: CPU <= {MAX_CPU} s, RSS <= {MAX_RSS_MB} MB, CPU <= {MAX_RATIO} x stock pslist "
          f"(our {STOCK}: less CPU and RSS than stock's)")
    print(fmt_row(header, widths))
    for r in rows:
        print(fmt_row(r, widths))
    missed = [r for r in rows if "MISSED" in r[-1] or "exit" in r[-1]]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
