"""Real dumps for tests: $KTSTR_DUMPS (the shared dumps folder) and decompressed copies.

Dumps are stored zstd-compressed; the first use decompresses one into ~/.cache/ktstr-dumps/
(outside the repo, reused by later runs). Names are "<arch>/<name>", e.g. "x86_64/scx_sdt".
"""

import functools
import json
import os
from pathlib import Path

CACHE = Path(os.environ.get("KTSTR_DUMPS_CACHE", "~/.cache/ktstr-dumps")).expanduser()


def dumps_root():
    """The dumps folder from $KTSTR_DUMPS, or None when unset or missing."""
    root = os.environ.get("KTSTR_DUMPS")
    if not root or not Path(root).is_dir():
        return None
    return Path(root)


def list_dumps():
    """Names ("<arch>/<name>") of the dumps that have a truth.json, sorted."""
    root = dumps_root()
    if root is None:
        return []
    return sorted(str(p.parent.relative_to(root)) for p in root.glob("*/*/truth.json")
                  if p.parent.parent.name != "kernels")


def kernel_dirs():
    """kernels/<release>/ folders of the dumps folder ([] without KTSTR_DUMPS)."""
    root = dumps_root()
    if root is None or not (root / "kernels").is_dir():
        return []
    return sorted(p for p in (root / "kernels").iterdir() if p.is_dir())


# The quick tier's real dump: 4-level x86-64 with every structure the plugins read.
SMOKE_DUMPS = ("x86_64/scx_sdt",)


def smoke_dump(names, smoke=None):
    """Which of ``names`` is the quick tier's dump (see :func:`smoke_first`); None if none."""
    plain = [n for n in names if isinstance(n, str)]
    if smoke in plain:
        return smoke
    return next((n for n in SMOKE_DUMPS if n in plain), plain[0] if plain else None)


def smoke_first(names, smoke=None):
    """pytest params for a test parametrised per dump: the smoke dump (``smoke``, else the first
    of SMOKE_DUMPS among ``names``, else the first name) stays in the quick tier; every other
    dump is marked ``slow``. Items that are already pytest params pass unchanged."""
    import pytest

    names = list(names)
    keep = smoke_dump(names, smoke)
    return [n if not isinstance(n, str) or n == keep
            else pytest.param(n, marks=pytest.mark.slow, id=n) for n in names]


@functools.lru_cache(maxsize=None)
def load_truth(name):
    root = dumps_root()
    if root is None:
        raise FileNotFoundError("KTSTR_DUMPS is not set")
    with open(root / name / "truth.json") as f:
        return json.load(f)


def _decompress(src: Path, dst: Path) -> Path:
    """Stream-decompress a .zst once; a tmp file + rename so an interrupted run leaves no
    truncated copy behind."""
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    import zstandard

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        zstandard.ZstdDecompressor().copy_stream(fin, fout, read_size=1 << 20, write_size=1 << 22)
    os.replace(tmp, dst)
    return dst


def dump_path(name) -> Path:
    """Path of the raw dump of ``name``, decompressed into the cache on first use."""
    root = dumps_root()
    if root is None:
        raise FileNotFoundError("KTSTR_DUMPS is not set")
    src = root / name / "dump.raw.zst"
    if not src.exists():
        raw = root / name / "dump.raw"
        if raw.exists():
            return raw
        raise FileNotFoundError(f"no dump.raw.zst in {root / name}")
    return _decompress(src, CACHE / name / "dump.raw")


def kernel_dir(name) -> Path:
    """kernels/<release>/ of a dump (btf.raw, System.map, config, vmlinux.zst)."""
    release = load_truth(name)["kernel"]["meta"]["release"]
    return dumps_root() / "kernels" / release


def vmlinux_path(kdir) -> Path:
    """The kernel's (stripped) vmlinux ELF, decompressed on first use; None if not shipped."""
    kdir = Path(kdir)
    src = kdir / "vmlinux.zst"
    if not src.exists():
        return None
    return _decompress(src, CACHE / "kernels" / kdir.name / "vmlinux")
