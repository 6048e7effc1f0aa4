"""Helpers over a :class:`volatility3_ktstr.kernel.KernelContext` for the BPF plugins.

They use only the context's Reader/Layout/symbol methods (no Volatility import here): kernel
enum names, boot time, BTF ids, attach points, symbol names for addresses, disassembly.
"""

import bisect
import re

from ..core import ReadError
from ..errors import KtstrError
from . import progs as bpfprogs

_HEX = re.compile(r"#?(0x[0-9a-fA-F]+)")
_BRANCH = re.compile(r"^(call|jmp|j[a-z]+|bl|blr|b|b\.[a-z]+|cbn?z|tbn?z)$")
MAX_SYMBOL_DISTANCE = 1 << 20   # "sym+off" only this close to a symbol


def enum_constants(kctx, name):
    """{enumerator: value} of a kernel enum from the ISF, {} when absent."""
    try:
        return dict(kctx.module.get_enumeration(name).choices)
    except Exception:   # ISF without the enum (older kernels, types-only tables)
        return {}


def boot_epoch_ns(kctx):
    """Wall-clock ns of boot from the core timekeeper (``timekeeper_data[0]`` or ``tk_core``)."""
    lay = kctx.layout
    if not lay.has("timekeeper", "offs_real") or not lay.has("timekeeper", "offs_boot"):
        return None
    for sym in ("timekeeper_data", "tk_core"):
        addr = kctx.symbol(sym)
        if addr is None:
            continue
        if lay.has("tk_data", "timekeeper"):
            return bpfprogs.boot_epoch_ns(kctx.reader, lay, addr + lay.offset("tk_data", "timekeeper"))
    return None


def btf_id_at(kctx, kva):
    """The ``id`` of the ``struct btf`` at ``kva`` (0 for NULL, -1 when unreadable)."""
    if not kva:
        return 0
    try:
        return kctx.reader.u32(kva + kctx.layout.offset("btf", "id"))
    except ReadError:
        return -1


def attach_point(kctx, prog):
    """``<type>.<member>`` for struct_ops programs (the ops callback), else the attach func."""
    func = prog.attach_func_name
    if not prog.attach_btf_kva or not prog.attach_btf_id:
        return func
    try:
        btf = kctx.btf_at(prog.attach_btf_kva)
        t = btf.type(prog.attach_btf_id)
        tname = t.name if t is not None else ""
    except (KtstrError, KeyError):
        tname = f"btf type {prog.attach_btf_id}"
    if prog.type_name == "struct_ops" and tname:
        return f"{tname}.{func}" if func else tname
    return func or tname


class SymbolNamer:
    """Names for code addresses: a BPF program (``prog:<name>+off``) or a kernel symbol."""

    def __init__(self, kctx, progs=()):
        self.kctx = kctx
        self.ranges = sorted((p.bpf_func, p.bpf_func + p.jited_len, p.name, p.id)
                             for p in progs if p.bpf_func and p.jited_len)
        self._starts = [r[0] for r in self.ranges]
        self._sorted = None

    def _kernel_sorted(self):
        """Sorted (masked runtime address, name) of every kernel symbol, built once.

        Volatility keeps symbol addresses masked to the layer's address width (48/57 bits on
        x86), so both sides are compared masked. Read from the table's ISF JSON when it is
        there: asking the table for each symbol object costs seconds on a 130k-symbol kernel."""
        if self._sorted is None:
            mod = self.kctx.module
            mask = self._mask()
            pairs = []
            try:
                table = self.kctx.context.symbol_space[mod.symbol_table_name]
                isf = getattr(getattr(table, "_delegate", table), "_json_object", None) or {}
                raw = isf.get("symbols") or {}
                for name, sym in raw.items():
                    addr = sym.get("address") if isinstance(sym, dict) else None
                    if addr:
                        pairs.append(((addr + mod.offset) & mask, name))
            except Exception:   # a table we cannot read this way: exact lookups only
                pairs = []
            pairs.sort()
            self._sorted = pairs
        return self._sorted

    def _mask(self):
        return getattr(self.kctx.layer, "address_mask", (1 << 64) - 1)

    def name(self, addr):
        if addr is None:
            return ""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.ranges[i][1]:
            start, _, pname, pid = self.ranges[i]
            return f"prog:{pname}[{pid}]" + (f"+{addr - start:#x}" if addr != start else "")
        syms = self._kernel_sorted()
        key = addr & self._mask()
        j = bisect.bisect_right(syms, (key, "\uffff")) - 1
        if j >= 0 and 0 <= key - syms[j][0] <= MAX_SYMBOL_DISTANCE:
            d = key - syms[j][0]
            return syms[j][1] + (f"+{d:#x}" if d else "")
        return ""


def disassemble(arch, image, base, max_insns=20000):
    """(address, size, mnemonic, operands, target or None) per instruction (capstone)."""
    try:
        import capstone
    except ImportError:
        raise KtstrError("capstone is not installed (pip install capstone)") from None
    if arch == "arm64":
        md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    else:
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.skipdata = True   # padding/data inside the image: keep going
    regs = {}            # arm64: register -> constant built by mov/movk (the JIT's call sequence)
    for n, (addr, size, mnemonic, op_str) in enumerate(md.disasm_lite(image, base)):
        if n >= max_insns:
            break
        target = None
        if arch == "arm64":
            target = _arm64_track(regs, mnemonic, op_str)
        if target is None:
            m = _HEX.search(op_str)
            if m is not None:
                v = int(m.group(1), 16)
                # Branch targets, and any immediate that looks like a kernel address (movabs).
                if _BRANCH.match(mnemonic) or v >= 0xFFFF000000000000:
                    target = v
        yield addr, size, mnemonic, op_str, target


_ARM_MOV = re.compile(r"^x(\d+), #(-?(?:0x[0-9a-fA-F]+|\d+))(?:, lsl #(\d+))?$")
_U64 = (1 << 64) - 1


def _arm64_track(regs, mnemonic, op_str):
    """The arm64 JIT calls kernel helpers with ``mov/movk xN`` + ``blr xN``: follow the
    constant so the ``blr`` gets a target. Returns the target of a register branch, else None
    (and forgets registers other instructions overwrite)."""
    if mnemonic in ("blr", "br") and op_str.startswith("x"):
        return regs.get(op_str)
    dest = op_str.split(",", 1)[0].strip()
    m = _ARM_MOV.match(op_str)
    if m is not None and mnemonic in ("mov", "movz", "movk"):
        reg, imm, shift = f"x{m.group(1)}", int(m.group(2), 0), int(m.group(3) or 0)
        if mnemonic == "movk":
            if reg in regs:
                regs[reg] = (regs[reg] & ~(0xFFFF << shift) & _U64) | ((imm & 0xFFFF) << shift)
        else:
            regs[reg] = (imm << shift) & _U64
        return None
    if dest[:1] in ("x", "w"):
        regs.pop("x" + dest[1:], None)
    return None
