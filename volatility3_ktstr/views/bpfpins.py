"""Rows of ``linux.ktstr.bpfpins``: every map, program and link pinned in a bpffs instance.

One row per pinned file: its path under the instance's mount point, what it pins (from the
inode's ``i_op``), the object's id and name, the bpffs inode number. No Volatility import.
"""

from ..bpf import fds as bpffds
from . import HEX, Grid
from . import Kernel, Rows
from . import bpfobjects as objs

GRID = Grid(
    ("Path", str), ("Kind", str), ("ID", int), ("Name", str), ("Type", str), ("Inode", int),
    ("Mounts", str), ("Object", HEX), ("Error", str),
    note="Error")


def rows(kctx: Kernel) -> Rows:
    pins, damage = objs.pin_scan(kctx)
    bk = kctx.bpf_kernel()
    for p in pins:
        obj_id, name, tname = bpffds.object_id(bk, p.kind, p.obj)
        yield 0, GRID.row(Path=p.path, Kind=p.kind, ID=obj_id, Name=name, Type=tname,
                          Inode=p.ino, Mounts=",".join(p.mounts), Object=p.obj,
                          Error="" if obj_id >= 0 else f"{p.kind} at {p.obj:#x} unreadable")
    for d in damage:
        yield 0, GRID.damage(f"bpffs walk skipped: {d}", Path="", Kind="?", ID=-1, Object=d.addr)
    if not pins:
        why = "; parts of the walk skipped (rows above)" if damage else " (every bpffs instance read)"
        yield 0, GRID.damage(f"nothing pinned in bpffs{why}", Path="", Kind="?", ID=-1, Object=0)
