"""Values of the map types beyond arrays and hashes, each read from its kernel container
(layouts from BTF; the kernel sources named per walker):

- ``lpm_trie`` (kernel/bpf/lpm_trie.c): the trie from ``lpm_trie.root`` through
  ``lpm_trie_node.child[2]``; nodes without ``LPM_TREE_NODE_FLAG_IM`` hold an element: key =
  ``{prefixlen, data[data_size]}``, value after the data;
- ``queue``/``stack`` (queue_stack_maps.c): ``elements`` of ``size`` = max_entries + 1 slots;
  a queue pops from ``tail`` (oldest first), a stack from ``head - 1`` (top first): rows in
  pop order;
- ``bloom_filter`` (bloom_filter.c): one row with the parameters and the bitset;
- ``prog_array``, ``array_of_maps``, ``perf_event_array``, ``cgroup_array``: ``bpf_array.ptrs``
  slots as the id of the object they hold (``hash_of_maps``: the inner map pointer in each
  element);
- ``ringbuf``/``user_ringbuf`` (ringbuf.c): the records between ``consumer_pos`` and
  ``producer_pos`` (unconsumed: for a post-mortem the last events before the dump), each with
  its position, length and busy/discard bits; a first row with the positions;
- ``devmap``/``devmap_hash`` (devmap.c), ``cpumap`` (cpumap.c), ``xskmap`` (xskmap.c): the
  devices, CPUs and AF_XDP sockets with their programs;
- ``stack_trace`` (stackmap.c): each bucket's instruction pointers;
- ``cgroup_storage``/``percpu_cgroup_storage`` (local_storage.c, the legacy per-cgroup storage):
  the ``bpf_cgroup_storage`` elements on ``bpf_cgroup_storage_map.list``, keyed by
  ``{cgroup_inode_id, attach_type}`` (the first ``key_size`` bytes: a u64-keyed map holds the
  cgroup id alone), the value in ``buf->data`` or per CPU at ``percpu_buf``;
- ``reuseport_sockarray`` (reuseport_array.c): ``reuseport_array.ptrs[i]``, the ``struct sock``
  in each slot (value: its cookie, what a lookup returns), with ``describe(sock)`` adding its
  family, addresses and owner;
- ``rhash`` (the rhashtable-backed hash): every ``rhtab_elem`` of ``bpf_rhtab.ht``, key at
  ``data``, value at ``data + round_up(key_size, 8)`` (``rhtab_elem_value``);
- ``insn_array`` (bpf_insn_array.c): ``values[i]`` (``bpf_insn_array_value``: original, xlated
  and jitted offsets of instruction i), what a lookup returns, with ``ips[i]``.

Each walker yields :class:`volatility3_ktstr.bpf.values.Entry` (``formatted``: what the row's
JSON shows; ``text``: its one-line value). No Volatility import.
"""

import ipaddress

from ..core import ReadError, Record, read_int
from ..kds import DamageLog, list_entries, rhashtable_nodes, tree_nodes
from .values import Entry, ValueError_, WalkInfo, percpu_read

LPM_TREE_NODE_FLAG_IM = 1          # lpm_trie.c: an intermediate node (no value)
BPF_RINGBUF_BUSY_BIT = 1 << 31     # uapi/linux/bpf.h
BPF_RINGBUF_DISCARD_BIT = 1 << 30
MAX_SLOTS = 1 << 16
MAX_RECORDS = 1 << 16
MAX_NODES = 1 << 20
MAX_BITSET = 1 << 20               # bytes of a bloom filter bitset shown


def _u32(n):
    return int(n).to_bytes(4, "little")


def _map_base(layout, m, struct):
    return m.kva - layout.offset(struct, "map")


def lpm_entries(reader, layout, m, limit=4096, info=None):
    info = info if info is not None else WalkInfo()
    base = _map_base(layout, m, "lpm_trie")
    r = Record(reader, layout, "lpm_trie", base, ("root", "n_entries", "data_size"))
    data_size = r.int("data_size")
    if not 0 < data_size <= 256:
        raise ValueError_(f"implausible lpm_trie data_size {data_size}")
    info.total = r.int("n_entries")
    f_child = layout.field("lpm_trie_node", "child")
    data_off = layout.offset("lpm_trie_node", "data")
    node_size = data_off + data_size + m.value_size
    damage = DamageLog()
    raws = {}

    def children(node):
        raw = raws.get(node)
        if raw is None:
            return []
        return [c for c in (int.from_bytes(raw[f_child.offset + i * f_child.elem_size:][:f_child.elem_size],
                                           "little") for i in range(f_child.count)) if c]

    root = r.int("root")
    shown = 0
    for node, _depth, _parent in (tree_nodes(root, children, limit=MAX_NODES, damage=damage,
                                             what="lpm_trie_node") if root else ()):
        raw = reader.try_read(node, node_size)
        if raw is None:
            damage.add("lpm_trie_node", node, "unreadable")
            continue
        raws[node] = raw
        n = Record.of(layout, "lpm_trie_node", node, raw)
        if n.int("flags") & LPM_TREE_NODE_FLAG_IM:
            continue
        if shown >= limit:
            info.truncated = True
            break
        prefixlen = n.int("prefixlen")
        data = raw[data_off:data_off + data_size]
        value = raw[data_off + data_size:data_off + data_size + m.value_size]
        yield Entry(index=shown, key=_u32(prefixlen) + data, value=value, kva=node,
                    formatted={"prefixlen": prefixlen, "data": data.hex(), "prefix": _prefix(data, prefixlen)})
        shown += 1
    info.shown = shown
    info.skipped += [(d.addr, f"{d.what}: {d.reason}") for d in damage]


def _prefix(data, prefixlen):
    """``10.0.0.0/8`` for 4-byte keys, ``fd00::/8`` for 16-byte ones, hex/len otherwise."""
    if len(data) == 4:
        return ".".join(str(b) for b in data) + f"/{prefixlen}"
    if len(data) == 16:
        return f"{ipaddress.IPv6Address(data)}/{prefixlen}"
    return f"{data.hex()}/{prefixlen}"


def queue_stack_entries(reader, layout, m, limit=4096, info=None):
    info = info if info is not None else WalkInfo()
    base = _map_base(layout, m, "bpf_queue_stack")
    r = Record(reader, layout, "bpf_queue_stack", base, ("head", "tail", "size"))
    head, tail, size = r.int("head"), r.int("tail"), r.int("size")
    if not 0 < size <= (m.max_entries + 1) or head >= size or tail >= size:
        raise ValueError_(f"implausible queue/stack state head {head} tail {tail} size {size}")
    count = (head - tail) % size
    info.total = count
    raw = reader.read(base + layout.offset("bpf_queue_stack", "elements"), size * m.value_size)
    stack = m.type_name == "stack"
    for i in range(min(count, limit)):
        slot = (head - 1 - i) % size if stack else (tail + i) % size
        value = raw[slot * m.value_size:(slot + 1) * m.value_size]
        yield Entry(index=i, key=b"", value=value, formatted={"slot": slot})
    info.shown = min(count, limit)
    info.truncated = count > limit


def bloom_entries(reader, layout, m, limit=4096, info=None):
    info = info if info is not None else WalkInfo()
    base = _map_base(layout, m, "bpf_bloom_filter")
    r = Record(reader, layout, "bpf_bloom_filter", base, ("bitset_mask", "hash_seed", "nr_hash_funcs"))
    bits = r.int("bitset_mask") + 1
    nbytes = min((bits + 7) // 8, MAX_BITSET)
    raw = reader.read(base + layout.offset("bpf_bloom_filter", "bitset"), nbytes)
    set_bits = sum(bin(b).count("1") for b in raw)
    info.total = info.shown = 1
    params = {"bits": bits, "bits_set": set_bits, "nr_hash_funcs": r.int("nr_hash_funcs"),
              "hash_seed": r.int("hash_seed"), "value_size": m.value_size}
    yield Entry(index=0, key=b"", value=raw, formatted=params,
                text=f"{set_bits} of {bits} bits set, {params['nr_hash_funcs']} hash functions, "
                     f"seed {params['hash_seed']:#x}")


def slot_entries(reader, layout, m, limit=4096, info=None, describe=None):
    """Non-empty ``bpf_array.ptrs`` slots; ``describe(pointer)`` -> (id, dict) of what it holds."""
    from .hooks import map_slots

    info = info if info is not None else WalkInfo()
    damage = DamageLog()
    shown = 0
    for i, ptr in map_slots(reader, layout, m, damage, limit=min(m.max_entries, MAX_SLOTS)):
        if shown >= limit:
            info.truncated = True
            break
        obj_id, what = describe(ptr) if describe else (0, {})
        yield Entry(index=i, key=_u32(i), value=_u32(obj_id), kva=ptr,
                    formatted=dict({"ptr": f"{ptr:#x}"}, **what))
        shown += 1
    info.total = info.shown = shown
    info.skipped += [(d.addr, d.reason) for d in damage]


def ringbuf_entries(reader, layout, m, limit=4096, info=None):
    info = info if info is not None else WalkInfo()
    rb = read_int(reader, layout, "bpf_ringbuf_map", _map_base(layout, m, "bpf_ringbuf_map"), "rb")
    if not rb:
        raise ValueError_("bpf_ringbuf_map.rb is NULL")
    paths = tuple(p for p in ("mask", "consumer_pos", "producer_pos", "pending_pos", "overwrite_mode",
                              "overwrite_pos") if layout.has("bpf_ringbuf", p))
    r = Record(reader, layout, "bpf_ringbuf", rb, paths)
    mask = r.int("mask")
    cons, prod = r.int("consumer_pos"), r.int("producer_pos")
    if mask + 1 & mask or not 0 < mask < 1 << 32:
        raise ValueError_(f"implausible ring buffer mask {mask:#x}")
    start = cons
    if r.int("overwrite_mode", 0) and r.int("overwrite_pos", 0) > start:
        start = r.int("overwrite_pos")
    state = {"capacity": mask + 1, "consumer_pos": cons, "producer_pos": prod,
             "pending_pos": r.int("pending_pos", 0), "unconsumed_bytes": max(prod - start, 0)}
    if r.has("overwrite_mode"):
        state["overwrite_mode"] = bool(r.int("overwrite_mode"))
    yield Entry(index=-1, key=b"", value=None, formatted=state,
                text=f"positions: consumer {cons}, producer {prod}, pending {state['pending_pos']}; "
                     f"{state['unconsumed_bytes']} bytes unconsumed of {mask + 1}")
    if prod - start > mask + 1 or prod < start:
        raise ValueError_(f"producer_pos {prod} and consumer_pos {start} are more than the "
                          f"capacity apart: records not walked")
    data = rb + layout.offset("bpf_ringbuf", "data")
    hdr_size = layout.size("bpf_ringbuf_hdr")
    f_len = layout.field("bpf_ringbuf_hdr", "len")
    pos, n = start, 0
    while pos < prod and n < MAX_RECORDS:
        hdr = _ring_read(reader, data, mask, pos, hdr_size)
        length = f_len.decode(hdr)
        busy, discarded = bool(length & BPF_RINGBUF_BUSY_BIT), bool(length & BPF_RINGBUF_DISCARD_BIT)
        size = length & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT)
        total = (size + hdr_size + 7) & ~7
        if size > mask + 1 or pos + total > prod + (0 if not busy else mask + 1):
            info.skipped.append((data + (pos & mask), f"record at position {pos}: implausible length {size}"))
            break
        if n < limit:
            body = _ring_read(reader, data, mask, pos + hdr_size, size) if size else b""
            yield Entry(index=n, key=pos.to_bytes(8, "little"), value=body, kva=data + (pos & mask),
                        formatted={"pos": pos, "len": size, "busy": busy, "discarded": discarded},
                        error="record not committed (busy) at the dump" if busy else None)
        else:
            info.truncated = True
        n += 1
        if busy:
            break           # the producer had not committed it: what follows is not published
        pos += total
    info.total, info.shown = n, min(n, limit)


def _ring_read(reader, data, mask, pos, size):
    """``size`` bytes at ring position ``pos`` (wrapping at the capacity)."""
    off = pos & mask
    first = min(size, mask + 1 - off)
    raw = reader.read(data + off, first)
    if first < size:
        raw += reader.read(data, size - first)
    return raw


def devmap_entries(reader, layout, m, limit=4096, info=None, describe=None):
    """devmap: ``netdev_map[i]``; devmap_hash: ``dev_index_head[n_buckets]`` lists."""
    from ..kds import hash_table_nodes

    info = info if info is not None else WalkInfo()
    base = _map_base(layout, m, "bpf_dtab")
    r = Record(reader, layout, "bpf_dtab", base, ("netdev_map", "dev_index_head", "n_buckets"))
    nodes = []
    damage = DamageLog()
    if m.type_name == "devmap":
        arr = r.int("netdev_map")
        n = min(m.max_entries, MAX_SLOTS)
        ps = reader.pointer_size
        raw = reader.read(arr, n * ps) if arr and n else b""
        nodes = [(i, int.from_bytes(raw[i * ps:(i + 1) * ps], "little")) for i in range(n)]
        nodes = [(i, p) for i, p in nodes if p]
    else:
        heads, nb = r.int("dev_index_head"), min(r.int("n_buckets"), MAX_SLOTS)
        off = layout.offset("bpf_dtab_netdev", "index_hlist")
        for node in hash_table_nodes(reader, layout, heads, nb if heads else 0, limit=MAX_SLOTS,
                                     damage=damage, what="bpf_dtab_netdev",
                                     table_name="dev_index_head"):
            nodes.append((-1, node - off))
    for n_, (i, dn) in enumerate(nodes[:limit]):
        d = Record(reader, layout, "bpf_dtab_netdev", dn, ("dev", "xdp_prog", "idx", "val"))
        key = i if i >= 0 else d.int("idx")
        what = describe("dev", d.int("dev"), d.int("xdp_prog")) if describe else {}
        yield Entry(index=n_, key=_u32(key), value=d.bytes("val"), kva=dn, formatted=dict({"key": key}, **what))
    info.total, info.shown, info.truncated = len(nodes), min(len(nodes), limit), len(nodes) > limit
    info.skipped += [(x.addr, x.reason) for x in damage]


def cpumap_entries(reader, layout, m, limit=4096, info=None, describe=None):
    info = info if info is not None else WalkInfo()
    base = _map_base(layout, m, "bpf_cpu_map")
    arr = read_int(reader, layout, "bpf_cpu_map", base, "cpu_map")
    n = min(m.max_entries, MAX_SLOTS)
    ps = reader.pointer_size
    raw = reader.read(arr, n * ps) if arr and n else b""
    shown = 0
    for i in range(n):
        e = int.from_bytes(raw[i * ps:(i + 1) * ps], "little")
        if not e:
            continue
        if shown >= limit:
            info.truncated = True
            break
        c = Record(reader, layout, "bpf_cpu_map_entry", e, ("cpu", "value", "prog"))
        what = describe("cpu", c.int("cpu"), c.int("prog")) if describe else {}
        yield Entry(index=i, key=_u32(i), value=c.bytes("value"), kva=e, formatted=dict({"key": i}, **what))
        shown += 1
    info.total = info.shown = shown


def xskmap_entries(reader, layout, m, limit=4096, info=None, describe=None):
    info = info if info is not None else WalkInfo()
    base = _map_base(layout, m, "xsk_map")
    n = min(m.max_entries, MAX_SLOTS)
    ps = reader.pointer_size
    raw = reader.read(base + layout.offset("xsk_map", "xsk_map"), n * ps) if n else b""
    shown = 0
    for i in range(n):
        xs = int.from_bytes(raw[i * ps:(i + 1) * ps], "little")
        if not xs:
            continue
        if shown >= limit:
            info.truncated = True
            break
        what = {"xsk": f"{xs:#x}"}
        try:
            x = Record(reader, layout, "xdp_sock", xs, ("dev", "queue_id"))
            what["queue_id"] = x.int("queue_id")
            if describe:
                what.update(describe("dev", x.int("dev"), 0))
        except ReadError as e:
            what["error"] = f"xdp_sock unreadable: {e.reason}"
        yield Entry(index=i, key=_u32(i), value=xs.to_bytes(8, "little"), kva=xs,
                    formatted=dict({"key": i}, **what))
        shown += 1
    info.total = info.shown = shown


def stack_entries(reader, layout, m, limit=4096, info=None):
    info = info if info is not None else WalkInfo()
    base = _map_base(layout, m, "bpf_stack_map")
    nb = min(read_int(reader, layout, "bpf_stack_map", base, "n_buckets"), MAX_SLOTS)
    ps = reader.pointer_size
    raw = reader.read(base + layout.offset("bpf_stack_map", "buckets"), nb * ps) if nb else b""
    data_off = layout.offset("stack_map_bucket", "data")
    shown = 0
    for i in range(nb):
        b = int.from_bytes(raw[i * ps:(i + 1) * ps], "little")
        if not b:
            continue
        if shown >= limit:
            info.truncated = True
            break
        rec = Record(reader, layout, "stack_map_bucket", b, ("hash", "nr"))
        nr = min(rec.int("nr"), max(m.value_size // 8, 1))
        ips_raw = reader.read(b + data_off, 8 * nr)
        ips = [int.from_bytes(ips_raw[j * 8:(j + 1) * 8], "little") for j in range(nr)]
        yield Entry(index=i, key=_u32(i), value=ips_raw, kva=b, formatted={"ips": ips})
        shown += 1
    info.total = info.shown = shown


def cgroup_storage_entries(reader, layout, m, offsets=None, limit=4096, info=None):
    """Elements of a legacy cgroup storage map, in the map's list order (what bpftool's
    get_next_key walk gives)."""
    info = info if info is not None else WalkInfo()
    percpu = m.type_name == "percpu_cgroup_storage"
    if percpu and not offsets:
        raise ValueError_("per-CPU offsets unknown: percpu_cgroup_storage values not read")
    base = _map_base(layout, m, "bpf_cgroup_storage_map")
    head = base + layout.offset("bpf_cgroup_storage_map", "list")
    buf = "percpu_buf" if percpu and layout.has("bpf_cgroup_storage", "percpu_buf") else "buf"
    data_off = layout.offset("bpf_storage_buffer", "data")
    damage = DamageLog()
    shown = 0
    for st in list_entries(reader, layout, head, "bpf_cgroup_storage", "list_map", limit=MAX_NODES,
                           damage=damage, what="bpf_cgroup_storage (map list)"):
        if shown >= limit:
            info.truncated = True
            break
        try:
            r = Record(reader, layout, "bpf_cgroup_storage", st,
                       (buf, "key.cgroup_inode_id", "key.attach_type"))
        except ReadError as e:
            damage.add("bpf_cgroup_storage", st, f"unreadable ({e.reason})")
            continue
        # the key as user space reads it: uapi struct bpf_cgroup_storage_key {__u64; __u32;}
        # (16 bytes with its tail padding), or the __u64 cgroup id alone for 8-byte keys
        key = (r.int("key.cgroup_inode_id").to_bytes(8, "little")
               + r.int("key.attach_type").to_bytes(4, "little") + bytes(4))[:m.key_size]
        ptr = r.int(buf)
        if percpu:
            e = Entry(index=shown, key=key, percpu=percpu_read(reader, ptr, offsets, m.value_size) if ptr else [],
                      kva=st, error=None if ptr else "no per-CPU buffer")
        else:
            value = reader.try_read(ptr + data_off, m.value_size) if ptr else None
            e = Entry(index=shown, key=key, value=value, kva=st,
                      error=None if value is not None else f"value buffer at {ptr:#x} unreadable")
        yield e
        shown += 1
    info.total = info.shown = shown
    info.skipped += [(d.addr, d.reason) for d in damage]


def reuseport_entries(reader, layout, m, limit=4096, info=None, describe=None):
    info = info if info is not None else WalkInfo()
    base = _map_base(layout, m, "reuseport_array")
    n = min(m.max_entries, MAX_SLOTS)
    ps = reader.pointer_size
    at = base + layout.offset("reuseport_array", "ptrs")
    cookie = layout.has("sock", "__sk_common.skc_cookie.counter")
    shown = 0
    for first in range(0, n, 512):
        cnt = min(512, n - first)
        raw = reader.try_read(at + first * ps, cnt * ps)
        if raw is None:
            info.skipped.append((at + first * ps, f"slots {first}..{first + cnt - 1} unreadable"))
            continue
        for i in range(cnt):
            sk = int.from_bytes(raw[i * ps:(i + 1) * ps], "little")
            if not sk:
                continue
            if shown >= limit:
                info.truncated = True
                info.total = info.shown = shown
                return
            what = {"sock": f"{sk:#x}"}
            value = None
            try:
                if cookie:
                    value = read_int(reader, layout, "sock", sk, "__sk_common.skc_cookie.counter").to_bytes(8, "little")
                if describe:
                    what.update(describe(sk))
            except ReadError as e:
                what["error"] = f"sock unreadable: {e.reason}"
            text = what.pop("text", None)
            yield Entry(index=first + i, key=_u32(first + i), value=value, kva=sk,
                        formatted=dict({"key": first + i}, **what), text=text)
            shown += 1
    info.total = info.shown = shown


def rhash_entries(reader, layout, m, limit=4096, info=None):
    info = info if info is not None else WalkInfo()
    base = _map_base(layout, m, "bpf_rhtab")
    node_off = layout.offset("rhtab_elem", "node")
    data_off = layout.offset("rhtab_elem", "data")
    vstart = (m.key_size + 7) & ~7
    damage = DamageLog()
    shown = 0
    for node in rhashtable_nodes(reader, layout, base + layout.offset("bpf_rhtab", "ht"),
                                 limit=MAX_NODES, damage=damage, what="rhtab_elem"):
        if shown >= limit:
            info.truncated = True
            break
        elem = node - node_off
        raw = reader.try_read(elem + data_off, vstart + m.value_size)
        if raw is None:
            damage.add("rhtab_elem", elem, "key/value unreadable")
            continue
        yield Entry(index=shown, key=raw[:m.key_size], value=raw[vstart:], kva=elem)
        shown += 1
    info.total = max(info.total, shown)
    info.shown = shown
    info.skipped += [(d.addr, d.reason) for d in damage]


def insn_array_entries(reader, layout, m, limit=4096, info=None):
    info = info if info is not None else WalkInfo()
    base = _map_base(layout, m, "bpf_insn_array")
    n = min(m.max_entries, MAX_SLOTS)
    stride = layout.size("bpf_insn_array_value")
    raw = reader.read(base + layout.offset("bpf_insn_array", "values"), n * stride) if n else b""
    ips_at = read_int(reader, layout, "bpf_insn_array", base, "ips")
    ps = reader.pointer_size
    ips = (reader.try_read(ips_at, n * ps) if ips_at and n else None) or b""
    names = [f for f in ("orig_off", "xlated_off", "jitted_off") if layout.has("bpf_insn_array_value", f)]
    info.total = n
    for i in range(min(n, limit)):
        r = Record.of(layout, "bpf_insn_array_value", base + i * stride, raw[i * stride:(i + 1) * stride])
        fields = {f: r.int(f) for f in names}
        if len(ips) >= (i + 1) * ps:
            fields["ip"] = f"{int.from_bytes(ips[i * ps:(i + 1) * ps], 'little'):#x}"
        yield Entry(index=i, key=_u32(i), value=raw[i * stride:i * stride + m.value_size],
                    formatted=dict({"key": i}, **fields))
        info.shown += 1
    info.truncated = n > limit


CGROUP_STORAGE = ("cgroup_storage", "percpu_cgroup_storage")
# key/value maps the view renders as it renders hashes (typed keys and values, per-CPU rows)
ELEMENT_KINDS = CGROUP_STORAGE + ("rhash",)

WALKERS = {"lpm_trie": lpm_entries, "queue": queue_stack_entries, "stack": queue_stack_entries,
           "bloom_filter": bloom_entries, "ringbuf": ringbuf_entries, "user_ringbuf": ringbuf_entries,
           "stack_trace": stack_entries, "insn_array": insn_array_entries}
DESCRIBED = {"prog_array": slot_entries, "array_of_maps": slot_entries, "perf_event_array": slot_entries,
             "cgroup_array": slot_entries, "devmap": devmap_entries, "devmap_hash": devmap_entries,
             "cpumap": cpumap_entries, "xskmap": xskmap_entries,
             "reuseport_sockarray": reuseport_entries}
