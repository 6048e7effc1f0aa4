"""Benchmark: vmlinux BTF -> ISF dict -> file. Prints wall time and peak RSS per step.

    python bench/isf_bench.py [BTF_OR_VMLINUX] [--system-map FILE] [-o OUT.json.xz] [--repeat N]

Default input: /sys/kernel/btf/vmlinux. Target (issue 2): parse + generate <= 2 s and <= 250 MB.
"""

import argparse
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from volatility3_ktstr import btf as btfmod  # noqa: E402
from volatility3_ktstr.isf import generate  # noqa: E402
from volatility3_ktstr.isf.output import write_isf  # noqa: E402
from volatility3_ktstr.isf.symbols import load_symbol_file  # noqa: E402


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("btf", nargs="?", default="/sys/kernel/btf/vmlinux")
    p.add_argument("--system-map", help="also time reading symbols (not part of the target)")
    p.add_argument("--arch", default=None)
    p.add_argument("-o", "--output", help="ISF file to write (default: a temp .json.xz)")
    p.add_argument("--repeat", type=int, default=1, help="repeat parse+generate, report the best")
    args = p.parse_args()

    base_mb = peak_mb()
    best = None
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        k = btfmod.load(args.btf)
        t1, c1 = time.perf_counter(), time.process_time()
        syms = load_symbol_file(args.system_map) if args.system_map else {}
        t2, c2 = time.perf_counter(), time.process_time()
        arch = args.arch or btfmod.elf_arch(args.btf) or btfmod.guess_arch(k) or "x86_64"
        isf = generate(k, syms, b"Linux version bench\n\0", arch, [])
        t3, c3 = time.perf_counter(), time.process_time()
        run = (t1 - t0, t2 - t1, t3 - t2, c1 - c0, c3 - c2)
        if best is None or sum(run) < sum(best):
            best = run
        if args.repeat > 1:
            del k, isf, syms
            k = isf = syms = None
    if isf is None:
        k = btfmod.load(args.btf)
        isf = generate(k, load_symbol_file(args.system_map) if args.system_map else {},
                       b"Linux version bench\n\0", arch, [])
    gen_mb = peak_mb()
    out = args.output or os.path.join(tempfile.mkdtemp(prefix="isf-bench-"), "bench.json.xz")
    t4 = time.perf_counter()
    write_isf(isf, out)
    t5 = time.perf_counter()
    parse_s, syms_s, gen_s, parse_cpu, gen_cpu = best
    print(f"input      {args.btf} ({os.path.getsize(args.btf) / 1e6:.1f} MB, {k.end_id - 1} types)")
    print(f"parse      {parse_s:6.2f} s wall  {parse_cpu:6.2f} s CPU")
    if args.system_map:
        print(f"symbols    {syms_s:6.2f} s wall  ({len(syms)} symbols)")
    print(f"generate   {gen_s:6.2f} s wall  {gen_cpu:6.2f} s CPU  ({len(isf['user_types'])} user types, "
          f"{len(isf['enums'])} enums)")
    print(f"parse+gen  {parse_s + gen_s:6.2f} s wall  {parse_cpu + gen_cpu:6.2f} s CPU  "
          f"peak RSS {gen_mb:.0f} MB (interpreter alone {base_mb:.0f} MB)")
    print(f"load avg   {os.getloadavg()[0]:.1f} (wall times grow with other work on the machine)")
    print(f"write      {t5 - t4:6.2f} s  -> {out} ({os.path.getsize(out) / 1e6:.1f} MB)")
    print(f"peak RSS   {peak_mb():.0f} MB total")


if __name__ == "__main__":
    main()
