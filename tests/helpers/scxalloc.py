"""The scx library's arena allocators (sched-ext/scx lib/alloc/{buddy,stack,bump}.bpf.c at
7a58a3a1) replayed in Python on a synthetic arena, laid out by a program BTF: the images the
heaps walker reads in tests. ``Buddy(..., buggy=True)`` keeps the library's unfixed
``buddy_chunk_alloc`` (``bpf_for`` leaves its order at 15 when no order is free, so the "no free
block" check never fires; a NULL header reads as 0 and swallows writes, as an arena fault does).

Declarations for a synthetic program BTF (members in an order unlike the library's, so a walker
that assumed the library's offsets would read the wrong members): :data:`DECLS`.
"""

from volatility3_ktstr.core import BtfLayout, BufferReader
from volatility3_ktstr.walkers.arena import ArenaInfo
from volatility3_ktstr.walkers.scxalloc import AllocatorVar, STRUCTS

DECLS = """
struct buddy_header { u32 next_index; u32 prev_index; };
struct buddy_chunk { u64 freelists[16]; struct buddy_chunk *next; struct buddy_chunk *prev; u8 allocated[8192]; u8 orders[32768]; };
struct buddy { u64 vaddr; struct buddy_chunk *first_chunk; u64 *lock; };
struct stk_seg { struct stk_seg *next; struct stk_seg *prev; u64 *elems[510]; };
struct stk { u64 reserve_pad; struct stk_seg *reserve; u64 data_size; struct stk_seg *current; u64 cind; struct stk_seg *first; struct stk_seg *last; u64 capacity; u64 available; u64 nr_pages_per_alloc; u64 *lock; };
struct bump_ll { struct bump_ll *next; };
struct bump { u64 off; u64 cur_memusage; u8 *memory; u64 max_contig_bytes; u64 lim_memusage; };
struct lab_rec { struct lab_node *node; u64 raw; };
struct lab_node { u64 magic; u32 id; u32 pad; };
"""

PAGE = 4096
USER_BASE = 1 << 45
KBASE = 0xFFFFC90000000000 + (1 << 20)


class Arena:
    """A BufferReader holding the arena's kernel window (``size`` bytes from offset 0)."""

    def __init__(self, size=8 << 20, user_base=USER_BASE, kbase=KBASE):
        self.mem = BufferReader({kbase: bytearray(size)})
        self.info = ArenaInfo(map_id=1, map_kva=0, name="arena", user_vm_start=user_base,
                              size=1 << 32, kern_vm_start=kbase, page_size=PAGE)
        self.size = size
        self.next_page = 16 * PAGE          # bpf_arena_alloc_pages(NULL): low pages in order

    def kva(self, ptr):
        return self.info.kern_vm_start + (ptr & 0xFFFFFFFF)

    def read(self, ptr, n):
        return self.mem.read(self.kva(ptr), n)

    def write(self, ptr, data):
        self.mem.write(self.kva(ptr), data)

    def get(self, ptr, n):
        return int.from_bytes(self.read(ptr, n), "little")

    def put(self, ptr, n, value):
        self.write(ptr, (value % (1 << (8 * n))).to_bytes(n, "little"))

    def alloc_pages(self, n):
        p = self.info.user_vm_start + self.next_page
        self.next_page += n * PAGE
        return p


class Struct:
    """Reads/writes one struct's members in arena memory by layout."""

    def __init__(self, arena, layout, name):
        self.a, self.lay, self.name = arena, layout, name
        self.size = layout.size(name)

    def get(self, addr, path):
        f = self.lay.field(self.name, path)
        return self.a.get(addr + f.offset, f.size)

    def set(self, addr, path, value):
        f = self.lay.field(self.name, path)
        self.a.put(addr + f.offset, f.size, value)

    def elem(self, addr, path, i, value=None):
        f = self.lay.field(self.name, path)
        at = addr + f.offset + i * f.elem_size
        if value is None:
            return self.a.get(at, f.elem_size)
        self.a.put(at, f.elem_size, value)


class Var:
    """An allocator variable kept in a bytearray (the section map value)."""

    def __init__(self, layout, struct):
        self.lay, self.struct = layout, struct
        self.raw = bytearray(layout.size(struct))

    def get(self, path):
        f = self.lay.field(self.struct, path)
        return int.from_bytes(self.raw[f.offset:f.offset + f.size], "little")

    def set(self, path, value):
        f = self.lay.field(self.struct, path)
        self.raw[f.offset:f.offset + f.size] = (value % (1 << (8 * f.size))).to_bytes(f.size, "little")

    def allocator_var(self, btf, name):
        kind, gen = STRUCTS[self.struct]
        return AllocatorVar(name, self.struct, kind, gen, f".data.{name.upper()}"[:15], 0, 0,
                            bytes(self.raw), btf)


class Buddy:
    MIN, HOFF = 16, 8

    def __init__(self, arena, btf, buggy=False):
        self.a, self.btf = arena, btf
        lay = BtfLayout(btf)
        self.var = Var(lay, "buddy")
        self.chunk = Struct(arena, lay, "buddy_chunk")
        self.hdr = Struct(arena, lay, "buddy_header")
        self.items = lay.field("buddy_chunk", "orders").count * 2
        self.norders = lay.field("buddy_chunk", "freelists").count
        self.chunk_bytes = self.items * self.MIN
        self.buggy = buggy
        self.live = {}          # address -> (size, order)
        self.chunks = []

    # chunk metadata helpers
    def is_alloc(self, c, idx):
        return self.chunk.elem(c, "allocated", idx // 8) >> (idx % 8) & 1

    def set_alloc(self, c, idx, on):
        if idx >= self.items:
            return -1
        b = self.chunk.elem(c, "allocated", idx // 8)
        b = b | (1 << idx % 8) if on else b & ~(1 << idx % 8)
        self.chunk.elem(c, "allocated", idx // 8, b)
        return 0

    def get_order(self, c, idx):
        b = self.chunk.elem(c, "orders", idx // 2)
        return b & 0xF if idx & 1 else b >> 4

    def set_order(self, c, idx, order):
        if order >= self.norders or idx >= self.items:
            return -1
        b = self.chunk.elem(c, "orders", idx // 2)
        b = (b & 0xF0) | order if idx & 1 else (order << 4) | (b & 0xF)
        self.chunk.elem(c, "orders", idx // 2, b)
        return 0

    def header(self, c, idx):
        if idx >= self.items or self.is_alloc(c, idx):
            return None
        return c + idx * self.MIN + self.HOFF

    def hget(self, h, path):
        return 0 if h is None else self.hdr.get(h, path)

    def hset(self, h, path, v):
        if h is not None:
            self.hdr.set(h, path, v)

    def add_freelist(self, c, h, idx, order):
        self.set_order(c, idx, order)
        self.hset(h, "next_index", self.chunk.elem(c, "freelists", order))
        self.hset(h, "prev_index", self.items)
        nxt = self.hget(h, "next_index")
        if nxt != self.items:
            self.hset(self.header(c, nxt), "prev_index", idx)
        self.chunk.elem(c, "freelists", order, idx)

    def remove_freelist(self, c, h, order):
        p, n = self.hget(h, "prev_index"), self.hget(h, "next_index")
        if p != self.items:
            self.hset(self.header(c, p), "next_index", n)
        if n != self.items:
            self.hset(self.header(c, n), "prev_index", p)
        if self.header(c, self.chunk.elem(c, "freelists", order)) == h:
            self.chunk.elem(c, "freelists", order, n)
        self.hset(h, "prev_index", self.items)
        self.hset(h, "next_index", self.items)

    def chunk_get(self):
        vaddr = self.var.get("vaddr")
        self.var.set("vaddr", vaddr + self.chunk_bytes)
        c = self.a.info.user_vm_start + self.chunk_bytes + vaddr
        for o in range(self.norders):
            self.chunk.elem(c, "freelists", o, self.items)
        max_order, left, idx = self.norders, self.chunk.size, 0
        while left:
            power2 = left.bit_length() - 1
            left -= 1 << power2 if power2 >= 4 else left
            order = power2 - 4 if power2 >= 4 else 0
            self.set_alloc(c, idx, True)
            for o in range(order + 1 if left else order, max_order):
                j = idx + (1 << o)
                h = self.header(c, j)
                self.set_alloc(c, j, False)
                self.add_freelist(c, h, j, o)
            idx += 1 << order
            max_order = order
        return c

    def chunk_alloc(self, c, order_req):
        order = order_req
        while order < self.norders and self.chunk.elem(c, "freelists", order) == self.items:
            order += 1
        if order >= self.norders:
            if not self.buggy:
                return 0
            order = self.norders - 1        # bpf_for leaves the loop variable at its last value
        ret = self.chunk.elem(c, "freelists", order)
        h = self.header(c, ret)
        self.chunk.elem(c, "freelists", order, self.hget(h, "next_index"))
        if self.hget(h, "next_index") != self.items:
            self.hset(self.header(c, self.hget(h, "next_index")), "prev_index", self.items)
        self.hset(h, "prev_index", self.items)
        self.hset(h, "next_index", self.items)
        if self.set_order(c, ret, order_req) or self.set_alloc(c, ret, True):
            return 0
        for i in range(order_req, order):
            j = ret + (1 << i)
            hh = self.header(c, j)
            self.set_alloc(c, j, False)
            self.set_order(c, j, i)
            tmp = self.chunk.elem(c, "freelists", i)
            self.hset(hh, "prev_index", self.items)
            self.hset(hh, "next_index", tmp)
            if tmp != self.items:
                self.hset(self.header(c, tmp), "prev_index", j)
            self.chunk.elem(c, "freelists", i, j)
        return c + ret * self.MIN

    def alloc(self, size):
        order = max(0, (max(size, 1) - 1).bit_length() - 4)
        addr = 0
        for c in self.chunk_list():
            addr = self.chunk_alloc(c, order)
            if addr:
                break
        if not addr:
            c = self.chunk_get()
            self.chunk.set(c, "next", self.var.get("first_chunk"))
            self.var.set("first_chunk", c)
            addr = self.chunk_alloc(c, order)
        if addr:
            self.live[addr] = (self.MIN << order, order)
        return addr

    def chunk_list(self):
        out, c = [], self.var.get("first_chunk")
        while c and len(out) < 64:
            out.append(c)
            c = self.chunk.get(c, "next")
        return out

    def free(self, addr):
        mask = self.chunk_bytes - 1
        c = addr & ~mask
        idx = (addr & mask) // self.MIN
        self.set_alloc(c, idx, False)
        order = self.get_order(c, idx)
        while order < self.norders:
            b = idx ^ (1 << order)
            if self.is_alloc(c, b) or self.get_order(c, b) != order:
                break
            self.remove_freelist(c, self.header(c, b), order)
            if b < idx:
                idx, b = b, idx
            self.set_order(c, b, order)
            order += 1
        self.set_order(c, idx, order)
        self.add_freelist(c, self.header(c, idx), idx, order)
        self.live.pop(addr, None)


class Stack:
    def __init__(self, arena, btf, data_size=64, nr_pages=1):
        self.a, self.btf = arena, btf
        lay = BtfLayout(btf)
        self.var = Var(lay, "stk")
        self.seg = Struct(arena, lay, "stk_seg")
        self.seg_max = lay.field("stk_seg", "elems").count
        self.var.set("data_size", data_size)
        self.var.set("nr_pages_per_alloc", nr_pages)
        self.live = set()

    def g(self, k):
        return self.var.get(k)

    def s(self, k, v):
        self.var.set(k, v)

    def push(self, elem):
        cur, ridx = self.g("current"), self.g("cind")
        self.seg.elem(cur, "elems", ridx, elem)
        ridx += 1
        if ridx == self.seg_max:
            ridx, cur = 0, self.seg.get(cur, "next")
            if not cur:
                return -1
        self.s("current", cur)
        self.s("cind", ridx)
        self.s("capacity", self.g("capacity") - 1)
        self.s("available", self.g("available") + 1)
        return 0

    def pop(self):
        cur, ridx = self.g("current"), self.g("cind")
        if ridx == 0:
            ridx, cur = self.seg_max, self.seg.get(cur, "prev")
            if not cur:
                return 0
        ridx -= 1
        self.s("current", cur)
        self.s("cind", ridx)
        self.s("capacity", self.g("capacity") + 1)
        self.s("available", self.g("available") - 1)
        return self.seg.elem(cur, "elems", ridx)

    def extend(self, seg):
        last = self.g("last")
        if last:
            self.seg.set(last, "next", seg)
        self.seg.set(seg, "prev", last)
        self.seg.set(seg, "next", 0)
        self.s("last", seg)
        self.s("capacity", self.g("capacity") + self.seg_max)
        if not self.g("first"):
            self.s("first", seg)
            self.s("current", seg)

    def fill(self):
        nr = self.g("nr_pages_per_alloc")
        nelems = nr * PAGE // self.g("data_size")
        nsegs = 1 if self.g("capacity") else 2
        first, last = self.g("first"), self.g("last")
        if first and first != last:            # stk_seg_to_data
            data = last
            prev = self.seg.get(last, "prev")
            self.seg.set(prev, "next", 0)
            self.s("last", prev)
            self.s("capacity", self.g("capacity") - self.seg_max)
            for _ in range(nelems):
                self.push(data)
                data += self.g("data_size")
            return
        res = self.g("reserve")
        if not res or not self.seg.get(res, "next"):
            mem = self.a.alloc_pages(nsegs * nr)
            for _ in range(nsegs):
                self.seg.set(mem, "next", self.g("reserve"))
                self.s("reserve", mem)
                mem += nr * PAGE
        if self.g("available"):
            return
        if not self.g("capacity"):
            seg = self.g("reserve")
            self.s("reserve", self.seg.get(seg, "next"))
            self.extend(seg)
        seg = self.g("reserve")
        self.s("reserve", self.seg.get(seg, "next"))
        for k in range(nelems):
            self.push(seg + k * self.g("data_size"))

    def alloc(self):
        if not self.g("available"):
            self.fill()
        e = self.pop()
        if e:
            self.live.add(e)
        return e

    def free(self, e):
        self.live.discard(e)
        if not self.g("capacity"):
            self.extend(e)
            return
        self.push(e)


class Bump:
    def __init__(self, arena, btf, pages=16):
        self.a, self.btf = arena, btf
        lay = BtfLayout(btf)
        self.var = Var(lay, "bump")
        self.ll = lay.size("bump_ll") if lay.has("bump_ll") else 8   # the library's one pointer
        mem = arena.alloc_pages(pages)
        arena.put(mem, self.ll, 0)
        for k, v in (("max_contig_bytes", pages * PAGE), ("off", self.ll), ("memory", mem),
                     ("lim_memusage", 1 << 20), ("cur_memusage", pages * PAGE)):
            self.var.set(k, v)
        self.blocks = []

    def alloc(self, size, align=8):
        addr = self.var.get("memory") + self.var.get("off")
        pad = -addr % align
        if self.var.get("off") + size + pad > self.var.get("max_contig_bytes"):
            maxb = self.var.get("max_contig_bytes")
            mem = self.a.alloc_pages(maxb // PAGE)
            self.a.put(mem, self.ll, self.var.get("memory"))
            self.var.set("memory", mem)
            self.var.set("off", self.ll)
            self.var.set("cur_memusage", self.var.get("cur_memusage") + maxb)
            addr = mem + self.ll
            pad = -addr % align
        self.var.set("off", self.var.get("off") + size + pad)
        self.blocks.append((addr + pad, size))
        return addr + pad
