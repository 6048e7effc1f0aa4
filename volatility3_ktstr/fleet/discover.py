"""Which files of the command line are memory dumps, and what each one is (no Volatility import).

A directory is walked for dump files: ELF cores, LiME, kdump-compressed (plain or flattened),
raw images (by name: ``*.raw``, ``*.mem``, ``*.img``, ``*.dmp``, ``*.vmem``, ``vmcore*``,
``*.core``, at least 1 MiB, not BTF), and any of these zstd-compressed. Files named on the
command line (or matched by a glob) are taken whatever they hold: a file that is no dump
becomes a row saying so.
"""

import dataclasses
import errno
import glob
import hashlib
import os
import re
import struct
import urllib.parse
import urllib.request
from pathlib import Path
from typing import List, Optional, Sequence

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BTF_MAGIC = b"\x9f\xeb"
RAW_SUFFIXES = (".raw", ".mem", ".img", ".dmp", ".vmem", ".core", ".lime", ".elf", ".kdump")
MIN_RAW = 1 << 20
MAX_WALK = 100_000        # files looked at per directory argument
HASH_CHUNK = 8 << 20


@dataclasses.dataclass
class DumpInput:
    """One file to triage: where it is and its name in the report."""

    path: str
    name: str


def _head(path: str, n: int = 64) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def zstd_head(path: str, n: int = 64) -> bytes:
    """The first ``n`` decompressed bytes of a zstd file (b"" when unreadable)."""
    try:
        import zstandard

        with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as r:
            return r.read(n)
    except Exception:       # any decode failure means "not a zstd dump"
        return b""


def kind_of(head: bytes) -> Optional[str]:
    """"kdump", "kdump-flat", "elf-core", "elf-other", "lime", "btf" or None (unknown/raw)."""
    if head.startswith(b"KDUMP   "):
        return "kdump"
    if head.startswith(b"makedumpfile"):
        return "kdump-flat"
    if head.startswith(b"\x7fELF") and len(head) >= 18:
        e_type = struct.unpack_from("<H" if head[5] == 1 else ">H", head, 16)[0]
        return "elf-core" if e_type == 4 else "elf-other"
    if head[:4] in (b"EMiL", b"LiME"):
        return "lime"
    if head[:2] in (BTF_MAGIC, BTF_MAGIC[::-1]):
        return "btf"
    return None


def looks_like_dump(path: str) -> bool:
    """Whether a file met in a directory walk is a memory dump (module doc)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    return _looks_like_dump(os.path.basename(path), _head(path), size, path)


def _looks_like_dump(name: str, head: bytes, size: int, path: Optional[str]) -> bool:
    name = name.lower()
    if head.startswith(ZSTD_MAGIC):
        inner = zstd_head(path) if path else b""
        name = name[:-4] if name.endswith(".zst") else name[:-5] if name.endswith(".zstd") else name
        kind = kind_of(inner)
    else:
        kind = kind_of(head)
        if size < MIN_RAW:
            return kind in ("kdump", "kdump-flat", "elf-core", "lime")
    if kind in ("kdump", "kdump-flat", "elf-core", "lime"):
        return True
    if kind in ("elf-other", "btf"):
        return False
    return name.endswith(RAW_SUFFIXES) or name.startswith("vmcore")


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(::[A-Za-z][A-Za-z0-9+.-]*)*://")


def is_url(text: str) -> bool:
    """An fsspec URL (``s3://b/k``, ``simplecache::https://...``), not a local path."""
    return bool(_URL.match(text))


def local_of_file_url(text: str) -> Optional[str]:
    """The local path of a ``file://`` URL; None for anything else."""
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme == "file" and "::" not in text:
        return urllib.request.url2pathname(parsed.path)
    return None


def _remote(url: str) -> List[DumpInput]:
    """Dumps an fsspec URL names: a file, a glob, or a folder (walked like a local one, each
    file's first bytes read to tell dumps from other files)."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(url)
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    prefix = url[:url.index("://") + 3] if "::" not in url else url.rsplit("::", 1)[0] + \
        "::" + proto + "://"
    out = []
    if any(c in root for c in "*?["):
        base = root.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
        for p in sorted(fs.glob(root))[:MAX_WALK]:
            if fs.isfile(p):
                out.append(DumpInput(prefix + p.lstrip("/") if proto != "file" else p,
                                     p[len(base):].lstrip("/") or os.path.basename(p)))
    elif fs.isdir(root):
        for p in sorted(fs.find(root))[:MAX_WALK]:
            try:
                with fs.open(p, "rb") as f:
                    head = f.read(64)
                size = fs.size(p)
            except OSError:
                continue
            if _looks_like_dump(os.path.basename(p), head, size, None):
                out.append(DumpInput(prefix + p.lstrip("/"), p[len(root):].lstrip("/")))
    else:
        out.append(DumpInput(url, os.path.basename(root.rstrip("/")) or root))
    return out


def localize(path: str, cache: Path) -> str:
    """A local file holding a dump's bytes: the path itself, a ``file://`` URL's path, or any
    other fsspec URL copied once into ``cache`` (fsspec's filecache, keyed by the URL)."""
    if not is_url(path):
        return path
    local = local_of_file_url(path)
    if local is not None:
        return local
    import fsspec

    cache.mkdir(parents=True, exist_ok=True)
    chained = path if path.startswith(("filecache::", "simplecache::", "blockcache::")) \
        else "filecache::" + path
    return str(fsspec.open_local(chained, filecache={"cache_storage": str(cache)}))


def expand(args: Sequence[str]) -> List[DumpInput]:
    """Dump files of the command line's paths, directories, globs and fsspec URLs, in a stable
    order; each named by its path below the directory or glob root it came from (unique)."""
    found: List[DumpInput] = []
    seen = set()

    def add(path: str, name: str) -> None:
        real = os.path.realpath(path)
        if real in seen:
            return
        seen.add(real)
        found.append(DumpInput(os.path.abspath(path), name))

    for arg in args:
        arg = local_of_file_url(arg) or arg
        if is_url(arg):
            for d in _remote(arg):
                if d.path not in seen:
                    seen.add(d.path)
                    found.append(d)
            continue
        if os.path.isdir(arg):
            n = 0
            for root, dirs, files in os.walk(arg):
                dirs.sort()
                for f in sorted(files):
                    n += 1
                    if n > MAX_WALK:
                        break
                    p = os.path.join(root, f)
                    if os.path.isfile(p) and looks_like_dump(p):
                        add(p, os.path.relpath(p, arg))
        elif any(c in arg for c in "*?["):
            prefix = arg
            for c in "*?[":
                prefix = prefix.split(c)[0]
            root = os.path.dirname(prefix) or "."
            for p in sorted(glob.glob(arg, recursive=True)):
                if os.path.isfile(p):
                    add(p, os.path.relpath(p, root))
        else:
            add(arg, os.path.basename(arg))
    names = set()
    for d in found:
        base, i = d.name, 1
        while d.name in names:
            i += 1
            d.name = f"{base}~{i}"
        names.add(d.name)
    return found


def safe_name(name: str) -> str:
    """A folder name for DIR/dumps/<name>/ from a dump's name."""
    out = "".join(c if c.isalnum() or c in "._-+@~" else "_" for c in name.replace(os.sep, "__"))
    return out.strip(".") or "dump"


def content_hash(path: str) -> str:
    """sha256 of a file's bytes (the content address of a dump), read into one reused
    ``HASH_CHUNK`` buffer (no allocation per chunk; hashlib releases the GIL while it hashes,
    so a thread hashing costs the other threads nothing but a core).

    A sparse file's holes (a raw image copied with ``cp --sparse``, a dump written by seeking
    over free memory) are hashed as the zeros they read as, without reading them: the kernel
    would otherwise allocate, zero and copy a page-cache page for every hole page (2.4 s of
    CPU per GiB of holes cold, against 0.7 s to hash them)."""
    h = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    zeros = memoryview(bytes(HASH_CHUNK))
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            data, hole = _data_extent(fd, off, size)
            while off < data:                     # a hole: zeros
                n = min(HASH_CHUNK, data - off)
                h.update(zeros[:n])
                off += n
            while off < hole:
                n = os.preadv(fd, [view[:min(HASH_CHUNK, hole - off)]], off)
                if n <= 0:
                    raise OSError(f"{path}: file shrank while it was hashed (at {off})")
                h.update(view[:n])
                off += n
        # Bytes past the size fstat gave (a file still growing) are not this dump's content.
    finally:
        os.close(fd)
    return h.hexdigest()


def _data_extent(fd: int, off: int, size: int) -> "tuple[int, int]":
    """(start, end) of the next data extent at or after ``off``, with ``off <= start < end``
    or (size, size) when only a hole is left; the whole rest of the file where the filesystem
    cannot say (no SEEK_DATA), so that every call moves the hash on."""
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        return off, size
    try:
        data = os.lseek(fd, off, seek_data)
    except OSError as e:
        if e.errno == errno.ENXIO:               # a hole up to the end
            return size, size
        return off, size
    if not off <= data < size:
        return off, size
    try:
        hole = os.lseek(fd, data, seek_hole)
    except OSError:
        hole = size
    return data, (min(hole, size) if hole > data else size)


def stat_key(path: str) -> Optional[str]:
    """Cheap identity of a file (path, size, mtime, inode): rerun skips rehashing it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"


def inode_key(path: str) -> Optional[str]:
    """Identity of a file's bytes whatever its name (device, inode, size, mtime): hard links
    of one dump share it, so their content is hashed once."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def decompressed_copy(path: str, sha: str, cache: Path, name: Optional[str] = None) -> str:
    """A zstd-compressed dump decompressed once into ``cache`` (keyed by its content hash)."""
    import zstandard

    name = name or os.path.basename(path)
    for ext in (".zst", ".zstd"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    out = cache / sha[:24] / name
    if out.is_file():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{name}.{os.getpid()}.tmp")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        zstandard.ZstdDecompressor().copy_stream(src, dst)
    os.replace(tmp, out)
    return str(out)
