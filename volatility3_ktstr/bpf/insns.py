"""A program's xlated (verifier-rewritten) instructions: ``bpf_prog.insnsi[len]``.

What the kernel keeps after loading (kernel/bpf/verifier.c ``do_misc_fixups``,
``fixup_kfunc_call``):

- helper calls (``BPF_JMP|BPF_CALL``, src_reg 0) hold ``imm = func - __bpf_call_base``: the
  helper's kernel function (or the map op the verifier substituted, e.g.
  ``__htab_map_lookup_elem`` for ``bpf_map_lookup_elem``), named by kernel symbol and mapped
  back to ``enum bpf_func_id``;
- kfunc calls (src_reg ``BPF_PSEUDO_KFUNC_CALL``) hold the function's address the same way on
  JITs without far kfunc calls, else its BTF id (``off`` selects a module BTF);
- bpf-to-bpf calls (src_reg ``BPF_PSEUDO_CALL``) a relative instruction offset;
- tail calls are ``BPF_JMP|BPF_TAIL_CALL`` (``bpf_tail_call`` rewritten);
- ``ld_imm64`` of a map (fd or value) holds the map's kernel address (plus the value offset).

:func:`disassemble` gives bpftool-like text (``r1 = *(u64 *)(r10 -8)``, ``call
bpf_map_lookup_elem#1``). No Volatility import.
"""

import struct
from dataclasses import dataclass, field

from ..btf.types import Kind
from ..core import ReadError, percpu_sum

INSN = struct.Struct("<BBhi")
MAX_INSNS = 1 << 20            # BPF_COMPLEXITY_LIMIT_INSNS

# opcode fields (uapi linux/bpf_common.h, linux/bpf.h: stable ABI)
CLASS = {0: "ld", 1: "ldx", 2: "st", 3: "stx", 4: "alu", 5: "jmp", 6: "jmp32", 7: "alu64"}
SIZE = {0x00: "u32", 0x08: "u16", 0x10: "u8", 0x18: "u64"}
ALU = {0x00: "+=", 0x10: "-=", 0x20: "*=", 0x30: "/=", 0x40: "|=", 0x50: "&=", 0x60: "<<=",
       0x70: ">>=", 0x80: "neg", 0x90: "%=", 0xa0: "^=", 0xb0: "=", 0xc0: "s>>=", 0xd0: "end"}
JMP = {0x10: "==", 0x20: ">", 0x30: ">=", 0x40: "&", 0x50: "!=", 0x60: "s>", 0x70: "s>=",
       0xa0: "<", 0xb0: "<=", 0xc0: "s<", 0xd0: "s<="}
BPF_CALL, BPF_EXIT, BPF_JA, BPF_TAIL_CALL = 0x80, 0x90, 0x00, 0xf0
PSEUDO_CALL, PSEUDO_KFUNC_CALL = 1, 2
ATOMIC_OPS = {0x00: "+=", 0x40: "|=", 0x50: "&=", 0xa0: "^="}


@dataclass
class Insn:
    index: int
    code: int
    dst: int
    src: int
    off: int
    imm: int
    imm64: int = None          # ld_imm64: the full 64-bit constant (two slots)

    @property
    def cls(self):
        return self.code & 7


@dataclass
class Calls:
    """What a program calls, from its xlated instructions."""

    helpers: list = field(default_factory=list)     # [(helper name, id or None, kernel symbol)]
    kfuncs: list = field(default_factory=list)      # [(name, BTF id or None)]
    subprog_calls: int = 0
    tail_calls: int = 0
    maps: list = field(default_factory=list)        # map kvas referenced by ld_imm64


def read_insns(reader, layout, prog):
    """The program's xlated instructions ([] for a program without them); ReadError when
    unreadable."""
    n = prog.xlated_len // 8
    if not 0 < n <= MAX_INSNS:
        return []
    raw = reader.read(prog.kva + layout.offset("bpf_prog", "insnsi"), n * 8)
    return decode(raw)


def decode(raw):
    out = []
    i = 0
    n = len(raw) // 8
    while i < n:
        code, regs, off, imm = INSN.unpack_from(raw, 8 * i)
        insn = Insn(i, code, regs & 0xF, regs >> 4, off, imm)
        if code == 0x18 and i + 1 < n:      # BPF_LD | BPF_IMM | BPF_DW: two slots
            hi = INSN.unpack_from(raw, 8 * (i + 1))[3]
            insn.imm64 = ((hi & 0xFFFFFFFF) << 32) | (imm & 0xFFFFFFFF)
            out.append(insn)
            i += 2
            continue
        out.append(insn)
        i += 1
    return out


class Namer:
    """Names for the call targets of one kernel (a :class:`BpfKernel`)."""

    def __init__(self, kernel):
        self.k = kernel
        self.call_base = kernel.symbol("__bpf_call_base")
        consts = kernel.constants("bpf_func_id")
        self.helper_ids = {k[len("BPF_FUNC_"):]: v for k, v in consts.items()
                           if k.startswith("BPF_FUNC_") and v}
        # longest names first: "map_lookup_percpu_elem" before "map_lookup_elem"
        self._by_len = sorted(self.helper_ids, key=len, reverse=True)
        self._kfunc_ids = None

    def address(self, imm):
        if self.call_base is None:
            return None
        return (self.call_base + imm) & ((1 << 64) - 1)

    def helper(self, imm):
        """(helper name, enum id or None, kernel symbol) of a helper call."""
        addr = self.address(imm)
        sym = self.k.symbol_at(addr) if addr is not None else None
        if sym is None:
            if 0 < imm < 1 << 16:     # an unfixed call (interpreter builds keep the id)
                name = next((n for n, v in self.helper_ids.items() if v == imm), f"helper#{imm}")
                return name, imm if name in self.helper_ids else None, ""
            return (self.k.symbol_near(addr) if addr is not None else "") or f"{imm:#x}", None, ""
        base = sym[len("bpf_"):] if sym.startswith("bpf_") else sym
        if base in self.helper_ids:
            return base, self.helper_ids[base], sym
        # a map op or inlined variant the verifier substituted (htab_lru_map_update_elem ...)
        for name in self._by_len:
            if sym.endswith("_" + name) or sym == name:
                return name, self.helper_ids[name], sym
        return sym, None, sym

    def kfunc(self, insn):
        """(name, BTF id or None) of a kfunc call."""
        addr = self.address(insn.imm)
        sym = self.k.symbol_at(addr) if addr is not None else None
        if sym is not None:
            return sym, self.kfunc_id(sym)
        if insn.off == 0:
            return self.k.btf_type_name(self.k.kernel_btf_id, insn.imm) or f"kfunc#{insn.imm}", insn.imm
        return f"kfunc#{insn.imm} (module BTF {insn.off})", insn.imm

    def kfunc_id(self, name):
        """The kernel BTF id of the FUNC ``name`` (None when unknown)."""
        if self._kfunc_ids is None:
            self._kfunc_ids = {}
        if name not in self._kfunc_ids:
            hit = None
            try:
                funcs = [t for t in self.k.kernel_btf().find(name) if t.kind == Kind.FUNC]
                hit = funcs[0].id if funcs else None
            except Exception:   # KtstrError: the kernel BTF is unreadable; names only
                hit = None
            self._kfunc_ids[name] = hit
        return self._kfunc_ids[name]


def calls(insns, namer) -> Calls:
    """Helpers, kfuncs, subprogram and tail calls of ``insns`` (each helper/kfunc once)."""
    out = Calls()
    seen_h, seen_k = set(), set()
    for insn in insns:
        if insn.code == 0x85:                       # BPF_JMP | BPF_CALL
            if insn.src == PSEUDO_CALL:
                out.subprog_calls += 1
            elif insn.src == PSEUDO_KFUNC_CALL:
                k = namer.kfunc(insn)
                if k[0] not in seen_k:
                    seen_k.add(k[0])
                    out.kfuncs.append(k)
            else:
                h = namer.helper(insn.imm)
                if h[0] == "tail_call":
                    out.tail_calls += 1
                if h[0] not in seen_h:
                    seen_h.add(h[0])
                    out.helpers.append(h)
        elif insn.code == 0x05 | BPF_TAIL_CALL:     # BPF_JMP | BPF_TAIL_CALL
            out.tail_calls += 1
        elif insn.imm64 is not None and insn.imm64 >> 48 == 0xFFFF:
            out.maps.append(insn.imm64)
    return out


# --- text -----------------------------------------------------------------------------------


def _reg(n):
    return f"r{n}"


def disassemble(insns, namer=None, map_name=None):
    """(instruction index, text, call target or '') per instruction, bpftool-like."""
    for insn in insns:
        text, target = _text(insn, namer, map_name)
        yield insn.index, text, target


def _text(insn, namer, map_name):
    code, cls = insn.code, insn.cls
    d, s = _reg(insn.dst), _reg(insn.src)
    if cls in (4, 7):                               # ALU / ALU64
        w = "" if cls == 7 else "w"
        dst = f"w{insn.dst}" if w else d
        src = (f"w{insn.src}" if w else s) if code & 0x08 else f"{insn.imm:#x}"
        op = ALU.get(code & 0xF0, "?")
        if op == "neg":
            return f"{dst} = -{dst}", ""
        if op == "end":
            kind = ("bswap" if cls == 7 else ("be" if code & 0x08 else "le"))
            return f"{d} = {kind}{insn.imm} {d}", ""
        if op == "=" and code & 0x08 and cls == 7 and insn.off == -1:     # BPF_ADDR_PERCPU
            return f"{d} = &(void __percpu *)({s})", ""
        if op == "=" and code & 0x08 and cls == 7 and insn.off == 1:      # BPF_ADDR_SPACE_CAST
            return f"{d} = addr_space_cast({s}, {insn.imm & 0xFFFF}, {insn.imm >> 16})", ""
        if op == "=" and insn.off in (8, 16, 32) and code & 0x08:
            return f"{dst} = (s{insn.off}){src}", ""
        return f"{dst} {op} {src}", ""
    if cls in (5, 6):                               # JMP / JMP32
        op = code & 0xF0
        if op == BPF_EXIT and cls == 5:
            return "exit", ""
        if op == BPF_TAIL_CALL and cls == 5:
            return "tail_call", "bpf_tail_call"
        if op == BPF_CALL and cls == 5:
            if insn.src == PSEUDO_CALL:
                return f"call pc{insn.imm:+d}", ""
            if namer is None:
                return f"call {insn.imm:#x}", ""
            if insn.src == PSEUDO_KFUNC_CALL:
                name, _ = namer.kfunc(insn)
                return f"call {name}", name
            name, hid, sym = namer.helper(insn.imm)
            shown = sym or name
            return f"call {shown}" + (f"#{hid}" if hid is not None else ""), shown
        if op == BPF_JA:
            off = insn.imm if cls == 6 else insn.off
            return f"goto pc{off:+d}", ""
        cmp = JMP.get(op, "?")
        w = "w" if cls == 6 else "r"
        src = f"{w}{insn.src}" if code & 0x08 else f"{insn.imm:#x}"
        return f"if {w}{insn.dst} {cmp} {src} goto pc{insn.off:+d}", ""
    size = SIZE.get(code & 0x18, "?")
    mode = code & 0xE0
    if code == 0x18:                                # ld_imm64
        v = insn.imm64 if insn.imm64 is not None else insn.imm & 0xFFFFFFFF
        named = map_name(v) if map_name is not None else None
        return (f"{d} = {named}" if named else f"{d} = {v:#x} ll"), named or ""
    if cls == 1:                                    # LDX
        sx = "s" if mode == 0x80 else "u"
        return f"{d} = *({sx}{size[1:]} *)({s} {insn.off:+d})", ""
    if cls == 2:                                    # ST
        return f"*({size} *)({d} {insn.off:+d}) = {insn.imm:#x}", ""
    if cls == 3:                                    # STX
        if mode == 0xC0:                            # atomic
            op = ATOMIC_OPS.get(insn.imm & 0xF0, f"atomic{insn.imm:#x}")
            return f"lock *({size} *)({d} {insn.off:+d}) {op} {s}", ""
        return f"*({size} *)({d} {insn.off:+d}) = {s}", ""
    return f"(code {code:#04x}) {insn.dst} {insn.src} {insn.off} {insn.imm}", ""


# --- runtime stats -----------------------------------------------------------------------------


def run_stats(reader, layout, prog_kva, percpu_offsets):
    """(run count, run time ns, recursion misses) summed over CPUs (``bpf_prog.stats``, a
    ``__percpu struct bpf_prog_stats``; the kernel counts only while ``bpf_stats_enabled``).
    None when the kernel has no stats or they are unreadable."""
    if not layout.has("bpf_prog", "stats") or not layout.has("bpf_prog_stats", "cnt"):
        return None
    try:
        pptr = reader.ptr(prog_kva + layout.offset("bpf_prog", "stats"))
    except ReadError:
        return None
    if not pptr or not percpu_offsets:
        return None
    f = {m: layout.field("bpf_prog_stats", m) for m in ("cnt", "nsecs", "misses")
         if layout.has("bpf_prog_stats", m)}
    size = layout.size("bpf_prog_stats")
    total = {m: 0 for m in f}
    for cpu, off in enumerate(percpu_offsets):
        if cpu and not off:
            continue
        raw = reader.try_read(percpu_sum(pptr, off), size)
        if raw is None:
            return None
        for m, fl in f.items():
            total[m] += int.from_bytes(raw[fl.offset:fl.offset + fl.size], "little")
    return total.get("cnt", 0), total.get("nsecs", 0), total.get("misses", 0)
