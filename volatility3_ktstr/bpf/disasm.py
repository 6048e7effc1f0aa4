"""Disassembly of BPF JIT images (capstone) and names for the code addresses they call.

No Volatility import: symbols come in as a sorted (address, name) list.
"""

import bisect
import re

from ..core.symbols import SymbolIndex
from ..errors import KtstrError

_HEX = re.compile(r"#?(0x[0-9a-fA-F]+)")
_BRANCH = re.compile(r"^(call|jmp|j[a-z]+|bl|blr|b|b\.[a-z]+|cbn?z|tbn?z)$")


class SymbolNamer:
    """Names for code addresses: a BPF program (``prog:<name>[id]+off``) or a kernel symbol.

    ``kernel_symbols`` is the kernel's :class:`SymbolIndex` (``Kernel.symbol_index()``), a sorted
    list of (canonical address, name), or a callable returning that list (built only when a
    kernel address needs a name)."""

    def __init__(self, kernel_symbols=(), progs=()):
        self._kernel = (kernel_symbols if isinstance(kernel_symbols, SymbolIndex)
                        else SymbolIndex(kernel_symbols))
        self.ranges = sorted((p.bpf_func, p.bpf_func + p.jited_len, p.name, p.id)
                             for p in progs if p.bpf_func and p.jited_len)
        self._starts = [r[0] for r in self.ranges]

    def name(self, addr):
        if addr is None:
            return ""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.ranges[i][1]:
            start, _, pname, pid = self.ranges[i]
            return f"prog:{pname}[{pid}]" + (f"+{addr - start:#x}" if addr != start else "")
        return self._kernel.near(addr)


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
