"""Rows of ``linux.ktstr.maps``: one per BPF map, like ``bpftool map list``.

Takes the kernel (``kernel_model.Kernel``: ``maps()``, ``btf_at()``, ``kernel_btf()``,
``btf_id_at()``, ``reader``, ``symbol()``); no Volatility import.
"""

from ..core import ReadError
from ..errors import KtstrError
from ..kds import DamageLog
from . import HEX, Grid
from . import Kernel, Rows, inventory

GRID = Grid(
    ("ID", int), ("Type", str), ("Name", str), ("KeySize", int), ("ValueSize", int),
    ("MaxEntries", int), ("Flags", HEX), ("Frozen", int), ("MapExtra", HEX), ("BtfId", int),
    ("BtfKeyTypeId", int), ("BtfValueTypeId", int), ("BtfVmlinuxValueTypeId", int),
    ("BtfVmlinuxId", int), ("KeyType", str), ("ValueType", str), ("Address", HEX), ("Error", str),
    note="Error")

# What a row shows for a map or registry node that could not be read.
_BAD = dict(Type="?", Name="", KeySize=0, ValueSize=0, MaxEntries=0, Flags=0, Frozen=0, MapExtra=0,
            BtfId=-1, BtfKeyTypeId=0, BtfValueTypeId=0, BtfVmlinuxValueTypeId=0, BtfVmlinuxId=0,
            KeyType="", ValueType="")


def type_names(kctx, m, errors):
    """(key type, value type, kernel BTF id) of map ``m``: names from the map's program BTF;
    STRUCT_OPS values from the kernel's BTF. Problems are appended to ``errors``."""
    key_t = value_t = ""
    vmlinux_id = 0
    if m.btf_kva and (m.btf_key_type_id or m.btf_value_type_id):
        try:
            btf = kctx.btf_at(m.btf_kva)
            if m.btf_key_type_id:
                key_t = btf.type_name(m.btf_key_type_id)
            if m.btf_value_type_id:
                value_t = btf.type_name(m.btf_value_type_id)
        except (KtstrError, KeyError) as e:
            errors.append(f"program BTF: {e}")
    if m.btf_vmlinux_value_type_id:
        try:
            kbtf = kctx.kernel_btf()
            value_t = value_t or kbtf.type_name(m.btf_vmlinux_value_type_id)
            vmlinux_id = kctx.btf_id_at(kctx.reader.ptr(kctx.require_symbol("btf_vmlinux")))
        except (KtstrError, KeyError, ReadError) as e:
            errors.append(f"kernel BTF: {e}")
    return key_t, value_t, vmlinux_id


def rows(kctx: Kernel) -> Rows:
    damage = DamageLog()
    n = 0
    for m in inventory.maps(kctx, damage):
        n += 1
        found = inventory.off_registry_note(kctx, "map", m.kva)
        if m.error and m.type < 0:
            yield 0, GRID.row(ID=m.id, Address=m.kva,
                              Error="; ".join(filter(None, [m.error, found])), **_BAD)
            continue
        errors = [m.error] if m.error else []
        key_t, value_t, vmlinux_id = type_names(kctx, m, errors)
        btf_id = kctx.btf_id_at(m.btf_kva)
        if btf_id < 0:
            errors.append(f"struct btf at {m.btf_kva:#x} unreadable")
        yield 0, GRID.row(
            ID=m.id, Type=m.type_name, Name=m.name, KeySize=m.key_size, ValueSize=m.value_size,
            MaxEntries=m.max_entries, Flags=m.flags, Frozen=int(m.frozen), MapExtra=m.map_extra,
            BtfId=btf_id, BtfKeyTypeId=m.btf_key_type_id, BtfValueTypeId=m.btf_value_type_id,
            BtfVmlinuxValueTypeId=m.btf_vmlinux_value_type_id, BtfVmlinuxId=vmlinux_id,
            KeyType=key_t, ValueType=value_t, Address=m.kva, Error="; ".join(errors + [found] if found else errors))
    for d in damage:
        yield 0, GRID.damage(f"map_idr node skipped: {d.reason}", ID=-1, Address=d.addr, **_BAD)
    for text in inventory.coverage_rows(kctx, "map"):
        yield 0, GRID.damage(text, ID=-1, Address=0, **_BAD)
    if not n and not damage:
        yield 0, GRID.damage("no BPF map in the dump (map_idr read whole and empty)", ID=-1,
                             Address=0, **_BAD)
