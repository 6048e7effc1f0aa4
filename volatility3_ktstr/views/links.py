"""Rows of ``linux.ktstr.links``: one per BPF link (``link_idr``), like ``bpftool link show``.

``Info`` is the link as ``bpftool link show -j`` prints it (id, type, prog_id, the
type-specific fields, ``pinned``, ``pids``), plus a few names bpftool leaves to the reader
(``target_name`` of a tracing link, ``cgroup`` path). No Volatility import.
"""

from typing import Any, Dict, List

from ..bpf import progs as bpfprogs
from ..kds import DamageLog
from . import HEX, Grid
from . import Kernel, Rows
from . import bpfobjects as objs
from . import inventory

GRID = Grid(
    ("ID", int), ("Type", str), ("ProgId", int), ("ProgName", str), ("ProgType", str),
    ("AttachType", str), ("Target", str), ("Pids", str), ("Pinned", str), ("Info", str),
    ("Address", HEX), ("Error", str),
    note="Error")


def link_json(link: Any, prog: Any, pids: List[Dict[str, Any]], pins: List[str]) -> Dict[str, Any]:
    """bpftool ``link show -j`` shape of one link."""
    out = {"id": link.id, "type": link.type_name, "prog_id": prog.id if prog else 0}
    out.update(link.info)
    if pins:
        out["pinned"] = pins
    if pids:
        out["pids"] = pids
    return out


def rows(kctx: Kernel) -> Rows:
    damage = DamageLog()
    links = inventory.links(kctx, damage)
    bk = kctx.bpf_kernel()
    progs = bk.prog_by_kva
    if any(inventory.entry(kctx, "link", link.kva).off_registry for link in links) or damage:
        progs = {p.kva: p for p in inventory.progs(kctx, require=False)}
    for link in links:
        prog = progs.get(link.prog_kva)
        pids = objs.pids_of(kctx, "link", link.kva)
        pins = objs.pins_of(kctx, "link", link.kva)
        error = link.error or ""
        if link.prog_kva and prog is None:
            # a hidden program: its id, name and type as read from the link's prog pointer
            prog = bpfprogs.read_prog(bk.reader, bk.layout, link.prog_kva, type_names=bk.prog_type_names)
            what = f"program at {link.prog_kva:#x}" + (f" (id {prog.id})" if not prog.error else
                                                      f" (unreadable: {prog.error})")
            if prog.error:
                prog = None
            error = "; ".join(filter(None, [error, f"{what} is not in prog_idr"]))
        error = "; ".join(filter(None, [error, inventory.off_registry_note(kctx, "link", link.kva)]))
        yield 0, GRID.row(
            ID=link.id, Type=link.type_name, ProgId=prog.id if prog else 0,
            ProgName=prog.name if prog else "", ProgType=prog.type_name if prog else "",
            AttachType=link.attach_type, Target=link.target, Pids=objs.pids_text(pids),
            Pinned=",".join(pins), Info=objs.to_json(link_json(link, prog, pids, pins)),
            Address=link.kva, Error=error)
    for what, log in (("link_idr node", damage), ("fd scan", objs.fd_scan(kctx)[1]),
                      ("bpffs walk", objs.pin_scan(kctx)[1])):
        for d in log:
            yield 0, GRID.damage(f"{what} skipped: {d}", ID=-1, Type="?", Address=d.addr)
    for text in inventory.coverage_rows(kctx, "link"):
        yield 0, GRID.damage(text, ID=-1, Type="?", Address=0)
    if not links and not damage:
        yield 0, GRID.damage("no BPF link in the dump (link_idr read whole and empty)", ID=-1,
                             Type="?", Address=0)
