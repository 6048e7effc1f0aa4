"""Rows of ``linux.ktstr.bpftriage``: rootkit triage of every BPF program the dump holds
(registered or found only off-registry) and of the kernel tables BPF rootkits lean on.

One row per (program, flag) with its severity, the reason and the evidence (the helper call,
the hook): dangerous helpers and kfuncs, sensitive attach targets, a program hidden from
``prog_idr`` or held by no process, pin or held map, a program loaded without BTF or
func_info (``bpf.triage`` has the tables). Then one row per syscall table entry or ftrace ops
pointing outside the kernel text (or into BPF code), and a summary row. A program with no
flag has no row. No Volatility import.
"""

from typing import Any, Dict, List

from ..bpf import insns as bpfinsns
from ..bpf import objects as bpfobjects
from ..bpf import triage
from ..core import LayoutError, ReadError, read_int
from ..kds import DamageLog
from . import HEX, Grid, Kernel, Rows, inventory
from . import bpfhooks
from . import bpfobjects as objs

GRID = Grid(
    ("Kind", str), ("ID", int), ("Name", str), ("Type", str), ("Flag", str), ("Severity", str),
    ("Reason", str), ("Evidence", str), ("Address", HEX), ("Error", str),
    note="Error")

SEVERITY_ORDER = {triage.HIGH: 0, triage.MEDIUM: 1, triage.LOW: 2, triage.INFO: 3}


def _hook_rows(kctx: Kernel) -> List[Dict[str, Any]]:
    names = [c.name for c in bpfhooks.GRID.columns]
    return [dict(zip(names, v)) for _lvl, v in bpfhooks.rows(kctx)]


def _perf_progs(kctx: Kernel, fds) -> Dict[int, int]:
    out = {}
    for f in fds:
        if f.kind == "perf" and f.obj:
            try:
                out[f.obj] = read_int(kctx.reader, kctx.layout, "perf_event", f.obj, "prog")
            except (ReadError, LayoutError):
                continue
    return out


def program_flags(kctx: Kernel, damage: DamageLog):
    """[(Entry, [Flag])] of every program reachable (registry and off-registry)."""
    inv = inventory.inventory(kctx, "prog", forensic=True)
    entries = [e for e in inv.entries("prog") if e.record is not None]
    bk = kctx.bpf_kernel()
    namer = bpfinsns.Namer(bk)
    hooks = _hook_rows(kctx)
    by_prog: Dict[int, List[Dict[str, Any]]] = {}
    for r in hooks:
        if isinstance(r.get("Prog"), int) and r["Prog"]:
            by_prog.setdefault(r["Prog"], []).append(r)
    fds, fd_damage = objs.fd_scan(kctx)
    pins, pin_damage = objs.pin_scan(kctx)
    # "held by nobody" is only as good as the scans behind it: say what they skipped.
    scan_gaps = [f"{name} scan skipped {len(d)} part(s), e.g. {next(iter(d))}"
                 for name, d in (("fd", fd_damage), ("bpffs pin", pin_damage)) if len(d)]
    links = inventory.links(kctx, require=False) if inv.registries["link"].readable else []
    _l, attachments, _ok = bpfhooks.collect(kctx, DamageLog(), bk)
    held = triage.held_programs([e.record for e in entries], fds, pins, links, attachments,
                                _perf_progs(kctx, fds))
    has_fi = kctx.layout.has("bpf_prog_aux", "func_info_cnt")
    out = []
    for e in entries:
        p = e.record
        flags: List[triage.Flag] = []
        if e.verdict == bpfobjects.HIDDEN:
            flags.append(triage.Flag("hidden", triage.HIGH, "absent from prog_idr but running or held",
                                     "; ".join(e.via[:3])))
        try:
            code = bpfinsns.read_insns(kctx.reader, kctx.layout, p)
            c = bpfinsns.calls(code, namer)
            attached = [f"{r['Hook']} {r['Target']}" for r in by_prog.get(p.kva, ())
                        if r["Hook"] not in ("none", "tail_call")]
            flags += triage.call_flags([h[0] for h in c.helpers], [k[0] for k in c.kfuncs], attached)
        except (ReadError, LayoutError, ValueError) as err:
            damage.add("bpf_prog insns", p.kva, f"program {p.id} instructions unreadable ({err})")
        seen = set()
        for r in by_prog.get(p.kva, ()):
            for f in triage.target_flags(r["Hook"], str(r["Target"]), str(r["AttachType"] or "")):
                if (f.flag, f.evidence) not in seen:
                    seen.add((f.flag, f.evidence))
                    flags.append(f)
        if p.type_name == "lsm" and not any(f.flag.startswith("target:") for f in flags):
            flags.append(triage.Flag("target:lsm", triage.MEDIUM, "an LSM program",
                                     p.attach_func_name or ""))
        if p.kva not in held:
            flags.append(triage.Flag("unheld", triage.MEDIUM,
                                     "no process holds it (no fd on it, its links or a perf event; "
                                     "no pin; no held map): its loader exited or hides"
                                     + (" (unless a holder is in what the scans skipped)"
                                        if scan_gaps else ""), "; ".join(scan_gaps)))
        # BTF and func_info live in bpf_prog_aux: unreadable there means unknown, not absent
        # (the row's Error says the aux was unreadable).
        if p.aux_read and not p.btf_kva:
            flags.append(triage.Flag("no-btf", triage.LOW, "loaded without BTF (a stripped loader)", ""))
        elif p.aux_read and has_fi:
            try:
                if not read_int(kctx.reader, kctx.layout, "bpf_prog_aux", p.aux_kva, "func_info_cnt"):
                    flags.append(triage.Flag("no-func-info", triage.LOW,
                                             "loaded without func_info (a stripped loader)", ""))
            except ReadError:
                pass
        if flags:
            out.append((e, flags))
    return out


def rows(kctx: Kernel) -> Rows:
    damage = DamageLog()
    flagged = program_flags(kctx, damage)
    total = len(inventory.inventory(kctx, "prog", forensic=True).entries("prog"))
    counts = {s: 0 for s in SEVERITY_ORDER}
    for e, flags in flagged:
        p = e.record
        for f in sorted(flags, key=lambda f: SEVERITY_ORDER[f.severity]):
            counts[f.severity] += 1
            yield 0, GRID.row(Kind="prog", ID=p.id, Name=p.name, Type=p.type_name, Flag=f.flag,
                              Severity=f.severity, Reason=f.reason, Evidence=f.evidence,
                              Address=p.kva, Error=p.error or "")
    code = triage.CodeMap(kctx, damage)
    n_sys, sys_found = triage.syscall_findings(kctx, code, damage)
    n_ft, ft_found = triage.ftrace_findings(kctx, code, damage)
    for f in sys_found + ft_found:
        counts[f.severity] += 1
        yield 0, GRID.row(Kind=f.table, ID=f.index, Name=f.symbol, Type="", Flag="integrity",
                          Severity=f.severity, Reason=f.reason, Evidence=f"{f.table}[{f.index}]",
                          Address=f.address, Error="")
    for d in damage:
        yield 0, GRID.damage(f"triage skipped: {d}", Kind="?", ID=-1, Address=d.addr)
    sev = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"
    bad_sys = sum(1 for f in sys_found if f.severity != triage.INFO)
    bad_ft = sum(1 for f in ft_found if f.severity != triage.INFO)
    yield 0, GRID.row(
        Kind="summary", ID=len(flagged), Name=f"{len(flagged)} of {total} programs flagged",
        Type="", Flag="", Severity="",
        Reason=f"flags: {sev}",
        Evidence=(f"syscall tables: {n_sys} entries checked, {bad_sys} outside kernel text; "
                  f"ftrace: {n_ft} ops checked, {bad_ft} suspicious"),
        Address=0, Error="")
