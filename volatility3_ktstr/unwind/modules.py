"""Loaded modules as the unwinder needs them (no Volatility import): their ORC tables
(``struct module.arch``: orc_unwind_ip, orc_unwind, num_orcs), their text ranges
(``mem[MOD_TEXT]``/``mem[MOD_INIT_TEXT]`` since 6.4, ``core_layout`` before) and their symbols
(``mod->kallsyms``: the module's ELF ``symtab``/``strtab``), for module frames named
``symbol+0xoff/0xsize [module]`` as /proc/PID/stack prints them."""

import bisect
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from ..core import LayoutError, ReadError, Record
from ..kds import DamageLog, list_entries

MAX_MODULES = 1 << 12


def module_orc_tables(kernel: Any, dec: Any, damage: DamageLog = None) -> List[Any]:
    """An OrcTable per loaded module that has one ([] when the kernel keeps no module list)."""
    from .orc import MAX_MODULE_ORCS, OrcTable

    lay = kernel.layout
    head = kernel.symbol("modules")
    paths = ("arch.orc_unwind_ip", "arch.orc_unwind", "arch.num_orcs")
    if head is None or not all(lay.has("module", p) for p in paths) or not lay.has("module", "list"):
        return []
    damage = damage if damage is not None else DamageLog()
    out = []
    for mod in list_entries(kernel.reader, lay, head, "module", "list", limit=MAX_MODULES,
                            damage=damage, what="module (modules list)"):
        try:
            r = Record(kernel.reader, lay, "module", mod, paths)
            n = r.int("arch.num_orcs")
            if not 0 < n <= MAX_MODULE_ORCS:
                continue
            out.append(OrcTable(kernel.reader, dec, r.int("arch.orc_unwind_ip"),
                                r.int("arch.orc_unwind"), n, what=f"module at {mod:#x}"))
        except (ReadError, LayoutError, ValueError):
            continue
    return out


MAX_MODULE_SYMS = 1 << 17
MAX_SYMBOL_NAME = 512        # KSYM_NAME_LEN


@dataclass
class ModuleText:
    """A loaded module's code: its name, text ranges, and its function symbols (sorted
    (address, name)) from ``mod->kallsyms`` (the module's own ELF symbol table)."""

    name: str
    ranges: List[Tuple[int, int]]
    symbols: List[Tuple[int, str]] = field(default_factory=list)

    def holds(self, ip: int) -> bool:
        return any(lo <= ip < hi for lo, hi in self.ranges)

    def symbol(self, ip: int) -> Optional[Tuple[str, int, int]]:
        """(name, start, size) of the symbol holding ``ip``: size to the next symbol above it
        or to the end of the text range (kernel/module/kallsyms.c ``find_kallsyms_symbol``)."""
        i = bisect.bisect_right(self.symbols, ip, key=lambda s: s[0]) - 1
        if i < 0:
            return None
        start, name = self.symbols[i]
        end = next((a for a, _ in self.symbols[i + 1:] if a > start), None)
        rng = next(((lo, hi) for lo, hi in self.ranges if lo <= start < hi), None)
        if rng is None:
            return None
        end = min(end, rng[1]) if end is not None else rng[1]
        return (name, start, end - start) if start <= ip < end else None


def module_texts(kernel: Any) -> List[ModuleText]:
    """Every module on the ``modules`` list with its text ranges and symbols, read once."""
    return kernel.memo(("unwind", "module_texts"), lambda: _read_modules(kernel))


def _text_ranges(kernel: Any, rec: Any) -> List[Tuple[int, int]]:
    lay = kernel.layout
    out = []
    if rec.has("mem") and lay.has("module_memory", "base"):
        mem = lay.field("module", "mem")
        kinds = kernel.enum_constants("mod_mem_type")
        size = lay.size("module_memory")
        for name in ("MOD_TEXT", "MOD_INIT_TEXT"):
            idx = kinds.get(name)
            if idx is None or not 0 <= idx < mem.count:
                continue
            r = Record.of(lay, "module_memory", 0, rec.bytes("mem")[size * idx:size * (idx + 1)])
            base, length = r.int("base"), r.int("size")
            if base and 0 < length < 1 << 30:
                out.append((base, base + length))
    elif rec.has("core_layout.base"):
        base, length = rec.int("core_layout.base"), rec.int("core_layout.text_size", 0)
        if base and 0 < length < 1 << 30:
            out.append((base, base + length))
    return out


def _read_modules(kernel: Any) -> List[ModuleText]:
    lay = kernel.layout
    head = kernel.symbol("modules")
    if head is None or not lay.has("module", "list"):
        return []
    out = []
    for mod in list_entries(kernel.reader, lay, head, "module", "list", limit=MAX_MODULES,
                            damage=DamageLog(), what="module (modules list)"):
        try:
            rec = Record(kernel.reader, lay, "module", mod)
        except ReadError:
            continue
        ranges = _text_ranges(kernel, rec)
        if not ranges:
            continue
        mt = ModuleText(rec.str("name", "") or f"module@{mod:#x}", ranges)
        try:
            mt.symbols = _module_symbols(kernel, rec.int("kallsyms", 0), mt)
        except (ReadError, LayoutError):
            pass
        out.append(mt)
    return out


def _module_symbols(kernel: Any, kallsyms: int, mt: ModuleText) -> List[Tuple[int, str]]:
    lay = kernel.layout
    if not kallsyms or not lay.has("mod_kallsyms", "symtab") or not lay.has("elf64_sym", "st_value"):
        return []
    ks = Record(kernel.reader, lay, "mod_kallsyms", kallsyms, ("symtab", "num_symtab", "strtab"))
    n, symtab, strtab = ks.int("num_symtab"), ks.int("symtab"), ks.int("strtab")
    if not (symtab and strtab and 0 < n <= MAX_MODULE_SYMS):
        return []
    size = lay.size("elf64_sym")
    raw = kernel.reader.read(symtab, size * n)
    out = []
    for i in range(n):
        r = Record.of(lay, "elf64_sym", symtab + size * i, raw[size * i:size * (i + 1)])
        value, name_off = r.int("st_value"), r.int("st_name")
        if name_off and mt.holds(value):
            name = kernel.reader.cstring(strtab + name_off, MAX_SYMBOL_NAME)
            if name and not name.startswith("__pfx_") and not name.startswith("$"):
                out.append((value, name))
    out.sort()
    return out
