"""Test support (no tests here): a tiny BTF writer and synthetic arenas / sdt_alloc trees.

The BTF is built in the test (never read from a dump): the sdt_alloc types as the scx headers
declare them, a scheduler-like ``.bss`` DATASEC, and the two kernel structs an arena needs.
"""

import struct

from volatility3_ktstr.btf import Btf
from volatility3_ktstr.core import BufferReader


class BtfWriter:
    """Append types, get ids back; ``blob()`` is a valid raw BTF."""

    def __init__(self):
        self.types = []          # encoded records
        self.strings = bytearray(b"\0")
        self._names = {"": 0}

    def _str(self, name):
        if name not in self._names:
            self._names[name] = len(self.strings)
            self.strings += name.encode() + b"\0"
        return self._names[name]

    def _add(self, name, kind, vlen, size_type, extra=b"", kflag=0):
        info = (kflag << 31) | (kind << 24) | vlen
        self.types.append(struct.pack("<III", self._str(name), info, size_type) + extra)
        return len(self.types)

    def int(self, name, size, signed=False):
        enc = 1 if signed else 0
        return self._add(name, 1, 0, size, struct.pack("<I", (enc << 24) | (size * 8)))

    def ptr(self, to):
        return self._add("", 2, 0, to)

    def array(self, elem, n, index):
        return self._add("", 3, 0, 0, struct.pack("<III", elem, index, n))

    def struct(self, name, size, members, union=False):
        """members: [(name, type_id, byte_offset)]"""
        extra = b"".join(struct.pack("<III", self._str(m), t, off * 8) for m, t, off in members)
        return self._add(name, 5 if union else 4, len(members), size, extra)

    def fwd(self, name, union=False):
        return self._add(name, 7, 0, 0, kflag=1 if union else 0)

    def typedef(self, name, to):
        return self._add(name, 8, 0, to)

    def const(self, to):
        return self._add("", 10, 0, to)

    def volatile(self, to):
        return self._add("", 9, 0, to)

    def type_tag(self, tag, to):
        return self._add(tag, 18, 0, to)

    def var(self, name, type_id):
        return self._add(name, 14, 0, type_id, struct.pack("<I", 1))

    def datasec(self, name, size, vars_):
        """vars_: [(var_id, offset, size)]"""
        extra = b"".join(struct.pack("<III", v, o, s) for v, o, s in vars_)
        return self._add(name, 15, len(vars_), size, extra)

    def blob(self):
        types = b"".join(self.types)
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(self.strings))
        return hdr + types + bytes(self.strings)

    def btf(self):
        return Btf.parse(self.blob())


def sdt_program_btf(*, data_header=None, chunk_fwd=True, payloads=(("scx_stats", 48),),
                    allocators=("scx_task_allocator",), extra_bss=True, kernel_types=True):
    """A program BTF like scx_sdt's. ``data_header``: None -> ``struct sdt_data`` is a FWD;
    8 or 16 -> a full struct with that header. Returns (btf, bss_datasec_id, info dict)."""
    w = BtfWriter()
    u64 = w.int("long long unsigned int", 8)
    s64 = w.int("long long int", 8, signed=True)
    s32 = w.int("int", 4, signed=True)
    u32 = w.int("unsigned int", 4)
    idx_t = w.int("__ARRAY_SIZE_TYPE__", 4)
    t_u64 = w.typedef("__u64", u64)
    t_s64 = w.typedef("__s64", s64)
    t_s32 = w.typedef("__s32", s32)
    # union sdt_id { __s64 val; struct { __s32 idx; __s32 genn; }; }
    anon = w.struct("", 8, [("idx", t_s32, 0), ("genn", t_s32, 4)])
    sdt_id = w.struct("sdt_id", 8, [("val", t_s64, 0), ("", anon, 0)], union=True)
    if data_header is None:
        sdt_data = w.fwd("sdt_data")
    else:
        arr0 = w.array(t_u64, 0, idx_t)
        members = [("tid", sdt_id, 0)]
        if data_header == 16:
            members.append(("urcu_link", t_u64, 8))
        members.append(("payload", arr0, data_header))
        sdt_data = w.struct("sdt_data", data_header, members)
    void_ptr = w.ptr(0)
    pool = w.struct("sdt_pool", 32, [("slab", void_ptr, 0), ("elem_size", t_u64, 8),
                                     ("max_elems", t_u64, 16), ("idx", t_u64, 24)])
    chunk = w.fwd("sdt_chunk") if chunk_fwd else None
    desc = w.struct("sdt_desc", 80, [])  # id reserved now (pointers need it), members set below
    desc_tag = w.type_tag("arena", desc)
    desc_ptr = w.ptr(desc_tag)
    desc_t = w.typedef("sdt_desc_t", desc)
    desc_t_ptr = w.ptr(w.type_tag("arena", desc_t))
    bits = w.array(t_u64, 8, idx_t)
    if chunk is None:
        descs = w.array(desc_ptr, 512, idx_t)
        data_ptr = w.ptr(w.type_tag("arena", sdt_data))
        datas = w.array(data_ptr, 512, idx_t)
        union = w.struct("", 4096, [("descs", descs, 0), ("data", datas, 0)], union=True)
        chunk = w.struct("sdt_chunk", 4096, [("", union, 0)])
    chunk_ptr = w.ptr(w.type_tag("arena", chunk))
    # Real sdt_desc definition (the placeholder above only reserved an id for the pointers).
    real_desc = struct.pack("<III", w._str("sdt_desc"), (4 << 24) | 3, 80) + b"".join(
        struct.pack("<III", w._str(n), t, o * 8)
        for n, t, o in (("allocated", bits, 0), ("nr_free", t_u64, 64), ("chunk", chunk_ptr, 72)))
    w.types[desc - 1] = real_desc
    alloc = w.struct("scx_allocator", 40, [("pool", pool, 0), ("root", desc_t_ptr, 32)])
    info = {"sdt_data": sdt_data, "scx_allocator": alloc}
    for name, size in payloads:
        if name == "scx_stats":
            t_pid = w.typedef("pid_t", s32)
            info[name] = w.struct(name, size, [("seq", s32, 0), ("pid", t_pid, 4),
                                               ("enqueue", t_u64, 8), ("exit", t_u64, 16),
                                               ("init", t_u64, 24), ("select_busy_cpu", t_u64, 32),
                                               ("select_idle_cpu", t_u64, 40)])
        else:
            info[name] = w.struct(name, size, [("a", t_u64, 0)])
    if kernel_types:
        # What vmlinux.h drags into a program BTF: kernel structs of common sizes.
        info["vtime"] = w.struct("vtime", 48, [("starttime", t_u64, 8)])
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
        st = w.struct("scx_alloc_stats", 48, [("chunk_allocs", t_u64, 0)])
        v = w.var("alloc_stats", st)
        bss_vars.append((v, off, 48))
        off += 48
    bss = w.datasec(".bss", off, bss_vars)
    info["bss_size"] = off
    return w.btf(), bss, info


def kernel_btf():
    """Kernel structs the arena walker needs (bpf_arena, vm_struct), offsets like 7.x."""
    w = BtfWriter()
    u64 = w.int("long long unsigned int", 8)
    vptr = w.ptr(0)
    vm = w.struct("vm_struct", 80, [("next", vptr, 0), ("addr", vptr, 8), ("size", u64, 16)])
    vm_ptr = w.ptr(vm)
    w.struct("bpf_arena", 504, [("user_vm_start", u64, 288), ("user_vm_end", u64, 296),
                                ("kern_vm", vm_ptr, 304)])
    w.struct("task_struct", 4096, [("pid", w.int("int", 4, signed=True), 2808)])
    return w.btf()


class SparseMemory(BufferReader):
    """A BufferReader with page-granular regions created on write (an arena window)."""

    def __init__(self, page=4096):
        super().__init__()
        self.page = page
        self._pages = {}

    def put(self, addr, data):
        data = bytes(data)
        pos = 0
        while pos < len(data):
            a = addr + pos
            base = a - a % self.page
            buf = self._pages.get(base)
            if buf is None:
                buf = self._pages[base] = bytearray(self.page)
            n = min(len(data) - pos, base + self.page - a)
            buf[a - base:a - base + n] = data[pos:pos + n]
            pos += n

    def unmap(self, addr):
        self._pages.pop(addr - addr % self.page, None)

    def read(self, addr, size):
        from volatility3_ktstr.core import ReadError

        out = bytearray()
        pos = 0
        while pos < size:
            a = addr + pos
            base = a - a % self.page
            buf = self._pages.get(base)
            if buf is None:
                raise ReadError(addr, size, f"unmapped at {a:#x}")
            n = min(size - pos, base + self.page - a)
            out += buf[a - base:a - base + n]
            pos += n
        return bytes(out)


class TreeBuilder:
    """Lay out an sdt_alloc tree inside an arena window of a SparseMemory, the way
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
        self.mem.put(self.kbase + (ptr & 0xFFFFFFFF), data)

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
