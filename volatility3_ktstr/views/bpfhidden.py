"""Rows of ``linux.ktstr.bpfhidden``: BPF programs, maps and links reachable from the kernel's
hooks, links, fds, pins, map slots or the BPF kallsyms list but absent from their ID registry
(``prog_idr``, ``map_idr``, ``link_idr``), each with the paths by which it was found; then one
summary row (the only row on a clean dump). No Volatility import.
"""

from ..bpf import hidden as bpfhidden
from ..kds import DamageLog
from . import HEX, Grid
from . import Kernel, Rows
from . import bpfobjects as objs
from . import bpfhooks

GRID = Grid(
    ("Kind", str), ("ID", int), ("Name", str), ("Type", str), ("Address", HEX), ("FoundVia", str),
    ("Error", str),
    note="Error")


def rows(kctx: Kernel) -> Rows:
    damage = DamageLog()
    bk = kctx.bpf_kernel()
    links, attachments, links_ok = bpfhooks.collect(kctx, damage)
    fds, fd_damage = objs.fd_scan(kctx)
    pins, pin_damage = objs.pin_scan(kctx)
    refs = bpfhidden.references(bk, links, attachments, fds, pins, damage)
    found = bpfhidden.hidden(bk, refs, links if links_ok else None, damage)
    for f in found:
        yield 0, GRID.row(Kind=f.kind, ID=f.id, Name=f.name, Type=f.type_name, Address=f.kva,
                          FoundVia="; ".join(f.via), Error=f.error)
    skipped = len(damage) + len(fd_damage) + len(pin_damage)
    counts = {}
    for (kind, _kva), _via in refs:
        counts[kind] = counts.get(kind, 0) + 1
    checked = ", ".join(f"{counts.get(k, 0)} {k}s" for k in ("prog", "map", "link"))
    summary = (f"{len(found)} hidden object{'s' if len(found) != 1 else ''}" if found
               else "no hidden objects")
    via = (f"{checked} reached from {len(links)} links, {len(attachments)} hook entries, "
           f"{len(fds)} fds, {len(pins)} pins, map slots and bpf_kallsyms; registries: "
           f"{len(bk.progs)} progs, {len(bk.maps)} maps, {len(links)} links")
    note = f"{skipped} parts of the walks skipped (rows above)" if skipped else ""
    for what, log in (("hook walk", damage), ("fd scan", fd_damage), ("bpffs walk", pin_damage)):
        for d in log:
            yield 0, GRID.damage(f"{what} skipped: {d}", Kind="?", ID=-1, Address=d.addr)
    yield 0, GRID.row(Kind="summary", ID=len(found), Name=summary, Type="", Address=0, FoundVia=via,
                      Error=note)
