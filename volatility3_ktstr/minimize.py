"""Minimize a Linux memory dump to the pages that a set of Volatility plugins reads.

The result is a small, real dump: an ELF core whose PT_LOAD segments hold exactly the physical
pages the plugins needed (or, with ``--format raw``, a raw image with every other page zeroed).
Running the same plugins on it gives the same output as on the full dump; the tool checks that.

How it works
------------
1. **Record.** Each plugin runs in its own ``vol`` process (the installed Volatility, same
   command-line flags) whose file layer notes every page of the dump file it reads
   (:class:`PageRecorder`). Stacking is included: page-table walks, the ELF/LiME header checks,
   ``init_task`` validation and VMCOREINFO parsing are ordinary reads and are kept.
2. **Scans are not kept whole.** Banner/VMCOREINFO/``swapper/0`` searches read the whole image
   in large chunks. A read is a *scan read* when it comes from a scanner (Volatility's
   ``_scan_chunk``, ktstr's ``scan_image``) or is at least :data:`SCAN_READ_MIN` bytes long.
   Of a scan read only the pages holding a match of :data:`SCAN_SIGNATURES` (what the Linux
   stackers look for: ``Linux version ...`` banners, VMCOREINFO, the ``swapper/0`` comm) are
   kept, each up to its terminating NUL. Every match is kept, so a stacker walking the hits in
   order sees the same sequence on the small dump; whatever it reads next to a hit is an
   ordinary read and is recorded too.
3. **Write.** Kept pages are merged into runs (``--merge-gap`` also swallows short gaps, with
   their real content, to keep the segment count down) and written as an ELF64 core
   (``e_type`` ET_CORE, ``p_paddr`` = physical address), optionally xz-compressed (``.xz``).
   Raw inputs map file offset to physical address with ``--phys-base``; ELF inputs keep
   their own ``p_paddr`` (their PT_NOTE segments are copied as they are).
4. **Verify.** ``vol -r json`` runs each plugin on the new dump and compares the rows with
   the recording run's; any difference is reported and the exit status is 1.

Library use: :func:`minimize` (record + write + verify), :func:`record_runs`,
:func:`write_elf_core`, :func:`write_raw`, :func:`compare_outputs`. CLI: ``ktstr-minimize``.
"""

import argparse
import array
import concurrent.futures
import dataclasses
import json
import lzma
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

# The image side (re-exported: the library API names them here too).
from .minimize_image import (EM_BY_ARCH, MAX_SEGMENTS, PAGE, MinimizeError, Source,  # noqa: F401
                             _merge_until_fits, _open_out, edge_pages, open_source, page_runs,
                             physical_runs, write_elf_core, write_raw)

# Chunked scans read 16 MiB (+ overlap); plugin reads through page tables are page-sized or a
# few huge pages at most. Anything this big that is not a translated page read is a scan.
SCAN_READ_MIN = 8 << 20
# Functions whose reads of the dump are scans (stack frames are checked up to SCAN_FRAME_DEPTH).
SCAN_FUNCTIONS = frozenset({"_scan_chunk", "scan_image"})
SCAN_FRAME_DEPTH = 8
# (pattern, how far the match's text may extend, to its NUL) -- what the stackers search for.
SCAN_SIGNATURES: Tuple[Tuple[bytes, int], ...] = (
    (rb"Linux version ", 512),
    (rb"OSRELEASE=", 8192),
    (rb"VMCOREINFO\x00", 16),
    (rb"swapper(?:/0|\x00\x00)\x00{6}", 16),
)
MAX_SIGNATURE_HITS = 4096  # per pattern and process: bounds work on a hostile image
# vol's CLI reads sys.argv whole (argv[0] included), so it must not be "-c". Both runs find our
# plugins the same way, with or without the .pth.
_PLAIN = ("import sys; sys.argv[0] = 'vol'; from volatility3_ktstr import _plugin_path; "
          "_plugin_path.install(); from volatility3.cli import main; main()")
_CHILD = "from volatility3_ktstr.minimize import _child_main; raise SystemExit(_child_main())"


# --- recording ------------------------------------------------------------------------------


class PageRecorder:
    """Collects the page numbers (file offset // PAGE) of a dump file that reads touch."""

    def __init__(self) -> None:
        self.pages: Set[int] = set()
        self.scan_bytes = 0
        self.hits: Dict[bytes, int] = {}
        self._signatures = [(re.compile(p, re.S), p, span) for p, span in SCAN_SIGNATURES]

    def add_range(self, offset: int, length: int) -> None:
        if length > 0:
            self.pages.update(range(offset // PAGE, (offset + length - 1) // PAGE + 1))

    def add_read(self, offset: int, data: bytes, scan: bool) -> None:
        if not scan:
            self.add_range(offset, len(data))
            return
        self.scan_bytes += len(data)
        for rx, key, span in self._signatures:
            for m in rx.finditer(data):
                if self.hits.get(key, 0) >= MAX_SIGNATURE_HITS:
                    break
                self.hits[key] = self.hits.get(key, 0) + 1
                nul = data.find(b"\0", m.end() - 1, m.start() + span)
                end = nul + 1 if nul >= 0 else min(len(data), m.start() + span)
                self.add_range(offset + m.start(), max(end, m.end()) - m.start())

    def save(self, path: str) -> None:
        with open(path, "wb") as f:
            array.array("Q", sorted(self.pages)).tofile(f)

    @staticmethod
    def load(path: str) -> Set[int]:
        pages = array.array("Q")
        with open(path, "rb") as f:
            pages.frombytes(f.read())
        return set(pages)


def _is_scan_read(length: int) -> bool:
    """Whether the FileLayer.read being executed (two frames up) is a scan read."""
    frame = sys._getframe(2)
    for _ in range(SCAN_FRAME_DEPTH):
        if frame is None:
            break
        if frame.f_code.co_name in SCAN_FUNCTIONS:
            return True
        frame = frame.f_back
    return length >= SCAN_READ_MIN


def install_recorder(recorder: PageRecorder, dump_file: str):
    """Patch Volatility's FileLayer so reads of ``dump_file`` are recorded (this process only);
    returns a function that undoes the patch.

    ``is_valid`` is recorded too: Volatility checks that whole structures are mapped (e.g. a
    task_struct in pslist) without reading them, and a sparse ELF must keep those pages valid.
    """
    from volatility3.framework.layers import physical

    target = os.path.realpath(dump_file)
    original_read, original_valid = physical.FileLayer.read, physical.FileLayer.is_valid
    watched: Dict[int, bool] = {}
    in_read = [0]  # FileLayer.read checks is_valid itself; that check is not a separate query

    def is_dump(layer) -> bool:
        known = watched.get(id(layer))
        if known is None:
            known = watched[id(layer)] = _location_path(layer.location) == target
        return known

    def read(self, offset, length, pad=False):
        in_read[0] += 1
        try:
            data = original_read(self, offset, length, pad)
        finally:
            in_read[0] -= 1
        if is_dump(self):
            recorder.add_read(offset, data, _is_scan_read(length))
        return data

    def is_valid(self, offset, length=1):
        valid = original_valid(self, offset, length)
        if valid and not in_read[0] and is_dump(self) and not _is_scan_read(length):
            recorder.add_range(offset, length)
        return valid

    physical.FileLayer.read = read
    physical.FileLayer.is_valid = is_valid

    def uninstall():
        physical.FileLayer.read, physical.FileLayer.is_valid = original_read, original_valid

    return uninstall


def _location_path(location: str) -> Optional[str]:
    from urllib.parse import unquote, urlparse

    url = urlparse(location)
    if url.scheme != "file":
        return None
    return os.path.realpath(unquote(url.path))


def _child_main() -> int:
    """In a child process: ``<pages-out> <dump> <vol argv...>``; runs vol while recording."""
    pages_out, dump, vol_argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    from volatility3_ktstr import _plugin_path

    _plugin_path.install()  # our plugins even without the .pth (python -S, odd installs)
    from volatility3_ktstr.layers.autoisf import NO_DUMP_MEMO_ENV

    # Read what a first run reads: what ktstr remembers about this file (where the scans found
    # the kernel) would not hold for the minimized one, which must keep those pages.
    os.environ[NO_DUMP_MEMO_ENV] = "1"
    recorder = PageRecorder()
    install_recorder(recorder, dump)
    from volatility3 import cli

    sys.argv = ["vol"] + vol_argv
    rc = 0
    try:
        cli.main()
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    recorder.save(pages_out)
    return rc


# --- running vol ---------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """One plugin invocation: ``plugin`` is what vol is given, ``args`` its own options."""

    plugin: str
    args: Tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "Run":
        words = shlex.split(spec)
        if not words:
            raise MinimizeError("empty plugin spec")
        return cls(words[0], tuple(words[1:]))

    @property
    def spec(self) -> str:
        return " ".join([self.plugin, *map(shlex.quote, self.args)])


@dataclasses.dataclass
class RunResult:
    run: Run
    rc: int
    stdout: str
    stderr: str
    pages: Set[int] = dataclasses.field(default_factory=set)

    def rows(self):
        """The JSON rows, or None when the output is not JSON."""
        try:
            return json.loads(self.stdout)
        except ValueError:
            return None


def vol_argv(dump: str, run: Run, symbol_dirs: Sequence[str] = (), plugin_dirs: Sequence[str] = (),
             extra: Sequence[str] = ()) -> List[str]:
    # Absolute paths: vol runs in a scratch folder.
    argv = ["-q", "-r", "json"]
    if symbol_dirs:
        argv += ["-s", ";".join(os.path.abspath(d) for d in symbol_dirs)]
    if plugin_dirs:
        argv += ["-p", ";".join(os.path.abspath(d) for d in plugin_dirs)]
    return argv + list(extra) + ["-f", os.path.abspath(dump), run.plugin, *run.args]


def _run_one(dump: str, run: Run, argv: List[str], record: bool, env: Optional[dict],
             timeout: int) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="ktstr-min-") as tmp:
        if record:
            pages_file = os.path.join(tmp, "pages")
            cmd = [sys.executable, "-c", _CHILD, pages_file, os.path.abspath(dump), *argv]
        else:
            pages_file = None
            cmd = [sys.executable, "-c", _PLAIN, *argv]
        # cwd: plugins that write files (--dump) must not litter the caller's folder.
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env, timeout=timeout)
        pages = PageRecorder.load(pages_file) if pages_file and os.path.exists(pages_file) else set()
    return RunResult(run, proc.returncode, proc.stdout, proc.stderr, pages)


def run_plugins(dump: str, runs: Sequence[Run], *, record: bool, symbol_dirs=(), plugin_dirs=(),
                extra=(), jobs: int = 2, env=None, timeout: int = 1800) -> List[RunResult]:
    """Runs every plugin on ``dump`` (in parallel processes), recording reads if ``record``.

    A run that fails is run once more on its own: parallel first runs share Volatility's
    caches (identifier database, ISF validation) and can trip over each other.
    """
    def one(r):
        return _run_one(dump, r, vol_argv(dump, r, symbol_dirs, plugin_dirs, extra), record, env,
                        timeout)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, runs))
    return [one(r.run) if r.rc != 0 else r for r in results]


def record_runs(dump: str, runs: Sequence[Run], **kw) -> List[RunResult]:
    """Runs each plugin on the full dump through the recording layer."""
    return run_plugins(dump, runs, record=True, **kw)


def list_ktstr_plugins(plugin_dirs=(), env=None) -> List[str]:
    """Full names (``linux.ktstr.maps.Maps``) of the linux.ktstr.* plugins vol can load."""
    code = ("from volatility3_ktstr import _plugin_path; _plugin_path.install()\n"
            "import volatility3.plugins, volatility3.framework as fw\n"
            "volatility3.plugins.__path__ += sys.argv[1:]\n"
            "fw.import_files(volatility3.plugins, True)\n"
            "print('\\n'.join(sorted(n for n in fw.list_plugins() if n.startswith('linux.ktstr.'))))")
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + code, *map(str, plugin_dirs)],
                          capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        raise MinimizeError(f"cannot list plugins: {proc.stderr.strip().splitlines()[-1:]}")
    return [line for line in proc.stdout.split() if line]


# --- comparing -----------------------------------------------------------------------------


def compare_outputs(expected: RunResult, actual: RunResult) -> Optional[str]:
    """None when both runs agree (exit status and rows), else a one-line difference."""
    if expected.rc != actual.rc:
        return f"exit status {expected.rc} on the full dump, {actual.rc} on the minimized one"
    a, b = expected.rows(), actual.rows()
    if a is None or b is None:
        return None if expected.stdout == actual.stdout else "output differs (not JSON)"
    if a == b:
        return None
    fa, fb = _flatten(a), _flatten(b)
    for i in range(min(len(fa), len(fb))):
        if fa[i] != fb[i]:
            return f"row {i} differs: {json.dumps(fa[i], sort_keys=True)[:300]} != " \
                   f"{json.dumps(fb[i], sort_keys=True)[:300]}"
    return f"{len(fa)} rows on the full dump, {len(fb)} on the minimized one"


def _flatten(rows, depth=0, out=None, limit=10_000_000):
    out = [] if out is None else out
    stack = [(r, depth) for r in reversed(rows)]
    while stack and len(out) < limit:
        row, d = stack.pop()
        out.append({**{k: v for k, v in row.items() if k != "__children"}, "__depth": d})
        stack.extend((c, d + 1) for c in reversed(row.get("__children") or []))
    return out


# --- the whole job -------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    output: str
    pages: int
    segments: int
    size: int
    compressed: int
    recorded: List[RunResult]
    verified: List[Tuple[Run, Optional[str]]]

    @property
    def ok(self) -> bool:
        return all(r.rc == 0 for r in self.recorded) and all(d is None for _, d in self.verified)


def minimize(dump: str, out: str, runs: Sequence[Run], *, fmt: str = "elf", phys_base: int = 0,
             arch: str = "x86_64", merge_gap: int = 0, verify: bool = True, jobs: int = 2,
             symbol_dirs=(), plugin_dirs=(), extra=(), env=None, expected_out: Optional[str] = None,
             log=lambda msg: None) -> Report:
    """Record ``runs`` on ``dump``, write the minimized dump to ``out``, verify it."""
    src = open_source(dump, phys_base, arch)
    kw = dict(symbol_dirs=symbol_dirs, plugin_dirs=plugin_dirs, extra=extra, jobs=jobs, env=env)
    log(f"recording {len(runs)} plugin run(s) on {dump}")
    recorded = record_runs(dump, runs, **kw)
    pages: Set[int] = set()
    for r in recorded:
        log(f"  {r.run.spec}: exit {r.rc}, {len(r.pages)} pages")
        if r.rc != 0:
            log("    " + _last_line(r.stderr))
        pages |= r.pages
    pages |= edge_pages(src)
    if fmt == "elf":
        seg, gap = _merge_until_fits(src, pages, merge_gap)
        size = write_elf_core(src, seg, out)
    else:
        seg, gap = physical_runs(src, pages, merge_gap), merge_gap
        size = write_raw(src, seg, out)
    kept = sum(n for _, _, n in seg) // PAGE
    log(f"wrote {out}: {kept} pages in {len(seg)} segments (merge gap {gap}), "
        f"{os.path.getsize(out)} bytes on disk")
    if expected_out:
        save_expected(expected_out, recorded)
    verified: List[Tuple[Run, Optional[str]]] = []
    if verify:
        check_path = out
        tmp = None
        if out.endswith(".xz"):  # Volatility reads xz ISFs, not xz dumps
            tmp = tempfile.NamedTemporaryFile(prefix="ktstr-min-", suffix=".img", delete=False)
            with lzma.open(out) as fin, tmp:
                for _ in range(1 << 20):
                    block = fin.read(1 << 22)
                    if not block:
                        break
                    tmp.write(block)
            check_path = tmp.name
        try:
            again = run_plugins(check_path, runs, record=False, **kw)
        finally:
            if tmp:
                os.unlink(tmp.name)
        for before, after in zip(recorded, again):
            diff = compare_outputs(before, after)
            verified.append((before.run, diff))
            log(f"  verify {before.run.spec}: {'same output' if diff is None else diff}")
            if after.rc != 0 and after.rc != before.rc:
                log("    " + _last_line(after.stderr))
    return Report(out, kept, len(seg), size, os.path.getsize(out), recorded, verified)


def write_manifest(path: str, report: "Report", dump: str, fmt: str) -> dict:
    """Describes a minimized dump for ``ktstr-sample``: file name, SHA-256 and size of the
    uncompressed dump, where it came from and which plugin runs it preserves."""
    import hashlib

    h, size = hashlib.sha256(), 0
    opener = lzma.open if report.output.endswith(".xz") else open
    with opener(report.output, "rb") as f:
        for _ in range(1 << 20):
            block = f.read(1 << 22)
            if not block:
                break
            h.update(block)
            size += len(block)
    doc = {
        "file": os.path.basename(report.output),
        "format": fmt,
        "sha256": h.hexdigest(),
        "size": size,
        "source": "/".join(Path(os.path.abspath(dump)).parts[-3:]),
        "pages": report.pages,
        "segments": report.segments,
        "runs": [r.run.spec for r in report.recorded],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return doc


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no message)"


def save_expected(path: str, results: Sequence[RunResult]) -> None:
    """Writes {plugin spec: {rc, rows}} of the full-dump runs (xz if the name ends in .xz)."""
    doc = {r.run.spec: {"rc": r.rc, "rows": r.rows()} for r in results}
    data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    with _open_out(path) as f:
        f.write(data)


# --- CLI -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ktstr-minimize",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Shrink a Linux memory dump to the physical pages that the given Volatility "
                    "plugins read, keeping it a real dump (a sparse ELF core by default) on which "
                    "they print exactly what they print on the full dump.",
        epilog="""\
how: every plugin runs once in a `vol -r json` process whose file layer records the pages of
the dump it reads (stacking included). Whole-image scans (banner, VMCOREINFO, swapper/0) keep
only the pages holding a match. The kept pages become PT_LOAD segments of an ELF64 core (or a
raw image with the rest zeroed: --format raw); .xz output is xz-compressed. Then the plugins
run again on the result and their JSON rows must equal the recorded ones (exit status 1 if not).

example:
  ktstr-minimize dump.raw -s symbols/ -o scx_sdt.elf.xz --all-ktstr --plugin linux.pslist
""")
    p.add_argument("dump", help="the full dump (raw, or an ELF core)")
    p.add_argument("-o", "--output", required=True,
                   help="minimized dump to write (.elf, .raw; add .xz to compress)")
    p.add_argument("--plugin", action="append", default=[], metavar="'NAME [ARGS]'",
                   help="a plugin run to preserve, with its options (repeatable); "
                        "default: linux.pslist and every linux.ktstr.* plugin")
    p.add_argument("--all-ktstr", action="store_true",
                   help="add every linux.ktstr.* plugin vol can load")
    p.add_argument("-s", "--symbol-dirs", action="append", default=[], metavar="DIR",
                   help="symbol dir passed to vol -s (repeatable)")
    p.add_argument("-p", "--plugin-dirs", action="append", default=[], metavar="DIR",
                   help="plugin dir passed to vol -p (repeatable; ours are found without it)")
    p.add_argument("--format", choices=("elf", "raw"), default="elf",
                   help="elf: PT_LOAD segments of kept pages only (default); raw: zero-filled")
    p.add_argument("--phys-base", type=lambda s: int(s, 0), default=0,
                   help="physical address of byte 0 of a raw dump (arm64 QEMU virt: 0x40000000)")
    p.add_argument("--arch", choices=sorted(EM_BY_ARCH), default="x86_64",
                   help="e_machine of the ELF written for a raw input (default x86_64)")
    p.add_argument("--merge-gap", type=int, default=0, metavar="PAGES",
                   help="also keep gaps of up to PAGES pages between kept pages (fewer segments)")
    p.add_argument("--expected", metavar="FILE",
                   help="also write the full-dump JSON output of each run here (.json[.xz])")
    p.add_argument("--manifest", metavar="FILE",
                   help="also write a JSON manifest (file, sha256, size, source, runs) for ktstr-sample")
    p.add_argument("--no-verify", action="store_true", help="skip the comparison run")
    p.add_argument("-j", "--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="plugin runs in parallel (default: up to 2)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not os.path.isfile(args.dump):
            raise MinimizeError(f"{args.dump}: no such file")
        runs = [Run.parse(s) for s in args.plugin]
        if args.all_ktstr or not runs:
            runs += [Run(n) for n in list_ktstr_plugins(args.plugin_dirs)]
            if not args.plugin:
                runs.insert(0, Run("linux.pslist"))
        report = minimize(
            args.dump, args.output, runs, fmt=args.format, phys_base=args.phys_base,
            arch=args.arch, merge_gap=args.merge_gap, verify=not args.no_verify, jobs=args.jobs,
            symbol_dirs=args.symbol_dirs, plugin_dirs=args.plugin_dirs,
            expected_out=args.expected, log=lambda m: print(m, file=sys.stderr))
    except (MinimizeError, OSError) as exc:
        print(f"ktstr-minimize: error: {exc}", file=sys.stderr)
        return 2
    if args.manifest:
        write_manifest(args.manifest, report, args.dump, args.format)
    failed = [r.run.spec for r in report.recorded if r.rc != 0]
    if failed:
        print(f"ktstr-minimize: error: failed on the full dump: {', '.join(failed)}", file=sys.stderr)
    diffs = [run.spec for run, d in report.verified if d is not None]
    if diffs:
        print(f"ktstr-minimize: error: output differs on the minimized dump: {', '.join(diffs)}",
              file=sys.stderr)
    print(report.output)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
