"""Translations per second: ktstr's LA57 and AArch64 layers next to Volatility's Intel32e.

Each layer gets the same synthetic workload: N distinct 4 KiB-granule-or-larger pages mapped
through real page tables in a BufferDataLayer (page tables in memory, leaf entries pointing
at a handful of data pages).  Two passes per layer:

  cold  - N distinct pages, N larger than the layers' translation caches (full walks)
  warm  - 256 pages, repeated (cache hits)

Usage: python bench/translate_bench.py [--pages N] [--rounds R]
Target (issue 3): every new layer within 1.5x of stock Intel32e's rate.
"""

import argparse
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from volatility3.framework import contexts  # noqa: E402
from volatility3.framework.layers import intel, physical  # noqa: E402

from volatility3_ktstr.layers import LinuxAArch64, LinuxIntel32eLA57  # noqa: E402

M64 = (1 << 64) - 1


class Tables:
    """Allocates page tables in a bytearray and maps pages (x86 or arm64 format)."""

    def __init__(self, table_size, levels_shifts, index_bits, encode_table, encode_page):
        self.buf = bytearray()
        self.table_size = table_size
        self.shifts = levels_shifts  # per level: shift of the VA bits it indexes
        self.bits = index_bits
        self.enc_table, self.enc_page = encode_table, encode_page
        self.tables = {}
        self.root = self._alloc()
        self.data = [self._alloc() for _ in range(4)]

    def _alloc(self):
        pa = len(self.buf)
        self.buf += bytes(self.table_size)
        return pa

    def map(self, va, n):
        table, key = self.root, ()
        for depth, (shift, bits) in enumerate(zip(self.shifts[:-1], self.bits[:-1])):
            i = (va >> shift) & ((1 << bits) - 1)
            key = key + (i,)
            if key not in self.tables:
                self.tables[key] = self._alloc()
                struct.pack_into("<Q", self.buf, table + 8 * i, self.enc_table(self.tables[key]))
            table = self.tables[key]
        i = (va >> self.shifts[-1]) & ((1 << self.bits[-1]) - 1)
        struct.pack_into("<Q", self.buf, table + 8 * i, self.enc_page(self.data[n % len(self.data)]))


def x86(levels, base_va):
    shifts = [12 + 9 * k for k in range(levels - 1, -1, -1)]
    return Tables(4096, shifts, [9] * levels, lambda pa: pa | 3, lambda pa: pa | 3 | (1 << 63)), base_va


def arm64(granule, va_bits):
    shift = {4096: 12, 16384: 14, 65536: 16}[granule]
    stride = shift - 3
    n = -(-(va_bits - shift) // stride)
    shifts = [shift + stride * k for k in range(n - 1, -1, -1)]
    bits = [va_bits - shifts[0]] + [stride] * (n - 1)
    lpa = va_bits == 52 and granule != 65536
    enc = (lambda pa: (pa & ((1 << 50) - 1)) | ((pa >> 50) & 3) << 8) if lpa else (lambda pa: pa)
    tables = Tables(granule, shifts, bits, lambda pa: enc(pa) | 3, lambda pa: enc(pa) | 3 | (1 << 10) | (1 << 54))
    return tables, (M64 << va_bits) & M64 | (1 << (va_bits - 2))


def make(name, cls, tables, page, pages, base_va, extra=None):
    vas = [base_va + k * page for k in range(pages)]
    for k, va in enumerate(vas):
        tables.map(va, k)
    ctx = contexts.Context()
    ctx.add_layer(physical.BufferDataLayer(ctx, "phys", "phys", bytes(tables.buf)))
    ctx.config["v.memory_layer"] = "phys"
    ctx.config["v.page_map_offset"] = tables.root
    for k, v in (extra or {}).items():
        ctx.config[f"v.{k}"] = v
    layer = cls(ctx, "v", "v")
    ctx.add_layer(layer)
    return name, layer, vas


def rate(layer, vas, rounds, repeats=3):
    """Best of ``repeats`` timings (the machine may be shared; the best run is the least noisy)."""
    translate = layer.translate
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(rounds):
            for va in vas:
                translate(va + 0x18)
        best = max(best, rounds * len(vas) / (time.perf_counter() - start))
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=12000, help="distinct pages in the cold pass")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    layers = []
    t, _ = x86(4, 0)
    layers.append(make("Intel32e (stock, 4-level)", intel.Intel32e, t, 4096, args.pages, 0xFFFF888000000000))
    t, _ = x86(4, 0)
    layers.append(make("LinuxIntel32e (stock)", intel.LinuxIntel32e, t, 4096, args.pages, 0xFFFF888000000000))
    t, _ = x86(5, 0)
    layers.append(make("LinuxIntel32eLA57", LinuxIntel32eLA57, t, 4096, args.pages, 0xFF11000000000000))
    for granule, va_bits in ((4096, 48), (4096, 52), (16384, 47), (65536, 48)):
        t, base = arm64(granule, va_bits)
        extra = {"page_map_offset_kernel": t.root, "arm64_granule": granule, "arm64_va_bits": va_bits,
                 "arm64_lpa": va_bits == 52 and granule != 65536}
        layers.append(make(f"LinuxAArch64 {granule // 1024}K/{va_bits}", LinuxAArch64, t, granule,
                           args.pages, base, extra))

    print(f"{'layer':32} {'cold/s':>10} {'warm/s':>10} {'cold vs stock':>14} {'warm vs stock':>14}")
    ref = None
    worst = 0.0
    for name, layer, vas in layers:
        for va in vas[:4]:  # sanity: the mapping is real
            assert layer.translate(va)[1] == "phys", name
        cold = rate(layer, vas, args.rounds)
        warm = rate(layer, vas[:256], max(1, args.rounds * 40))
        if ref is None:
            ref = (cold, warm)
        slow = max(ref[0] / cold, ref[1] / warm)
        if "ktstr" in type(layer).__module__:
            worst = max(worst, slow)
        print(f"{name:32} {cold:10.0f} {warm:10.0f} {ref[0] / cold:13.2f}x {ref[1] / warm:13.2f}x")
    print(f"slowest new layer vs stock Intel32e: {worst:.2f}x (target <= 1.5x)")
    return 0 if worst <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
