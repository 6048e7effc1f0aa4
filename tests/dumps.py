"""Real dumps for tests: $KTSTR_DUMPS (the shared dumps folder) and decompressed copies.

Dumps are stored zstd-compressed; the first use decompresses one into ~/.cache/ktstr-dumps/
(outside the repo, reused by later runs). Names are "<arch>/<name>", e.g. "x86_64/scx_sdt".

Other forms of the same truth:
- "vmcore/<arch>/<name>": a real kdump-compressed vmcore (makedumpfile) with its own truth.json
  (:func:`list_vmcores`);
- "<arch>/<name>@kdump": the raw dump converted to a kdump-compressed file in the cache
  (tests/helpers/kdump.py: every RAM page, pages compressed with zstd, zlib, snappy or stored),
  so every raw-dump check also runs on the kdump reader (:func:`kdump_variants`).
"""

import functools
import hashlib
import inspect
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


def minimized(name) -> str:
    """Why ``name`` holds only some of its memory ('' for a full dump): run_info.json's
    ``minimized`` (the exit and allocator dumps keep only the pages the plugins read; every
    other page reads as zeros, the kernel image's BTF, banner and kallsyms tables included)."""
    try:
        info = json.loads((dumps_root() / base_name(name) / "run_info.json").read_text())
    except (OSError, ValueError, TypeError):
        return ""
    return str(info.get("minimized") or "")


def full_dumps():
    """:func:`list_dumps` without the minimized ones (tests that read memory no plugin reads:
    carving the kernel image, kernel stacks)."""
    return [n for n in list_dumps() if not minimized(n)]


def scheduler_live(name) -> bool:
    """Was a sched_ext scheduler loaded at dump time (sysfs state ``enabled``)? Not in the exit
    dump: the scheduler had died and the kernel had torn it down (tasks back in fair)."""
    return (load_truth(name).get("sched_ext") or {}).get("state") == "enabled"


def one_dump():
    """[the dump that option tests run on]: the smoke dump, else the first x86-64 dump (no extra
    translation layer), else any; ["<no dumps>"] without dumps. Not simply the first x86-64 name:
    minimized dumps (the exit and allocator dumps) sort before it and hold only what plugins read."""
    names = list_dumps()
    if not names:
        return ["<no dumps>"]
    if any(n in names for n in SMOKE_DUMPS):
        return [smoke_dump(names)]
    return [([n for n in names if n.startswith("x86_64/")] or names)[0]]


KDUMP_SUFFIX = "@kdump"
KDUMP_OF = ("x86_64/scx_sdt",)          # raw dumps also tested as kdump files


# QEMU-shaped kdump forms (dump-guest-memory -z): 64 KiB blocks, utsname "Unknown", CPU notes,
# no VMCOREINFO, zlib; plain and flattened.
QEMU_SUFFIXES = ("@qemu", "@qemu-flat")
QEMU_KDUMP_OF = ("arm64/scx_sdt_lpa2", "arm64/scx_sdt_va48", "x86_64/scx_sdt", "x86_64/scx_sdt_la57")


def base_name(name):
    """The dump folder of a name ("x86_64/scx_sdt@kdump" -> "x86_64/scx_sdt")."""
    return name.split("@", 1)[0]


def list_vmcores():
    """Names ("vmcore/<arch>/<name>") of the real vmcores that have a truth.json."""
    root = dumps_root()
    if root is None:
        return []
    return sorted(str(p.parent.relative_to(root)) for p in root.glob("vmcore/*/*/truth.json")
                  if any(p.parent.glob("vmcore*")))


def vmcore_params(smoke=False):
    """The real vmcores as slow-tier pytest params: for the raw-dump checks that hold on them
    whatever their dump level excluded (tests/test_vmcore_e2e.py says which and why). With
    ``smoke`` the first stays in the quick tier (one module keeps the real vmcore format there)."""
    import pytest

    names = list_vmcores()
    return [n if smoke and i == 0 else pytest.param(n, marks=pytest.mark.slow, id=n)
            for i, n in enumerate(names)]


def kdump_variants():
    """"<name>@kdump" of the raw dumps converted to kdump files in the tests."""
    return [n + KDUMP_SUFFIX for n in KDUMP_OF if n in list_dumps()]


def with_kdump(names):
    """``names`` plus the "@kdump" form of those that have one, as slow-tier params: the same
    checks then run on the kdump reader and layer."""
    import pytest

    extra = [n for n in os.environ.get("KTSTR_EXTRA_DUMPS", "").split(",") if n]
    return list(names) + [pytest.param(v, marks=pytest.mark.slow, id=v) for v in kdump_variants()
                          if base_name(v) in names] + extra


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


@functools.lru_cache(maxsize=None)
def load_truth(name):
    root = dumps_root()
    if root is None:
        raise FileNotFoundError("KTSTR_DUMPS is not set")
    with open(root / base_name(name) / "truth.json") as f:
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
    if name.endswith(KDUMP_SUFFIX):
        return kdump_of(base_name(name))
    if name.endswith(QEMU_SUFFIXES):
        return qemu_kdump_of(base_name(name), flat=name.endswith("-flat"))
    if name.startswith("vmcore/"):
        found = sorted((root / name).glob("vmcore*"))
        if not found:
            raise FileNotFoundError(f"no vmcore* in {root / name}")
        return found[0]
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


def _vmcoreinfo_in(raw_path, release):
    """The kernel's VMCOREINFO text in a raw image (filled at boot), or b""."""
    import mmap

    needle = f"OSRELEASE={release}\n".encode()
    best = b""
    with open(raw_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        at = mm.find(needle)
        for _ in range(64):
            if at < 0:
                break
            text = mm[at:at + 8192].split(b"\0", 1)[0]
            if b"KERNELOFFSET=" in text and len(text) > len(best):
                best = text
            at = mm.find(needle, at + 1)
    return best


def kdump_of(name) -> Path:
    """A kdump-compressed file of raw dump ``name`` (built once into the cache; rebuilt when the
    raw is newer or the builder changes). Pages cycle through zstd, zlib, snappy and none."""
    from helpers import kdump as kdumpbuilder

    raw = dump_path(name)
    code = hashlib.sha256(Path(kdumpbuilder.__file__).read_bytes()).hexdigest()[:12]
    out = CACHE / name / f"vmcore-{code}.kdump"
    if out.exists() and out.stat().st_mtime >= raw.stat().st_mtime:
        return out
    truth = load_truth(name)
    meta = truth["kernel"]["meta"]
    codecs = ("zstd", "zstd", "zlib", "snappy", "none")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(kdumpbuilder.from_raw(
        raw, out, ram_ranges(truth), phys_base=truth["memory"].get("dump_raw_phys_base", 0),
        codec=lambda pfn: codecs[pfn % len(codecs)], vmcoreinfo=_vmcoreinfo_in(raw, meta["release"]),
        release=meta["release"], uts_version=meta["version"],
        machine="aarch64" if truth["run"]["arch"] in ("arm64", "aarch64") else "x86_64"))


def _copy_sparse(fin, fout, src_off, dst_off, length, chunk=1 << 20):
    """Copy ``length`` bytes, leaving all-zero chunks as holes (the files stay small on disk)."""
    zero = bytes(chunk)
    fin.seek(src_off)
    done = 0
    while done < length:
        block = fin.read(min(chunk, length - done))
        if not block:
            raise OSError(f"short read at {src_off + done:#x}")
        if block != zero[:len(block)]:
            fout.seek(dst_off + done)
            fout.write(block)
        done += len(block)


def _converted(name, kind, write):
    """A file of raw dump ``name`` in another format, built once into the cache by
    ``write(raw, ranges, phys_base, truth, out_file)`` (rebuilt when the raw is newer)."""
    raw = dump_path(name)
    code = hashlib.sha256(inspect.getsource(write).encode()).hexdigest()[:12]
    out = CACHE / name / f"dump-{code}.{kind}"
    if out.exists() and out.stat().st_mtime >= raw.stat().st_mtime:
        return out
    truth = load_truth(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    with open(raw, "rb") as fin, open(tmp, "wb") as fout:
        size = write(fin, ram_ranges(truth), truth["memory"].get("dump_raw_phys_base", 0), truth, fout)
        fout.truncate(size)
    os.replace(tmp, out)
    return out


def _write_elf(fin, ranges, phys_base, truth, fout):
    """ELF64 core: a VMCOREINFO note (as QEMU's dump-guest-memory writes one when the guest
    published it), then one PT_LOAD per RAM range at its physical address."""
    import struct

    raw_size = os.fstat(fin.fileno()).st_size
    ranges = [(s, min(e, phys_base + raw_size)) for s, e in ranges if s < phys_base + raw_size]
    text = _vmcoreinfo_in(fin.name, truth["kernel"]["meta"]["release"])
    desc = text + bytes(-len(text) % 4)
    note = struct.pack("<III", 11, len(text), 0) + b"VMCOREINFO\0\0" + desc
    machine = 183 if truth["run"]["arch"] in ("arm64", "aarch64") else 62
    nph = 1 + len(ranges)
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 4, machine, 1, 0,
                       64, 0, 0, 64, 56, nph, 0, 0, 0)
    pos = 64 + 56 * nph
    phdrs = [struct.pack("<IIQQQQQQ", 4, 0, pos, 0, 0, len(note), len(note), 0)]
    pos = -(-(pos + len(note)) // 4096) * 4096
    places = []
    for start, end in ranges:
        phdrs.append(struct.pack("<IIQQQQQQ", 1, 7, pos, 0, start, end - start, end - start, 4096))
        places.append((start - phys_base, pos, end - start))
        pos += end - start
    fout.write(ehdr + b"".join(phdrs) + note)
    for src, dst, n in places:
        _copy_sparse(fin, fout, src, dst, n)
    return pos


def _write_lime(fin, ranges, phys_base, truth, fout):
    """LiME: per RAM range a header (magic, version 1, first and last address) then its bytes."""
    import struct

    raw_size = os.fstat(fin.fileno()).st_size
    pos = 0
    for start, end in ranges:
        end = min(end, phys_base + raw_size)
        if start >= end:
            continue
        fout.seek(pos)
        fout.write(struct.pack("<IIQQQ", 0x4C694D45, 1, start, end - 1, 0))
        _copy_sparse(fin, fout, start - phys_base, pos + 32, end - start)
        pos += 32 + end - start
    return pos


def elf_of(name) -> Path:
    """An ELF64 core of raw dump ``name`` (:func:`_write_elf`), built once into the cache."""
    return _converted(name, "elf", _write_elf)


def lime_of(name) -> Path:
    """A LiME file of raw dump ``name`` (:func:`_write_lime`), built once into the cache."""
    return _converted(name, "lime", _write_lime)


def qemu_cpu_registers(name, raw):
    """Per-vCPU registers for the QEMU notes of raw dump ``name``: x86-64 CR3 = the kernel's
    page-table root and CR4.LA57 as its VMCOREINFO (in memory) says; arm64: QEMU writes no
    system registers, so the general registers stay zero (nothing reads them yet)."""
    from volatility3_ktstr import vmcoreinfo

    truth = load_truth(name)
    ncpu = int(truth["run"].get("smp") or 2)
    if truth["run"]["arch"] != "x86_64":
        return "aarch64", [{} for _ in range(ncpu)]
    info = vmcoreinfo.parse(_vmcoreinfo_in(raw, truth["kernel"]["meta"]["release"]))
    root = vmcoreinfo.x86_page_table_root(info)
    la57 = vmcoreinfo.x86_levels(info) == 5
    return "x86_64", [{"cr3": root, "cr4": (1 << 12 if la57 else 0) | (1 << 5), "cr0": 0x80050033}
                      for _ in range(ncpu)]


def qemu_kdump_of(name, flat=False, block_size=65536) -> Path:
    """Raw dump ``name`` written the way QEMU's dump-guest-memory -z writes a guest (built once
    into the cache): ``block_size`` blocks, pfns from physical 0, the sub-header's phys_base the
    lowest RAM address, utsname empty with machine "Unknown", each vCPU's notes (QEMU's layout
    per architecture), no VMCOREINFO, zlib pages; ``flat``: the flattened stream."""
    from helpers import kdump as kdumpbuilder

    raw = dump_path(name)
    code = hashlib.sha256(Path(kdumpbuilder.__file__).read_bytes()
                          + Path(__file__).read_bytes()).hexdigest()[:12]
    out = CACHE / name / f"qemu-{block_size}-{code}{'.flat' if flat else ''}.kdump"
    if out.exists() and out.stat().st_mtime >= raw.stat().st_mtime:
        return out
    truth = load_truth(name)
    arch, cpus = qemu_cpu_registers(name, raw)
    ranges = ram_ranges(truth)
    out.parent.mkdir(parents=True, exist_ok=True)
    plain = out.with_name(out.name + ".plain") if flat else out
    kdumpbuilder.from_raw(raw, plain, ranges, phys_base=truth["memory"].get("dump_raw_phys_base", 0),
                          codec="zlib", block_size=block_size, cpu_notes=kdumpbuilder.qemu_notes(arch, cpus),
                          sub_phys_base=min(s for s, _e in ranges), qemu=True, nr_cpus=len(cpus))
    if flat:
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        kdumpbuilder.flatten_file(plain, tmp)
        os.replace(tmp, out)
        plain.unlink()
    return out


def qemu_variants(names=None):
    """"<name>@qemu" and "<name>@qemu-flat" of the raw dumps that have them."""
    have = list_dumps()
    return [n + sfx for n in QEMU_KDUMP_OF if n in have and (names is None or n in names)
            for sfx in QEMU_SUFFIXES]
