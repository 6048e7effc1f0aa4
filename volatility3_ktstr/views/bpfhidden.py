"""Rows of ``linux.ktstr.bpfhidden``: BPF programs, maps, links and BTF objects reachable from
the kernel's hooks, links, fds, pins, map slots or the BPF kallsyms list but absent from their ID
registry (``prog_idr``, ``map_idr``, ``link_idr``, ``btf_idr``), each with the paths by which it
was found and a verdict (``bpf.objects``):

- ``hidden``: the registry was readable exactly where the object would be (the slot for its id
  was read and holds something else or nothing): what a rootkit unlinking it leaves;
- ``unverifiable``: that part of the registry could not be read (excluded by the dump level,
  unmapped, corrupt); the reason names it. Not a finding against the guest.

Then tasks present in some of the kernel's task lists and missing from others
(``walkers.alltasks``), and one summary row counting hidden and unverifiable apart (the only row
on a clean, complete dump). No Volatility import.
"""

from ..bpf import objects as bpfobjects
from . import HEX, Grid, Kernel, Rows, bpfhooks, inventory

GRID = Grid(
    ("Kind", str), ("ID", int), ("Name", str), ("Type", str), ("Address", HEX), ("FoundVia", str),
    ("Error", str), ("Verdict", str),
    note="Error")


def _describe(e):
    r = e.record
    if e.kind == "link":
        return getattr(r, "target", ""), getattr(r, "type_name", "")
    return getattr(r, "name", ""), getattr(r, "type_name", "")


def rows(kctx: Kernel) -> Rows:
    inv = inventory.inventory(kctx, forensic=True)
    # A kernel without a registry (link_idr before BPF links): its kind is not judged.
    off = [e for e in inv.by_key.values() if e.off_registry and not inv.registries[e.kind].absent]
    off.sort(key=lambda e: (e.verdict != bpfobjects.HIDDEN, e.kind, e.id, e.kva))
    for e in off:
        name, tname = _describe(e)
        error = e.error
        if e.verdict == bpfobjects.UNVERIFIABLE or e.why.startswith("absent") or "holds" in e.why:
            error = "; ".join(filter(None, [e.error, e.why]))
        yield 0, GRID.row(Kind=e.kind, ID=e.id, Name=name, Type=tname, Address=e.kva,
                          FoundVia="; ".join(e.via), Error=error, Verdict=e.verdict)
    tasks = inventory.tasks(kctx)
    odd = tasks.findings()
    for t in odd:
        yield 0, GRID.row(Kind="task", ID=t.pid, Name=t.comm, Type=t.state, Address=t.kva,
                          FoundVia="in " + ", ".join(t.found_in), Error=t.why, Verdict=t.verdict)
    hidden = [e for e in off if e.verdict == bpfobjects.HIDDEN]
    unver = [e for e in off if e.verdict == bpfobjects.UNVERIFIABLE]
    hidden_tasks = sum(1 for t in odd if t.verdict == bpfobjects.HIDDEN)
    damage = inv.off_damage
    fd_damage, pin_damage = inv.fd_damage, inv.pin_damage
    skipped = len(damage) + len(fd_damage) + len(pin_damage) + len(tasks.damage)
    counts = {}     # objects some path other than their registry reached
    for e in inv.by_key.values():
        if len(e.via) > 1 or e.off_registry or e.via[:1] != [bpfobjects.REGISTRY_OF[e.kind]]:
            counts[e.kind] = counts.get(e.kind, 0) + 1
    checked = ", ".join(f"{counts.get(k, 0)} {k}s" for k in ("prog", "map", "link"))
    n = len(hidden) + hidden_tasks
    summary = f"{n} hidden object{'s' if n != 1 else ''}" if n else "no hidden objects"
    if unver or len(odd) > hidden_tasks:
        u = len(unver) + len(odd) - hidden_tasks
        summary += f"; {u} unverifiable (registry or task list parts unreadable: rows above)"
    regs = inv.registries
    via = (f"{checked} reached from {inv.sources}; registries: "
           f"{len(regs['prog'].records)} progs, {len(regs['map'].records)} maps, "
           f"{len(regs['link'].records)} links")
    for text in bpfhooks.notes(kctx):
        via += f"; {text}"
    if inv.damaged or tasks.lists_damaged():
        via += "; coverage: " + "; ".join(inv.coverage(k).split("; ")[0] for k in bpfobjects.KINDS)
        via += f"; tasks: {tasks.coverage()}"
    note = f"{skipped} parts of the walks skipped (rows above)" if skipped else ""
    task_logs = [(f"task list {name}", log) for name, log in tasks.list_damage.items()]
    skipped += sum(len(log) for _, log in task_logs)
    for what, log in [("hook walk", damage), ("fd scan", fd_damage), ("bpffs walk", pin_damage),
                      ("task lists", tasks.damage)] + task_logs:
        for d in log:
            yield 0, GRID.damage(f"{what} skipped: {d}", Kind="?", ID=-1, Address=d.addr)
    yield 0, GRID.row(Kind="summary", ID=n, Name=summary, Type="", Address=0, FoundVia=via,
                      Error=note, Verdict="")
