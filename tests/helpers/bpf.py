"""BPF map memory for value-walker tests: kernel map structs as a synthetic kernel (every member
off its kernel offset) and a hash table builder that writes through any layout.

``BPF_DECLS`` declares what ``bpf/values.py`` reads (kernel/bpf/arraymap.c, hashtab.c,
bpf_struct_ops.c): ``bpf_array`` with its value/ptrs/pptrs union, ``bpf_htab`` + ``struct
bucket`` + ``htab_elem`` (hlist_nulls chains), ``bpf_struct_ops_map``. Tests run on
``SynthKernel(BPF_DECLS).layout`` and on the real kernel BTF when present.
"""

import struct

from .synth import MINI_KERNEL
from volatility3_ktstr.bpf.maps import BpfMap
from volatility3_ktstr.core import BufferReader

MAP = 0xFFFF888000100000
BUCKETS = 0xFFFF888000200000
ELEMS = 0xFFFF888000300000
PCPU = 0xFFFF888000400000

BPF_DECLS = MINI_KERNEL + """
struct bpf_map { u32 map_type; u32 key_size; u32 value_size; u32 max_entries; };
union bpf_array_values { char value[0]; void *ptrs[0]; void *pptrs[0]; };
struct bpf_array { struct bpf_map map; u32 elem_size; u32 index_mask; union bpf_array_values };
struct bucket { struct hlist_nulls_head head; u32 raw_lock; };
struct bpf_htab { struct bpf_map map; struct bucket *buckets; void *elems; u32 n_buckets; u32 elem_size; };
struct htab_elem { struct hlist_nulls_node hash_node; void *ptr_to_pptr; u32 hash; char key[0]; };
struct bpf_struct_ops_map { struct bpf_map map; void *st_ops_desc; void *uvalue; u64 kvalue[0]; };
"""


def put(mem, addr, fmt, *vals):
    mem.write(addr, struct.pack(fmt, *vals))


def htab(layout, n_buckets=4, chains=(), percpu=False, key_size=4, value_size=8):
    """A hash map in memory. ``chains``: {bucket: [(elem addr, key bytes, value bytes or pptr
    int)]}, each chain an hlist_nulls list ending in the bucket's nulls marker. Returns (reader,
    BpfMap)."""
    bucket_size = layout.size("bucket")
    mem = BufferReader({MAP: bytes(layout.size("bpf_htab")), BUCKETS: bytes(n_buckets * bucket_size),
                        ELEMS: bytes(0x10000), PCPU: bytes(0x2000)})
    put(mem, MAP + layout.offset("bpf_htab", "n_buckets"), "<I", n_buckets)
    put(mem, MAP + layout.offset("bpf_htab", "buckets"), "<Q", BUCKETS)
    first = layout.offset("bucket", "head") + layout.offset("hlist_nulls_head", "first")
    node_off = layout.offset("htab_elem", "hash_node")
    key_off = layout.offset("htab_elem", "key")
    for b in range(n_buckets):
        put(mem, BUCKETS + b * bucket_size + first, "<Q", (b << 1) | 1)   # empty: nulls marker
    for b, elems in dict(chains).items():
        nxt = (b << 1) | 1
        for addr, key, val in reversed(elems):
            set_next(mem, layout, addr, nxt)
            mem.write(addr + key_off, key)
            voff = addr + key_off + ((key_size + 7) & ~7)
            mem.write(voff, struct.pack("<Q", val) if percpu else val)
            nxt = addr + node_off
        put(mem, BUCKETS + b * bucket_size + first, "<Q", nxt)
    t = "percpu_hash" if percpu else "hash"
    return mem, BpfMap(kva=MAP, id=3, type_name=t, key_size=key_size, value_size=value_size, max_entries=16)


def set_next(mem, layout, elem, target):
    """htab_elem ``elem``'s ``hash_node.next`` := ``target`` (a node address or a nulls marker)."""
    put(mem, elem + layout.offset("htab_elem", "hash_node") + layout.offset("hlist_nulls_node", "next"),
        "<Q", target)
