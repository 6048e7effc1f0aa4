"""Modules' ORC tables (``struct module.arch``) and text ranges (no Volatility import)."""

from typing import Any, List

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
