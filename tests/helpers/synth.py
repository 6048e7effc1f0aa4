"""Synthetic kernel memory for walker tests: a BTF built from C-like declarations, laid out with
padding so that no member sits at its real kernel offset, and a memory image to fill.

    k = SynthKernel(MINI_KERNEL + '''
        struct task_struct { int pid; char comm[16]; struct list_head tasks; };
    ''')
    mem = k.memory()
    t = mem.new("task_struct", pid=7, comm=b"init")
    mem.list_init(head); mem.list_add_tail(head, t + k.layout.offset("task_struct", "tasks"))

Walkers run on ``mem`` (a BufferReader) and ``k.layout`` (a BtfLayout). ``pad=0`` gives natural C
layout; the default pads every member so a walker that hard-codes an offset reads garbage.

Grammar (one declaration per ``;``-terminated statement, members one per line):
``struct NAME { MEMBER; ... };``, ``union NAME { ... };``, ``enum NAME { A = 1, B, ... };``; a
member is ``TYPE NAME``, ``TYPE NAME[N]`` or ``TYPE NAME : BITS`` where TYPE is a base type
(u8 u16 u32 u64 s8 s16 s32 s64 int long char bool), ``struct X``/``union X``/``enum X`` (embedded;
an enum with a value past 32 bits is an 8-byte ENUM64), any of those followed by ``*``
(pointer), or ``fnptr`` (a function pointer). A member line that is only ``struct X`` /
``union X`` embeds X anonymously (its members are reached as if they were the outer struct's,
as in ``bpf_array``'s ``union { value[]; ptrs[]; pptrs[]; }``).
"""

import re
import struct as _struct

from .btf import BtfBuilder
from volatility3_ktstr.btf import Btf
from volatility3_ktstr.core import BtfLayout, BufferReader, LayoutError, Reader, ReadError

BASE_TYPES = {  # name: (size, signed, encoding)
    "u8": (1, False, 0), "u16": (2, False, 0), "u32": (4, False, 0), "u64": (8, False, 0),
    "s8": (1, True, 1), "s16": (2, True, 1), "s32": (4, True, 1), "s64": (8, True, 1),
    "int": (4, True, 1), "long": (8, True, 1), "char": (1, True, 3), "bool": (1, False, 4),
    "unsigned int": (4, False, 0), "unsigned long": (8, False, 0),
}

MINI_KERNEL = """
struct list_head { struct list_head *next; struct list_head *prev; };
struct hlist_node { struct hlist_node *next; struct hlist_node **pprev; };
struct hlist_head { struct hlist_node *first; };
struct hlist_nulls_node { struct hlist_nulls_node *next; struct hlist_nulls_node **pprev; };
struct hlist_nulls_head { struct hlist_nulls_node *first; };
struct rb_node { unsigned long __rb_parent_color; struct rb_node *rb_right; struct rb_node *rb_left; };
struct rb_root { struct rb_node *rb_node; };
struct rb_root_cached { struct rb_root rb_root; struct rb_node *rb_leftmost; };
struct rhash_head { struct rhash_head *next; };
struct bucket_table { unsigned int size; unsigned int nest; u32 hash_rnd; struct list_head walkers; struct bucket_table *future_tbl; struct rhash_head *buckets[0]; };
struct rhashtable { struct bucket_table *tbl; unsigned int key_len; unsigned int max_elems; };
struct xa_node { u8 shift; u8 offset; u8 count; u8 nr_values; struct xa_node *parent; void *slots[64]; };
struct xarray { u32 xa_lock; u32 xa_flags; void *xa_head; };
struct idr { struct xarray idr_rt; unsigned int idr_base; unsigned int idr_next; };
"""

_DECL = re.compile(r"(struct|union|enum)\s+(\w+)\s*\{(.*?)\}\s*;", re.S)
_ANON = re.compile(r"^(struct|union)\s+\w+$")       # an anonymous member of a declared type
_MEMBER = re.compile(r"^(?P<type>.+?)\s*(?P<stars>\**)\s*(?P<name>\w+)\s*"
                     r"(?:\[(?P<count>\d+)\])?\s*(?::\s*(?P<bits>\d+))?$")


def _align(n, a):
    return (n + a - 1) // a * a if a else n


class SynthKernel:
    """BTF + layout of the declared types (and a ``memory()`` to fill)."""

    def __init__(self, decls=MINI_KERNEL, pad=8):
        self.pad = pad
        self.decls = {}       # name -> (kind, body)
        self.order = []
        for kind, name, body in _DECL.findall(decls):
            if name not in self.decls:
                self.order.append(name)
            self.decls[name] = (kind, body)
        self.b = BtfBuilder()
        self._ids = {}
        self._sizes = {}
        self._aligns = {}
        self._base_ids = {}
        self._ptr_ids = {}
        self._fnptr = None
        self._defining = set()
        self._reserved = {}
        for name in self.order:
            self._define(name)
        self.btf = Btf.parse(self.b.build(), source="synthetic kernel")
        self.layout = BtfLayout(self.btf)

    # --- BTF building ----------------------------------------------------------------------

    def _base(self, name):
        if name not in self._base_ids:
            size, signed, enc = BASE_TYPES[name]
            self._base_ids[name] = self.b.int(name, size, encoding=enc)
        return self._base_ids[name]

    def _ptr(self, target_id):
        if target_id not in self._ptr_ids:
            self._ptr_ids[target_id] = self.b.ptr(target_id)
        return self._ptr_ids[target_id]

    def _forward(self, name):
        if name not in self._ids:
            self._define(name)
        return self._ids[name]

    def _type(self, spec, stars):
        """(type id, size, align) of a member type spec."""
        spec = " ".join(spec.split())
        if spec == "fnptr":
            if self._fnptr is None:
                proto = self.b.func_proto(0, [])
                self._fnptr = self.b.ptr(proto)
            tid = self._fnptr
            return tid, 8, 8
        if spec == "void":
            tid = 0
            size = align = 0
        elif spec in BASE_TYPES:
            tid = self._base(spec)
            size = align = BASE_TYPES[spec][0]
        else:
            kind, _, name = spec.partition(" ")
            if kind not in ("struct", "union", "enum") or not name:
                raise ValueError(f"unknown type {spec!r}")
            if stars and name not in self._ids and name in self.decls and name in self._defining:
                # a pointer to a struct being defined (list_head *next): its id is reserved
                tid = self._reserved[name]
                size = align = 0
            else:
                if name not in self.decls:
                    raise ValueError(f"type {spec!r} is not declared")
                tid = self._forward(name)
                size, align = self._sizes[name], self._aligns[name]
        for _ in range(len(stars)):
            tid = self._ptr(tid)
            size = align = 8
        return tid, size, align

    def _define(self, name):
        if name in self._ids:
            return
        kind, body = self.decls[name]
        if kind == "enum":
            values = []
            nxt = 0
            for item in filter(None, (x.strip() for x in body.split(","))):
                n, _, v = item.partition("=")
                nxt = int(v, 0) if v.strip() else nxt
                values.append((n.strip(), nxt))
                nxt += 1
            if all(-(1 << 31) <= v < 1 << 31 for _, v in values):
                tid, size = self.b.enum(name, 4, values), 4
            else:   # a value past 32 bits (1LLU << 63 flags): an 8-byte ENUM64, as the kernel's
                tid, size = self.b.enum64(name, 8, values), 8
            self._ids[name], self._sizes[name], self._aligns[name] = tid, size, size
            return
        # Self/mutual references by pointer: reserve the struct's id first. BtfBuilder hands
        # out ids in order, so members' pointer types are created before the struct record;
        # they point at the id the struct will get, computed after member types exist.
        self._defining.add(name)
        members = []
        for line in filter(None, (x.strip() for x in body.split(";"))):
            anon = _ANON.match(line)
            m = {"type": line, "stars": "", "name": "", "count": None, "bits": None} if anon \
                else _MEMBER.match(line)
            if not m:
                raise ValueError(f"cannot parse member {line!r} of {name}")
            members.append(m)
        # First pass: create every non-self member type (may define other structs).
        specs = []
        for m in members:
            spec = " ".join(m["type"].split())
            target = spec.partition(" ")[2] if spec.startswith(("struct ", "union ")) else None
            if target and target not in self._ids and target in self.decls and not m["stars"] \
                    and target not in self._defining:
                self._define(target)
            specs.append((m, spec))
        # Pointers to structs still being defined need their (future) id: the struct record
        # will be the next type after every pointer we create now. Count them first.
        self_refs = sorted({s.partition(" ")[2] for m, s in specs if m["stars"]
                            and s.startswith(("struct ", "union "))
                            and s.partition(" ")[2] in self._defining
                            and s.partition(" ")[2] not in self._ids})
        placeholder = {}
        for target in self_refs:
            # a FWD stands in for the struct inside pointer types (BTF allows it; BtfLayout and
            # the walkers only need the pointer's size)
            placeholder[target] = self.b.fwd(target, union=self.decls[target][0] == "union")
        self._reserved.update(placeholder)
        fields = []
        off = 0
        max_align = 1
        for m, spec in specs:
            tid, size, align = self._type(spec, m["stars"])
            count = m["count"]
            bits = m["bits"]
            if count is not None:
                n = int(count)
                tid = self.b.array(tid, self._base("u32"), n)
                size = size * n
            align = max(align, 1)
            max_align = max(max_align, align)
            if self.pad:
                off += self.pad
            if bits is not None:
                off = _align(off, align)
                fields.append((m["name"], tid, off * 8, int(bits)))
                off += size
                continue
            off = _align(off, align)
            fields.append((m["name"], tid, off * 8))
            off += size
        size = _align(off, max_align) if off else 0
        maker = self.b.union if kind == "union" else self.b.struct
        if kind == "union":
            fields = [(f[0], f[1], 0) + tuple(f[3:]) for f in fields]
            size = max([self._member_size(f) for f in specs] or [0])
        tid = maker(name, size, fields)
        self._defining.discard(name)
        self._ids[name], self._sizes[name], self._aligns[name] = tid, size, max_align

    def _member_size(self, spec):
        m, s = spec
        _, size, _ = self._type(s, m["stars"])
        return size * (int(m["count"]) if m["count"] else 1)

    def memory(self, base=0xFFFF888000100000, size=4 << 20):
        return Memory(self.layout, base, size)


def layout_fixture(synthetic):
    """A pytest fixture ``layout`` with two parameters: ``synthetic()`` (a Layout with
    non-kernel offsets, built once per module) and the real x86-64 kernel BTF (the
    ``amd64_kernel_btf`` fixture: skipped without KTSTR_DUMPS). In a test module:
    ``layout = layout_fixture(lambda: SynthKernel(DECLS).layout)``."""
    import pytest

    made = []

    @pytest.fixture(params=["synthetic", "kernel"])
    def layout(request):
        if request.param == "kernel":
            return BtfLayout(request.getfixturevalue("amd64_kernel_btf"))
        if not made:
            made.append(synthetic())
        return made[0]

    return layout


class Memory(BufferReader):
    """A synthetic address space: one mapped region with a bump allocator (``alloc``/``new``),
    plus, with ``sparse=True``, zeroed pages mapped wherever something is written at a fixed
    address (an arena window, a map at a chosen address); ``unmap`` drops such a page.

    ``layout`` may be None for byte-level use (``write``/``read``/``u64`` only)."""

    def __init__(self, layout=None, base=0xFFFF888000100000, size=4 << 20, sparse=False,
                 page=4096):
        super().__init__({base: bytes(size)} if size else None)
        self.layout = layout
        self.base = base
        self.size = size
        self.sparse = sparse
        self.page = page
        self.pages = {}              # page address -> bytearray (sparse mode)
        self._next = base + 0x1000

    @classmethod
    def sparse_pages(cls, layout=None, page=4096):
        """No bump region: every write maps the pages it touches (arena windows, objects at
        chosen addresses)."""
        return cls(layout, size=0, sparse=True, page=page)

    def alloc(self, what, count=1, align=64):
        """Address of a fresh zeroed object (a struct name, or a byte count)."""
        n = self.layout.size(what) if isinstance(what, str) else int(what)
        addr = _align(self._next, align)
        self._next = addr + max(n * count, 1)
        if self._next > self.base + self.size:
            raise MemoryError("synthetic memory exhausted")
        return addr

    def hole(self):
        """An address that is not mapped (reads there raise ReadError)."""
        return self.base + self.size + 0x100000

    # --- bytes ---------------------------------------------------------------------------------

    def write(self, addr, data):
        data = bytes(data)
        if not self.sparse or any(b <= addr and addr + len(data) <= b + len(buf)
                                  for b, buf in self.regions):
            return super().write(addr, data)
        pos = 0
        while pos < len(data):
            a = addr + pos
            pbase = a - a % self.page
            buf = self.pages.setdefault(pbase, bytearray(self.page))
            n = min(len(data) - pos, pbase + self.page - a)
            buf[a - pbase:a - pbase + n] = data[pos:pos + n]
            pos += n

    def unmap(self, addr):
        """Drop the sparse page holding ``addr`` (reads there then fail)."""
        self.pages.pop(addr - addr % self.page, None)

    def read(self, addr, size):
        if not self.pages:
            return super().read(addr, size)
        try:
            return super().read(addr, size)
        except ReadError:
            pass
        out = bytearray()
        while len(out) < size:
            a = addr + len(out)
            pbase = a - a % self.page
            buf = self.pages.get(pbase)
            if buf is None:
                raise ReadError(addr, size, f"unmapped at {a:#x}")
            n = min(size - len(out), pbase + self.page - a)
            out += buf[a - pbase:a - pbase + n]
        return bytes(out)

    def with_holes(self, holes):
        """A live view of this memory (later writes show) where ``holes`` [(addr, size)] are
        unreadable."""
        return _HoleyView(self, holes)

    # --- members at the layout's offsets -------------------------------------------------------

    def set(self, struct, addr, path, value):
        """Write ``value`` into member ``path`` of the ``struct`` at ``addr`` (ints by the member's
        width, str/bytes into arrays, NUL-padded)."""
        f = self.layout.field(struct, path)
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, (bytes, bytearray)):
            if len(value) > f.size:
                raise ValueError(f"{struct}.{path}: {len(value)} bytes do not fit in {f.size}")
            self.write(addr + f.offset, bytes(value).ljust(f.size, b"\0"))
            return
        if f.bit_size:
            raw = int.from_bytes(self.read(addr + f.offset, f.size), "little")
            mask = ((1 << f.bit_size) - 1) << f.bit_offset
            raw = (raw & ~mask) | ((value << f.bit_offset) & mask)
            self.write(addr + f.offset, raw.to_bytes(f.size, "little"))
            return
        self.write(addr + f.offset, (value & ((1 << (8 * f.size)) - 1)).to_bytes(f.size, "little"))

    def get(self, struct, addr, path):
        """The integer in member ``path`` of the ``struct`` at ``addr``."""
        f = self.layout.field(struct, path)
        return f.decode(self.read(addr + f.offset, f.size), f.offset)

    def put(self, struct, addr, fields=None, **kw):
        """Set several members: a dict of dotted paths, and/or keywords (``a__b`` for ``a.b``)."""
        for path, value in dict(fields or {}, **{k.replace("__", "."): v for k, v in kw.items()}).items():
            self.set(struct, addr, path, value)
        return addr

    def new(self, struct, fields=None, **kw):
        return self.put(struct, self.alloc(struct), fields, **kw)

    def u64(self, addr, value=None):
        if value is None:
            return super().u64(addr)
        self.write(addr, _struct.pack("<Q", value & (2**64 - 1)))

    def string(self, text):
        """A fresh NUL-terminated copy of ``text``; its address."""
        data = (text.encode() if isinstance(text, str) else bytes(text)) + b"\0"
        addr = self.alloc(len(data), align=8)
        self.write(addr, data)
        return addr

    # --- list_head plumbing at the layout's offsets -----------------------------------------

    def _next_prev(self):
        return self.layout.offset("list_head", "next"), self.layout.offset("list_head", "prev")

    def list_init(self, head):
        n, p = self._next_prev()
        self.u64(head + n, head)
        self.u64(head + p, head)
        return head

    def list_add_tail(self, head, node):
        n, p = self._next_prev()
        last = super().u64(head + p)
        self.u64(node + n, head)
        self.u64(node + p, last)
        self.u64(last + n, node)
        self.u64(head + p, node)
        return node

    def hlist_add_head(self, head, node):
        first = super().u64(head + self.layout.offset("hlist_head", "first"))
        self.u64(node + self.layout.offset("hlist_node", "next"), first)
        self.u64(head + self.layout.offset("hlist_head", "first"), node)
        return node

    def idr(self, idr, entries):
        """Lay the IDR at ``idr`` out as one XArray leaf node holding {id: pointer} (ids < 64)."""
        xa = idr + self.layout.offset("idr", "idr_rt")
        if not entries:
            self.set("xarray", xa, "xa_head", 0)
            return idr
        node = self.new("xa_node", shift=0)
        for i, ptr in entries.items():
            assert 0 <= i < 64
            self.u64(node + self.layout.offset("xa_node", "slots") + 8 * i, ptr)
        self.set("xarray", xa, "xa_head", node | 2)
        return idr


def kernel_of(mem, layout, symbols=None, *, btf=None, btfs=None, percpu_offsets=None, idrs=None,
              slide=0, **kwargs):
    """The real kernel type (``kernel_model.Kernel``) over a synthetic kernel: ``mem`` and
    ``layout``, ``symbols`` {name: address}. What a kernel keeps in memory is written there
    first: ``percpu_offsets`` as ``__per_cpu_offset`` (+ ``nr_cpu_ids``), ``idrs`` {registry
    symbol: {id: object address}} as IDRs (a registry without a symbol gets one). ``btf``: the
    kernel's BTF (else read from ``btf_vmlinux``); ``btfs`` {address: Btf}: BTF objects parsed
    already (program BTF made with BtfBuilder, not laid out as ``struct btf``)."""
    from volatility3_ktstr.kernel_model import Kernel

    symbols = dict(symbols or {})
    if percpu_offsets is not None:
        offs = list(percpu_offsets)
        base = symbols.get("__per_cpu_offset") or mem.alloc(8 * max(len(offs), 1), align=8)
        mem.write(base, _struct.pack(f"<{len(offs)}Q", *offs))
        nr = symbols.get("nr_cpu_ids") or mem.alloc(8, align=8)
        mem.write(nr, _struct.pack("<I", len(offs)))
        symbols.update(__per_cpu_offset=base, nr_cpu_ids=nr)
    for name, entries in (idrs or {}).items():
        if name not in symbols:
            symbols[name] = mem.alloc("idr")
        mem.idr(symbols[name], entries)
    return Kernel(mem, layout, symbols, btf=btf, btf_cache=dict(btfs or {}), slide=slide, **kwargs)


class _HoleyView(Reader):
    def __init__(self, mem, holes):
        self.mem, self.holes = mem, list(holes)

    def read(self, addr, size):
        for h, n in self.holes:
            if addr < h + n and h < addr + size:
                raise ReadError(addr, size, f"unmapped at {max(h, addr):#x}")
        return self.mem.read(addr, size)


class HidingLayout(BtfLayout):
    """A layout minus some types/members: stands in for an older kernel."""

    def __init__(self, btf, hide_types=(), hide_members=()):
        super().__init__(btf)
        self.hide_types = set(hide_types)
        self.hide_members = set(hide_members)

    def _size(self, struct_name):
        if struct_name in self.hide_types:
            raise LayoutError(f"type 'struct {struct_name}' is not in the BTF")
        return super()._size(struct_name)

    def _field(self, struct_name, path):
        if struct_name in self.hide_types or (struct_name, path) in self.hide_members:
            raise LayoutError(f"type 'struct {struct_name}' has no member '{path}'")
        return super()._field(struct_name, path)

    def _member_names(self, struct_name):
        return [n for n in super()._member_names(struct_name) if (struct_name, n) not in self.hide_members]
