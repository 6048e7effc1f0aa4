"""Big machines: first open of a 1 TiB dump, and the scan when nothing says where the kernel is.

    python bench/bigmem_bench.py [--size-gib 1024] [--workdir DIR] [--plugin linux.pslist]
                                 [--cases elf-cpu,elf-vmci,kdump-vmci,kdump-qemu,elf-bare]
                                 [--scan-gib 8] [--repeat 3] [--keep]

Fakes big machines from the shared real dump x86_64/scx_sdt (1 GiB of RAM, 4-level x86-64):
its RAM ranges stay where they are in physical memory (the page tables point there), and a
huge range of RAM above 4 GiB makes the machine ``--size-gib`` large. Nothing is written
densely: the files are sparse, the huge range is a hole (ELF) or pages the bitmap says are
not in the file (kdump), so the 1 TiB cases cost about 1 GiB of disk each.

- ``elf-cpu``: an ELF core as QEMU's dump-guest-memory writes it (a PT_LOAD per RAM range,
  NT_PRSTATUS and QEMU's CPU state per vCPU: CR3/CR4), no VMCOREINFO;
- ``elf-vmci``: an ELF core as /proc/vmcore is (PT_LOADs, the VMCOREINFO note);
- ``kdump-vmci``: a kdump-compressed file as makedumpfile writes it (VMCOREINFO in the
  sub-header; the huge range RAM in the 1st bitmap, excluded in the 2nd);
- ``kdump-qemu``: a kdump-compressed file as QEMU's ``dump-guest-memory -z`` writes it
  (64 KiB blocks, CPU notes, no VMCOREINFO);
- ``elf-bare``: an ELF core without notes, its VMCOREINFO pages moved to the top of memory
  (the 8 GiB guest of issue #28 had it past 4 GiB): the kernel must be searched for, and
  the search must stop at the kernel image, low in memory, not read on to VMCOREINFO.

Each case runs ``vol -f <file> <plugin>`` as a fresh process (its rows must be the raw
dump's: "= raw") with the per-file memo off
(``VOLATILITY3_KTSTR_NO_DUMP_MEMO=1``: every run is a first open) and prints CPU time
(user+sys of the child, os.wait4; median of ``--repeat`` runs) and peak RSS (the largest).
The files are built by a child process: Linux starts a forked child's peak RSS at its
parent's, so the measuring process itself stays small. Targets for files with CPU notes
or VMCOREINFO: < 2 s CPU and < 300 MB whatever the size. Then the scan itself
(``layers.scan.scan_image`` in a child process, every window read: over the real 1 GiB raw
dump, dense data, and over the first ``--scan-gib`` GiB of the bare file's data): GiB/s of
CPU, peak RSS, the progress reports it made; and the progress lines `vol` prints for the
bare file without ``-q``.

Needs $KTSTR_DUMPS (the ISF is built once, as the tests do).
"""

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

NAME = "x86_64/scx_sdt"
GIB = 1 << 30
HIGH_RAM = 4 * GIB             # where the huge range starts (above the PCI hole, as on a PC)
COPY_CHUNK = 1 << 20
TARGET_CPU_S, TARGET_RSS_MB = 2.0, 300
CASES = ("elf-cpu", "elf-vmci", "kdump-vmci", "kdump-qemu", "elf-bare")
NOTES_CASES = ("elf-cpu", "elf-vmci", "kdump-vmci", "kdump-qemu")


# --- building the files ------------------------------------------------------------------


def _copy_sparse(src, dst, src_off, dst_off, length):
    """Copy ``length`` bytes, leaving all-zero chunks as holes in ``dst``."""
    zero = bytes(COPY_CHUNK)
    done = 0
    while done < length:
        n = min(COPY_CHUNK, length - done)
        src.seek(src_off + done)
        data = src.read(n)
        if data != zero[:len(data)]:
            dst.seek(dst_off + done)
            dst.write(data)
        done += n


def vmcoreinfo_pages(raw_path, release):
    """Physical addresses of the pages holding the kernel's VMCOREINFO text in a raw image."""
    import mmap

    needle = f"OSRELEASE={release}\n".encode()
    pages = set()
    with open(raw_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        at = mm.find(needle)
        while at >= 0 and len(pages) < 64:
            end = at + len(mm[at:at + 8192].split(b"\0", 1)[0])
            pages.update(range(at & ~0xFFF, end, 4096))
            at = mm.find(needle, at + 1)
    return sorted(pages)


def build_elf(raw_path, out_path, ranges, total, notes=b"", move_high=()):
    """An ELF64 core: PT_NOTE (``notes``), a PT_LOAD per real RAM range with the raw image's
    bytes, and one PT_LOAD [HIGH_RAM, total) over a hole of the file. ``move_high``: pages
    (physical addresses) moved to the top of memory (zeros where they were), as when the
    kernel's VMCOREINFO buffer was allocated high on a big machine."""
    ehsize, phsize = 64, 56
    loads = list(ranges) + [(HIGH_RAM, total)]
    nph = len(loads) + (1 if notes else 0)
    note_off = ehsize + nph * phsize
    off = -(-(note_off + len(notes)) // 4096) * 4096
    phdrs = b""
    if notes:
        phdrs += struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 0)
    placed = []
    for start, end in loads:
        n = end - start
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, off, 0, start, n, n, 0x1000)
        placed.append((start, off, n))
        off += n
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack(
        "<HHIQQQIHHHHHH", 4, 62, 1, 0, ehsize, 0, 0, ehsize, phsize, nph, 0, 0, 0)
    tmp = f"{out_path}.tmp{os.getpid()}"
    with open(raw_path, "rb") as raw, open(tmp, "wb") as out:
        out.write(ehdr + phdrs + notes)
        for start, foff, n in placed[:-1]:
            _copy_sparse(raw, out, start, foff, n)
        out.truncate(off)
        high_start, high_off, high_len = placed[-1]
        for i, page in enumerate(move_high):
            raw.seek(page)
            data = raw.read(4096)
            where = next(foff + page - start for start, foff, n in placed[:-1] if start <= page < start + n)
            out.seek(where)
            out.write(bytes(4096))
            out.seek(high_off + high_len - (len(move_high) - i) * 4096)
            out.write(data)
    os.replace(tmp, out_path)


_HDR_TAIL_AT = 408
_SUB = struct.Struct("<QiiQQqQqQqQQQQ")
_DESC = struct.Struct("<qIIQ")


def enlarge_kdump(src_path, out_path, total):
    """A kdump file of ``total`` bytes of RAM from a smaller one: the bitmaps grow (the range
    [HIGH_RAM, total) is RAM in the 1st bitmap and not in the file in the 2nd, as dump level 31
    leaves the free and user pages of a big machine), every page descriptor moves by the
    bitmaps' growth, the page data are copied as they are."""
    with open(src_path, "rb") as src:
        head = bytearray(src.read(4096))
        (_s, _u, _status, bs, sub_blocks, bitmap_blocks, _m32, _t, _d, _w, _c, _n) = struct.unpack_from(
            "<qqIiiIIIIIIi", head, _HDR_TAIL_AT)
        src.seek(bs)
        sub_area = bytearray(src.read(sub_blocks * bs))
        sub = list(_SUB.unpack_from(sub_area))
        old_half = bitmap_blocks * bs // 2
        bm_off = (1 + sub_blocks) * bs
        src.seek(bm_off)
        bm1 = src.read(old_half)
        bm2 = src.read(old_half)
        old_data = bm_off + 2 * old_half
        ndesc = int.from_bytes(bm2, "little").bit_count()
        src.seek(old_data)
        descs = bytearray(src.read(ndesc * _DESC.size))
        mapnr = total // bs
        half = -(-(-(-mapnr // 8)) // bs) * bs
        delta = 2 * (half - old_half)
        for i in range(ndesc):
            off, size, flags, pflags = _DESC.unpack_from(descs, i * _DESC.size)
            _DESC.pack_into(descs, i * _DESC.size, off + delta, size, flags, pflags)
        struct.pack_into("<II", head, _HDR_TAIL_AT + 28, 2 * half // bs, min(mapnr, 0xFFFFFFFF))
        sub[4] = min(mapnr, 0xFFFFFFFF)
        sub[11:14] = [0, mapnr, mapnr]
        _SUB.pack_into(sub_area, 0, *sub)
        tmp = f"{out_path}.tmp{os.getpid()}"
        with open(tmp, "wb") as out:
            out.write(bytes(head).ljust(bs, b"\0"))
            out.write(sub_area)
            high = HIGH_RAM // bs // 8
            out.write(bm1)
            out.seek(bm_off + high)
            remaining = half - high
            ones = b"\xff" * COPY_CHUNK
            while remaining > 0:
                n = min(remaining, COPY_CHUNK)
                out.write(ones[:n])
                remaining -= n
            out.seek(bm_off + half)
            out.write(bm2)
            out.seek(bm_off + 2 * half)
            out.write(descs)
            src.seek(old_data + len(descs))
            shutil.copyfileobj(src, out, COPY_CHUNK)
    os.replace(tmp, out_path)


def build(case, workdir, total):
    import dumps
    from helpers import kdump as kdumpbuilder

    out = Path(workdir) / f"{case}-{total >> 30}g.{'kdump' if case.startswith('kdump') else 'elf'}"
    if out.exists():
        return out
    raw = dumps.dump_path(NAME)
    truth = dumps.load_truth(NAME)
    ranges = dumps.ram_ranges(truth)
    if case == "elf-cpu":
        arch, cpus = dumps.qemu_cpu_registers(NAME, raw)
        build_elf(raw, out, ranges, total, kdumpbuilder.qemu_notes(arch, cpus))
    elif case == "elf-vmci":
        text = dumps._vmcoreinfo_in(raw, truth["kernel"]["meta"]["release"])
        build_elf(raw, out, ranges, total, kdumpbuilder.note(b"VMCOREINFO", text))
    elif case == "elf-bare":
        moved = vmcoreinfo_pages(raw, truth["kernel"]["meta"]["release"])
        build_elf(raw, out, ranges, total, move_high=moved)
    elif case == "kdump-vmci":
        enlarge_kdump(dumps.kdump_of(NAME), out, total)
    elif case == "kdump-qemu":
        enlarge_kdump(dumps.qemu_kdump_of(NAME), out, total)
    return out


# --- measuring -----------------------------------------------------------------------------


def run_child(argv, env=None):
    """(CPU s, peak RSS MB, wall s, rc, stderr) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = proc.stderr.read()
    _pid, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    return (ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, wall,
            os.waitstatus_to_exitcode(status), err.decode(errors="replace"))


def vol_output(path, plugin):
    """The JSON rows `vol` prints for ``path``."""
    argv, env = vol_argv(path, plugin)
    return subprocess.run(argv, env=env, capture_output=True, text=True).stdout


def vol_argv(path, plugin, progress=False):
    import volrun

    sym = str(volrun.kernel_isf_dir(NAME))
    env = volrun.vol_env({"VOLATILITY3_KTSTR_NO_DUMP_MEMO": "1"})
    argv = [volrun.venv_bin("vol"), *([] if progress else ["-q"]), "-r", "json", "--cache-path",
            str(volrun.identifier_cache_dir([sym], env["XDG_CACHE_HOME"])), "-s", sym,
            "-f", str(path), *volrun.plugin_dir_args(), plugin]
    return argv, env


SCAN_CHILD = r"""
import json, resource, sys, time
from volatility3.framework import contexts
from volatility3.framework.layers import physical, elf
from volatility3_ktstr.layers.scan import scan_image
path, limit, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = contexts.Context()
ctx.config["file.location"] = "file://" + path
ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
name = "file"
if kind == "elf":
    ctx.config["elf.base_layer"] = "file"
    ctx.add_layer(elf.Elf64Layer(ctx, "elf", "elf"))
    name = "elf"
reports = []
t0 = time.process_time()
hits = sum(1 for _ in scan_image(ctx, name, lambda pct, msg: reports.append(pct), limit=limit))
cpu = time.process_time() - t0
print(json.dumps({"cpu": cpu, "hits": hits, "reports": len(reports),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bench_scan(path, gib, kind):
    """(GiB/s of CPU, peak RSS MB, progress reports, hits) of scan_image over the first ``gib``
    GiB of data of ``path`` (a raw file, or an ELF core), every window read, in a child."""
    import volrun

    proc = subprocess.run([sys.executable, "-c", SCAN_CHILD, str(path), str(int(gib * GIB)), kind],
                          capture_output=True, text=True, env=volrun.vol_env())
    if proc.returncode:
        raise SystemExit(f"scan child failed: {proc.stderr[-2000:]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return gib / max(got["cpu"], 1e-9), got["rss_mb"], got["reports"], got["hits"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gib", type=int, default=1024, help="RAM of the faked machine")
    ap.add_argument("--workdir", default=None, help="where the sparse files go "
                    "(default: $KTSTR_DUMPS_CACHE or ~/.cache/ktstr-dumps, bigmem/)")
    ap.add_argument("--plugin", default="linux.pslist")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--scan-gib", type=int, default=8, help="GiB the scan measurement reads")
    ap.add_argument("--repeat", type=int, default=3, help="vol runs per case (median CPU, max RSS)")
    ap.add_argument("--keep", action="store_true", help="keep the sparse files for the next run")
    ap.add_argument("--build", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import dumps

    if dumps.dumps_root() is None:
        print("skipped: KTSTR_DUMPS is unset")
        return 0
    total = args.size_gib * GIB
    workdir = Path(args.workdir or dumps.CACHE / "bigmem")
    workdir.mkdir(parents=True, exist_ok=True)
    if args.build:
        import volrun

        volrun.kernel_isf_dir(NAME)
        print(build(args.build, workdir, total))
        return 0
    cases = [c for c in args.cases.split(",") if c]
    ok = True
    print(f"machine: {args.size_gib} GiB of RAM; real data from {NAME}; plugin {args.plugin}")
    raw = subprocess.run([sys.executable, "-c", "import sys; sys.path[:0] = sys.argv[1:]; import dumps; "
                          f"print(dumps.dump_path({NAME!r}))", str(REPO / "tests")],
                         capture_output=True, text=True).stdout.strip()
    want = vol_output(raw, args.plugin)
    # The floor: the real 1 GiB dump opened a second time (kernel location remembered).
    argv, env = vol_argv(raw, args.plugin)
    env.pop("VOLATILITY3_KTSTR_NO_DUMP_MEMO")
    floor = [run_child(argv, env) for _ in range(args.repeat + 1)][1:]
    print(f"floor: {args.plugin} on the real 1 GiB dump, second open: "
          f"{statistics.median(r[0] for r in floor):.2f} s CPU, {max(r[1] for r in floor):.0f} MB")
    print(f"{'case':12} {'file GiB':>9} {'on disk MiB':>11} {'CPU s':>6} {'wall s':>6} {'RSS MB':>7}  "
          f"{'rows':>9}  verdict")
    built = []
    for case in cases:
        t0 = time.perf_counter()
        # Built by a child: a process's peak RSS starts from its parent's at fork (Linux
        # copies the high-water mark), so this one must never hold or map much.
        out = subprocess.run([sys.executable, __file__, "--build", case, "--size-gib",
                              str(args.size_gib), "--workdir", str(workdir)],
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"building {case} failed: {out.stderr[-2000:]}")
        path = Path(out.stdout.strip().splitlines()[-1])
        built.append(path)
        build_s = time.perf_counter() - t0
        st = path.stat()
        argv, env = vol_argv(path, args.plugin)
        runs = [run_child(argv, env) for _ in range(args.repeat)]
        cpu = statistics.median(r[0] for r in runs)
        rss = max(r[1] for r in runs)
        wall = statistics.median(r[2] for r in runs)
        rc = max(r[3] for r in runs)
        err = next((r[4] for r in runs if r[3]), runs[0][4])
        if rc != 0:
            verdict = f"FAILED rc={rc}: {err.strip().splitlines()[-1] if err.strip() else ''}"
            ok = False
        elif case in NOTES_CASES:
            good = cpu < TARGET_CPU_S and rss < TARGET_RSS_MB
            ok &= good
            verdict = "met" if good else f"NOT met (< {TARGET_CPU_S} s, < {TARGET_RSS_MB} MB)"
        else:
            verdict = "(no notes: scan)"
        same = vol_output(path, args.plugin) == want
        ok &= same
        print(f"{case:12} {st.st_size / GIB:9.1f} {st.st_blocks * 512 / (1 << 20):11.0f} {cpu:6.2f} "
              f"{wall:6.2f} {rss:7.0f}  {'= raw' if same else 'DIFFER':>9}  {verdict}   "
              f"[built in {build_s:.0f} s]", flush=True)
    bare = next((p for p in built if p.name.startswith("elf-bare")), None)
    if args.scan_gib:
        rate, rss, reports, hits = bench_scan(raw, 1, "raw")
        print(f"scan of the real 1 GiB raw dump (dense data): {rate:.2f} GiB/s of CPU, "
              f"peak RSS {rss:.0f} MB, {reports} progress reports, {hits} hits")
    if bare is not None and args.scan_gib:
        rate, rss, reports, hits = bench_scan(bare, args.scan_gib, "elf")
        print(f"scan of the first {args.scan_gib} GiB of data of {bare.name} (1 GiB real, then a "
              f"hole): {rate:.2f} GiB/s of CPU, peak RSS {rss:.0f} MB, {reports} progress "
              f"reports, {hits} hits")
        argv, env = vol_argv(bare, args.plugin, progress=True)
        _cpu, _rss, _wall, _rc, err = run_child(argv, env)
        shown = [line for line in err.replace("\r", "\n").splitlines() if "scanning" in line]
        print(f"vol without -q on {bare.name}: {len(shown)} progress lines about the scan"
              + (f", last: {shown[-1].strip()!r}" if shown else ""))
    if not args.keep:
        for path in built:
            path.unlink()
    print(f"targets for files with CPU notes or VMCOREINFO: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
