#!/usr/bin/env python3
"""Long-mode fuzzing of the real dumps: many mutants, every linux.ktstr plugin, a table.

    KTSTR_DUMPS=../shared/dumps python tools/fuzz_dumps.py [--dump x86_64/scx_sdt ...]
        [--mutants 10000] [--seed 1] [--timeout 60] [--generator 50] [--findings FILE]
        [--containers 200]

Per dump: the baseline run, then ``--mutants`` mutants (tests/fuzzlib.py: bit flips, pointer
swaps, self-loops, huge counts, zeroed pages, page-table damage, truncation) with every plugin
on each, and ``--generator`` mutants of what `ktstr-isf --from-dump` carves (x86-64 raw dumps).
Prints, per plugin: mutants, documented errors (one line, exit 2), crashes, hangs, mutants that
lost entries outside their damage, mean seconds per run. A dump is opened the way `vol` opens
it; one it cannot open is one "not fuzzed: <why>" line, and the next dump follows. Findings (with the mutant that shows
each) go to stderr and, with --findings, to a file. Exit status 1 when anything was found.
The quick mode of the same harness runs in the tests (tests/test_fuzz_dumps.py).

``--containers N`` damages the files themselves instead (tests/helpers/containerfuzz.py): N
mutants of every kind (kdump headers, bitmaps, descriptors, bombs, undecodable pages, cuts at
structure boundaries, flattened records, ELF program headers and notes, LiME ranges) on
synthetic kdump/ELF/LiME files and on the real vmcores, each opened as `vol` opens it and read
page by page; a table per kind (``--containers-only`` skips the memory fuzzing).
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import dumps  # noqa: E402
import fuzzlib  # noqa: E402
import volrun  # noqa: E402


def harness_isf_dir(name):
    """The kernel ISF the tests build for ``name`` (kernels/<release>/ BTF + System.map), or
    None when the dumps folder lacks them: then, as for a plain `vol -f`, Volatility's own
    symbol paths and the automatic ISF builder decide."""
    try:
        btf, sysmap, _, _ = volrun.kernel_inputs(name)
    except (FileNotFoundError, KeyError):
        return None
    return volrun.kernel_isf_dir(name) if btf.is_file() and sysmap.is_file() else None


def fuzz_dump(name, args, out):
    t0 = time.perf_counter()
    session = fuzzlib.Session(name, harness_isf_dir(name), dumps.dump_path(name))
    session.record_baseline()
    print(f"== {name}: baseline {time.perf_counter() - t0:.1f} s; "
          + ", ".join(f"{p} {len(o.rows)} rows" for p, o in session.baseline.items()), flush=True)
    done = [0]

    def progress(mutant, outcomes, found):
        done[0] += 1
        for f in found:
            print(f, file=sys.stderr, flush=True)
            if out:
                out.write(f"{name}: {f}\n")
        if done[0] % 500 == 0:
            print(f"   {done[0]} mutants, {time.perf_counter() - t0:.0f} s", flush=True)

    tallies, findings = fuzzlib.fuzz(session, range(args.seed, args.seed + args.mutants),
                                     timeout=args.timeout, on_mutant=progress)
    print(fuzzlib.table(tallies))
    print(f"   peak RSS {fuzzlib.rss_mb():.0f} MB, {time.perf_counter() - t0:.0f} s", flush=True)
    return findings


def fuzz_generator(name, args, out):
    path = dumps.dump_path(name)
    targets = fuzzlib.generator_targets(path)
    counts = {"ok": 0, "error": 0, "crash": 0, "hang": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seed, args.seed + args.generator):
            what, patches = fuzzlib.generator_mutant(path, targets, seed)
            status, message = fuzzlib.run_generator(path, patches, Path(tmp) / "isf.json.gz")
            counts[status] += 1
            if status in ("crash", "hang"):
                line = f"ktstr-isf --from-dump: {status} (seed {seed} {what}): {message}"
                print(line, file=sys.stderr, flush=True)
                if out:
                    out.write(f"{name}: {line}\n")
    print(f"   ktstr-isf --from-dump on {args.generator} mutants: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
    return counts["crash"] + counts["hang"]


def fuzz_containers(args, out):
    from helpers import containerfuzz

    bases = containerfuzz.synthetic_bases()
    bases += [containerfuzz.real_base(n, dumps.dump_path(n)) for n in dumps.list_vmcores()]
    t0 = time.perf_counter()
    found = []

    def finding(mutant, result, what):
        line = f"container: {mutant.describe()}: {what}"
        found.append(line)
        print(line, file=sys.stderr, flush=True)
        if out:
            out.write(line + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        tallies = containerfuzz.run(bases, args.containers, args.seed, tmp, on_finding=finding)
    print(f"== containers: {', '.join(b.name for b in bases)}")
    print(containerfuzz.table(tallies))
    print(f"   {sum(t.mutants for t in tallies.values())} mutants, {len(found)} findings, "
          f"peak RSS {fuzzlib.rss_mb():.0f} MB, {time.perf_counter() - t0:.0f} s", flush=True)
    return len(found)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dump", action="append", help="dump name(s) (default: every dump)")
    p.add_argument("--mutants", type=int, default=10000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per plugin run")
    p.add_argument("--generator", type=int, default=50, help="ISF generator mutants per x86-64 dump")
    p.add_argument("--findings", help="also write findings to this file")
    p.add_argument("--containers", type=int, default=0, help="container mutants per kind and file")
    p.add_argument("--containers-only", action="store_true", help="only the container fuzzing")
    args = p.parse_args(argv)
    if dumps.dumps_root() is None:
        print("fuzz_dumps: error: set KTSTR_DUMPS to the dumps folder", file=sys.stderr)
        return 2
    names = args.dump or dumps.list_dumps()
    out = open(args.findings, "w") if args.findings else None
    bad = 0
    try:
        if args.containers:
            bad += fuzz_containers(args, out)
        for name in ([] if args.containers_only else names):
            try:
                bad += len(fuzz_dump(name, args, out))
            except (volrun.OpenError, FileNotFoundError) as e:
                # What vol would refuse too (or a missing file): one line, then the next dump.
                line = f"{name}: not fuzzed: {e}"
                print(f"== {line}", file=sys.stderr, flush=True)
                if out:
                    out.write(line + "\n")
                bad += 1
                continue
            if args.generator and dumps.load_truth(name)["run"]["arch"] == "x86_64":
                bad += fuzz_generator(name, args, out)
    finally:
        if out:
            out.close()
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
