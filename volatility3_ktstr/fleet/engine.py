"""The fleet run on Dask: probe every dump, one symbol table per kernel, triage per dump.

Without a scheduler address a LocalCluster of worker processes (one thread each, as many as
the machine has cores, or ``workers``) runs in this process; with one, the same tasks go to
that cluster (its workers need this package and must see the dump paths).

Pipeline: ``probe(dump)`` once per file identity (hard links share one probe and one SHA-256;
a hash remembered in DIR/state.json by path or inode is not computed again) -> as soon as the
first dump of a kernel (the banner that names it) is probed, that kernel's ``prepare_kernel``
(an ISF on the symbol path, else made from that dump) -> each dump's ``triage(probe,
kernel)`` as soon as its probe is back, whose input is that kernel's ISF (Dask ships the bytes
to the workers that need them). Priorities make a worker take a kernel task first, then
triages, then the remaining probes. A worker that dies has its task rerun elsewhere; a task
that killed ``ALLOWED_FAILURES + 1`` workers is marked in its row. Each finished dump is
written to DIR at once (rows/<sha256>.json, dumps/<name>/<plugin>.json), so a run cut short
loses no finished row, and a rerun skips every dump whose content already has a row for the
same plugins.
"""

import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import discover, summarize, tasks

ALLOWED_FAILURES = 1      # a dump's task is retried once after its worker died


@dataclasses.dataclass
class RunStats:
    dumps: int = 0
    reused: int = 0
    probed: int = 0
    triaged: int = 0
    kernels_prepared: int = 0
    seconds: float = 0.0
    started_cluster: bool = False


class Store:
    """DIR's finished rows and the hashes of files already seen (all writes atomic)."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = Path(out_dir)
        (self.dir / "rows").mkdir(parents=True, exist_ok=True)
        (self.dir / "dumps").mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        try:
            state = json.loads(self.state_path.read_text())
            self.hashes: Dict[str, str] = dict(state["hashes"])
        except (OSError, ValueError, KeyError, TypeError):
            state, self.hashes = {}, {}
        # sha256 by inode key (device, inode, size, mtime): a hard link of a dump seen before,
        # under any name, is not hashed again.
        inodes = state.get("inodes") if isinstance(state, dict) else None
        self.inodes: Dict[str, str] = dict(inodes) if isinstance(inodes, dict) else {}

    @staticmethod
    def _write(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def save_state(self) -> None:
        self._write(self.state_path, json.dumps({"hashes": self.hashes, "inodes": self.inodes},
                                                indent=1, sort_keys=True))

    def known_hash(self, path: str) -> Optional[str]:
        """The sha256 of a file this folder has seen (by path identity, else by inode)."""
        sk, ik = discover.stat_key(path), discover.inode_key(path)
        return self.hashes.get(sk or "") or self.inodes.get(ik or "")

    def remember(self, path: str, sha: str) -> None:
        sk, ik = discover.stat_key(path), discover.inode_key(path)
        if sk:
            self.hashes[sk] = sha
        if ik:
            self.inodes[ik] = sha

    def row_path(self, sha: str, key: str) -> Path:
        return self.dir / "rows" / f"{sha[:32]}-{key}.json"

    def row(self, sha: str, key: str) -> Optional[Dict[str, Any]]:
        try:
            return json.loads(self.row_path(sha, key).read_text())
        except (OSError, ValueError):
            return None

    def put(self, name: str, result: Dict[str, Any], key: str) -> Dict[str, Any]:
        row = dict(result["row"])
        row["name"] = name
        folder = self.dir / "dumps" / discover.safe_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        for plugin, text in result.get("outputs", {}).items():
            self._write(folder / f"{plugin}.json", text)
        if result.get("errors"):
            self._write(folder / "errors.json", json.dumps(result["errors"], indent=1,
                                                           sort_keys=True))
        if row.get("sha256") and not (row.get("error") or "").startswith("worker died"):
            self._write(self.row_path(row["sha256"], key), json.dumps(row, sort_keys=True))
        return row


def plugins_key(plugins: Sequence[str]) -> str:
    """Rows are reused only for the same plugin list and row format."""
    text = "\0".join(sorted(plugins)) + f"\0v{tasks.TASK_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Progress:
    """A one-line console progress bar (stderr), redrawn on each finished dump."""

    def __init__(self, total: int, enabled: bool = True, width: int = 30) -> None:
        self.total, self.done, self.enabled, self.width = total, 0, enabled, width
        self.t0 = time.perf_counter()
        self.last = ""

    def step(self, label: str = "") -> None:
        self.done += 1
        self.draw(label)

    def draw(self, label: str = "") -> None:
        if not self.enabled or not self.total:
            return
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        text = (f"\r[{bar}] {self.done}/{self.total} dumps "
                f"{time.perf_counter() - self.t0:6.1f}s {label[:40]:<40}")
        sys.stderr.write(text)
        sys.stderr.flush()
        if self.done >= self.total:
            sys.stderr.write("\n")


def _client(scheduler: Optional[str], workers: Optional[int]):
    import dask
    from distributed import Client, LocalCluster

    dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                     "distributed.worker.daemon": False})
    if scheduler:
        return Client(scheduler, timeout="30s"), None
    n = workers or max(1, os.cpu_count() or 1)
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=40)
    return Client(cluster), cluster


def _failure_row(info: Dict[str, Any], err: BaseException) -> Dict[str, Any]:
    row: Dict[str, Any] = {c: None for c in summarize.COLUMNS}
    for k in ("file", "format", "size", "sha256"):
        row[k] = info.get(k)
    row["kernel_release"] = summarize.release_of(info.get("banner"))
    row["arch"] = info.get("arch")
    if type(err).__name__ == "KilledWorker":
        row["error"] = (f"worker died while triaging this dump, {ALLOWED_FAILURES + 1} times "
                        "(killed or out of memory)")
    else:
        row["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
    return {"row": row, "outputs": {}, "errors": {}}


def run(inputs: Sequence[discover.DumpInput], out_dir: str, scheduler: Optional[str] = None,
        workers: Optional[int] = None, plugins: Optional[Sequence[str]] = None,
        timeout: float = 900.0, symbol_dirs: Sequence[str] = (), progress: bool = True,
        on_row: Optional[Callable[[Dict[str, Any]], None]] = None) -> "tuple[List[Dict[str, Any]], RunStats]":
    """Triage ``inputs`` into ``out_dir``; returns (rows in input order, stats)."""
    t0 = time.perf_counter()
    store = Store(Path(out_dir))
    if plugins is None:
        from . import inprocess

        plugins = inprocess.ktstr_plugins()
    key = plugins_key(plugins)
    stats = RunStats(dumps=len(inputs))
    rows: Dict[str, Dict[str, Any]] = {}
    todo: List[discover.DumpInput] = []
    for d in inputs:
        sha = store.known_hash(d.path)
        done = store.row(sha, key) if sha else None
        if done is not None:
            done["name"], done["file"] = d.name, d.path
            rows[d.name] = done
            stats.reused += 1
        else:
            todo.append(d)
    bar = Progress(len(inputs), progress)
    bar.done = stats.reused
    if todo:
        bar.draw("starting Dask")
        client, cluster = _client(scheduler, workers)
        stats.started_cluster = True
        try:
            _run_todo(client, todo, store, key, list(plugins), timeout, list(symbol_dirs),
                      rows, stats, bar, on_row)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    store.save_state()
    ordered = [rows[d.name] for d in inputs if d.name in rows]
    summarize.mark_unique_programs(ordered)
    stats.seconds = time.perf_counter() - t0
    return ordered, stats


# Dask runs the ready task of highest priority first: a kernel's table as soon as its first
# dump is probed, then triages (which wait for it), then the remaining probes.
PRIORITY_KERNEL, PRIORITY_TRIAGE, PRIORITY_PROBE = 20, 10, 0


def _run_todo(client, todo, store, key, plugins, timeout, symbol_dirs, rows, stats, bar,
              on_row) -> None:
    """The pipeline: one probe per file identity (hard links share it, and its hash); a
    kernel's table task submitted when the first dump of that kernel is probed; each dump's
    triage submitted when its probe is back. Nothing waits for the whole fleet to be hashed."""
    from distributed import as_completed

    by_name = {d.name: d for d in todo}
    groups: Dict[str, List[str]] = {}          # file identity -> names (hard links)
    for d in todo:
        ident = discover.inode_key(d.path) or f"path:{d.path}"
        groups.setdefault(ident, []).append(d.name)
    pending: Dict[str, Dict[str, Any]] = {}
    kernel_futs: Dict[str, Any] = {}
    kernel_dumps: Dict[str, List[str]] = {}
    futs: Dict[Any, "tuple[str, Any]"] = {}
    queue = as_completed()
    for ident, names in groups.items():
        leader = by_name[names[0]]
        fut = client.submit(tasks.probe, leader.path, store.known_hash(leader.path),
                            pure=False, priority=PRIORITY_PROBE)
        futs[fut] = ("probe", ident)
        queue.add(fut)

    def finish(name: str, result: Dict[str, Any]) -> None:
        row = store.put(name, result, key)
        row["file"] = by_name[name].path
        rows[name] = row
        stats.triaged += 1
        bar.step(name)
        if on_row:
            on_row(row)

    def probed(ident: str, info: Dict[str, Any]) -> None:
        names = groups[ident]
        stats.probed += 1
        sha = info.get("sha256")
        for name in names:
            if sha:
                store.remember(by_name[name].path, sha)
        store.save_state()
        for i, name in enumerate(names):
            mine = dict(info, file=by_name[name].path)
            if i:       # a hard link: the leader's probe is its probe (no work of its own)
                mine["seconds"] = mine["cpu_seconds"] = 0.0
                if not str(mine.get("format") or "").endswith("+zstd"):
                    mine["open_path"] = by_name[name].path
            done = store.row(sha, key) if sha else None
            if done is not None:         # content seen before (a copy, a renamed file)
                done["name"], done["file"] = name, by_name[name].path
                rows[name] = done
                stats.reused += 1
                bar.step(name)
                continue
            pending[name] = mine
            banner = mine.get("banner") if not mine.get("error") else None
            kernel = None
            if banner is not None:
                if banner not in kernel_futs:
                    banners = [banner] + [b for b in mine.get("banners", []) if b != banner]
                    kernel_futs[banner] = client.submit(
                        tasks.prepare_kernel, banners, [mine], symbol_dirs,
                        pure=False, priority=PRIORITY_KERNEL)
                    kernel_dumps[banner] = []
                    stats.kernels_prepared += 1
                kernel_dumps[banner].append(name)
                kernel = kernel_futs[banner]
            fut = client.submit(tasks.triage, mine, kernel, plugins, timeout, symbol_dirs,
                                pure=False, priority=PRIORITY_TRIAGE)
            futs[fut] = ("triage", name)
            queue.add(fut)

    for fut in queue:
        kind, what = futs.pop(fut)
        if kind == "probe":
            leader = by_name[groups[what][0]]
            try:
                info = fut.result()
            except Exception as e:
                info = {"file": leader.path, "open_path": leader.path,
                        "error": f"probe failed: {type(e).__name__}: {e}"}
            probed(what, info)
        else:
            try:
                result = fut.result()
            except BaseException as e:       # KilledWorker, a failed kernel task, ...
                if isinstance(e, KeyboardInterrupt):
                    raise
                result = _failure_row(pending[what], e)
            finish(what, result)
        fut.release()
    kernels_log = []
    for banner, fut in kernel_futs.items():
        try:
            info = fut.result()
        except BaseException as e:          # a worker died: the dumps' rows say so
            info = {"error": f"{type(e).__name__}: {e}"}
        kernels_log.append({"banner": banner, "dumps": kernel_dumps[banner],
                            **{k: v for k, v in info.items() if k != "isf_bytes"}})
    if kernels_log:
        Store._write(store.dir / "kernels.json", json.dumps(kernels_log, indent=1, default=str))


def table_columns(rows: Sequence[Dict[str, Any]]) -> List[str]:
    plugins = sorted({p for r in rows for p in (r.get("per_plugin") or {})})
    return list(summarize.COLUMNS) + ["plugin_errors"] + \
        [f"{p}_{m}" for p in plugins for m in ("seconds", "peak_rss_mb")]


def flat_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Rows as table records: per-plugin figures as <plugin>_seconds / <plugin>_peak_rss_mb."""
    cols = table_columns(rows)
    out = []
    for r in rows:
        flat = {c: r.get(c) for c in cols if c in summarize.COLUMNS or c == "plugin_errors"}
        for p, fig in (r.get("per_plugin") or {}).items():
            flat[f"{p}_seconds"] = fig.get("seconds")
            flat[f"{p}_peak_rss_mb"] = fig.get("peak_rss_mb")
        out.append({c: flat.get(c) for c in cols})
    return out


def write_table(rows: Sequence[Dict[str, Any]], out_dir: str) -> Dict[str, str]:
    """DIR/triage.parquet and DIR/triage.csv, one row per dump."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    records = flat_rows(rows)
    cols = table_columns(rows)
    out = Path(out_dir)
    csv_path, pq_path = out / "triage.csv", out / "triage.parquet"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for rec in records:
            w.writerow({k: "" if v is None else v for k, v in rec.items()})
    types = {"size": pa.int64(), "exit_code": pa.int64(), "stalled_tasks": pa.int64(),
             "bpf_maps": pa.int64(), "bpf_progs": pa.int64(), "bpf_links": pa.int64(),
             "hidden_objects": pa.int64(), "unverifiable_objects": pa.int64(),
             "flagged_programs": pa.int64(),
             "damage": pa.int64(), "seconds": pa.float64(), "probe_seconds": pa.float64(),
             "cpu_seconds": pa.float64(), "probe_cpu_seconds": pa.float64(),
             "started": pa.float64(),
             "peak_rss_mb": pa.float64(),
             "exit_time_s": pa.float64()}
    fields = []
    for c in cols:
        t = types.get(c) or (pa.float64() if c.endswith(("_seconds", "_peak_rss_mb"))
                             else pa.string())
        fields.append(pa.field(c, t))
    table = pa.Table.from_pylist(records, schema=pa.schema(fields))
    pq.write_table(table, pq_path)
    return {"csv": str(csv_path), "parquet": str(pq_path)}
