"""Rows of ``linux.ktstr.bpfhooks``: one per (hook, program), so "what runs on this hook" is
complete, and one per loaded program attached nowhere.

Sources, in this order of authority:

1. the links of ``link_idr`` (their decoded targets);
2. the hooks themselves (``bpf.hooks``): cgroup program lists and effective arrays, device XDP
   and tcx entries, classic tc filters, netns programs, trampolines, trace events and perf
   events, struct_ops maps, sockmap programs, prog_array slots, and the probe side (kprobes,
   tracepoint probes (the kernel's and each loaded module's), fprobes, uprobes, perf contexts,
   netfilter entries, lirc programs of rc devices). One attachment two
   walks reach is one row naming both. What a hook attributes to a link
   already listed is not repeated; what it holds without a link is a row ``Source`` = "no
   link"; a link the hook holds but ``link_idr`` lacks is said so;
3. every program of ``prog_idr`` in no row above: "loaded, not attached".

A hook family with nothing to walk for a reason other than damage (lirc without rc-core) is
said in bpfhidden's summary (:func:`notes`); one whose walk was cut is a damage row here.

No Volatility import.
"""

from typing import Any, List, Optional, Tuple

from ..bpf import progs as bpfprogs
from ..bpf.facts import BpfKernel
from ..bpf.hooks import HookWalker
from ..core import ReadError, read_int
from ..errors import KtstrError
from ..kds import DamageLog
from . import HEX, Grid
from . import Kernel, Rows
from . import bpfobjects as objs
from . import inventory

GRID = Grid(
    ("Hook", str), ("Target", str), ("AttachType", str), ("ProgId", int), ("ProgName", str),
    ("ProgType", str), ("LinkId", int), ("Source", str), ("Via", str), ("Prog", HEX),
    ("Error", str),
    note="Error")

# attachment kinds a link type accounts for, for hooks that do not record their link
_FAMILY = {"netns": {"netns"}, "trace_event": {"perf_event", "kprobe_multi", "uprobe_multi"},
           "kprobe": {"perf_event", "kprobe_multi"}, "kretprobe": {"perf_event", "kprobe_multi"},
           "uprobe": {"perf_event", "uprobe_multi"}, "uretprobe": {"perf_event", "uprobe_multi"},
           "tracepoint": {"perf_event"}, "event": {"perf_event"},
           "raw_tracepoint": {"raw_tracepoint"}, "netfilter": {"netfilter"}}


def collect(kctx: Kernel, damage: Optional[DamageLog] = None,
            bk: Any = None) -> Tuple[Any, List[Any], bool]:
    """(links, [Attachment], whether link_idr was read) of the dump: link_idr and every hook
    walker (over ``bk``, the adapter's BpfKernel unless given)."""
    damage = damage if damage is not None else DamageLog()
    if bk is None or bk is kctx.bpf_kernel():
        # the same walk serves bpfhooks, the cross-view and the triage of one kernel: once
        links, found, links_ok, log = kctx.memo(("bpfhooks", "collect"), lambda: _collect(kctx))
        damage.extend(log)
        return links, list(found), links_ok
    links, found, links_ok, log = _collect(kctx, bk)
    damage.extend(log)
    return links, found, links_ok


def notes(kctx: Kernel) -> List[str]:
    """Why a hook family had nothing to walk on this kernel (absent, not damaged)."""
    collect(kctx)
    return list(kctx.memo(("bpfhooks", "notes"), list))


def _collect(kctx: Kernel, bk: Any = None) -> Tuple[Any, List[Any], bool, DamageLog]:
    damage = DamageLog()
    links_ok = True
    try:
        links = kctx.links(damage)
    except KtstrError as e:     # no link_idr (kernels before links) or an unreadable one
        damage.add("link_idr", 0, f"links not read: {e}")
        links, links_ok = [], False
    perf = [f.obj for f in objs.fd_scan(kctx)[0] if f.kind == "perf"]
    walker = HookWalker(bk or kctx.bpf_kernel(), damage)
    # every task any list knows: a task's perf events hold programs too (a hidden loader's)
    tasks = list(inventory.tasks(kctx).by_kva)
    found = list(walker.all(perf, tasks))
    kctx.memo(("bpfhooks", "notes"), lambda: list(walker.notes))
    return links, found, links_ok, damage


def _prog(bk, kva, cache, kctx=None):
    """(id, name, type, note) of the program at ``kva`` (read directly when not in prog_idr)."""
    p = bk.prog_by_kva.get(kva)
    if p is not None:
        return p.id, p.name, p.type_name, inventory.off_registry_note(kctx, "prog", kva) if kctx else ""
    if kva not in cache:
        q = bpfprogs.read_prog(bk.reader, bk.layout, kva, type_names=bk.prog_type_names)
        found = inventory.off_registry_note(kctx, "prog", kva) if kctx is not None else ""
        # With prog_idr damaged, "not in prog_idr" may only mean "in a part not read": say which.
        note = found or f"program at {kva:#x} is not in prog_idr"
        if q.error:
            note += f" ({q.error})"
        cache[kva] = (q.id, q.name, q.type_name, note)
    return cache[kva]


def _found_via(kctx, kva):
    e = inventory.entry(kctx, "prog", kva)
    if e is None or not e.off_registry:
        return "prog_idr"
    return "; ".join(e.via[:2])


def _merged(out):
    """One row per (hook, target, attach type, program, link): a program several hook walks
    reach (a kprobe event's program through kprobe_table and through its perf context) is
    one attachment, its Via naming each path."""
    merged = {}
    for r in out:
        key = (r["Hook"], r["Target"], r["AttachType"], r["prog"], r.get("LinkId"), r.get("Source"))
        first = merged.get(key)
        if first is None:
            merged[key] = r
        elif r["Via"] not in first["Via"].split("; "):
            first["Via"] += "; " + r["Via"]
    return list(merged.values())


def rows(kctx: Kernel) -> Rows:
    damage = DamageLog()
    bk = kctx.bpf_kernel()
    regs = inventory.registries(kctx, ("map", "prog", "link"))
    if not all(r.complete or r.absent for r in regs.values()):
        # A registry node is gone: walk the hooks over every map and program reachable (the
        # struct_ops maps found through fds still attach their programs), links included.
        bk = BpfKernel(kctx, maps=inventory.maps(kctx, require=False),
                       progs=inventory.progs(kctx, require=False))
    links, found, links_ok = collect(kctx, damage, bk)
    if not regs["link"].complete and not regs["link"].absent:
        links = inventory.links(kctx, require=False)
    by_kva = {link.kva: link for link in links}
    struct_ops_link = {m: link for link in links for m in link.maps if link.type_name == "struct_ops"}
    link_types_of = {}
    for link in links:
        link_types_of.setdefault(link.prog_kva, set()).add(link.type_name)
    out = []
    stray = {}
    for link in links:
        if not link.prog_kva:
            continue
        for h in link.hooks or ():
            out.append(dict(Hook=h.kind, Target=h.target, AttachType=h.attach_type or link.attach_type,
                            prog=link.prog_kva, LinkId=link.id, Source="link",
                            Via=f"link {link.id} ({link.type_name})"))
        if not link.hooks:
            out.append(dict(Hook=link.type_name, Target=link.target, AttachType=link.attach_type,
                            prog=link.prog_kva, LinkId=link.id, Source="link",
                            Via=f"link {link.id} ({link.type_name})", Error=link.error or ""))
    for a in found:
        row = dict(Hook=a.hook, Target=a.target, AttachType=a.attach_type, prog=a.prog_kva,
                   Via=a.via, Error=a.note)
        if a.link_kva > 0:
            if a.link_kva in by_kva:
                continue            # the link's own row says it
            try:
                link_id = read_int(bk.reader, bk.layout, "bpf_link", a.link_kva, "id")
            except ReadError:
                link_id = -1
            if links_ok:
                row.update(LinkId=link_id, Source="link not in link_idr")
                row["Error"] = "; ".join(filter(None, [a.note, f"link at {a.link_kva:#x} is not in link_idr"]))
            else:
                row.update(LinkId=link_id, Source="link")
        elif a.link_kva < 0:
            if a.hook == "struct_ops":
                sl = struct_ops_link.get(a.map_kva)
                row.update(LinkId=sl.id if sl else 0, Source="struct_ops map")
            elif _FAMILY.get(a.hook, set()) & link_types_of.get(a.prog_kva, set()):
                continue            # attached through a link listed above
            else:
                row.update(LinkId=0, Source="no link")
        else:
            row.update(LinkId=0, Source="tail call" if a.hook == "tail_call" else "no link")
        out.append(row)
    out = _merged(out)
    seen_progs = {r["prog"] for r in out}
    progs = bk.progs
    if not inventory.registries(kctx, ("prog",))["prog"].complete:
        progs = inventory.progs(kctx, require=False)      # with those found off prog_idr
    for p in progs:
        if p.kva not in seen_progs:
            out.append(dict(Hook="none", Target="loaded, not attached", AttachType="", prog=p.kva,
                            LinkId=0, Source="", Via=_found_via(kctx, p.kva)))
    out.sort(key=lambda r: (r["Hook"] == "none", r["Hook"], r["Target"], r["AttachType"],
                            _prog(bk, r["prog"], stray, kctx)[0] if r["prog"] else 0))
    for r in out:
        kva = r.pop("prog")
        if kva:
            pid, name, ptype, note = _prog(bk, kva, stray, kctx)
        else:
            pid, name, ptype, note = 0, "", "", ""
        r["Error"] = "; ".join(filter(None, [r.get("Error", ""), note]))
        yield 0, GRID.row(ProgId=pid, ProgName=name, ProgType=ptype, Prog=kva, **r)
    for what, log in (("hook walk", damage), ("fd scan", objs.fd_scan(kctx)[1])):
        for d in log:
            yield 0, GRID.damage(f"{what} skipped: {d}", Hook="?", Target="", ProgId=-1, LinkId=-1,
                                 Prog=d.addr)
