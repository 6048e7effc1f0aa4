"""Where ISF files go and how they are written (the one writer every ISF producer uses).

No Volatility import: the user symbol folder follows the same rule as Volatility's
``constants.CACHE_PATH`` ($XDG_CACHE_HOME/volatility3, else ~/.cache/volatility3), which is
always on Volatility's symbol search path.
"""

import gzip
import hashlib
import json
import lzma
import os
from pathlib import Path


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def user_symbols_dir(os_name="linux") -> str:
    """Volatility's user symbol folder for ``os_name`` ISFs (searched without -s)."""
    return str(cache_home() / "volatility3" / "symbols" / os_name)


def default_name(banner: bytes, arch: str, ext=".json.xz") -> str:
    """``<release>-<arch>-<8 hex of the banner>.json.xz``: one file per exact kernel build."""
    text = banner.decode("utf-8", "replace")
    release = text.split()[2] if len(text.split()) > 2 else "linux"
    safe = "".join(c if c.isalnum() or c in ".+-_" else "_" for c in release)
    return f"{safe}-{arch}-{hashlib.sha256(banner).hexdigest()[:8]}{ext}"


def write_isf(isf: dict, path) -> str:
    """Write ``isf`` to ``path`` atomically: ``.xz`` (preset 0), ``.gz`` (level 1) or plain JSON
    by the name. Fast settings on purpose: a kernel ISF is ~20 MB of JSON; preset 0 is ~10x
    faster than xz's default for a file ~6% larger, and Volatility decompresses it once."""
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # The ISF is a tree (shared descriptor dicts are fine): skip the circularity bookkeeping.
    data = json.dumps(isf, separators=(",", ":"), sort_keys=False, check_circular=False).encode()
    tmp = f"{path}.{os.getpid()}.tmp"
    if path.endswith(".xz"):
        with lzma.open(tmp, "wb", preset=0) as f:
            f.write(data)
    elif path.endswith(".gz"):
        with gzip.open(tmp, "wb", compresslevel=1) as f:
            f.write(data)
    else:
        with open(tmp, "wb") as f:
            f.write(data)
    os.replace(tmp, path)
    return path
