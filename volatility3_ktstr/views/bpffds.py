"""Rows of ``linux.ktstr.bpffds``: every fd of every process whose file is a BPF object.

One row per (process, fd) whose ``file->f_op`` is ``bpf_map_fops``, ``bpf_prog_fops``,
``bpf_link_fops``/``bpf_link_fops_poll`` or ``btf_fops``: what ``bpftool ... show`` lists as
``pids``. No Volatility import.
"""

from ..bpf import fds as bpffds
from . import HEX, Grid
from . import Kernel, Rows
from . import bpfobjects as objs

GRID = Grid(
    ("PID", int), ("Comm", str), ("FD", int), ("Kind", str), ("ID", int), ("Name", str),
    ("Type", str), ("Object", HEX), ("File", HEX), ("Error", str),
    note="Error")


def rows(kctx: Kernel) -> Rows:
    fds, damage = objs.fd_scan(kctx)
    bk = kctx.bpf_kernel()
    for f in fds:
        if f.kind == "perf":
            continue
        obj_id, name, tname = bpffds.object_id(bk, f.kind, f.obj)
        error = "" if obj_id >= 0 else f"{f.kind} at {f.obj:#x} unreadable"
        yield 0, GRID.row(PID=f.pid, Comm=f.comm, FD=f.fd, Kind=f.kind, ID=obj_id, Name=name,
                          Type=tname, Object=f.obj, File=f.file,
                          Error="; ".join(filter(None, [error, f.via])))
    for d in damage:
        yield 0, GRID.damage(f"fd scan skipped: {d}", PID=-1, FD=-1, Kind="?", ID=-1,
                             Object=d.addr)
    if not any(f.kind != "perf" for f in fds):
        why = "; parts of the scan skipped (rows above)" if damage else " (every process read)"
        yield 0, GRID.damage(f"no BPF fd in any process{why}", PID=-1, FD=-1, Kind="?", ID=-1,
                             Object=0)
