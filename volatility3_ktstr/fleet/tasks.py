"""What a Dask worker runs: probe a dump, make a kernel's symbol table once, triage a dump.

Plain functions of picklable values (paths, dicts, bytes), so they run the same in a local
cluster and on remote workers that have the package installed and see the dump paths.
Each worker process keeps Volatility imported and every decoded ISF (volpatches' memo), so the
n-th dump of a kernel costs its own reads only.
"""

import ctypes
import re
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..isf.output import cache_home
from . import discover, summarize

TASK_VERSION = 2      # part of every result key: a change in what a row holds re-triages


def fleet_cache() -> Path:
    """This machine's fleet cache (decompressed dumps, the kernels' symbol tables)."""
    return Path(os.environ.get("KTSTR_FLEET_CACHE") or cache_home() / "volatility3-ktstr" / "fleet")


def symbols_dir() -> Path:
    """Where a worker keeps the symbol tables the fleet made or found (a `-s` dir)."""
    return fleet_cache() / "symbols"


MAX_BANNERS = 16
_BUILD_BANNER = re.compile(rb"\) #\d+ ")


def _is_build_banner(banner: bytes) -> bool:
    return bool(_BUILD_BANNER.search(banner)) and banner.endswith(b"\n\0")


def kernel_banner(banners: Sequence[bytes]) -> Optional[str]:
    """The banner that names the running kernel among those a dump holds (stray copies, e.g.
    a "# SMP" template, lack the build number): the key dumps are grouped by."""
    for b in banners:
        if _is_build_banner(b):
            return b.decode("latin-1")
    return banners[0].decode("latin-1") if banners else None


# Hashes this process computed, by inode key: a hard link of a dump hashed here is not read
# again (the engine shares them between processes, see engine.Store).
_HASHES_BY_INODE: Dict[str, str] = {}


def _hash_thread(path: str, out: Dict[str, Any]) -> threading.Thread:
    def work() -> None:
        try:
            out["sha256"] = discover.content_hash(path)
        except Exception as e:        # the probe's row says it
            out["hash_error"] = f"cannot read: {type(e).__name__}: {e}".splitlines()[0][:300]

    thread = threading.Thread(target=work, name="ktstr-hash", daemon=True)
    thread.start()
    return thread


def probe(path: str, sha256: Optional[str] = None) -> Dict[str, Any]:
    """Format, size, content hash, banner and arch of a dump; the file to open (a decompressed
    copy of a zstd file). ``error`` says why the file cannot be triaged.

    The hash (``sha256`` when the caller knows it for these bytes, else computed once per
    inode in this process) runs in a thread while this one scans for the banner: the file's
    pages are read from the page cache by both, and the probe costs the longer of the two in
    wall time. The scan stops at the running kernel's banner (the one the dump is grouped by)."""
    out: Dict[str, Any] = {"file": path, "format": None, "size": None, "sha256": sha256,
                           "open_path": path, "banner": None, "arch": None, "error": None}
    t0, c0 = time.perf_counter(), time.process_time()
    hashing: Optional[threading.Thread] = None
    local = path
    try:
        local = out["open_path"] = discover.localize(path, fleet_cache() / "remote")
        out["size"] = os.path.getsize(local)
        ikey = discover.inode_key(local)
        if out["sha256"] is None and ikey:
            out["sha256"] = _HASHES_BY_INODE.get(ikey)
        head = discover._head(local)
        if out["sha256"] is None:
            if head.startswith(discover.ZSTD_MAGIC):     # the copy is named by the hash
                out["sha256"] = discover.content_hash(local)
            else:
                hashing = _hash_thread(local, out)
        if head.startswith(discover.ZSTD_MAGIC):
            out["open_path"] = discover.decompressed_copy(local, out["sha256"],
                                                          fleet_cache() / "dumps",
                                                          _plain_name(path))
        from ..dumpfile import open_image
        from ..layers.autoisf import iter_banners

        image = open_image(out["open_path"])
        try:
            out["format"] = image.format + ("+zstd" if out["open_path"] != local else "")
            banners: List[bytes] = []
            for _phys, text in iter_banners(image):
                if text not in banners:
                    banners.append(text)
                if len(banners) >= MAX_BANNERS or _is_build_banner(text):
                    break
            out["banners"] = [b.decode("latin-1") for b in banners]
            out["banner"] = kernel_banner(banners)
        finally:
            image.close()
        out["arch"] = summarize.arch_of(out["banner"])
        if out["banner"] is None:
            out["error"] = "no Linux banner in the file (not a Linux memory image, or its " \
                           "kernel pages are missing)"
    except Exception as e:      # one line per unreadable file, never a traceback
        out["error"] = f"cannot read: {type(e).__name__}: {e}".splitlines()[0][:300]
    if hashing is not None:
        hashing.join()
        if out.get("hash_error") and not out["error"]:
            out["error"] = out["hash_error"]
        out.pop("hash_error", None)
    ikey = discover.inode_key(local)
    if ikey and out["sha256"]:
        _HASHES_BY_INODE[ikey] = out["sha256"]
    out["seconds"] = round(time.perf_counter() - t0, 3)
    out["cpu_seconds"] = round(time.process_time() - c0, 3)
    return out


def _plain_name(path: str) -> str:
    name = os.path.basename(path.rstrip("/")) or "dump"
    for ext in (".zst", ".zstd"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name


def local_dump(probe_info: Dict[str, Any]) -> str:
    """The file a worker opens for a probed dump: the probe's ``open_path`` when this worker
    has it, else made here as the probe made it (another machine of the cluster probed it: an
    fsspec URL copied into this worker's cache, a zstd file decompressed into it)."""
    have = probe_info.get("open_path")
    if have and os.path.isfile(have):
        return have
    local = discover.localize(probe_info["file"], fleet_cache() / "remote")
    if discover._head(local).startswith(discover.ZSTD_MAGIC):
        return discover.decompressed_copy(local, probe_info["sha256"], fleet_cache() / "dumps",
                                          _plain_name(probe_info["file"]))
    return local


def _known_isf(banner: bytes, symbol_dirs: Sequence[str]) -> Optional[str]:
    """Path of an ISF on the symbol path whose banner is ``banner`` (Volatility's index)."""
    import urllib.parse
    import urllib.request

    from . import inprocess

    inprocess.set_symbol_dirs(list(symbol_dirs))
    from volatility3.framework.automagic import symbol_cache

    manager = symbol_cache.load_cache_manager()
    manager.update()
    known = manager.get_identifier_dictionary(operating_system="linux")
    for key in (banner, banner.rstrip(b"\0\n") + b"\n\0"):
        url = known.get(key)
        if url:
            parsed = urllib.parse.urlparse(url)
            if parsed.scheme == "file":
                return urllib.request.url2pathname(parsed.path)
    return None


def prepare_kernel(banners: Sequence[str], candidates: Sequence[Any],
                   symbol_dirs: Sequence[str] = ()) -> Dict[str, Any]:
    """The symbol table (ISF) of one kernel, once for all its dumps: one already on the symbol
    path, else made from the first of ``candidates`` (dump files of that kernel, or their probe
    results: a file this worker may have to fetch or decompress first) that holds
    the kernel's BTF and kallsyms. Returns {isf_name, isf_bytes, source, seconds, error}."""
    t0, c0 = time.perf_counter(), time.process_time()
    dirs = [str(symbols_dir())] + list(symbol_dirs)
    symbols_dir().joinpath("linux").mkdir(parents=True, exist_ok=True)
    found = None
    for banner in banners:
        try:
            found = _known_isf(banner.encode("latin-1"), dirs)
        except Exception:      # an unreadable symbol folder: make the table instead
            found = None
        if found:
            warm_isf(found)
            return {"isf_name": os.path.basename(found), "isf_bytes": Path(found).read_bytes(),
                    "source": f"found {found}", "seconds": time.perf_counter() - t0,
                    "cpu_seconds": time.process_time() - c0, "error": None}
    from ..dumpfile import open_image
    from ..isf import fromdump
    from ..isf.output import write_isf

    errors = []
    for candidate in candidates:
        path = local_dump(candidate) if isinstance(candidate, dict) else candidate
        try:
            image = open_image(path)
            try:
                c = fromdump.carve(image, os.path.basename(path))
            finally:
                image.close()
            isf, made_banner = fromdump.build_isf(c)
            out = fromdump.default_path(str(symbols_dir() / "linux"), made_banner, c.arch)
            tmp = out + f".{os.getpid()}.tmp.json.gz"
            write_isf(isf, tmp)
            os.replace(tmp, out)
            warm_isf(out)
            return {"isf_name": os.path.basename(out), "isf_bytes": Path(out).read_bytes(),
                    "source": f"made from {path}", "seconds": time.perf_counter() - t0,
                    "cpu_seconds": time.process_time() - c0, "error": None}
        except Exception as e:
            errors.append(f"{os.path.basename(path)}: {e}".splitlines()[0][:200])
    return {"isf_name": None, "isf_bytes": None, "source": None,
            "seconds": time.perf_counter() - t0,
            "error": "no symbol table for this kernel on the symbol path, and none could be "
                     "made from its dumps (" + "; ".join(errors[:3]) + ")"}


def warm_isf(path: str) -> None:
    """Decode and validate an ISF once here, so that the worker processes of this machine find
    its validation (Volatility's cache, by content) and its compact copy (volpatches) ready,
    instead of each validating the same table (about a minute of CPU) at its first dump."""
    import urllib.request

    from . import inprocess

    inprocess._import_plugins()            # applies volpatches (compact ISF cache)
    from volatility3 import schemas

    from .. import volpatches

    url = "file:" + urllib.request.pathname2url(os.path.abspath(path))
    schemas.validate(volpatches.load_isf(url))


def install_isf(kernel: Optional[Dict[str, Any]]) -> None:
    """Put a prepared kernel ISF into this worker's fleet symbol folder (once per file)."""
    if not kernel or not kernel.get("isf_name") or kernel.get("isf_bytes") is None:
        return
    target = symbols_dir() / "linux" / kernel["isf_name"]
    if target.is_file() and target.stat().st_size == len(kernel["isf_bytes"]):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(kernel["isf_bytes"])
    os.replace(tmp, target)


class _Timeout(BaseException):
    """Raised inside a triage thread that ran past --timeout."""


def _interrupt(thread: threading.Thread) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident or 0),
                                               ctypes.py_object(_Timeout))


def _run_plugins(probe_info: Dict[str, Any], plugins: Sequence[str], symbol_dirs: List[str],
                 result: Dict[str, Any]) -> None:
    from . import inprocess

    session = inprocess.DumpSession(local_dump(probe_info), symbol_dirs)
    result["paging"] = None
    for plugin in plugins:
        run = session.run(plugin)
        result["runs"].append(run)
        if result["paging"] is None:
            result["paging"] = session.paging()


def triage(probe_info: Dict[str, Any], kernel: Optional[Dict[str, Any]], plugins: Sequence[str],
           timeout: float, symbol_dirs: Sequence[str] = ()) -> Dict[str, Any]:
    """Every plugin on one dump, in this process. Returns {"row": table row, "outputs":
    {plugin: `vol -r json` text}, "errors": {plugin: one line}}; never raises for a bad dump."""
    t0, c0, started = time.perf_counter(), time.process_time(), time.time()
    row: Dict[str, Any] = {c: None for c in summarize.COLUMNS}
    for k in ("file", "format", "size", "sha256"):
        row[k] = probe_info.get(k)
    row["kernel_release"] = summarize.release_of(probe_info.get("banner"))
    row["arch"] = probe_info.get("arch")
    result: Dict[str, Any] = {"runs": [], "paging": None, "error": None}
    if probe_info.get("error"):
        row["error"] = probe_info["error"]
    elif kernel and kernel.get("error"):
        row["error"] = kernel["error"]
    else:
        install_isf(kernel)
        dirs = [str(symbols_dir())] + list(symbol_dirs)

        def work() -> None:
            try:
                _run_plugins(probe_info, plugins, dirs, result)
            except _Timeout:
                result["error"] = f"timed out after {timeout:g} s"
            except Exception as e:      # OpenError and anything Volatility raises
                result["error"] = f"{e}".splitlines()[0][:300] or type(e).__name__

        thread = threading.Thread(target=work, name="ktstr-triage", daemon=True)
        thread.start()
        thread.join(timeout if timeout and timeout > 0 else None)
        if thread.is_alive():
            _interrupt(thread)
            thread.join(10)
            done = len(result["runs"])
            result["error"] = (f"timed out after {timeout:g} s (in "
                               f"{plugins[done] if done < len(plugins) else 'the last plugin'}; "
                               f"{done} of {len(plugins)} plugins done)")
        row["paging"] = result.get("paging")
        row["error"] = result["error"]
    outputs: Dict[str, str] = {}
    errors: Dict[str, str] = {}
    parsed: Dict[str, List[Dict[str, Any]]] = {}
    per_plugin: Dict[str, Dict[str, Any]] = {}
    for run in result["runs"]:
        short = run.plugin.rsplit(".", 1)[-1]
        per_plugin[short] = {"seconds": round(run.seconds, 3),
                             "peak_rss_mb": None if run.peak_rss_mb is None else
                             round(run.peak_rss_mb, 1), "rc": run.rc}
        if run.rc == 0:
            outputs[run.plugin] = run.json_text
            try:
                parsed[run.plugin] = list(summarize.flatten(json.loads(run.json_text)))
            except ValueError:
                errors[run.plugin] = "output is not JSON"
        else:
            errors[run.plugin] = run.error
    if not row["error"] and result["runs"] and all(r.rc != 0 for r in result["runs"]):
        row["error"] = "every plugin failed: " + next(iter(errors.values()), "")
    row.update(summarize.summarize(parsed))
    row["plugin_errors"] = json.dumps(errors, sort_keys=True) if errors else None
    row["per_plugin"] = per_plugin
    row["seconds"] = round(time.perf_counter() - t0, 3)
    row["probe_seconds"] = probe_info.get("seconds")
    # CPU of this worker process (one task thread): what the dump cost, whatever the load.
    row["cpu_seconds"] = round(time.process_time() - c0, 3)
    row["probe_cpu_seconds"] = probe_info.get("cpu_seconds")
    row["started"] = round(started, 3)
    peaks = [p["peak_rss_mb"] for p in per_plugin.values() if p["peak_rss_mb"] is not None]
    row["peak_rss_mb"] = max(peaks) if peaks else None
    return {"row": row, "outputs": outputs, "errors": errors}
