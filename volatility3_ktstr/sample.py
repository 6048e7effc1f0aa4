"""The bundled sample dump: unpack it to a cache folder and install its symbol table.

``ktstr-sample`` prints the path of a small real memory dump (a Debian 7.2 x86-64 guest running
the ``scx_sdt`` sched_ext scheduler, minimized by ``ktstr-minimize`` to the pages our plugins and
``linux.pslist`` read: an ELF core), so that on a fresh install, offline::

    vol -f "$(ktstr-sample)" linux.ktstr.sdtalloc

On first use it decompresses ``samples/<name>.elf.xz`` into
``$XDG_CACHE_HOME/volatility3-ktstr/samples/`` (``~/.cache/...``; never into the repository),
checks its SHA-256 against ``samples/<name>.json``, and copies the kernel's ISF from ``symbols/``
into Volatility's user symbol folder ``$XDG_CACHE_HOME/volatility3/symbols/linux/`` (or into
``--symbols-dir DIR``, then pass ``-s DIR`` to ``vol``). Later calls only check and print.

The sample files are found in the source tree (editable installs, a checkout) or under
``<prefix>/share/volatility3-ktstr/`` (where ``pip install .`` puts them).
"""

import argparse
import hashlib
import json
import lzma
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import List, Optional, Sequence

from .isf.output import cache_home, user_symbols_dir

DEFAULT_SAMPLE = "scx_sdt-x86_64"
SHARE = Path("share") / "volatility3-ktstr"
MAX_BLOCKS = 1 << 16  # 4 MiB blocks: bounds the copy loop (256 GiB)


class SampleError(Exception):
    """A one-line, user-facing failure."""


def data_roots() -> List[Path]:
    """Folders that may hold samples/ and symbols/, most specific first."""
    roots = []
    env = os.environ.get("KTSTR_SAMPLE_ROOT")
    if env:
        roots.append(Path(env))
    roots.append(Path(__file__).resolve().parents[1])  # source tree / editable install
    for prefix in (sysconfig.get_paths().get("data"), sys.prefix, sys.base_prefix):
        if prefix:
            roots.append(Path(prefix) / SHARE)
    seen, out = set(), []
    for r in roots:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def _cache_home() -> Path:
    # The same rule as Volatility's constants.CACHE_PATH, so the ISF lands where it looks.
    return cache_home()


def sample_cache_dir() -> Path:
    return _cache_home() / "volatility3-ktstr" / "samples"


def vol_symbols_dir() -> Path:
    return Path(user_symbols_dir()).parent


def find_root(name: str) -> Path:
    for root in data_roots():
        if (root / "samples" / f"{name}.json").is_file():
            return root
    raise SampleError(f"sample {name!r} not found (looked in: "
                      f"{', '.join(str(r / 'samples') for r in data_roots())})")


def manifest(name: str = DEFAULT_SAMPLE) -> dict:
    path = find_root(name) / "samples" / f"{name}.json"
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    missing = [k for k in ("file", "sha256", "size") if k not in info]
    if missing or not str(info["file"]).endswith(".xz"):
        raise SampleError(f"{path}: not a sample manifest (needs file=*.xz, sha256, size)")
    return info


def list_samples() -> List[str]:
    names = set()
    for root in data_roots():
        for p in (root / "samples").glob("*.json"):
            names.add(p.stem)
    return sorted(names)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for _ in range(MAX_BLOCKS):
            block = f.read(1 << 22)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def unpack(name: str = DEFAULT_SAMPLE, cache: Optional[Path] = None) -> Path:
    """Path of the decompressed sample, decompressing and checking it on first use."""
    root = find_root(name)
    info = manifest(name)
    src = root / "samples" / info["file"]
    if not src.is_file():
        raise SampleError(f"{src}: missing (the sample's manifest names it)")
    dst = Path(cache or sample_cache_dir()) / info["file"][: -len(".xz")]
    if dst.is_file() and dst.stat().st_size == info["size"] and _sha256(dst) == info["sha256"]:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}.tmp{os.getpid()}")
    try:
        with lzma.open(src) as fin, open(tmp, "wb") as fout:
            for _ in range(MAX_BLOCKS):
                block = fin.read(1 << 22)
                if not block:
                    break
                fout.write(block)
        if _sha256(tmp) != info["sha256"]:
            raise SampleError(f"{src}: decompressed data does not match the manifest's SHA-256")
        os.replace(tmp, dst)  # no half-written sample if interrupted
    except lzma.LZMAError as exc:
        raise SampleError(f"{src}: not a valid .xz file ({exc})")
    finally:
        if tmp.exists():
            tmp.unlink()
    return dst


def install_isf(name: str = DEFAULT_SAMPLE, symbols_dir: Optional[Path] = None) -> List[Path]:
    """Copies the sample's kernel ISF(s) into ``symbols_dir``/linux (default: Volatility's user
    symbol folder); returns the installed paths."""
    root = find_root(name)
    info = manifest(name)
    isfs = [root / "symbols" / p for p in info.get("isf", [])]
    if not isfs:
        isfs = sorted((root / "symbols" / "linux").glob("*.json.xz"))
    if not isfs or not all(p.is_file() for p in isfs):
        raise SampleError(f"no symbol table for sample {name!r} under {root / 'symbols'}")
    dest = Path(symbols_dir or vol_symbols_dir()) / "linux"
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for p in isfs:
        target = dest / p.name
        if not (target.is_file() and target.stat().st_size == p.stat().st_size
                and _sha256(target) == _sha256(p)):
            tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
            shutil.copyfile(p, tmp)
            # Volatility indexes every *.json.xz it finds: only a complete file gets that name.
            os.replace(tmp, target)
        out.append(target)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ktstr-sample",
        description="Unpack the bundled sample dump (once, into ~/.cache/volatility3-ktstr/samples), "
                    "install its kernel symbol table where Volatility looks, and print the "
                    "dump's path: vol -f \"$(ktstr-sample)\" linux.ktstr.sdtalloc")
    p.add_argument("name", nargs="?", default=DEFAULT_SAMPLE,
                   help=f"sample name (default {DEFAULT_SAMPLE}; --list shows them)")
    p.add_argument("--symbols-dir", metavar="DIR",
                   help="install the ISF into DIR/linux instead (then run vol -s DIR)")
    p.add_argument("--no-isf", action="store_true", help="do not install the ISF")
    p.add_argument("--info", action="store_true", help="print the sample's manifest (JSON)")
    p.add_argument("--list", action="store_true", help="list the bundled samples")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.list:
            print("\n".join(list_samples()))
            return 0
        if args.info:
            print(json.dumps(manifest(args.name), indent=1))
            return 0
        path = unpack(args.name)
        if not args.no_isf:
            install_isf(args.name, Path(args.symbols_dir) if args.symbols_dir else None)
    except (SampleError, OSError, ValueError) as exc:
        print(f"ktstr-sample: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
