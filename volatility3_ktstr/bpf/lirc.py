"""BPF programs attached to remote-control (rc) devices: ``BPF_LIRC_MODE2`` programs, which the
kernel keeps in ``rc_dev->raw->progs`` (a ``struct bpf_prog_array``; drivers/media/rc/bpf-lirc.c)
and nowhere else: no link, no registry entry besides ``prog_idr``.

The raw-decoding rc devices are the ``struct ir_raw_event_ctrl`` on ``ir_raw_client_list``
(drivers/media/rc/rc-ir-raw.c), each with its ``dev`` (``struct rc_dev``) and ``progs``. rc-core
is usually a module (``rc_core``): its types then live in the module's BTF and its static list in
the module's own symbol table (``mod->kallsyms``), both read from the dump; built in, the
kernel's layout and symbols answer. :func:`lirc_sources` says which, or why neither.

No Volatility import.
"""

from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Tuple

from ..core import Layout, LayoutError, ReadError, Record
from ..kds import DamageLog, list_entries

RC_MODULE = "rc_core"
CLIENT_LIST = "ir_raw_client_list"
MAX_MODULES = 1 << 12
MAX_MODULE_SYMS = 1 << 17
MAX_RC_DEVICES = 1 << 10
MAX_NAME = 256


@dataclass
class LircSource:
    """Where the rc devices are: the list head and the layout their types come from (or
    ``note``: why there are none to walk, ``damage``: True when that is a gap, not an absence)."""

    head: int = 0
    layout: Optional[Layout] = None
    where: str = ""
    note: str = ""
    damage: bool = False


def find_module(kernel: Any, name: str, damage: DamageLog) -> Optional[Any]:
    """The ``Record`` (name, kallsyms) of loaded module ``name`` on the ``modules`` list."""
    lay = kernel.layout
    head = kernel.symbol("modules")
    if not head or not lay.has("module", "list") or not lay.has("module", "name"):
        return None
    for mod in list_entries(kernel.reader, lay, head, "module", "list", limit=MAX_MODULES,
                            damage=damage, what="module (modules list)"):
        try:
            r = Record(kernel.reader, lay, "module", mod, ("name",) + (("kallsyms",) if lay.has("module", "kallsyms") else ()))
        except ReadError as e:
            damage.add("module", mod, f"unreadable ({e.reason})")
            continue
        if r.str("name") == name:
            return r
    return None


def module_symbol(kernel: Any, kallsyms: int, name: str) -> int:
    """Address of symbol ``name`` in a module's own symbol table (``mod->kallsyms``: the ELF
    ``symtab``/``strtab`` the module keeps, static data included); 0 when absent."""
    lay = kernel.layout
    if not kallsyms or not lay.has("mod_kallsyms", "symtab") or not lay.has("elf64_sym", "st_value"):
        return 0
    ks = Record(kernel.reader, lay, "mod_kallsyms", kallsyms, ("symtab", "num_symtab", "strtab"))
    n, symtab, strtab = ks.int("num_symtab"), ks.int("symtab"), ks.int("strtab")
    if not (symtab and strtab and 0 < n <= MAX_MODULE_SYMS):
        return 0
    size = lay.size("elf64_sym")
    raw = kernel.reader.read(symtab, size * n)
    want = name.encode() + b"\0"
    for i in range(n):
        r = Record.of(lay, "elf64_sym", symtab + size * i, raw[size * i:size * (i + 1)])
        off = r.int("st_name")
        if off and r.int("st_value") and kernel.reader.try_read(strtab + off, len(want)) == want:
            return r.int("st_value")
    return 0


def lirc_source(kernel: Any, damage: DamageLog) -> LircSource:
    """Where ``ir_raw_client_list`` and the rc types are: the kernel (rc-core built in), the
    ``rc_core`` module with its BTF, or a note saying which part is missing."""
    head = kernel.symbol(CLIENT_LIST)
    if head and kernel.layout.has("ir_raw_event_ctrl", "progs"):
        return LircSource(head, kernel.layout, "kernel")
    mod = find_module(kernel, RC_MODULE, damage)
    if mod is None:
        return LircSource(note=f"module {RC_MODULE} is not loaded (and rc-core is not built in): "
                               "no rc device can hold a lirc program")
    layout = kernel.module_layout(RC_MODULE)
    if layout is None:
        return LircSource(note=f"module {RC_MODULE} is loaded but its BTF is not in the dump: "
                               "lirc programs not read", damage=True)
    if not layout.has("ir_raw_event_ctrl", "progs"):
        return LircSource(note=f"module {RC_MODULE}'s BTF has no ir_raw_event_ctrl.progs "
                               "(kernel without CONFIG_BPF_LIRC_MODE2): no lirc programs")
    try:
        head = module_symbol(kernel, mod.int("kallsyms", 0) if mod.has("kallsyms") else 0, CLIENT_LIST)
    except (ReadError, LayoutError) as e:
        return LircSource(note=f"module {RC_MODULE}'s symbol table unreadable ({e}): lirc programs "
                               "not read", damage=True)
    if not head:
        return LircSource(note=f"{CLIENT_LIST} not in module {RC_MODULE}'s symbol table: lirc "
                               "programs not read", damage=True)
    return LircSource(head, layout, f"module {RC_MODULE}")


def rc_devices(kernel: Any, src: LircSource, damage: DamageLog) -> Iterator[Tuple[int, str, int]]:
    """(rc_dev address, name, progs array) of every raw-decoding rc device on the list."""
    lay = src.layout
    if lay is None or not src.head:
        return
    names = [p for p in ("dev.kobj.name", "device_name", "driver_name") if lay.has("rc_dev", p)]
    for raw in list_entries(kernel.reader, lay, src.head, "ir_raw_event_ctrl", "list",
                            limit=MAX_RC_DEVICES, damage=damage, what="ir_raw_event_ctrl (ir_raw_client_list)"):
        try:
            r = Record(kernel.reader, lay, "ir_raw_event_ctrl", raw, ("dev", "progs"))
            dev = r.int("dev")
            label: List[str] = []
            if dev and names:
                d = Record(kernel.reader, lay, "rc_dev", dev, tuple(names))
                for p in names:
                    ptr = d.int(p)
                    text = kernel.reader.cstring(ptr, MAX_NAME) if ptr else ""
                    if text and text not in label:
                        label.append(text)
        except ReadError as e:
            damage.add("ir_raw_event_ctrl", raw, f"unreadable ({e.reason})")
            continue
        name = label[0] if label else f"rc_dev@{dev:#x}"
        if len(label) > 1:
            name += f" ({', '.join(label[1:])})"
        yield dev, name, r.int("progs")
