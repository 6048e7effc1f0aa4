"""Map values out of kernel memory: ARRAY, PERCPU_ARRAY, the HASH family and STRUCT_OPS.

Walkers over a :class:`Reader` + :class:`Layout` (kernel types), yielding :class:`Entry`
records with raw key/value bytes; rendering is the caller's business. Every loop is bounded
and unreadable parts become entries with ``error`` set (never an exception, never dropped).

Layouts (kernel/bpf/arraymap.c, hashtab.c, bpf_struct_ops.c):

- ARRAY: values inline at ``bpf_array.value``, stride ``bpf_array.elem_size``
  (``round_up(value_size, 8)``).
- PERCPU_ARRAY: ``bpf_array.pptrs[i]`` is a ``__percpu`` pointer; CPU c's copy is at
  ``pptr + __per_cpu_offset[c]``.
- HASH/LRU_HASH (+PERCPU): ``bpf_htab.buckets[n_buckets]`` of ``struct bucket {head, lock}``;
  chains are ``hlist_nulls`` (an odd pointer ends a chain); the element is ``htab_elem`` with
  the key at ``htab_elem.key`` and the value ``round_up(key_size, 8)`` after it (PERCPU: that
  slot holds the ``__percpu`` pointer).
- STRUCT_OPS: ``bpf_struct_ops_map.kvalue`` is the live ``bpf_struct_ops_<name>`` (common +
  data); ``uvalue`` is the user's copy where function slots hold program ids.
"""

from dataclasses import dataclass, field

from ..core import LayoutError, ReadError, percpu_sum, read_int
from ..kds import DamageLog, hlist_nulls_nodes

MAX_VALUE_SIZE = 16 << 20          # one value (ktstr's cap)
MAX_BUCKETS = 1 << 20              # bpf_htab.n_buckets bound (the kernel caps at 2^31; be sane)
MAX_CHAIN_VISITS = 1_000_000       # nodes visited over a whole hash walk
BULK = 1 << 20                     # bytes per bulk read of inline array values / bucket arrays

HASH_TYPES = ("hash", "lru_hash", "percpu_hash", "lru_percpu_hash")
PERCPU_TYPES = ("percpu_array", "percpu_hash", "lru_percpu_hash")
WALKABLE = ("array", "percpu_array", "struct_ops") + HASH_TYPES


class ValueError_(Exception):
    """A map whose values cannot be walked at all (the message says why)."""


@dataclass
class Entry:
    """One map element. ``value`` for plain maps; ``percpu`` = [(cpu, bytes or None)] for
    per-CPU maps. ``error`` says what could not be read (other fields may then be None)."""

    index: int                   # array index, or ordinal of the element in the hash walk
    key: bytes = None
    value: bytes = None
    percpu: list = None
    kva: int = 0                 # address of the value (array) or of the htab_elem
    error: str = None
    formatted: dict = None       # map types without BTF values (bpf.mapkinds): the row's JSON
    text: str = None             # ... and its one-line value


@dataclass
class WalkInfo:
    """Counters of a walk for the report row at the end."""

    total: int = 0               # elements the map says it has (array: max_entries)
    shown: int = 0
    truncated: bool = False
    skipped: list = field(default_factory=list)   # (address, reason)


def _round8(n):
    return (n + 7) & ~7


def _read_chunked(reader, addr, size):
    """Bulk read; None when any part is unreadable."""
    parts = []
    done = 0
    while done < size:
        n = min(BULK, size - done)
        raw = reader.try_read(addr + done, n)
        if raw is None:
            return None
        parts.append(raw)
        done += n
    return b"".join(parts)


def percpu_read(reader, pptr, offsets, size):
    """[(cpu, bytes or None)] for a ``__percpu`` pointer."""
    out = []
    for cpu, off in enumerate(offsets):
        if cpu and not off:
            out.append((cpu, None))   # an unused tail slot, would alias CPU 0
            continue
        out.append((cpu, reader.try_read(percpu_sum(pptr, off), size)))
    return out


# --- ARRAY / PERCPU_ARRAY --------------------------------------------------------------------

def array_entries(reader, layout, m, limit=4096, info=None):
    info = info if info is not None else WalkInfo()
    if not 0 < m.value_size <= MAX_VALUE_SIZE:
        raise ValueError_(f"implausible value_size {m.value_size}")
    base = m.kva + layout.offset("bpf_array", "value")
    stride = _elem_size(reader, layout, m)
    n = min(m.max_entries, limit)
    info.total, info.shown, info.truncated = m.max_entries, n, m.max_entries > n
    i = 0
    while i < n:
        # Read as many whole elements as fit in one bulk read; fall back to one by one.
        batch = max(1, min(n - i, BULK // stride))
        raw = reader.try_read(base + i * stride, batch * stride)
        for j in range(batch):
            addr = base + (i + j) * stride
            if raw is not None:
                value = raw[j * stride:j * stride + m.value_size]
            else:
                value = reader.try_read(addr, m.value_size)
            yield Entry(index=i + j, key=(i + j).to_bytes(4, "little"), value=value, kva=addr,
                        error=None if value is not None else f"value at {addr:#x} unreadable")
        i += batch


def _elem_size(reader, layout, m):
    stride = _round8(m.value_size)
    if layout.has("bpf_array", "elem_size"):
        try:
            es = read_int(reader, layout, "bpf_array", m.kva, "elem_size")
            if es >= m.value_size and es == _round8(m.value_size):
                stride = es
        except ReadError:
            pass
    return stride


def percpu_array_entries(reader, layout, m, offsets, limit=4096, info=None):
    info = info if info is not None else WalkInfo()
    if not 0 < m.value_size <= MAX_VALUE_SIZE:
        raise ValueError_(f"implausible value_size {m.value_size}")
    if not offsets:
        raise ValueError_("no per-CPU offsets (__per_cpu_offset unreadable)")
    base = m.kva + layout.first("bpf_array", "pptrs", "value")
    n = min(m.max_entries, limit)
    info.total, info.shown, info.truncated = m.max_entries, n, m.max_entries > n
    raw = _read_chunked(reader, base, 8 * n)
    if raw is None:
        raise ValueError_(f"per-CPU pointer array at {base:#x} unreadable")
    for i in range(n):
        pptr = int.from_bytes(raw[8 * i:8 * i + 8], "little")
        if not pptr:
            yield Entry(index=i, key=i.to_bytes(4, "little"), kva=base + 8 * i, error="NULL per-CPU pointer")
            continue
        yield Entry(index=i, key=i.to_bytes(4, "little"), kva=pptr,
                    percpu=percpu_read(reader, pptr, offsets, m.value_size))


# --- HASH family -------------------------------------------------------------------------------

def bucket_struct(layout):
    """The ``struct bucket`` of the hash table (a kernel may have several structs named
    ``bucket``): the one whose ``head`` is an hlist_nulls_head."""
    for name in layout.variants("bucket"):
        if layout.has(name, "head") and \
                layout.field(name, "head").type_name.split()[-1] == "hlist_nulls_head":
            return name
    raise LayoutError("no 'struct bucket' with an hlist_nulls_head 'head' member in the kernel types")


def htab_entries(reader, layout, m, offsets=None, limit=4096, info=None, bucket=None):
    info = info if info is not None else WalkInfo()
    percpu = m.type_name in ("percpu_hash", "lru_percpu_hash")
    if not 0 < m.value_size <= MAX_VALUE_SIZE or not 0 < m.key_size <= MAX_VALUE_SIZE:
        raise ValueError_(f"implausible key/value size {m.key_size}/{m.value_size}")
    if percpu and not offsets:
        raise ValueError_("no per-CPU offsets (__per_cpu_offset unreadable)")
    bucket = bucket or bucket_struct(layout)
    try:
        n_buckets = read_int(reader, layout, "bpf_htab", m.kva, "n_buckets")
        buckets = read_int(reader, layout, "bpf_htab", m.kva, "buckets")
    except ReadError as e:
        raise ValueError_(f"bpf_htab unreadable: {e.reason}") from None
    if not n_buckets or n_buckets > MAX_BUCKETS or n_buckets & (n_buckets - 1) or not buckets:
        raise ValueError_(f"implausible hash table (n_buckets {n_buckets}, buckets {buckets:#x})")
    stride = layout.size(bucket)
    f_first = layout.field(bucket, "head.first")
    node_off = layout.first("htab_elem", "hash_node")
    key_off = layout.offset("htab_elem", "key") if layout.has("htab_elem", "key") else layout.size("htab_elem")
    val_off = key_off + _round8(m.key_size)
    vsize = 8 if percpu else m.value_size
    elem_read = val_off + vsize
    visits = 0
    ordinal = 0
    for b0 in range(0, n_buckets, max(1, BULK // stride)):
        nb = min(n_buckets - b0, max(1, BULK // stride))
        raw = reader.try_read(buckets + b0 * stride, nb * stride)
        for bi in range(nb):
            baddr = buckets + (b0 + bi) * stride
            if raw is not None:
                first = f_first.decode(raw, -bi * stride)
            else:
                try:
                    first = read_int(reader, layout, bucket, baddr, "head.first")
                except ReadError as e:
                    info.skipped.append((baddr, f"bucket {b0 + bi} unreadable: {e.reason}"))
                    continue
            chain = DamageLog()
            for node, data in hlist_nulls_nodes(reader, layout, first=first, damage=chain,
                                                limit=MAX_CHAIN_VISITS - visits,
                                                window=(-node_off, elem_read)):
                visits += 1
                elem = node - node_off
                if data is None:
                    info.skipped.append((elem, f"element in bucket {b0 + bi} unreadable"))
                    continue
                if ordinal >= limit:
                    info.truncated = True
                    info.total = ordinal + 1
                    ordinal += 1
                    continue
                key = data[key_off:key_off + m.key_size]
                if percpu:
                    pptr = int.from_bytes(data[val_off:val_off + reader.pointer_size], "little")
                    e = Entry(index=ordinal, key=key, kva=elem,
                              percpu=percpu_read(reader, pptr, offsets, m.value_size) if pptr else [],
                              error=None if pptr else "NULL per-CPU pointer")
                else:
                    e = Entry(index=ordinal, key=key, value=data[val_off:val_off + m.value_size], kva=elem)
                ordinal += 1
                info.shown += 1
                yield e
            for d in chain:
                if d.kind == "bound":
                    info.truncated = True
                    info.skipped.append((d.addr, f"stopped after {MAX_CHAIN_VISITS} chain nodes"))
                    return
                if d.kind == "cycle":
                    info.skipped.append((d.addr, f"cycle in bucket {b0 + bi}"))
                else:
                    info.skipped.append((d.addr - node_off, f"element in bucket {b0 + bi} unreadable"))
    info.total = max(info.total, ordinal)


# --- STRUCT_OPS --------------------------------------------------------------------------------

def struct_ops_value(reader, layout, m):
    """(kvalue bytes, uvalue bytes or None, kvalue address): the whole ``bpf_struct_ops_<name>``
    (``value_size`` bytes: common header + the ops struct)."""
    if not 0 < m.value_size <= MAX_VALUE_SIZE:
        raise ValueError_(f"implausible value_size {m.value_size}")
    kaddr = m.kva + layout.offset("bpf_struct_ops_map", "kvalue")
    kval = reader.try_read(kaddr, m.value_size)
    if kval is None:
        raise ValueError_(f"struct_ops kvalue at {kaddr:#x} unreadable")
    uval = None
    if layout.has("bpf_struct_ops_map", "uvalue"):
        try:
            uaddr = read_int(reader, layout, "bpf_struct_ops_map", m.kva, "uvalue")
            uval = reader.try_read(uaddr, m.value_size) if uaddr else None
        except ReadError:
            uval = None
    return kval, uval, kaddr


MAX_RECORD_FIELDS = 64              # btf_record.cnt bound (the kernel's BTF_FIELDS_MAX is 11)


def special_fields(reader, layout, map_kva):
    """[(offset, size)] of the value's special fields (``map->record``: spin locks, timers,
    kptrs, list/rbtree heads and nodes, refcounts, workqueues): the kernel never copies them
    to user space (``bpf_obj_memcpy`` skips them, ``check_and_init_map_value`` zeroes them),
    so bpftool shows zeros there. [] without a record (or on kernels without one, < 6.2)."""
    if not (layout.has("bpf_map", "record") and layout.has("btf_record", "fields")):
        return []
    try:
        rec = read_int(reader, layout, "bpf_map", map_kva, "record")
        # NULL, or an ERR_PTR (-errno) when parsing the record failed: no special fields.
        if not rec or rec >= (1 << 64) - 4095:
            return []
        cnt = read_int(reader, layout, "btf_record", rec, "cnt")
        if not 0 < cnt <= MAX_RECORD_FIELDS:
            return []
        esize = layout.size("btf_field")
        off_f, size_f = layout.field("btf_field", "offset"), layout.field("btf_field", "size")
        raw = reader.read(rec + layout.offset("btf_record", "fields"), esize * cnt)
    except (ReadError, LayoutError):
        return []
    elems = (raw[i * esize:(i + 1) * esize] for i in range(cnt))
    return [(off_f.decode(e), size_f.decode(e)) for e in elems]


def as_copied(value, fields):
    """``value`` as the kernel copies it out: its special fields zeroed."""
    if value is None or not fields:
        return value
    out = bytearray(value)
    for off, size in fields:
        if off < len(out):
            end = min(len(out), off + size)
            out[off:end] = bytes(end - off)
    return bytes(out)


def iter_entries(reader, layout, m, offsets=None, limit=4096, info=None):
    """Entries of any walkable map type (raises ValueError_ for the others), values as the
    kernel copies them to user space (:func:`as_copied`)."""
    t = m.type_name
    if t == "array":
        entries = array_entries(reader, layout, m, limit, info)
    elif t == "percpu_array":
        entries = percpu_array_entries(reader, layout, m, offsets, limit, info)
    elif t in HASH_TYPES:
        entries = htab_entries(reader, layout, m, offsets, limit, info)
    else:
        raise ValueError_(f"map type {t} has no value walker")
    fields = special_fields(reader, layout, m.kva)
    if not fields:
        return entries
    return (_copied(e, fields) for e in entries)


def _copied(e, fields):
    e.value = as_copied(e.value, fields)
    if e.percpu is not None:
        e.percpu = [(cpu, as_copied(v, fields)) for cpu, v in e.percpu]
    return e
