"""The kernel's ORC unwind tables, read from memory (x86-64; no Volatility import).

vmlinux: ``__start_orc_unwind_ip`` .. ``__stop_orc_unwind_ip`` is a sorted array of s32
offsets (entry ``i`` covers code from ``&ip[i] + ip[i]``), ``__start_orc_unwind`` the
``struct orc_entry`` of each (arch/x86/kernel/unwind_orc.c ``__orc_find``: the last entry at or
below the address). Modules carry their own pair in ``struct module.arch`` (``orc_unwind_ip``,
``orc_unwind``, ``num_orcs``). ``struct orc_entry`` is a packed bitfield struct read from BTF
(``sp_offset``, ``bp_offset``, ``sp_reg``, ``bp_reg``, ``type``, ``signal``); the register and
type numbers are the ORC format's (arch/x86/include/asm/orc_types.h).
"""

import bisect
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..core import Layout, LayoutError, ReadError, Reader

# Registers by name; the numbers differ between kernels (arch/x86/include/asm/orc_types.h):
REG_UNDEFINED, REG_PREV_SP, REG_DX, REG_DI, REG_BP, REG_SP, REG_R10, REG_R13 = (
    "undefined", "prev_sp", "dx", "di", "bp", "sp", "r10", "r13")
REG_BP_INDIRECT, REG_SP_INDIRECT, REG_AX = "bp_indirect", "sp_indirect", "ax"
# The classic numbering (4.14 to 6.x) and the later one that added AX (SP 3, BP 4, PREV_SP 8).
# Which one a kernel uses is not in its BTF (an orc_header hash of the header only): the
# most common stack-pointer base of CALL entries tells (every function entry is sp-based).
CLASSIC_REGS = (REG_UNDEFINED, REG_PREV_SP, REG_DX, REG_DI, REG_BP, REG_SP, REG_R10, REG_R13,
                REG_BP_INDIRECT, REG_SP_INDIRECT)
AX_REGS = (REG_UNDEFINED, REG_AX, REG_DX, REG_SP, REG_BP, REG_DI, REG_R10, REG_R13, REG_PREV_SP,
           REG_SP_INDIRECT, REG_BP_INDIRECT)
NUMBERINGS = {"classic": CLASSIC_REGS, "ax": AX_REGS}
SAMPLE_ENTRIES = 4096
TYPE_UNDEFINED, TYPE_END_OF_STACK, TYPE_CALL, TYPE_REGS, TYPE_REGS_PARTIAL = range(5)
# Before 6.3 (struct orc_entry with ``type:2, end:1``): CALL 0, REGS 1, REGS_IRET 2.
OLD_TYPES = {0: TYPE_CALL, 1: TYPE_REGS, 2: TYPE_REGS_PARTIAL}

MAX_ORC_ENTRIES = 1 << 22
MAX_MODULE_ORCS = 1 << 20
IP_ENTRY_SIZE = 4          # the ip table holds s32 offsets (ORC format)


@dataclass(frozen=True)
class OrcEntry:
    sp_offset: int
    bp_offset: int
    sp_reg: str
    bp_reg: str
    type: int
    signal: bool


# What the kernel assumes for code without ORC data (BPF JIT images): a frame-pointer frame
# (unwind_orc.c ``orc_fp_entry``): CFA = bp + 16, caller's bp saved at CFA - 16.
FP_ENTRY = OrcEntry(16, -16, REG_BP, REG_PREV_SP, TYPE_CALL, False)


class OrcDecoder:
    """Decodes ``struct orc_entry`` bytes with the bit positions the kernel's BTF gives."""

    def __init__(self, layout: Layout) -> None:
        self.size = layout.size("orc_entry")
        self.f = {n: layout.field("orc_entry", n) for n in ("sp_offset", "bp_offset", "sp_reg", "bp_reg", "type")}
        self.signal = layout.field("orc_entry", "signal") if layout.has("orc_entry", "signal") else None
        self.end = layout.field("orc_entry", "end") if self.signal is None and layout.has("orc_entry", "end") else None
        self.regs: Tuple[str, ...] = CLASSIC_REGS
        self.numbering = "classic"

    def choose_numbering(self, orc: bytes) -> None:
        """Pick the register numbering from the entries: the commonest sp base of CALL entries
        is SP (5 in the classic numbering, 3 in the later one)."""
        counts: Dict[int, int] = {}
        size = self.size
        for i in range(0, min(len(orc) // size, SAMPLE_ENTRIES)):
            raw = orc[size * i:size * (i + 1)]
            if self._type(raw) == TYPE_CALL:
                r = self.f["sp_reg"].decode(raw)
                counts[r] = counts.get(r, 0) + 1
        if counts:
            top = max(counts, key=lambda r: counts[r])
            for name, regs in NUMBERINGS.items():
                if top < len(regs) and regs[top] == REG_SP:
                    self.regs, self.numbering = regs, name
                    return

    def _type(self, raw: bytes) -> int:
        typ = self.f["type"].decode(raw)
        if self.signal is None:
            if self.end is not None and self.end.decode(raw):
                return TYPE_END_OF_STACK
            return OLD_TYPES.get(typ, TYPE_UNDEFINED)
        return typ

    def reg(self, n: int) -> str:
        return self.regs[n] if 0 <= n < len(self.regs) else f"register {n}"

    def decode(self, raw: bytes) -> OrcEntry:
        f = self.f
        typ = self._type(raw)
        if self.signal is not None:
            signal = bool(self.signal.decode(raw))
        else:
            # before 6.3 REGS frames were the signal frames (no flag of their own)
            signal = typ in (TYPE_REGS, TYPE_REGS_PARTIAL)
        return OrcEntry(f["sp_offset"].decode(raw), f["bp_offset"].decode(raw),
                        self.reg(f["sp_reg"].decode(raw)), self.reg(f["bp_reg"].decode(raw)), typ, signal)


class OrcTable:
    """One ORC table pair (vmlinux's or a module's) covering [lo, hi)."""

    def __init__(self, reader: Reader, decoder: OrcDecoder, ip_table: int, orc_table: int,
                 count: int, lo: int = 0, hi: int = 0, what: str = "vmlinux") -> None:
        if not 0 < count <= MAX_ORC_ENTRIES:
            raise ValueError(f"implausible ORC entry count {count}")
        self.decoder = decoder
        self.ip_table = ip_table
        self.orc_table = orc_table
        self.count = count
        self.what = what
        raw = reader.read(ip_table, IP_ENTRY_SIZE * count)
        self.rel = memoryview(raw).cast("i")
        self.orc = reader.read(orc_table, decoder.size * count)
        self.lo = lo or self.ip_at(0)
        self.hi = hi or self.ip_at(count - 1) + 1

    def ip_at(self, i: int) -> int:
        return self.ip_table + IP_ENTRY_SIZE * i + self.rel[i]

    def find(self, ip: int) -> Optional[OrcEntry]:
        """The entry covering ``ip`` (the last at or below it), or None outside the table."""
        if not self.lo <= ip < self.hi:
            return None
        i = bisect.bisect_right(range(self.count), ip, key=self.ip_at) - 1
        if i < 0:
            return None
        size = self.decoder.size
        return self.decoder.decode(self.orc[size * i:size * (i + 1)])


class OrcTables:
    """Every ORC table of a kernel: vmlinux's (with its text range) and each module's."""

    def __init__(self, tables: List[OrcTable], error: str = "") -> None:
        self.tables = tables
        self.error = error

    def find(self, ip: int) -> Optional[OrcEntry]:
        for t in self.tables:
            e = t.find(ip)
            if e is not None:
                return e
        return None

    def __bool__(self) -> bool:
        return bool(self.tables)


def kernel_orc(kernel: Any) -> OrcTables:
    """vmlinux's ORC table (and modules' where ``struct module`` has them), read once per
    kernel; an OrcTables with ``error`` set when the kernel has none or they are unreadable."""

    def build() -> OrcTables:
        lay = kernel.layout
        if not lay.has("orc_entry"):
            return OrcTables([], "the kernel's BTF has no struct orc_entry (no ORC unwinder)")
        try:
            dec = OrcDecoder(lay)
        except LayoutError as e:
            return OrcTables([], f"struct orc_entry: {e}")
        syms = [kernel.symbol(n) for n in ("__start_orc_unwind_ip", "__stop_orc_unwind_ip",
                                           "__start_orc_unwind", "__stop_orc_unwind")]
        if None in syms:
            return OrcTables([], "no __start_orc_unwind_ip/__start_orc_unwind symbols")
        ip0, ip1, orc0, orc1 = syms
        count = (ip1 - ip0) // IP_ENTRY_SIZE
        if count <= 0 or (orc1 - orc0) != count * dec.size:
            return OrcTables([], f"ORC tables disagree: {count} ips, {(orc1 - orc0) // dec.size} entries")
        tables = []
        try:
            tables.append(OrcTable(kernel.reader, dec, ip0, orc0, count, what="vmlinux"))
            dec.choose_numbering(tables[0].orc)
        except (ReadError, ValueError) as e:
            return OrcTables([], f"vmlinux ORC table unreadable: {e}")
        tables.extend(_module_tables(kernel, dec))
        return OrcTables(tables)

    return kernel.memo(("unwind", "orc"), build)


def _module_tables(kernel: Any, dec: OrcDecoder) -> List[OrcTable]:
    from .modules import module_orc_tables

    return module_orc_tables(kernel, dec)
