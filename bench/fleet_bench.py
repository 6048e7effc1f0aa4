"""Fleet triage vs `vol` once per dump and plugin, and the n-th dump of a kernel vs the first.

    KTSTR_DUMPS=/path/to/dumps python bench/fleet_bench.py [--dump x86_64/scx_sdt] [--hosts 20]
        [--vol-sample 2] [--workers 2]

A fleet of ``--hosts`` dumps of one kernel: hard links of one shared dump (decompressed by
tests/dumps.py) under ~/.cache/ktstr-bench/fleet/hosts/ (``KTSTR_BENCH_CACHE`` moves it). The
fleet probes and hashes one file identity once, so the bench also prints the figures a fleet of
distinct files would give (every dump paying the probe the first one paid). Timed, each as a separate process
(CPU = user+sys of the process and the children it waited for, os.wait4):

1. ``ktstr-triage`` on the whole fleet with every linux.ktstr plugin, a fresh --out each time
   (``--workers`` local Dask workers; the kernel's ISF is on the symbol path: the dump's own,
   built like the tests build it; Volatility's caches warm);
2. the same with one worker, so that dumps run one after the other in one process: each row's
   ``cpu_seconds`` + ``probe_cpu_seconds`` (and, for the first, the kernel task's CPU from
   kernels.json) then say what the first and the n-th dump of the kernel cost;
3. `vol -q -r json -f DUMP PLUGIN` for every plugin on ``--vol-sample`` of the hosts (the hosts
   are the same bytes, so the rest cost the same: the figure for the fleet is scaled up, and
   says so; ``--vol-sample`` = ``--hosts`` runs them all).

Targets (issue 26): fleet CPU <= 1/3 of the vol runs' CPU for the same fleet; the n-th dump's
seconds (median of dumps 2..N in the one-worker run) <= 1/3 of the first's. Exit status 1 when
one is missed.
"""

import argparse
import json
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

BENCH = Path(os.environ.get("KTSTR_BENCH_CACHE", "~/.cache/ktstr-bench")).expanduser() / "fleet"


def timed(argv, env):
    """(cpu s, wall s, rc, stdout) of one process and the children it waited for."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            cwd=str(BENCH))
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    return usage.ru_utime + usage.ru_stime, wall, os.waitstatus_to_exitcode(status), out


def make_hosts(name, n):
    src = dumps.dump_path(name)
    hosts = BENCH / "hosts"
    if hosts.exists():
        shutil.rmtree(hosts)
    hosts.mkdir(parents=True)
    out = []
    for i in range(n):
        dst = hosts / f"host{i:02d}.raw"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        out.append(dst)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dump", default="x86_64/scx_sdt")
    p.add_argument("--hosts", type=int, default=20)
    p.add_argument("--vol-sample", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if dumps.dumps_root() is None:
        raise SystemExit("KTSTR_DUMPS is not set (the dumps folder)")
    BENCH.mkdir(parents=True, exist_ok=True)
    hosts = make_hosts(args.dump, args.hosts)
    sym = volrun.kernel_isf_dir(args.dump)
    env = volrun.vol_env({"KTSTR_FLEET_CACHE": str(BENCH / "cache")})
    for var in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"):
        env.pop(var, None)
    triage = volrun.venv_bin("ktstr-triage")
    plugins = volrun.ktstr_plugins()

    def fleet_run(workers, tag):
        out = BENCH / f"out-{tag}"
        shutil.rmtree(out, ignore_errors=True)
        cpu, wall, rc, text = timed([triage, str(BENCH / "hosts"), "--out", str(out), "-s",
                                     str(sym), "--workers", str(workers), "--no-progress"], env)
        if rc != 0:
            raise SystemExit(f"ktstr-triage exited {rc}: {text.decode()[-2000:]}")
        import pyarrow.parquet as pq

        rows = pq.read_table(out / "triage.parquet").to_pylist()
        errors = [r["error"] for r in rows if r["error"]]
        if errors or len(rows) != args.hosts:
            raise SystemExit(f"fleet run: {len(rows)} rows, errors {errors[:3]}")
        return cpu, wall, rows

    # Warm-up: Volatility's ISF validation and compact copy, bytecode (untimed).
    fleet_run(1, "warmup")
    cpu_n, wall_n, _rows = fleet_run(args.workers, f"w{args.workers}")
    cpu_1, wall_1, rows_1 = fleet_run(1, "w1")
    # A dump's cost in CPU (wall figures move with the machine's load): its probe (content
    # hash, banner) and its triage (every plugin), in the worker process that ran it. The first
    # dump of the kernel also pays the kernel's task (find or make the ISF, decode and
    # validate it), which ran in that same worker before it.
    # The hosts are hard links: one probe (and one hash) serves them all, so the probe's CPU
    # (in the rows of the whole identity group: the largest) goes to the first dump; the
    # worker's imports of Volatility land there and in the kernel task too.
    kernels = json.loads((BENCH / "out-w1" / "kernels.json").read_text())
    kernel_cpu = sum(k.get("cpu_seconds") or 0.0 for k in kernels)
    probe_cpu = max((r["probe_cpu_seconds"] or 0.0) for r in rows_1)
    by_start = sorted(rows_1, key=lambda r: r["started"])
    cost = [r["cpu_seconds"] for r in by_start]
    secs = cost
    first = cost[0] + kernel_cpu + probe_cpu
    rest = cost[1:]
    nth = statistics.median(rest) if rest else first
    # What a distinct file's own probe costs in a warm process (banner scan + SHA-256).
    code = ("import sys, time; from volatility3_ktstr.fleet import tasks; "
            "tasks.probe(sys.argv[1]); tasks._HASHES_BY_INODE.clear(); "
            "c = time.process_time(); tasks.probe(sys.argv[1]); "
            "print(time.process_time() - c)")
    own_probe = float(subprocess.run([sys.executable, "-c", code, str(hosts[0])], env=env,
                                     capture_output=True, text=True, check=True,
                                     cwd=str(BENCH)).stdout.split()[-1])

    sample = hosts[:max(1, min(args.vol_sample, len(hosts)))]
    vol = volrun.venv_bin("vol")
    cache = volrun.identifier_cache_dir([str(sym)], env["XDG_CACHE_HOME"])
    vol_cpu = vol_wall = 0.0
    for dump in sample:
        for plugin in plugins:
            argv = [vol, "-q", "-r", "json", "--cache-path", str(cache), "-s", str(sym),
                    "-f", str(dump), *volrun.plugin_dir_args(), plugin]
            c, w, rc, _ = timed(argv, env)
            vol_cpu += c
            vol_wall += w
    scale = len(hosts) / len(sample)
    vol_cpu_fleet, vol_wall_fleet = vol_cpu * scale, vol_wall * scale

    print(f"fleet: {len(hosts)} hard links of {args.dump} (one kernel), {len(plugins)} plugins")
    print(f"ktstr-triage, {args.workers} workers: CPU {cpu_n:7.1f} s  wall {wall_n:6.1f} s")
    print(f"ktstr-triage, 1 worker:  CPU {cpu_1:7.1f} s  wall {wall_1:6.1f} s")
    print(f"vol per dump and plugin: CPU {vol_cpu_fleet:7.1f} s  wall {vol_wall_fleet:6.1f} s"
          f"  ({len(sample) * len(plugins)} runs on {len(sample)} hosts, x{scale:g})")
    ratio = cpu_n / vol_cpu_fleet
    print(f"fleet CPU / vol CPU = {ratio:.3f} (target <= 0.333)  wall ratio "
          f"{wall_n / vol_wall_fleet:.3f}")
    print(f"CPU per dump, 1 worker, in start order: kernel task {kernel_cpu:.2f} s "
          f"({kernels[0].get('source', '')[:60]}); dumps " + " ".join(f"{c:.2f}" for c in secs))
    print(f"first dump of the kernel {first:.2f} s CPU (kernel task + the probe of all the "
          f"hard links, {probe_cpu:.2f} s + triage), n-th "
          f"dump median {nth:.2f} s (of {len(rest)}): ratio {nth / first:.3f} (target <= 0.333)")
    # The hosts are hard links: the fleet probes and hashes them once (one file identity).
    # A fleet of distinct files pays a probe (banner scan + SHA-256) per dump: the figures
    # below add the one probe's CPU to every other dump.
    nth_distinct = nth + own_probe
    ratio_distinct = (cpu_n + (len(hosts) - 1) * own_probe) / vol_cpu_fleet
    print(f"if every host were a distinct file (each its own probe: banner scan + SHA-256, "
          f"{own_probe:.2f} s CPU warm): fleet/vol {ratio_distinct:.3f}, n-th/first "
          f"{nth_distinct / first:.3f}")
    print(json.dumps({"fleet_cpu": cpu_n, "fleet_wall": wall_n, "vol_cpu": vol_cpu_fleet,
                      "vol_wall": vol_wall_fleet, "ratio": ratio, "first": first, "nth": nth,
                      "probe_cpu": probe_cpu, "own_probe": own_probe,
                      "ratio_distinct": ratio_distinct,
                      "nth_distinct": nth_distinct}))
    return 0 if ratio <= 1 / 3 and nth <= first / 3 else 1


if __name__ == "__main__":
    sys.exit(main())
