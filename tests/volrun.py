"""Run `vol` on real dumps from tests, with a kernel ISF built from the dump's BTF.

- :func:`kernel_isf_dir` builds the kernel ISF of a dump once (btf.raw + System.map + the banner
  from truth.json) into ~/.cache/ktstr-test-isf/<sha of inputs and generator code>/linux/ and
  returns that symbol dir; later sessions reuse the file. ISF output is deterministic, so
  Volatility's per-content-hash schema validation (about a minute for a full kernel ISF) is
  paid once per generator change, not once per run.
- :func:`run_vol` runs the current venv's `vol` as a subprocess with `-q -r json` and returns
  the rows flattened (tree children follow their parent), plus rc/stdout/stderr.

vol runs use their own XDG_CACHE_HOME under the same cache dir: Volatility always searches
$XDG_CACHE_HOME/volatility3/symbols, and a stray ISF for the same banner there (say from a manual
`ktstr-isf` without -o) would otherwise compete with the one under test.
"""

import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import dumps

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("KTSTR_TEST_CACHE", "~/.cache/ktstr-test-isf")).expanduser()
VOL_XDG = CACHE / "xdg"
# Code that decides the ISF's content: a change here must not reuse an old file.
_GENERATOR_CODE = sorted((REPO / "volatility3_ktstr" / "btf").glob("*.py")) + sorted(
    (REPO / "volatility3_ktstr" / "isf").glob("*.py")) + [REPO / "volatility3_ktstr" / "__init__.py"]


def venv_bin(name) -> str:
    """A console script of the running interpreter's venv (not whatever is first on PATH)."""
    return str(Path(sys.executable).parent / name)


def _sha_files(paths, extra=b""):
    h = hashlib.sha256(extra)
    for p in paths:
        h.update(str(Path(p).name).encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def code_digest() -> str:
    return _sha_files(_GENERATOR_CODE)[:16]


def kernel_inputs(name):
    """(btf path, System.map path, banner text, arch) of a dump's kernel."""
    truth = dumps.load_truth(name)
    kdir = dumps.kernel_dir(name)
    return kdir / "btf.raw", kdir / "System.map", truth["kernel"]["banner"], truth["run"]["arch"]


@functools.lru_cache(maxsize=None)
def kernel_isf_dir(name) -> Path:
    """Symbol dir (for `vol -s`) holding the kernel ISF of dump ``name``; built once."""
    btf_path, sysmap, banner, arch = kernel_inputs(name)
    key = _sha_files([btf_path, sysmap], f"{banner}\0{arch}\0{code_digest()}".encode())[:24]
    sym_dir = CACHE / key
    out = sym_dir / "linux" / f"{btf_path.parent.name}.json.xz"
    if not out.exists():
        from volatility3_ktstr.isf import cli

        tmp = out.with_name(out.name + f".{os.getpid()}.json.xz")
        rc = cli.main([str(btf_path), "--system-map", str(sysmap), "--banner", banner,
                       "--arch", arch, "-o", str(tmp)])
        if rc != 0:
            raise RuntimeError(f"ktstr-isf failed ({rc}) for {name}")
        os.replace(tmp, out)
    return sym_dir


@dataclasses.dataclass
class VolResult:
    rc: int
    rows: list
    stdout: str
    stderr: str
    argv: list

    def check(self):
        """Assert success with the command and stderr in the message."""
        assert self.rc == 0, f"{' '.join(self.argv)} exited {self.rc}:\n{self.stderr[-4000:]}"
        return self


def flatten(rows, depth=0):
    """JSON renderer rows: a tree (``__children``) -> a flat list; each row gets ``__depth``."""
    out = []
    for row in rows:
        children = row.get("__children") or []
        flat = {k: v for k, v in row.items() if k != "__children"}
        flat["__depth"] = depth
        out.append(flat)
        out.extend(flatten(children, depth + 1))
    return out


def vol_env(extra=None):
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(VOL_XDG)
    env.pop("VOLATILITY3_KTSTR_DISABLE", None)
    if extra:
        env.update(extra)
    return env


def run_vol(dump, plugin, *plugin_args, renderer="json", symbol_dirs=(), extra_global=(),
            timeout=900, env=None, name=None) -> VolResult:
    """Run ``vol -q -r <renderer> -s <dirs> -f <dump> [extra_global] plugin plugin_args``.

    ``dump``: a path, or a dump name ("x86_64/scx_sdt"), in which case its kernel ISF dir is
    added to the symbol dirs automatically. ``name``: the dump name whose kernel ISF to use
    when ``dump`` is a path (e.g. an ELF core of that dump).
    """
    dirs = [str(d) for d in symbol_dirs]
    if name is None and not os.path.exists(str(dump)):
        name = str(dump)
        dump = dumps.dump_path(name)
    if name is not None:
        dirs.insert(0, str(kernel_isf_dir(name)))
    argv = [venv_bin("vol"), "-q", "-r", renderer]
    if dirs:
        argv += ["-s", ";".join(dirs)]
    argv += ["-f", str(dump), *extra_global, plugin, *map(str, plugin_args)]
    CACHE.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=vol_env(env),
                          cwd=str(CACHE if CACHE.exists() else REPO))
    rows = []
    if renderer == "json" and proc.stdout.strip():
        try:
            rows = flatten(json.loads(proc.stdout))
        except ValueError:
            rows = []
    return VolResult(proc.returncode, rows, proc.stdout, proc.stderr, argv)


def ram_ranges(truth):
    """[(start, end)) physical RAM ranges of a dump: /proc/iomem's top-level "System RAM",
    page-aligned, or the whole RAM when iomem was not recorded."""
    ranges = []
    for r in truth["memory"].get("iomem") or ():
        if r.get("depth", 0) == 0 and r["name"] == "System RAM":
            ranges.append((r["start"] & ~0xFFF, (r["end"] + 0x1000) & ~0xFFF))
    if not ranges:
        base = truth["run"]["ram_phys_base"]
        ranges = [(base, base + truth["run"]["ram_size"])]
    return sorted(ranges)


def make_elf_core(raw_path, out_path, ranges, phys_base=0, machine=62):
    """Wrap a raw physical image (byte 0 = ``phys_base``) into an ELF64 core with one PT_LOAD
    per RAM range at ``p_paddr``, the way QEMU's dump-guest-memory writes guest RAM."""
    import struct

    out_path = Path(out_path)
    size = os.path.getsize(raw_path)
    ranges = [(s, min(e, phys_base + size)) for s, e in ranges if s < phys_base + size]
    ehsize, phsize = 64, 56
    data_off = (ehsize + phsize * len(ranges) + 0xFFF) & ~0xFFF
    phdrs = b""
    off = data_off
    for start, end in ranges:
        n = end - start
        # PT_LOAD, flags RWX, p_vaddr 0 like QEMU for physical-only dumps, filesz == memsz.
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, off, 0, start, n, n, 0x1000)
        off += n
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, machine, 1, 0, ehsize, 0, 0, ehsize, phsize,
                               len(ranges), 0, 0, 0)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
    with open(raw_path, "rb") as src, open(tmp, "wb") as dst:
        dst.write(ehdr + phdrs)
        dst.write(b"\0" * (data_off - dst.tell()))
        for start, end in ranges:
            src.seek(start - phys_base)
            left = end - start
            while left:
                chunk = src.read(min(left, 8 << 20))
                if not chunk:
                    raise ValueError(f"{raw_path} ends before physical {end:#x}")
                dst.write(chunk)
                left -= len(chunk)
    os.replace(tmp, out_path)
    return out_path


def elf_core_of(name) -> Path:
    """An ELF core of dump ``name`` (cached next to the ISFs; rebuilt when the raw is newer)."""
    raw = dumps.dump_path(name)
    out = CACHE / "cores" / (name.replace("/", "_") + ".elf")
    if out.exists() and out.stat().st_mtime >= raw.stat().st_mtime:
        return out
    truth = dumps.load_truth(name)
    machine = 183 if truth["run"]["arch"] in ("arm64", "aarch64") else 62
    return make_elf_core(raw, out, ram_ranges(truth), truth["memory"].get(
        "dump_raw_phys_base", truth["run"]["ram_phys_base"]), machine)
