"""A compact, quick-to-load copy of an ISF file, cached by the file's identity.

Decoding a kernel ISF (20 MB of JSON, 13k types, 135k symbols) costs about a second and 190 MB
per load, most of it allocating one small dict per symbol, per member and per type descriptor
and letting the garbage collector walk them while they are made. This module keeps, per ISF
file, the decoded dict in ``marshal`` form with identical small descriptors shared (``{"kind":
"base", "name": "int"}`` is one object, not 100,000): it loads in about 0.1 s with the collector
paused and takes half the memory. The content is the same dict (``==`` the JSON decode, same
key order), so everything that reads it sees what it would have seen.

Sharing sub-dicts is only safe because readers never mutate the ISF (Volatility's
``intermed`` readers copy before changing anything; this is checked in the tests).

A cache entry is keyed by the ISF's absolute path and checked against the file's identity:
size, mtime (ns), inode and a digest of its first and last 64 KiB (for an .xz file the tail
holds the block checks and the index). No Volatility import here.
"""

import contextlib
import gc
import hashlib
import json
import marshal
import os
import sys
from typing import Optional, Tuple

FORMAT = 1
MAGIC = b"KTSTRISF"
EDGE = 64 << 10
SUFFIX = ".isfc"
MAX_ENTRIES = 16
# Entries written by another Python cannot be read (marshal's format is per version).
_PY = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}-m{marshal.version}"


def file_identity(path: str) -> Tuple:
    """(size, mtime_ns, inode, digest of the first and last 64 KiB) of a file."""
    st = os.stat(path)
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(EDGE))
        if st.st_size > EDGE:
            f.seek(max(EDGE, st.st_size - EDGE))
            h.update(f.read(EDGE))
    return (st.st_size, st.st_mtime_ns, st.st_ino, h.hexdigest())


@contextlib.contextmanager
def collector_paused():
    """Keep the garbage collector off while a big, acyclic structure is built.

    Each allocation of a container counts towards a collection, and each collection walks
    every young container: building a million dicts triggers thousands of them. Afterwards the
    objects alive then are moved out of the collector's generations (``gc.freeze``): they live
    as long as the process and would otherwise be walked again by the next collections."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.enable()


# --- sharing identical descriptors ------------------------------------------------------------


def _key(d: dict):
    """Hashable content of a dict whose dict values are already shared (compared by id).
    type(v) keeps True apart from 1 (equal, same hash, but not the same JSON). None when a
    value is a list (not shared)."""
    out = []
    for k, v in d.items():
        c = v.__class__
        if c is dict:
            v = id(v)
        elif c is list:
            return None
        out.append((k, c, v))
    return tuple(out)


def _share(d: dict, memo: dict) -> dict:
    """Make ``d``'s descriptor values shared (in place), then return ``d`` or an earlier dict
    with the same content."""
    for k in ("type", "subtype"):
        v = d.get(k)
        if v.__class__ is dict:
            d[k] = _share(v, memo)
    key = _key(d)
    if key is None:
        return d
    hit = memo.get(key)
    if hit is None:
        memo[key] = d
        return d
    return hit


def canonical(isf: dict) -> dict:
    """The same ISF, in place, with equal type descriptors, member entries and symbol entries
    shared (one object each).

    Only ``user_types[*].fields[*]`` and ``symbols[*]`` (and the type descriptors inside them)
    are touched; enums, base types and metadata are left as they are. The result compares
    equal to the input as it was and keeps its key order. Meant for a freshly decoded ISF that
    nobody else holds yet."""
    memo: dict = {}
    types = isf.get("user_types")
    if isinstance(types, dict):
        for t in types.values():
            fields = t.get("fields") if isinstance(t, dict) else None
            if isinstance(fields, dict):
                for f, v in fields.items():
                    if v.__class__ is dict:
                        fields[f] = _share(v, memo)
    symbols = isf.get("symbols")
    if isinstance(symbols, dict):
        for n, v in symbols.items():
            if v.__class__ is dict:
                symbols[n] = _share(v, memo)
    return isf


# --- the on-disk cache ----------------------------------------------------------------------


class CompactStore:
    """``<dir>/<sha1 of the ISF path>.isfc``: header line (JSON) + marshal of the ISF dict."""

    def __init__(self, directory: str):
        self.directory = directory

    def _entry(self, path: str) -> str:
        name = hashlib.sha1(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()
        return os.path.join(self.directory, name + SUFFIX)

    def _header(self, path, identity):
        return {"format": FORMAT, "python": _PY, "path": os.path.abspath(path),
                "identity": list(identity)}

    def get(self, path: str, identity: Tuple) -> Optional[dict]:
        """The ISF dict stored for ``path`` if its identity is unchanged, else None."""
        try:
            with open(self._entry(path), "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    return None
                head = json.loads(f.readline())
                if head != self._header(path, identity):
                    return None
                data = f.read()
            with collector_paused():
                isf = marshal.loads(data)
        except (OSError, ValueError, EOFError, TypeError):
            return None
        return isf if isinstance(isf, dict) else None

    def put(self, path: str, identity: Tuple, isf: dict) -> bool:
        """Store ``isf`` for ``path``, made compact in place (see :func:`canonical`: the
        caller's dict keeps its content and shares its descriptors from then on); False when
        it cannot be written."""
        try:
            with collector_paused():
                payload = marshal.dumps(canonical(isf))
        except ValueError:  # something marshal cannot hold
            return False
        target = self._entry(path)
        tmp = f"{target}.{os.getpid()}.tmp"
        try:
            os.makedirs(self.directory, exist_ok=True)
            self.prune(MAX_ENTRIES - 1)
            with open(tmp, "wb") as f:
                f.write(MAGIC + json.dumps(self._header(path, identity)).encode() + b"\n")
                f.write(payload)
            os.replace(tmp, target)
            return True
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return False

    def prune(self, keep: int = MAX_ENTRIES) -> None:
        """Drop entries whose ISF file is gone, then the oldest beyond ``keep`` (each entry is
        the size of the decoded ISF: ~10 MB for a kernel)."""
        entries = []
        for name in os.listdir(self.directory):
            if not name.endswith(SUFFIX):
                continue
            entry = os.path.join(self.directory, name)
            try:
                with open(entry, "rb") as f:
                    line = f.readline(1 << 16)
                head = json.loads(line[len(MAGIC):]) if line.startswith(MAGIC) else None
                source = head.get("path") if isinstance(head, dict) else None
                if not isinstance(source, str) or not os.path.exists(source):
                    self._remove(entry)
                    continue
                entries.append((os.stat(entry).st_mtime_ns, entry))
            except (OSError, ValueError):
                self._remove(entry)
        entries.sort()
        for _mtime, entry in entries[:max(0, len(entries) - keep)]:
            self._remove(entry)

    @staticmethod
    def _remove(entry: str) -> None:
        for victim in (entry, entry[: -len(SUFFIX)] + ".hash"):
            with contextlib.suppress(OSError):
                os.unlink(victim)


class HashStore:
    """Remembers a content hash per (ISF path, identity, key): one small JSON file per ISF.

    Volatility identifies a validated ISF by the SHA-1 of its whole decoded content (about
    a second to compute for a kernel ISF); this lets it be looked up instead."""

    def __init__(self, directory: str):
        self.directory = directory

    def _entry(self, path: str) -> str:
        name = hashlib.sha1(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()
        return os.path.join(self.directory, name + ".hash")

    def get(self, path: str, identity: Tuple, key: str) -> Optional[str]:
        try:
            with open(self._entry(path)) as f:
                entry = json.load(f)
            if entry.get("path") == os.path.abspath(path) and entry.get("identity") == list(identity):
                value = entry.get("hashes", {}).get(key)
                return value if isinstance(value, str) else None
        except (OSError, ValueError, AttributeError):
            pass
        return None

    def put(self, path: str, identity: Tuple, key: str, value: str) -> None:
        entry = {"path": os.path.abspath(path), "identity": list(identity), "hashes": {}}
        try:
            with open(self._entry(path)) as f:
                old = json.load(f)
            if old.get("path") == entry["path"] and old.get("identity") == entry["identity"]:
                entry["hashes"] = dict(old.get("hashes") or {})
        except (OSError, ValueError, AttributeError):
            pass
        entry["hashes"][key] = value
        target = self._entry(path)
        tmp = f"{target}.{os.getpid()}.tmp"
        try:
            os.makedirs(self.directory, exist_ok=True)
            with open(tmp, "w") as f:
                json.dump(entry, f)
            os.replace(tmp, target)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
