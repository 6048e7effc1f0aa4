"""BPF local storage maps (task, cgroup, inode and socket storage): every element and its owner.

Kernel layout (kernel/bpf/bpf_local_storage.c): ``struct bpf_local_storage_map`` embeds the
``bpf_map`` and holds ``buckets`` (``1 << bucket_log`` ``bpf_local_storage_map_bucket``s, each a
plain NULL-terminated ``hlist_head``). Each element is a ``bpf_local_storage_elem`` linked through
``map_node``; its value is at ``sdata.data`` and its owner is ``local_storage->owner``. All four
map types share this layout; the map type only decides what the owner pointer points to.

Offsets come from a :class:`Layout` once (:class:`LocalStorageOffsets`); each element is one bulk
read (links, storage pointer and value together).
"""

from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

from ..core import Layout, LayoutError, ReadError, Reader
from ..kds import DamageLog, follow

MAX_BUCKETS = 1 << 16
MAX_VISITS = 1_000_000
MAX_VALUE_SIZE = 16 << 20
MAX_PROBLEMS = 1000          # reasons kept per map for --verbose; the counters stay exact
_BUCKET_CHUNK = 64 << 10     # bucket array read size (falls back to one bucket at a time)

_U64 = int.from_bytes


@dataclass(frozen=True)
class LocalStorageOffsets:
    """Offsets the walk needs, all from the layout (the kernel's BTF or ISF)."""

    smap_buckets: int        # bpf_local_storage_map.buckets
    smap_bucket_log: int     # bpf_local_storage_map.bucket_log (u32)
    bucket_size: int         # sizeof(bpf_local_storage_map_bucket): the array stride
    bucket_first: int        # bucket.list.first
    map_node: int            # elem.map_node: the chain link inside the element
    node_next: int           # hlist_node.next
    elem_local_storage: int  # elem.local_storage
    elem_smap: int           # elem.sdata.smap: the map the element belongs to
    value: int               # elem.sdata.data: start of the value
    ls_owner: int            # bpf_local_storage.owner

    @classmethod
    def from_layout(cls, layout) -> "LocalStorageOffsets":
        try:
            sdata = layout.offset("bpf_local_storage_elem", "sdata")
            offs = cls(
                smap_buckets=layout.offset("bpf_local_storage_map", "buckets"),
                smap_bucket_log=layout.offset("bpf_local_storage_map", "bucket_log"),
                bucket_size=layout.size("bpf_local_storage_map_bucket"),
                bucket_first=layout.offset("bpf_local_storage_map_bucket", "list")
                + layout.offset("hlist_head", "first"),
                map_node=layout.offset("bpf_local_storage_elem", "map_node"),
                node_next=layout.offset("hlist_node", "next"),
                elem_local_storage=layout.offset("bpf_local_storage_elem", "local_storage"),
                elem_smap=sdata + layout.offset("bpf_local_storage_data", "smap"),
                # sdata is ____cacheline_aligned: never assume where it lands.
                value=sdata + layout.offset("bpf_local_storage_data", "data"),
                ls_owner=layout.offset("bpf_local_storage", "owner"),
            )
        except LayoutError as e:
            raise LayoutError(f"BPF local storage layout: {e}") from None
        if offs.bucket_size <= 0:
            raise LayoutError("BPF local storage layout: struct bpf_local_storage_map_bucket has size 0")
        return offs

    @property
    def header_size(self) -> int:
        """Bytes of an element that hold the link, storage and smap pointers."""
        return max(self.map_node + self.node_next, self.elem_local_storage, self.elem_smap) + 8


@dataclass(slots=True)
class StorageElem:
    bucket: int          # bucket index
    kva: int             # the struct bpf_local_storage_elem
    storage: int         # elem.local_storage (0 while the element is being freed)
    owner: int           # storage->owner; 0 when unknown (see owner_error)
    owner_error: str     # why the owner is unknown, else None
    smap: int            # elem.sdata.smap (should be the map itself)
    value: bytes


@dataclass
class WalkStats:
    """What one map's walk saw. Every skip is counted, and explained in ``damage`` (a bounded
    DamageLog: --verbose shows one row per record)."""

    bucket_log: int = 0
    buckets: int = 0             # buckets walked
    buckets_skipped: int = 0     # unreadable bucket heads
    elements: int = 0            # elements emitted
    chains_broken: int = 0       # an unreadable element ended its chain
    cycles: int = 0              # a chain came back to an element already visited
    dropped_short: int = 0       # element readable but its value was not: dropped
    smap_mismatch: int = 0       # element whose sdata.smap is another map (kept, flagged)
    visit_cap_hit: bool = False  # the global visit budget ran out inside this map
    rejected: Optional[str] = None         # the map as a whole could not be walked: why
    damage: DamageLog = field(default_factory=lambda: DamageLog(MAX_PROBLEMS))

    @property
    def complete(self) -> bool:
        return not (self.rejected or self.visit_cap_hit or self.buckets_skipped
                    or self.chains_broken or self.cycles or self.dropped_short)

    def summary(self) -> str:
        if self.rejected:
            return f"not walked: {self.rejected}"
        parts = [f"{self.elements} elements in {self.buckets} buckets"]
        for n, what in ((self.buckets_skipped, "buckets skipped (unreadable)"),
                        (self.chains_broken, "chains broken (unreadable element)"),
                        (self.cycles, "chains cut at a cycle"),
                        (self.dropped_short, "elements dropped (value unreadable)"),
                        (self.smap_mismatch, "elements naming another map")):
            if n:
                parts.append(f"{n} {what}")
        if self.visit_cap_hit:
            parts.append("stopped: visit limit reached")
        return "; ".join(parts)


class VisitBudget:
    """Element visits left for the whole run (shared by every map walked)."""

    def __init__(self, limit=MAX_VISITS):
        self.left = limit


def read_map_header(reader: Reader, offs: LocalStorageOffsets, smap_kva: int) -> Tuple[int, int]:
    """(buckets kva, bucket_log) of the map at ``smap_kva``; ReadError if unreadable."""
    lo = min(offs.smap_buckets, offs.smap_bucket_log)
    hi = max(offs.smap_buckets + 8, offs.smap_bucket_log + 4)
    raw = reader.read(smap_kva + lo, hi - lo)
    buckets = _U64(raw[offs.smap_buckets - lo:offs.smap_buckets - lo + 8], "little")
    log = _U64(raw[offs.smap_bucket_log - lo:offs.smap_bucket_log - lo + 4], "little")
    return buckets, log


def _bucket_heads(reader, offs, buckets, n, stats):
    """Yield (index, first node) for each readable bucket; unreadable ones are counted."""
    stride = offs.bucket_size
    per_chunk = max(1, _BUCKET_CHUNK // stride)
    first = offs.bucket_first
    for start in range(0, n, per_chunk):
        count = min(per_chunk, n - start)
        base = buckets + start * stride
        try:
            raw = reader.read(base, count * stride)
        except ReadError:
            raw = None
        for i in range(count):
            if raw is not None:
                o = i * stride + first
                yield start + i, _U64(raw[o:o + 8], "little")
                continue
            # The chunk straddles an unreadable page: find out bucket by bucket.
            addr = base + i * stride
            try:
                yield start + i, _U64(reader.read(addr + first, 8), "little")
            except ReadError as e:
                stats.buckets_skipped += 1
                stats.damage.add("bucket skipped", addr, f"bucket {start + i} unreadable: {e.reason}")


def walk(reader: Reader, offs: LocalStorageOffsets, smap_kva: int, value_size: int,
         stats: Optional[WalkStats] = None, budget: Optional[VisitBudget] = None) -> Iterator[StorageElem]:
    """Yield a :class:`StorageElem` for every element of the local storage map at ``smap_kva``.

    Bounds: at most MAX_BUCKETS buckets; ``budget`` visits in all (shared across maps); a chain
    ends at NULL, at an unreadable element, or when it revisits an element (cycle).
    """
    stats = stats if stats is not None else WalkStats()
    budget = budget if budget is not None else VisitBudget()
    if not 0 <= value_size <= MAX_VALUE_SIZE:
        stats.rejected = f"value_size {value_size} exceeds {MAX_VALUE_SIZE}"
        return
    try:
        buckets, log = read_map_header(reader, offs, smap_kva)
    except ReadError as e:
        stats.rejected = f"struct bpf_local_storage_map unreadable: {e.reason}"
        return
    stats.bucket_log = log
    if not buckets:
        stats.rejected = "buckets pointer is NULL"
        return
    if log >= 32 or (1 << log) > MAX_BUCKETS:
        stats.rejected = f"bucket_log {log}: more than {MAX_BUCKETS} buckets"
        return
    n = 1 << log

    full_len = max(offs.header_size, offs.value + value_size)
    map_node = offs.map_node
    ls_off, smap_off, val_off = offs.elem_local_storage, offs.elem_smap, offs.value
    val_end = val_off + value_size
    owners: dict = {}  # storage kva -> (owner, error): one storage can hold several maps' elements

    for index, first in _bucket_heads(reader, offs, buckets, n, stats):
        stats.buckets += 1
        chain = DamageLog()
        limit = budget.left
        visited = 0
        # Nodes are the elements' map_node links; one read covers the element and its value.
        for node, raw in follow(reader, first, offs.node_next, _is_null, limit=limit, damage=chain,
                                what="element", window=(-map_node, full_len)):
            visited += 1
            elem = node - map_node
            if raw is None:
                stats.dropped_short += 1
                stats.damage.add("element dropped", elem,
                                 f"bucket {index}: value ({value_size} bytes at "
                                 f"{elem + val_off:#x}) unreadable")
                continue
            storage = _U64(raw[ls_off:ls_off + 8], "little")
            smap = _U64(raw[smap_off:smap_off + 8], "little")
            hit = owners.get(storage)
            if hit is None:
                hit = owners[storage] = _owner_of(reader, offs, storage)
            if smap != smap_kva:
                stats.smap_mismatch += 1
                stats.damage.add("element flagged", elem,
                                 f"bucket {index}: sdata.smap is {smap:#x}, not this map", "corrupt")
            stats.elements += 1
            yield StorageElem(index, elem, storage, hit[0], hit[1], smap, raw[val_off:val_end])
        budget.left -= visited
        for d in chain:
            if d.kind == "bound":
                stats.visit_cap_hit = True
                stats.damage.add("walk stopped", d.addr, "visit limit reached", "bound")
                return
            if d.kind == "cycle":
                stats.cycles += 1
                stats.damage.add("chain cut", d.addr, f"bucket {index}: cycle back to {d.addr:#x}", "cycle")
            else:
                stats.chains_broken += 1
                stats.damage.add("chain broken", d.addr - map_node,
                                 f"bucket {index}: element unreadable: {d.reason}")


def _is_null(addr):
    return addr == 0


def _owner_of(reader, offs, storage):
    if not storage:
        return 0, "local_storage is NULL (element being freed)"
    try:
        owner = reader.u64(storage + offs.ls_owner)
    except ReadError as e:
        return 0, f"struct bpf_local_storage at {storage:#x} unreadable: {e.reason}"
    if not owner:
        return 0, "local_storage->owner is NULL (owner being destroyed)"
    return owner, None


def walk_map(reader: Reader, layout: Layout, smap_kva: int, value_size: int,
             budget: Optional[VisitBudget] = None) -> Tuple[List[StorageElem], WalkStats]:
    """Convenience: (list of elements, stats) for one map, offsets from ``layout``."""
    stats = WalkStats()
    elems = list(walk(reader, LocalStorageOffsets.from_layout(layout), smap_kva, value_size,
                      stats, budget))
    return elems, stats
