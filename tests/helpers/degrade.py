"""Degraded copies of real kdump files: chosen pages marked excluded, as makedumpfile leaves
the pages its dump level drops (1st bitmap: RAM, 2nd bitmap: not dumped, no page descriptor).

Nothing is faked: every page still in the copy is the original's, and the pages taken out are
read as "excluded from the dump (makedumpfile dump level N)" -- exactly what a ``-d 31`` dump
of a kernel whose page flags makedumpfile does not know gives for in-use slab pages.
"""

import shutil
import struct

DESC_SIZE = 24


def kdump_offsets(head: bytes):
    """{block_size, bitmap2, bitmap_len, data_offset} of a (not flattened) kdump file."""
    if head[:8] != b"KDUMP   ":
        raise ValueError("not a kdump-compressed file (or a flattened one)")
    bs, sub_hdr_size, bitmap_blocks = struct.unpack_from("<iiI", head, 428)
    bitmap1 = (1 + sub_hdr_size) * bs
    half = bitmap_blocks * bs // 2
    return {"block_size": bs, "bitmap1": bitmap1, "bitmap2": bitmap1 + half, "bitmap_len": half,
            "data_offset": bitmap1 + bitmap_blocks * bs}


def exclude_pfns(src, dst, pfns):
    """Copy kdump file ``src`` to ``dst`` with the pages ``pfns`` excluded; returns the pfns
    that were dumped (and are now excluded)."""
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        head = f.read(4096)
        lay = kdump_offsets(head)
        f.seek(lay["bitmap2"])
        bm2 = bytearray(f.read(lay["bitmap_len"]))
        dumped = sorted(p for p in set(pfns) if p >> 3 < len(bm2) and bm2[p >> 3] >> (p & 7) & 1)
        total = sum(bin(b).count("1") for b in bm2)
        f.seek(lay["data_offset"])
        descs = bytearray(f.read(DESC_SIZE * total))
        # rank of each pfn among the dumped pages = index of its descriptor
        ranks = []
        for p in dumped:
            full = sum(bin(b).count("1") for b in bm2[:p >> 3])
            ranks.append(full + bin(bm2[p >> 3] & ((1 << (p & 7)) - 1)).count("1"))
        for r in sorted(ranks, reverse=True):
            del descs[DESC_SIZE * r:DESC_SIZE * (r + 1)]
        for p in dumped:
            bm2[p >> 3] &= ~(1 << (p & 7))
        f.seek(lay["bitmap2"])
        f.write(bm2)
        f.seek(lay["data_offset"])
        f.write(descs + bytes(DESC_SIZE * len(dumped)))
    return dumped


def pfn_of(kctx, va):
    """Page frame number behind kernel virtual address ``va`` (through the dump's page tables)."""
    layer = kctx.layer
    phys, _name = layer.translate(va)
    return phys // 4096
