"""The tests' one BTF writer: blobs of every kind (include/uapi/linux/btf.h layout).

    b = BtfBuilder()
    i = b.int("int", 4, signed=True)
    s = b.struct("pair", 8, [("a", i, 0), ("b", i, 32)])
    blob = b.build()          # raw bytes; b.btf() parses them into a Btf

Members are (name, type id, bit offset[, bitfield size]); a struct with any bitfield size uses
the kind_flag encoding unless ``kflag=False`` is passed. Arrays are ``array(elem, index type,
count)``. Split BTF: ``BtfBuilder(base=b)`` continues the base's type ids and string offsets.
``replace(id, ...)`` rewrites a record in place (a struct whose members point back at it).
Also here: :func:`all_kinds_blob` (one BTF using every kind) and :func:`make_elf` (an ELF64
with given sections).
"""

import struct

KINDS = {
    "INT": 1, "PTR": 2, "ARRAY": 3, "STRUCT": 4, "UNION": 5, "ENUM": 6, "FWD": 7, "TYPEDEF": 8,
    "VOLATILE": 9, "CONST": 10, "RESTRICT": 11, "FUNC": 12, "FUNC_PROTO": 13, "VAR": 14,
    "DATASEC": 15, "FLOAT": 16, "DECL_TAG": 17, "TYPE_TAG": 18, "ENUM64": 19,
}
SIGNED, CHAR, BOOL = 1, 2, 4


class BtfBuilder:
    def __init__(self, base=None, endian="<"):
        self.e = endian
        self.base = base
        self.types = []          # encoded records
        self.names = {}
        if base is None:
            self.next_id, self.str_base, self.strings = 1, 0, bytearray(b"\0")
        else:
            self.next_id = base.next_id
            self.str_base = base.str_base + len(base.strings)
            self.strings = bytearray()

    # --- strings and records ---------------------------------------------------------------

    def s(self, text):
        """String offset of ``text`` ('' is 0), reusing the base's strings like libbpf does."""
        if not text:
            return 0
        b = self
        while b is not None:
            if text in b.names:
                return b.names[text]
            b = b.base
        off = self.str_base + len(self.strings)
        self.strings += text.encode() + b"\0"
        self.names[text] = off
        return off

    def _add(self, kind, name, vlen, size_or_type, tail=b"", kflag=0):
        info = (kflag << 31) | (KINDS[kind] << 24) | vlen
        self.types.append(struct.pack(self.e + "III", self.s(name), info, size_or_type) + tail)
        self.next_id += 1
        return self.next_id - 1

    def raw(self, record: bytes):
        """Append an already-encoded record (for malformed-input tests)."""
        self.types.append(record)
        self.next_id += 1
        return self.next_id - 1

    # --- kinds ---------------------------------------------------------------------------------

    def int(self, name, size, signed=False, encoding=None, bits=None, offset=0):
        enc = encoding if encoding is not None else (SIGNED if signed else 0)
        word = (enc << 24) | (offset << 16) | (bits if bits is not None else size * 8)
        return self._add("INT", name, 0, size, struct.pack(self.e + "I", word))

    def ptr(self, target):
        return self._add("PTR", "", 0, target)

    def array(self, elem, index, nelems):
        return self._add("ARRAY", "", 0, 0, struct.pack(self.e + "III", elem, index, nelems))

    def _aggregate(self, kind, name, size, members, kflag):
        if kflag is None:
            kflag = any(len(m) > 3 and m[3] for m in members)
        tail = b""
        for m in members:
            mname, mtype, bit = m[0], m[1], m[2]
            bsize = m[3] if len(m) > 3 else 0
            off = (bsize << 24) | bit if kflag else bit
            tail += struct.pack(self.e + "III", self.s(mname), mtype, off)
        return self._add(kind, name, len(members), size, tail, 1 if kflag else 0)

    def struct(self, name, size, members, kflag=None):
        return self._aggregate("STRUCT", name, size, members, kflag)

    def union(self, name, size, members, kflag=None):
        return self._aggregate("UNION", name, size, members, kflag)

    def enum(self, name, size, values, signed=False):
        tail = b"".join(struct.pack(self.e + "Ii", self.s(n), v) for n, v in values)
        return self._add("ENUM", name, len(values), size, tail, 1 if signed else 0)

    def enum64(self, name, size, values, signed=False):
        tail = b""
        for n, v in values:
            v &= (1 << 64) - 1
            tail += struct.pack(self.e + "III", self.s(n), v & 0xFFFFFFFF, v >> 32)
        return self._add("ENUM64", name, len(values), size, tail, 1 if signed else 0)

    def fwd(self, name, union=False):
        return self._add("FWD", name, 0, 0, kflag=1 if union else 0)

    def typedef(self, name, target):
        return self._add("TYPEDEF", name, 0, target)

    def volatile(self, target):
        return self._add("VOLATILE", "", 0, target)

    def const(self, target):
        return self._add("CONST", "", 0, target)

    def restrict(self, target):
        return self._add("RESTRICT", "", 0, target)

    def func_proto(self, ret, params):
        tail = b"".join(struct.pack(self.e + "II", self.s(n), t) for n, t in params)
        return self._add("FUNC_PROTO", "", len(params), ret, tail)

    def func(self, name, proto, linkage=1):
        return self._add("FUNC", name, linkage, proto)

    def var(self, name, target, linkage=1):
        return self._add("VAR", name, 0, target, struct.pack(self.e + "I", linkage))

    def datasec(self, name, size, variables):
        tail = b"".join(struct.pack(self.e + "III", *v) for v in variables)
        return self._add("DATASEC", name, len(variables), size, tail)

    def float(self, name, size):
        return self._add("FLOAT", name, 0, size)

    def decl_tag(self, name, target, component_idx=-1):
        return self._add("DECL_TAG", name, 0, target, struct.pack(self.e + "i", component_idx))

    def type_tag(self, name, target):
        return self._add("TYPE_TAG", name, 0, target)

    def replace(self, type_id, kind, name, size, members, kflag=None):
        """Re-encode struct/union ``type_id`` (reserved earlier, e.g. for pointers to it)."""
        saved, next_id = self.types, self.next_id
        self.types = []
        try:
            self._aggregate(kind.upper(), name, size, members, kflag)
            record = self.types[0]
        finally:
            self.types, self.next_id = saved, next_id
        self.types[type_id - (self.base.next_id if self.base else 1)] = record
        return type_id

    # --- output --------------------------------------------------------------------------------

    def btf(self, source="test BTF"):
        """The blob parsed (split BTF: against the base's parsed Btf)."""
        from volatility3_ktstr.btf import Btf

        return Btf.parse(self.build(), source=source)

    def build(self, version=1, hdr_len=24) -> bytes:
        types = b"".join(self.types)
        hdr = struct.pack(self.e + "HBBIIIII", 0xEB9F, version, 0, hdr_len, 0, len(types),
                          len(types), len(self.strings))
        return hdr + b"\0" * (hdr_len - 24) + types + bytes(self.strings)


def all_kinds_blob(endian="<"):
    """One small BTF using every kind; returns (blob, {label: type id})."""
    b = BtfBuilder(endian=endian)
    ids = {}
    ids["int"] = b.int("int", 4, signed=True)
    ids["uint"] = b.int("unsigned int", 4)
    ids["char"] = b.int("char", 1)
    ids["bool"] = b.int("_Bool", 1, encoding=BOOL)
    ids["ulong"] = b.int("long unsigned int", 8)
    ids["ptr_int"] = b.ptr(ids["int"])
    ids["arr"] = b.array(ids["char"], ids["uint"], 16)
    ids["fwd_s"] = b.fwd("opaque")
    ids["fwd_u"] = b.fwd("opaque_u", union=True)
    ids["anon_u"] = b.union("", 8, [("l", ids["ulong"], 0), ("i", ids["int"], 0)])
    ids["node"] = b.struct("node", 40, [
        ("id", ids["int"], 0),
        ("flag", ids["uint"], 32, 1),
        ("mode", ids["uint"], 33, 3),
        ("", ids["anon_u"], 64),
        ("name", ids["arr"], 128),
        ("next", 0, 0),  # patched below: pointer to node
    ])
    ids["ptr_node"] = b.ptr(ids["node"])
    # Patch node.next (last member) now that the pointer id exists: keeps the list a cycle.
    rec = bytearray(b.types[ids["node"] - 1])
    struct.pack_into(endian + "III", rec, len(rec) - 12, b.s("next"), ids["ptr_node"], 256)
    b.types[ids["node"] - 1] = bytes(rec)
    ids["enum"] = b.enum("color", 4, [("RED", 0), ("GREEN", 1), ("NEG", -2)], signed=True)
    ids["enum64"] = b.enum64("big", 8, [("SMALL", 1), ("HUGE", 1 << 63)])
    ids["typedef"] = b.typedef("node_t", ids["node"])
    ids["volatile"] = b.volatile(ids["int"])
    ids["const"] = b.const(ids["volatile"])
    ids["restrict"] = b.restrict(ids["ptr_int"])
    ids["proto"] = b.func_proto(ids["int"], [("a", ids["int"]), ("", ids["ptr_node"])])
    ids["func"] = b.func("do_thing", ids["proto"], linkage=1)
    ids["var"] = b.var("counter", ids["ulong"], linkage=1)
    ids["datasec"] = b.datasec(".data..percpu", 16, [(ids["var"], 8, 8)])
    ids["float"] = b.float("double", 8)
    ids["decl_tag"] = b.decl_tag("tagged", ids["node"], 1)
    ids["type_tag"] = b.type_tag("user", ids["int"])
    ids["ptr_tag"] = b.ptr(ids["type_tag"])
    return b.build(), ids


def make_elf(sections, machine=62, little=True, addrs=None):
    """A minimal ELF64 file with the given {name: bytes} PROGBITS sections (``addrs``: optional
    {name: sh_addr}, e.g. a .rodata holding linux_banner at its link-time address)."""
    e = "<" if little else ">"
    addrs = addrs or {}
    names = b"\0"
    name_off = {}
    for n in list(sections) + [".shstrtab"]:
        name_off[n] = len(names)
        names += n.encode() + b"\0"
    body = b""
    placed = []
    off = 64
    for n, data in list(sections.items()) + [(".shstrtab", names)]:
        placed.append((n, off, len(data), 3 if n == ".shstrtab" else 1))
        body += data
        off += len(data)
    pad = (-off) % 8
    body += b"\0" * pad
    shoff = off + pad
    shnum = len(placed) + 1
    ident = b"\x7fELF" + bytes([2, 1 if little else 2, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack(e + "HHIQQQIHHHHHH", 2, machine, 1, 0, 0, shoff, 0, 64, 0, 0, 64,
                               shnum, shnum - 1)
    shdrs = b"\0" * 64
    for n, o, size, sh_type in placed:
        flags = 2 if n in addrs else 0                                  # SHF_ALLOC
        shdrs += struct.pack(e + "IIQQQQIIQQ", name_off[n], sh_type, flags, addrs.get(n, 0), o, size,
                             0, 0, 1, 0)
    return ehdr + body + shdrs
