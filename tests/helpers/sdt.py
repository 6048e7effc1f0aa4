"""sdt_alloc test material: a program BTF like scx_sdt's and sdt_alloc trees in an arena window.

The BTF is built in the test (never read from a dump): the sdt_alloc types as the scx headers
declare them and a scheduler-like ``.bss`` DATASEC. Trees go into a sparse
:class:`helpers.synth.Memory` (``Memory.sparse_pages()``).
"""

import struct

from .btf import BtfBuilder


def sdt_program_btf(*, data_header=None, chunk_fwd=True, payloads=(("scx_stats", 48),),
                    allocators=("scx_task_allocator",), extra_bss=True, kernel_types=True):
    """A program BTF like scx_sdt's. ``data_header``: None -> ``struct sdt_data`` is a FWD;
    8 or 16 -> a full struct with that header. Returns (btf, bss_datasec_id, info dict)."""
    w = BtfBuilder()

    def st(name, size, members, union=False):
        """A struct/union from (name, type id, byte offset) members."""
        ms = [(n, t, off * 8) for n, t, off in members]
        return w.union(name, size, ms) if union else w.struct(name, size, ms)

    u64 = w.int("long long unsigned int", 8)
    s64 = w.int("long long int", 8, signed=True)
    s32 = w.int("int", 4, signed=True)
    u32 = w.int("unsigned int", 4)
    idx_t = w.int("__ARRAY_SIZE_TYPE__", 4)
    t_u64 = w.typedef("__u64", u64)
    t_s64 = w.typedef("__s64", s64)
    t_s32 = w.typedef("__s32", s32)
    # union sdt_id { __s64 val; struct { __s32 idx; __s32 genn; }; }
    anon = st("", 8, [("idx", t_s32, 0), ("genn", t_s32, 4)])
    sdt_id = st("sdt_id", 8, [("val", t_s64, 0), ("", anon, 0)], union=True)
    if data_header is None:
        sdt_data = w.fwd("sdt_data")
    else:
        arr0 = w.array(t_u64, idx_t, 0)
        members = [("tid", sdt_id, 0)]
        if data_header == 16:
            members.append(("urcu_link", t_u64, 8))
        members.append(("payload", arr0, data_header))
        sdt_data = st("sdt_data", data_header, members)
    void_ptr = w.ptr(0)
    pool = st("sdt_pool", 32, [("slab", void_ptr, 0), ("elem_size", t_u64, 8),
                               ("max_elems", t_u64, 16), ("idx", t_u64, 24)])
    chunk = w.fwd("sdt_chunk") if chunk_fwd else None
    desc = st("sdt_desc", 80, [])  # id reserved now (pointers need it), members set below
    desc_tag = w.type_tag("arena", desc)
    desc_ptr = w.ptr(desc_tag)
    desc_t = w.typedef("sdt_desc_t", desc)
    desc_t_ptr = w.ptr(w.type_tag("arena", desc_t))
    bits = w.array(t_u64, idx_t, 8)
    if chunk is None:
        descs = w.array(desc_ptr, idx_t, 512)
        data_ptr = w.ptr(w.type_tag("arena", sdt_data))
        datas = w.array(data_ptr, idx_t, 512)
        union = st("", 4096, [("descs", descs, 0), ("data", datas, 0)], union=True)
        chunk = st("sdt_chunk", 4096, [("", union, 0)])
    chunk_ptr = w.ptr(w.type_tag("arena", chunk))
    # Real sdt_desc definition (the placeholder above only reserved an id for the pointers).
    w.replace(desc, "struct", "sdt_desc", 80, [("allocated", bits, 0), ("nr_free", t_u64, 64 * 8),
                                              ("chunk", chunk_ptr, 72 * 8)])
    alloc = st("scx_allocator", 40, [("pool", pool, 0), ("root", desc_t_ptr, 32)])
    info = {"sdt_data": sdt_data, "scx_allocator": alloc}
    for name, size in payloads:
        if name == "scx_stats":
            t_pid = w.typedef("pid_t", s32)
            info[name] = st(name, size, [("seq", s32, 0), ("pid", t_pid, 4),
                                               ("enqueue", t_u64, 8), ("exit", t_u64, 16),
                                               ("init", t_u64, 24), ("select_busy_cpu", t_u64, 32),
                                               ("select_idle_cpu", t_u64, 40)])
        else:
            info[name] = st(name, size, [("a", t_u64, 0)])
    if kernel_types:
        # What vmlinux.h drags into a program BTF: kernel structs of common sizes.
        info["vtime"] = st("vtime", 48, [("starttime", t_u64, 8)])
    bss_vars = []
    off = 0
    if extra_bss:
        v = w.var("desc_pool", pool)
        bss_vars.append((v, off, 32))
        off += 32
    for i, name in enumerate(allocators):
        # Variants through typedef / volatile, as programs declare them.
        t = alloc
        if i % 3 == 1:
            t = w.typedef("scx_allocator_t", alloc)
        elif i % 3 == 2:
            t = w.volatile(alloc)
        v = w.var(name, t)
        bss_vars.append((v, off, 40))
        info.setdefault("alloc_offsets", {})[name] = off
        off += 40
    if extra_bss:
        stats = st("scx_alloc_stats", 48, [("chunk_allocs", t_u64, 0)])
        v = w.var("alloc_stats", stats)
        bss_vars.append((v, off, 48))
        off += 48
    bss = w.datasec(".bss", off, bss_vars)
    info["bss_size"] = off
    return w.btf("scx_sdt-like program BTF"), bss, info


class TreeBuilder:
    """Lay out an sdt_alloc tree inside an arena window of a sparse :class:`Memory`, the way
    ``sdt_alloc.bpf.c`` does (descs 80 bytes, chunks 4096 bytes, slots ``elem_size`` bytes).

    ``live``: indices with their bit set; ``freed``: slots with the bit clear but the pointer kept
    (header genn bumped, payload zeroed); ``racing``: bit set, pointer NULL."""

    def __init__(self, mem, user_vm_start, kern_vm_start, elem_size, header=8):
        self.mem = mem
        self.user = user_vm_start
        self.kbase = kern_vm_start
        self.elem_size = elem_size
        self.header = header
        self.brk = 0x1000            # arena offset bump pointer (page 0 left unused)
        self.descs = {}              # (level, prefix) -> (desc ptr, chunk ptr)
        self.bitmaps = {}            # desc ptr -> list of 8 words
        self.nr_free = {}

    def alloc(self, size, align=8):
        self.brk = (self.brk + align - 1) // align * align
        off = self.brk
        self.brk += size
        return self.user + off

    def put(self, ptr, data):
        self.mem.write(self.kbase + (ptr & 0xFFFFFFFF), data)

    def desc(self, level, prefix):
        key = (level, prefix)
        if key not in self.descs:
            d = self.alloc(80)
            c = self.alloc(4096, 4096)
            self.put(c, bytes(4096))
            self.descs[key] = (d, c)
            self.bitmaps[d] = [0] * 8
            self.nr_free[d] = 512
        return self.descs[key]

    def path(self, idx):
        pos = ((idx >> 18) & 511, (idx >> 9) & 511, idx & 511)
        prefixes = (0, pos[0] << 18, (pos[0] << 18) | (pos[1] << 9))
        return pos, prefixes

    def slot(self, idx, genn=0, payload=b"", live=True, racing=False):
        pos, prefixes = self.path(idx)
        chain = [self.desc(lv, prefixes[lv]) for lv in range(3)]
        for lv in (0, 1):
            _, chunk = chain[lv]
            child, _ = chain[lv + 1]
            self.put(chunk + 8 * pos[lv], child.to_bytes(8, "little"))
        leaf, chunk = chain[2]
        if live:
            self.bitmaps[leaf][pos[2] // 64] |= 1 << (pos[2] % 64)
            self.nr_free[leaf] -= 1
        if racing:
            return None
        data = self.alloc(self.elem_size)
        hdr_idx = idx if live else 0
        body = (payload if live else b"").ljust(self.elem_size - self.header, b"\0")
        self.put(data, struct.pack("<ii", hdr_idx, genn).ljust(self.header, b"\0") + body)
        self.put(chunk + 8 * pos[2], data.to_bytes(8, "little"))
        return data

    def finish(self):
        """Write every descriptor (bitmaps, nr_free, chunk; full children set parent bits)."""
        for level in (1, 0):
            for (lv, prefix), (d, _) in list(self.descs.items()):
                if lv != level:
                    continue
                for (clv, cprefix), (cd, _) in self.descs.items():
                    if clv == level + 1 and self._parent_prefix(clv, cprefix) == prefix \
                            and self.nr_free[cd] == 0:
                        pos = (cprefix >> (9 * (2 - level))) & 511
                        self.bitmaps[d][pos // 64] |= 1 << (pos % 64)
                        self.nr_free[d] -= 1
        for (lv, prefix), (d, c) in self.descs.items():
            self.put(d, struct.pack("<8QQQ", *self.bitmaps[d], self.nr_free[d], c))
        return self.descs[(0, 0)][0]

    @staticmethod
    def _parent_prefix(level, prefix):
        keep = 9 * (4 - level)      # clear the child's own position bits
        return (prefix >> keep) << keep


def allocator_bytes(elem_size, root, slab=0, max_elems=0, pool_idx=0):
    """struct scx_allocator {sdt_pool {slab, elem_size, max_elems, idx}; root}."""
    return struct.pack("<5Q", slab, elem_size, max_elems, pool_idx, root)
