"""Arena allocator walk throughput (blocks/s) on synthetic arenas filled by the scx library's
own algorithms (tests/helpers/scxalloc.py: buddy, stack).

    python bench/heaps_bench.py [--blocks 200000] [--repeat 3]

The buddy allocator gets ``--blocks`` allocations of 16..64 bytes (orders 0-2: the most
blocks per chunk, the walk's worst case) over as many 1 MiB chunks as they need, a third of
them freed again; the stack allocator up to 1200 elements of 64 bytes (a third freed; more would make freed
elements into segments, which a 64-byte element cannot hold). Prints live
blocks/s for the walk alone (target >= 500k/s, as sdtalloc) and with the free blocks listed.
"""

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from helpers.scxalloc import DECLS, Arena, Buddy, Stack  # noqa: E402
from helpers.synth import SynthKernel  # noqa: E402
from volatility3_ktstr.walkers import scxalloc  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    btf = SynthKernel(DECLS, pad=0).btf
    t0 = time.perf_counter()
    per_chunk = 60_000
    chunks = args.blocks // per_chunk + 3
    arena = Arena(size=(chunks + 2 + args.blocks // 4 * 64 // (1 << 20) + 2) << 20)
    b = Buddy(arena, btf)
    rng = random.Random(1)
    held = []
    for i in range(args.blocks):
        held.append(b.alloc(rng.choice((16, 32, 64))))
        if i % 3 == 2:
            b.free(held.pop(rng.randrange(len(held))))
    arena.next_page = (len(b.chunk_list()) + 2) << 20      # stack pages after the chunks
    s = Stack(arena, btf)
    elems = [s.alloc() for _ in range(min(args.blocks // 4, 1200))]   # frees stay below one segment
    for e in elems[::3]:
        s.free(e)
    print(f"built in {time.perf_counter() - t0:.1f} s: buddy {len(b.live)} live blocks in "
          f"{len(b.chunk_list())} chunks, stack {len(s.live)} live elements")
    for label, model, name in (("buddy", b, "lab_buddy"), ("stack", s, "lab_stack")):
        var = model.var.allocator_var(btf, name)
        for freed in (False, True):
            best = None
            for _ in range(args.repeat):
                t = time.perf_counter()
                w = scxalloc.walk(arena.mem, arena.info, var, freed=freed)
                dt = time.perf_counter() - t
                best = dt if best is None else min(best, dt)
            assert not list(w.damage), list(w.damage)[:3]
            n = len(w.blocks) + len(w.freed)
            print(f"{label:6s} {'live+free' if freed else 'live':9s} {n:8d} blocks  {best * 1e3:8.1f} ms"
                  f"  {n / best / 1e3:8.0f}k blocks/s")


if __name__ == "__main__":
    main()
