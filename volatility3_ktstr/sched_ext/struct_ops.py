"""struct_ops: the kernel copy of a scheduler's ``sched_ext_ops`` and the BPF program behind
each callback.

A struct_ops map (``struct bpf_struct_ops_map``) holds the ops twice: ``kvalue.data`` (what the
kernel calls: trampolines) and ``uvalue`` (where the kernel stores each program's id), and the
programs' links in ``links[]``.
"""

from dataclasses import dataclass

from ..bpf import progs as bpfprogs
from ..core import Layout, LayoutError, Reader, ReadError, Record
from ..kds import DamageLog

SCX_VALUE_STRUCT = "bpf_struct_ops_sched_ext_ops"
MAX_CALLBACK_LINKS = 256     # struct_ops links[] entries


@dataclass
class StructOpsCallback:
    member: str
    kfunc: int            # kvalue slot: the trampoline the kernel calls
    prog_id: int = None   # uvalue slot: the kernel stores the program's id there
    prog_name: str = None
    prog: int = None      # struct bpf_prog address


def struct_ops_value_data(layout: Layout, value_struct: str | None = None) -> int:
    """Offset of the ops struct inside a struct_ops value (``bpf_struct_ops_<ops>.data`` when the
    kernel has the specific type, else the generic ``bpf_struct_ops_value.data``)."""
    if value_struct and layout.has(value_struct, "data"):
        return layout.offset(value_struct, "data")
    return layout.offset("bpf_struct_ops_value", "data")


def struct_ops_kdata(layout: Layout, st_map: int, value_struct: str | None = None) -> int:
    """Address of the kernel copy of the ops (``kvalue.data``) of the struct_ops map ``st_map``
    (the ``struct bpf_struct_ops_map`` address)."""
    kvalue = layout.offset("bpf_struct_ops_map", "kvalue")
    return st_map + kvalue + struct_ops_value_data(layout, value_struct)


def struct_ops_sched(reader: Reader, layout: Layout, st_map: int,
                     value_struct: str | None = None) -> int | None:
    """``ops.priv`` of a sched_ext struct_ops map: the ``scx_sched`` it registered (set while
    the BPF link is attached, NULL after unregistration); None when the kernel has no ``priv``."""
    if not layout.has("sched_ext_ops", "priv"):
        return None
    kdata = struct_ops_kdata(layout, st_map, value_struct)
    return Record(reader, layout, "sched_ext_ops", kdata, ["priv"]).int("priv")


def _link_programs(reader, layout, st_map, callback_names, damage):
    """{program id: (name, bpf_prog address)} of the map's ``links[]``."""
    progs = {}
    try:
        paths = ["links", "funcs_cnt"] if layout.has("bpf_struct_ops_map", "funcs_cnt") else ["links"]
        r = Record(reader, layout, "bpf_struct_ops_map", st_map, paths)
        links = r.int("links")
        if r.has("funcs_cnt"):
            n = r.int("funcs_cnt")
        else:  # older kernels size links[] by the member count
            n = len(callback_names)
        n = min(n, MAX_CALLBACK_LINKS)
        word = reader.pointer_size
        raw = reader.read(links, word * n) if links and n else b""
        for i in range(n):
            link = int.from_bytes(raw[word * i:word * i + word], "little")
            if not link:
                continue
            try:
                prog = Record(reader, layout, "bpf_link", link, ["prog"]).int("prog")
            except ReadError as e:
                damage.add(f"struct_ops link {i}", link, f"unreadable: {e.reason}")
                continue
            p = bpfprogs.read_prog(reader, layout, prog)
            if p.id is None or p.id < 0 or (p.error and not p.name):
                damage.add(f"struct_ops link {i}: program", prog, str(p.error), "corrupt")
                continue
            progs[p.id] = (p.name, prog)
    except (ReadError, LayoutError) as e:
        damage.add("struct_ops links", st_map, f"unreadable: {e}")
    return progs


def struct_ops_callbacks(reader: Reader, layout: Layout, st_map: int, ops_struct: str,
                         callback_names: list[str], value_struct: str | None = None,
                         damage: DamageLog | None = None) -> list[StructOpsCallback]:
    """Callbacks implemented by the struct_ops map at ``st_map`` and their programs.

    The kernel writes each program's id into the user value (``uvalue``) slot of the member and
    keeps the programs' links in ``links[]``; both are read, so a callback gets its program id
    even when a link is unreadable. What could not be read goes to ``damage``."""
    damage = damage if damage is not None else DamageLog()
    kdata = Record(reader, layout, ops_struct, struct_ops_kdata(layout, st_map, value_struct))
    udata = None
    try:
        uvalue = Record(reader, layout, "bpf_struct_ops_map", st_map, ["uvalue"]).int("uvalue")
        if uvalue:
            udata = Record(reader, layout, ops_struct, uvalue + struct_ops_value_data(layout, value_struct))
    except ReadError as e:
        damage.add("struct_ops uvalue", e.addr, f"unreadable: {e.reason}")
    progs = _link_programs(reader, layout, st_map, callback_names, damage)
    out = []
    for name in callback_names:
        kfunc = kdata.int(name)
        if not kfunc:
            continue
        cb = StructOpsCallback(member=name, kfunc=kfunc)
        if udata is not None:
            cb.prog_id = udata.int(name) or None
            if cb.prog_id in progs:
                cb.prog_name, cb.prog = progs[cb.prog_id]
        out.append(cb)
    return out
