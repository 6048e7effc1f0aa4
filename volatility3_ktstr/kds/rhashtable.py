"""Resizable hash tables (include/linux/rhashtable-types.h, lib/rhashtable.c).

``struct rhashtable {tbl, ...}`` points at a ``struct bucket_table {size, nest, ...,
future_tbl, buckets[]}``; each bucket is a chain of ``struct rhash_head {next}`` ending at an
odd "nulls" marker (bit 0 of a bucket head is its lock bit since 5.x, so it is masked). While a
rehash is in flight ``future_tbl`` points at the next table and objects may be on both: objects
are yielded once. Nested tables (``nest`` != 0, for tables too big for one allocation) are
reported as damage, not walked.
"""

from typing import Iterator, Optional, Set

from ..core import Layout, ReadError, Reader
from .damage import DamageLog, log_of

MAX_BUCKETS = 1 << 20
MAX_ENTRIES = 1 << 16
MAX_TABLES = 4            # bucket_table -> future_tbl chain


def rhashtable_nodes(reader: Reader, layout: Layout, ht: int, *, limit: int = MAX_ENTRIES,
                     damage: Optional[DamageLog] = None, what: str = "rhash node") -> Iterator[int]:
    """Addresses of the ``struct rhash_head`` of every object in the table at ``ht``."""
    damage = log_of(damage)
    try:
        tbl = reader.ptr(ht + layout.offset("rhashtable", "tbl"))
    except ReadError as e:
        damage.add("rhashtable", ht, f"unreadable ({e.reason})")
        return
    f_size = layout.field("bucket_table", "size")
    f_nest = layout.field("bucket_table", "nest") if layout.has("bucket_table", "nest") else None
    f_future = layout.field("bucket_table", "future_tbl")
    off_buckets = layout.offset("bucket_table", "buckets")
    off_next = layout.offset("rhash_head", "next")
    seen: Set[int] = set()
    tables: Set[int] = set()
    while tbl and len(tables) < MAX_TABLES:
        if tbl in tables:
            damage.add("bucket_table", tbl, "future_tbl cycle", "corrupt")
            return
        tables.add(tbl)
        try:
            hdr = reader.read(tbl, off_buckets)
        except ReadError as e:
            damage.add("bucket_table", tbl, f"unreadable ({e.reason})")
            return
        size = f_size.decode(hdr)
        future = f_future.decode(hdr)
        if f_nest is not None and f_nest.decode(hdr):
            damage.add("bucket_table", tbl, f"nested table of {size} buckets: not walked", "bound")
            tbl = future
            continue
        if not 0 < size <= MAX_BUCKETS or size & (size - 1):
            damage.add("bucket_table", tbl, f"implausible size {size}", "corrupt")
            return
        try:
            buckets = reader.read(tbl + off_buckets, 8 * size)
        except ReadError as e:
            damage.add("bucket array", tbl + off_buckets, f"unreadable ({e.reason})")
            return
        for i in range(size):
            p = int.from_bytes(buckets[8 * i:8 * i + 8], "little") & ~1
            steps = 0
            while p and not p & 1:
                if p in seen:
                    break      # rehash duplicate, or a cycle back into known nodes
                if len(seen) >= limit:
                    damage.add(what, p, f"stopped after {limit} entries", "bound")
                    return
                if steps > limit:
                    damage.add(what, p, "chain longer than the table bound", "bound")
                    break
                seen.add(p)
                steps += 1
                yield p
                try:
                    p = reader.ptr(p + off_next)
                except ReadError as e:
                    damage.add(what, p, f"unreadable ({e.reason}): rest of the chain skipped")
                    break
        tbl = future
