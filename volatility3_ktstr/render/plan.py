"""Compiled render plans: one closure per (BTF, type id, max_elems), built once and cached.

A plan is ``fn(data, off, ctx) -> value`` that assumes ``data[off:off + size]`` is present
(the caller checks the length and takes the partial path otherwise). ``ctx`` is None unless
pointers are chased. Struct plans unpack every plain scalar member with one precompiled
``struct.Struct`` and only call sub-plans for the rest, which is what makes rendering fast.
"""

import re
import struct
import weakref

from ..btf import INT_BOOL, INT_CHAR, INT_SIGNED, MODIFIERS, TRANSPARENT, Kind

MAX_NEST = 64          # struct/array nesting while compiling (a corrupt BTF may nest itself)
CPUMASK_NAMES = frozenset({"cpumask", "bpf_cpumask", "scx_bitmap"})

_HEX_BYTES = tuple(f"0x{i:02x}" for i in range(256))
_INT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}
_FLOAT_CODES = {4: "f", 8: "d"}
_RUNS = re.compile("1+")
_ESCAPE = re.compile(r"[^\x20-\x5b\x5d-\x7e]")


class Hex(str):
    """A pointer rendered as "0x..." (a str for JSON; the text form prints it unquoted)."""

    __slots__ = ()


class EnumName(str):
    """An enumerator name (unquoted in the text form)."""

    __slots__ = ()


class CpuList(str):
    """A CPU list like "0-3,5" (unquoted in the text form)."""

    __slots__ = ()


def hex_list(data) -> list:
    return list(map(_HEX_BYTES.__getitem__, data))


def cpu_list(bits: int) -> str:
    """"0-3,5" from a bitmask (bit n = CPU n)."""
    if bits <= 0:
        return ""
    text = format(bits, "b")[::-1]   # text[n] is CPU n; runs of 1s become ranges
    return ",".join(str(m.start()) if m.end() - m.start() == 1 else f"{m.start()}-{m.end() - 1}"
                    for m in _RUNS.finditer(text))


def bitfield_value(data, pos, bf, order):
    """Value of a bitfield ``bf`` = (bit shift, nbits, signed, enum names, is_bool) at byte ``pos``."""
    shift, nbits, signed, enames, is_bool = bf
    nbytes = (shift + nbits + 7) // 8
    word = int.from_bytes(data[pos:pos + nbytes], order)
    if order == "big":
        word >>= nbytes * 8 - shift - nbits
    else:
        word >>= shift
    v = word & ((1 << nbits) - 1)
    if signed and v >> (nbits - 1):
        v -= 1 << nbits
    if enames is not None:
        return enames.get(v, v)
    if is_bool:
        return bool(v)
    return v


def printable(raw: bytes) -> str:
    """Bytes up to the first NUL, non-printable ones (and the backslash) as \\xHH."""
    end = raw.find(b"\0")
    if end >= 0:
        raw = raw[:end]
    text = raw.decode("latin-1")
    if text.isprintable() and text.isascii() and "\\" not in text:
        return text
    return _ESCAPE.sub(_escape_one, text)


def _escape_one(m):
    return f"\\x{ord(m.group()):02x}"


class Plan:
    """What a compiled type needs at render time."""

    __slots__ = ("fn", "size", "tid", "kind", "members", "elem", "nelems", "esize", "name", "order")

    def __init__(self, fn, size, tid, kind, name=""):
        self.fn = fn
        self.size = size
        self.tid = tid
        self.kind = kind
        self.members = None    # STRUCT/UNION/DATASEC: [(name, byte offset, Plan or None, bitfield)]
        self.elem = None       # ARRAY: element Plan
        self.nelems = 0
        self.esize = 0
        self.name = name
        self.order = "little"


class Compiler:
    """Plans for one Btf. Get it with :func:`compiler_for`."""

    def __init__(self, btf):
        self.btf = btf
        self.e = getattr(btf, "endian", "<")
        self.plans = {}
        self._building = set()

    # --- helpers --------------------------------------------------------------------------

    def peel(self, tid):
        """Peel typedefs and modifiers (bounded; a corrupt chain gives None)."""
        t = self.btf.type(tid)
        for _ in range(32):
            if t is None or t.kind not in TRANSPARENT:
                return t
            t = self.btf.type(t.type)
        return None

    def is_char(self, tid):
        """bpftool's test for a string array element: modifiers peeled but not typedefs."""
        t = self.btf.type(tid)
        for _ in range(32):
            if t is None or t.kind not in MODIFIERS:
                break
            t = self.btf.type(t.type)
        return (t is not None and t.kind == Kind.INT and t.size == 1
                and (t.encoding & INT_CHAR or t.name == "char"))

    # --- compile ------------------------------------------------------------------------

    def plan(self, tid, max_elems):
        key = (tid, max_elems)
        p = self.plans.get(key)
        if p is None:
            if key in self._building or len(self._building) > MAX_NEST:
                return self._opaque(tid, "<recursive type>")
            self._building.add(key)
            try:
                p = self._compile(tid, max_elems)
            finally:
                self._building.discard(key)
            self.plans[key] = p
        return p

    def _opaque(self, tid, why):
        size = self._size(tid)

        def fn(data, off, ctx):
            return {"__unrendered__": why, "hex": hex_list(data[off:off + size])}
        return Plan(fn, size, tid, "opaque")

    def _size(self, tid):
        try:
            return self.btf.size_of(tid)
        except Exception:
            return 0

    def _compile(self, tid, max_elems):
        try:
            t = self.peel(tid)
        except KeyError:
            return self._opaque(tid, f"type id {tid} not in BTF")
        if t is None:
            if tid:
                return self._opaque(tid, "corrupt type chain")
            return Plan(lambda data, off, ctx: [], 0, 0, "void")
        k = t.kind
        if k == Kind.INT:
            return self._int(t)
        if k in (Kind.ENUM, Kind.ENUM64):
            return self._enum(t)
        if k == Kind.PTR:
            return self._ptr(t)
        if k == Kind.FLOAT:
            return self._float(t)
        if k == Kind.ARRAY:
            return self._array(t, max_elems)
        if k in (Kind.STRUCT, Kind.UNION):
            if t.name in CPUMASK_NAMES or self._bits_only(t):
                cm = self._cpumask(t)
                if cm is not None:
                    return cm
            return self._struct(t, max_elems)
        if k == Kind.DATASEC:
            return self._datasec(t, max_elems)
        if k == Kind.VAR:
            inner = self.plan(t.type, max_elems)
            return inner
        if k == Kind.FWD:
            return self._opaque(t.id, f"forward declaration of {t.name or '(anonymous)'}")
        return self._opaque(t.id, f"{Kind(k).name.lower()} has no value")

    def _int(self, t):
        size, signed = t.size, bool(t.encoding & INT_SIGNED)
        if t.encoding & INT_BOOL:
            s = struct.Struct(self.e + "?") if size == 1 else None
            if s is not None:
                unpack = s.unpack_from
                return Plan(lambda data, off, ctx: unpack(data, off)[0], 1, t.id, "scalar")
        code = _INT_CODES.get(size)
        if code is None:   # __int128 and odd sizes
            order = "little" if self.e == "<" else "big"
            p = Plan(lambda data, off, ctx: int.from_bytes(data[off:off + size], order, signed=signed),
                     size, t.id, "scalar")
            return p
        s = struct.Struct(self.e + (code if signed else code.upper()))
        unpack = s.unpack_from
        p = Plan(lambda data, off, ctx: unpack(data, off)[0], size, t.id, "scalar")
        p.name = s.format[-1]   # struct code, reused by struct plans
        return p

    def _enum(self, t):
        size, signed = t.size, t.is_signed
        code = _INT_CODES.get(size)
        if code is None:
            return self._opaque(t.id, f"enum of size {size}")
        mask = (1 << (8 * size)) - 1
        names = {}
        for name, v in t.values:
            v = v & mask
            if signed and v >= 1 << (8 * size - 1):
                v -= 1 << (8 * size)
            names.setdefault(v, EnumName(name))
        s = struct.Struct(self.e + (code if signed else code.upper()))
        unpack = s.unpack_from
        get = names.get

        def fn(data, off, ctx):
            v = unpack(data, off)[0]
            return get(v, v)
        p = Plan(fn, size, t.id, "enum")
        p.name = s.format[-1]
        p.members = names
        return p

    def _float(self, t):
        code = _FLOAT_CODES.get(t.size)
        if code is None:
            size = t.size
            return Plan(lambda data, off, ctx: "0x" + data[off:off + size][::-1].hex(), size, t.id, "scalar")
        unpack = struct.Struct(self.e + code).unpack_from
        p = Plan(lambda data, off, ctx: unpack(data, off)[0], t.size, t.id, "scalar")
        p.name = code
        return p

    def _ptr(self, t):
        size = self.btf.pointer_size
        unpack = struct.Struct(self.e + ("Q" if size == 8 else "I")).unpack_from
        target = t.type
        tt = self.peel(target) if target else None
        chaseable = tt is not None and tt.kind not in (Kind.FUNC_PROTO, Kind.FUNC, Kind.FWD)
        tsize = self._size(target) if chaseable else 0
        compiler = self

        def fn(data, off, ctx):
            v = unpack(data, off)[0]
            if ctx is None or not v or not tsize:
                return Hex(f"{v:#x}")
            return ctx.chase_ptr(compiler, v, target, tsize)
        p = Plan(fn, size, t.id, "ptr")
        p.name = "Q" if size == 8 else "I"
        return p

    def _array(self, t, max_elems):
        n = t.nelems
        elem = self.plan(t.type, max_elems)
        esize = elem.size
        size = n * esize
        shown = min(n, max_elems)
        more = n - shown
        if esize and self.is_char(t.type):
            def fn(data, off, ctx):
                return printable(data[off:off + size])
            p = Plan(fn, size, t.id, "string")
        elif elem.kind == "scalar" and len(elem.name) == 1 and elem.name in "bBhHiIqQfd?":
            s = struct.Struct(f"{self.e}{shown}{elem.name}")
            unpack = s.unpack_from
            if more:
                def fn(data, off, ctx):
                    out = list(unpack(data, off))
                    out.append(f"...(+{more})")
                    return out
            else:
                def fn(data, off, ctx):
                    return list(unpack(data, off))
            p = Plan(fn, size, t.id, "array")
        else:
            efn = elem.fn
            offs = range(0, shown * esize, esize) if esize else range(0)

            def fn(data, off, ctx):
                out = [efn(data, off + o, ctx) for o in offs]
                if more:
                    out.append(f"...(+{more})")
                return out
            p = Plan(fn, size, t.id, "array")
        p.elem, p.nelems, p.esize = elem, shown, esize
        return p

    def _bits_only(self, t):
        """A struct whose only member is an unsigned long array called ``bits``."""
        if t.kind != Kind.STRUCT or len(t.members) != 1 or t.members[0].name != "bits":
            return False
        a = self.peel(t.members[0].type)
        if a is None or a.kind != Kind.ARRAY:
            return False
        e = self.peel(a.type)
        return e is not None and e.kind == Kind.INT and e.size == 8 and not e.is_signed

    def _cpumask(self, t):
        """cpumask-like: find the ``bits`` word array (directly or one struct down)."""
        bit = None
        for path in ("bits", "cpumask.bits"):
            try:
                bit, m = self.btf.member_path(t.id, path)
            except KeyError:
                continue
            a = self.peel(m.type)
            if a is not None and a.kind == Kind.ARRAY:
                e = self.peel(a.type)
                if e is not None and e.kind == Kind.INT and e.size in (4, 8):
                    break
            bit = None
        if bit is None:
            return None
        start = bit // 8
        wsize = e.size
        nbytes = a.nelems * wsize
        size = t.size
        order = "little" if self.e == "<" else "big"
        flexible = a.nelems == 0

        def fn(data, off, ctx):
            lo = off + start
            hi = len(data) if flexible else lo + nbytes
            raw = data[lo:hi]
            if order == "little":
                return CpuList(cpu_list(int.from_bytes(raw, "little")))
            bits = 0
            for i in range(0, len(raw) - wsize + 1, wsize):
                bits |= int.from_bytes(raw[i:i + wsize], "big") << (8 * i)
            return CpuList(cpu_list(bits))
        return Plan(fn, size, t.id, "cpumask", t.name)

    def _members(self, t, max_elems, depth=0):
        """[(name, byte offset, Plan, bitfield)] with anonymous struct/union members flattened."""
        out = []
        for m in t.members:
            boff = m.bit_offset
            if m.bit_size:
                out.append((m.name, boff, self._bitfield(m), True))
                continue
            if not m.name and depth < 8:
                inner = self.peel(m.type)
                if inner is not None and inner.kind in (Kind.STRUCT, Kind.UNION) and inner.name not in CPUMASK_NAMES:
                    for name, off, plan, bf in self._members(inner, max_elems, depth + 1):
                        out.append((name, off + (boff if bf else boff // 8), plan, bf))
                    continue
            out.append((m.name, boff // 8, self.plan(m.type, max_elems), False))
        # Bitfield offsets are still in bits until here (nested ones too): convert at the top.
        return out

    def _bitfield(self, m):
        t = self.peel(m.type)
        nbits = m.bit_size
        signed = t is not None and t.is_signed
        names = None
        if t is not None and t.kind in (Kind.ENUM, Kind.ENUM64):
            names = {}
            for name, v in t.values:
                names.setdefault(v & ((1 << nbits) - 1) if not signed else v, EnumName(name))
        is_bool = t is not None and t.kind == Kind.INT and bool(t.encoding & INT_BOOL)
        return (nbits, signed, names, is_bool)

    def _struct(self, t, max_elems):
        size = t.size
        raw_members = self._members(t, max_elems)
        members = []
        seen = set()
        for name, off, plan, bf in raw_members:
            if name in seen and name:
                continue   # a name repeated by flattening: first wins
            seen.add(name)
            if bf:
                members.append((name, off // 8, None, (off % 8,) + plan))
            else:
                members.append((name, off, plan, None))
        fn = self._struct_fn(members, t.kind == Kind.STRUCT)
        p = Plan(fn, size, t.id, "struct", t.name)
        p.members = members
        p.order = "little" if self.e == "<" else "big"
        return p

    def _struct_fn(self, members, ordered):
        """Fast path: all plain scalars of a struct in one ``unpack_from``; the rest by call."""
        e = self.e
        fmt = [e]
        pos = 0
        fast = []    # (index in members, post-processing or None)
        slow = []    # (index, plan fn, offset)
        bits = []    # (index, byte offset, bit shift, nbits, signed, names, is_bool)
        for i, (name, off, plan, bf) in enumerate(members):
            if bf is not None:
                bits.append((i, off, bf))
                continue
            code = plan.name if plan.kind in ("scalar", "enum", "ptr") else ""
            if ordered and len(code) == 1 and code in "bBhHiIqQfd?" and off >= pos:
                if off > pos:
                    fmt.append(f"{off - pos}x")
                fmt.append(code)
                pos = off + plan.size
                post = None
                if plan.kind == "enum":
                    post = plan.members.get
                    fast.append((i, ("enum", post)))
                elif plan.kind == "ptr":
                    fast.append((i, ("ptr", plan.fn, off)))
                else:
                    fast.append((i, None))
            else:
                slow.append((i, plan.fn, off))
        names = [m[0] for m in members]
        n = len(members)
        s = struct.Struct("".join(fmt)) if fast else None
        unpack = s.unpack_from if s else None
        order = "little" if e == "<" else "big"

        def fn(data, off, ctx):
            vals = [None] * n
            if unpack is not None:
                tup = unpack(data, off)
                for (i, post), v in zip(fast, tup):
                    if post is None:
                        vals[i] = v
                    elif post[0] == "enum":
                        vals[i] = post[1](v, v)
                    elif ctx is None or not v:
                        vals[i] = Hex(f"{v:#x}")
                    else:
                        vals[i] = post[1](data, off + post[2], ctx)
            for i, pfn, o in slow:
                vals[i] = pfn(data, off + o, ctx)
            for i, o, bf in bits:
                vals[i] = bitfield_value(data, off + o, bf, order)
            return dict(zip(names, vals))
        return fn

    def _datasec(self, t, max_elems):
        members = []
        taken = set()
        for var_id, voff, vsize in t.vars:
            v = self.btf.type(var_id)
            name = datasec_var_key(v.name if v is not None else f"#{var_id}", voff, taken)
            inner = v.type if v is not None and v.kind == Kind.VAR else var_id
            members.append((name, voff, self.plan(inner, max_elems), vsize))
        size = t.size

        def fn(data, off, ctx):
            out = {}
            end = len(data)
            for name, voff, plan, vsize in members:
                at = off + voff
                # A var's own type may be larger than its slot (flexible arrays): never read past.
                if at + plan.size <= end and plan.size <= vsize:
                    out[name] = plan.fn(data, at, ctx)
                else:
                    out[name] = render_at(plan, data[:min(end, at + vsize)], at, ctx)
            return out
        p = Plan(fn, size, t.id, "datasec", t.name)
        p.members = members
        return p


def datasec_var_key(name, offset, taken):
    """The key of a section variable in a rendered DATASEC: its name; a name the section already
    holds gets ``@<offset>`` (objects linked from several units repeat static names, e.g. each
    unit's ``xchg_tail.____fmt`` in one .rodata: a dict would keep only the last of them)."""
    key = name if name not in taken else f"{name}@{offset:#x}"
    taken.add(key)
    return key


_COMPILERS = weakref.WeakKeyDictionary()


def compiler_for(btf) -> Compiler:
    """The plan cache of ``btf``: kept on the Btf object itself (its lifetime), or in a weak
    table for objects that take no attributes."""
    c = getattr(btf, "_ktstr_render_plans", None)
    if c is not None:
        return c
    c = _COMPILERS.get(btf)
    if c is None:
        c = Compiler(btf)
        try:
            btf._ktstr_render_plans = c
        except AttributeError:
            _COMPILERS[btf] = c
    return c


def render_at(plan, data, off, ctx):
    """Render ``plan`` at ``off``; when the data is short, what fits plus ``__truncated__``."""
    avail = len(data) - off
    if avail >= plan.size:
        return plan.fn(data, off, ctx)
    avail = max(avail, 0)
    trunc = {"needed": plan.size, "had": avail}
    kind = plan.kind
    if kind in ("struct", "datasec"):
        out = {}
        for name, moff, mplan, extra in plan.members:
            if kind == "struct" and extra is not None:   # bitfield
                if moff + (extra[0] + extra[1] + 7) // 8 <= avail:
                    out[name] = bitfield_value(data, off + moff, extra, plan.order)
                continue
            if moff >= avail:
                continue
            out[name] = render_at(mplan, data, off + moff, ctx)
        out["__truncated__"] = trunc
        return out
    if kind == "array" and plan.esize:
        out = []
        for i in range(plan.nelems):
            o = i * plan.esize
            if o >= avail:
                break
            out.append(render_at(plan.elem, data, off + o, ctx))
        return {"__truncated__": trunc, "partial": out}
    if kind == "string":
        return {"__truncated__": trunc, "partial": printable(data[off:off + avail])}
    if kind == "cpumask":
        return {"__truncated__": trunc, "partial": plan.fn(data[:off + avail] + bytes(plan.size - avail), off, ctx)}
    return {"__truncated__": trunc, "partial": hex_list(data[off:off + avail])}
