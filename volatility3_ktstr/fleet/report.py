"""DIR/index.html and DIR/dumps/<name>/index.html: a self-contained report (no network).

Inline CSS and SVG only: no script, font or image is fetched, so the pages open from a file
system, offline. Pictures are drawn from the table rows and each dump's plugin outputs
(DIR/dumps/<name>/<plugin>.json). No Volatility import.
"""

import html
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import discover, summarize

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:left;vertical-align:top;font-size:13px}th{background:#f0f0f0}
.err{color:#b00}.ok{color:#070}.exit{color:#b60}.muted{color:#777}
svg text{font:11px sans-serif}.card{display:inline-block;border:1px solid #ccc;
border-radius:6px;padding:.5em 1em;margin:.3em;min-width:8em}.card b{font-size:1.4em;display:block}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{body}</body></html>")


def bar_chart(items: Sequence[Tuple[str, float]], unit: str = "", css_id: str = "",
              width: int = 640, color: str = "#4a7bd0") -> str:
    """Horizontal bars, one per (label, value)."""
    if not items:
        return "<p class=\"muted\">nothing to draw</p>"
    top = max(v for _, v in items) or 1
    h = 18
    rows = []
    for i, (label, value) in enumerate(items):
        w = int((width - 260) * value / top)
        y = i * h
        rows.append(f"<text x=\"0\" y=\"{y + 13}\">{_e(label[:36])}</text>"
                    f"<rect x=\"220\" y=\"{y + 3}\" width=\"{max(w, 1)}\" height=\"{h - 6}\" "
                    f"fill=\"{color}\"><title>{_e(label)}: {value:g}{unit}</title></rect>"
                    f"<text x=\"{224 + w}\" y=\"{y + 13}\">{value:g}{_e(unit)}</text>")
    return (f"<svg {'id=' + chr(34) + css_id + chr(34) if css_id else ''} class=\"chart\" "
            f"width=\"{width}\" height=\"{h * len(items) + 4}\" role=\"img\">"
            + "".join(rows) + "</svg>")


def hook_graph(edges: Sequence[Tuple[str, str]], width: int = 720) -> str:
    """program -> hook, as two columns joined by lines."""
    if not edges:
        return "<p class=\"muted\">no attachments</p>"
    progs = sorted({p for p, _ in edges})
    hooks = sorted({h for _, h in edges})
    h = 20
    height = max(len(progs), len(hooks)) * h + 10
    py = {p: i * h + 15 for i, p in enumerate(progs)}
    hy = {k: i * h + 15 for i, k in enumerate(hooks)}
    parts = [f"<line x1=\"230\" y1=\"{py[p] - 4}\" x2=\"{width - 300}\" y2=\"{hy[k] - 4}\" "
             f"stroke=\"#999\"/>" for p, k in edges]
    parts += [f"<text x=\"225\" y=\"{y}\" text-anchor=\"end\">{_e(p[:34])}</text>"
              for p, y in py.items()]
    parts += [f"<text x=\"{width - 295}\" y=\"{y}\">{_e(k[:48])}</text>" for k, y in hy.items()]
    return (f"<svg id=\"hooks\" class=\"chart\" width=\"{width}\" height=\"{height}\" "
            "role=\"img\">" + "".join(parts) + "</svg>")


def page_grid(pages: Sequence[Tuple[int, str]], width: int = 640) -> str:
    """One square per arena page (a map's pages side by side)."""
    if not pages:
        return "<p class=\"muted\">no arena pages</p>"
    cell, per_row = 10, width // 10
    total = sum(n for n, _ in pages)
    shown = min(total, 4096)
    cells, i = [], 0
    palette = ("#4a7bd0", "#d08a4a", "#4ad07b", "#b04ad0")
    for k, (n, label) in enumerate(pages):
        for _ in range(n):
            if i >= shown:
                break
            x, y = (i % per_row) * cell, (i // per_row) * cell
            cells.append(f"<rect x=\"{x}\" y=\"{y}\" width=\"9\" height=\"9\" "
                         f"fill=\"{palette[k % len(palette)]}\"><title>{_e(label)}</title></rect>")
            i += 1
    rows = (shown + per_row - 1) // per_row
    return (f"<svg id=\"arena\" class=\"chart\" width=\"{width}\" height=\"{rows * cell + 2}\" "
            "role=\"img\">" + "".join(cells) + "</svg>")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], css_id: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Raw) else _e(c)}</td>" for c in r)
                   + "</tr>" for r in rows)
    ident = f" id=\"{css_id}\"" if css_id else ""
    return f"<table{ident}><tr>{head}</tr>{body}</table>"


class Raw(str):
    """Cell text that is already HTML."""


def _load(folder: Path, plugin: str) -> List[Dict[str, Any]]:
    try:
        return list(summarize.flatten(json.loads((folder / f"{plugin}.json").read_text())))
    except (OSError, ValueError):
        return []


_ON_LIST = re.compile(r"cpu(\d+)\[(\d+)\]")


def runnable_ages(tasks: Sequence[Dict[str, Any]]) -> str:
    """How long the tasks on each CPU's runnable list have waited (scxtasks rows: the list
    position in ``RunnableList``, the age in ``RunnableAtMs``, else ``RunnableForJiffies``),
    at the dump and at each recorded exit: the oldest wait per CPU as bars, then every task."""
    waits: Dict[Tuple[str, int], List[Tuple[int, float, str, Dict[str, Any]]]] = {}
    unit = {}
    for r in tasks:
        m = _ON_LIST.fullmatch(str(r.get("RunnableList") or ""))
        if not m:
            continue
        ms, jiffies = r.get("RunnableAtMs"), r.get("RunnableForJiffies")
        if isinstance(ms, (int, float)):
            age, u = float(abs(ms)), "ms"
        elif isinstance(jiffies, (int, float)):
            age, u = float(jiffies), "jiffies"
        else:
            continue
        key = (str(r.get("At") or "dump"), int(m.group(1)))
        unit[key] = u
        waits.setdefault(key, []).append((int(m.group(2)), age, u, r))
    if not waits:
        return "<h2>Runnable ages per CPU</h2><p id=\"runnable-ages\">no task on a runnable " \
               "list (or no scxtasks output)</p>"
    out = ["<h2>Runnable ages per CPU</h2><div id=\"runnable-ages\">"]
    for at in sorted({k[0] for k in waits}, key=lambda a: (a != "dump", a)):
        keys = sorted(k for k in waits if k[0] == at)
        oldest = [(f"cpu{cpu} ({len(waits[(at, cpu)])} waiting)",
                   max(w[1] for w in waits[(at, cpu)])) for _a, cpu in keys]
        u = unit[keys[0]]
        out.append(f"<h3>{_e('at the dump' if at == 'dump' else at)}: oldest wait per CPU "
                   f"({u})</h3>" + bar_chart(oldest, f" {u}", "ages-" + re.sub(r"[^A-Za-z0-9_-]", "_", at),
                             color="#c04a4a"))
        lines = []
        for key in keys:
            for pos, age, u2, r in sorted(waits[key], key=lambda w: w[0]):
                lines.append((f"cpu{key[1]}", pos, r.get("PID"), r.get("COMM"),
                              f"{age:g} {u2}", r.get("Starved") or ""))
        out.append(_table(("CPU", "position", "PID", "COMM", "waiting", "starved"), lines))
    return "".join(out) + "</div>"


def dump_page(row: Dict[str, Any], folder: Path) -> str:
    """One dump's page: verdict, runnable tasks per CPU, DSQ depths, events, hooks, arena,
    damage, time per plugin."""
    name = row.get("name") or "dump"
    scx = _load(folder, "linux.ktstr.scxstate")
    verdict_cls = "err" if row.get("error") else (
        "exit" if row.get("exit_kind") not in (None, "NONE") else "ok")
    body = [f"<p><a href=\"../../index.html\">fleet overview</a></p><h1>{_e(name)}</h1>",
            f"<p id=\"verdict\" class=\"{verdict_cls}\">"
            f"{_e(row.get('error') or row.get('exit_verdict') or 'no verdict')}</p>"]
    facts = [(k, str(row.get(k)).replace(";", "; ") if row.get(k) is not None else None)
             for k in ("file", "format", "size", "sha256", "kernel_release",
                                       "arch", "paging", "schedulers", "scheduler_state",
                                       "exit_kind", "exit_reason", "exit_message",
                                       "exit_time_s", "stalled_tasks", "bpf_maps",
                                       "bpf_progs", "bpf_links", "hidden_objects",
                                       "unverifiable_objects", "flagged_programs",
                                       "suspicious_programs", "kernel_integrity",
                                       "unique_programs")]
    body.append(_table(("fact", "value"), facts, "facts"))
    runnable = []
    for r in scx:
        if r.get("Section") == "watchdog" and r.get("Key") == "runnable_list":
            try:
                runnable.append((str(r.get("Object")), float(str(r.get("Value")).split()[0])))
            except (ValueError, IndexError):
                pass
    body.append("<h2>Runnable tasks per CPU</h2>" + bar_chart(runnable, " tasks", "runnable"))
    body.append(runnable_ages(_load(folder, "linux.ktstr.scxtasks")))
    dsq = []
    for r in scx:
        if r.get("Section") == "dsq" and r.get("Key") == "nr":
            try:
                dsq.append((str(r.get("Object")), float(str(r.get("Value")))))
            except (TypeError, ValueError):
                pass
    body.append("<h2>DSQ depths</h2>" + bar_chart(dsq, "", "dsq", color="#d08a4a"))
    events = []
    for r in scx:
        if r.get("Section") == "events" and str(r.get("Key", "")).startswith("SCX_EV_"):
            try:
                events.append((str(r["Key"])[7:], float(str(r.get("Value")))))
            except (TypeError, ValueError):
                pass
    events.sort(key=lambda e: -e[1])
    body.append("<h2>Event counters</h2>" + bar_chart(events[:16], "", "events",
                                                       color="#4ad07b"))
    edges = []
    for r in _load(folder, "linux.ktstr.bpfhooks"):
        if r.get("ProgName") or r.get("ProgId"):
            prog = f"{r.get('ProgName') or '?'} ({r.get('ProgType') or '?'})"
            hook = f"{r.get('Hook') or '?'}: {r.get('Target') or ''}"
            edges.append((prog, hook))
    body.append("<h2>BPF programs and their hooks</h2>" + hook_graph(sorted(set(edges))))
    flags = [(r.get("ID"), r.get("Name"), r.get("Type"), r.get("Severity"), r.get("Flag"),
              r.get("Reason"), r.get("Evidence"))
             for r in _load(folder, "linux.ktstr.bpftriage")
             if r.get("Kind") == "prog" or (r.get("Flag") == "integrity"
                                            and r.get("Severity") != "info")]
    body.append("<h2>Suspicious BPF programs (bpftriage)</h2>" + (_table(
        ("id", "name", "type", "severity", "flag", "reason", "evidence"), flags, "flags")
        if flags else "<p id=\"flags\" class=\"muted\">none flagged</p>"))
    pages = []
    for r in _load(folder, "linux.ktstr.arena"):
        if isinstance(r.get("Pages"), int) and r.get("Name") and r.get("Physical") is None:
            pages.append((min(int(r["Pages"]), 4096), f"map {r.get('MapID')} {r.get('Name')}"))
    body.append("<h2>Arena pages</h2>" + page_grid(pages))
    dmg = str(row.get("damage_examples") or "")
    body.append(f"<h2>Damage</h2><p id=\"damage\">{_e(row.get('damage'))} rows reporting "
                f"skipped memory. {_e(dmg)}</p>")
    per = row.get("per_plugin") or {}
    body.append("<h2>Time per plugin</h2>" + bar_chart(
        [(p, f.get("seconds") or 0.0) for p, f in sorted(per.items())], " s", "plugintime",
        color="#888"))
    outputs = sorted(p.name for p in folder.glob("linux.*.json"))
    body.append("<h2>Plugin outputs</h2><ul>" + "".join(
        f"<li><a href=\"{_e(o)}\">{_e(o)}</a></li>" for o in outputs) + "</ul>")
    if row.get("plugin_errors"):
        body.append(f"<p class=\"err\">plugin errors: {_e(row['plugin_errors'])}</p>")
    return _page(f"{name} - ktstr triage", "".join(body))


def fleet_page(rows: Sequence[Dict[str, Any]]) -> str:
    n = len(rows)
    errors = sum(1 for r in rows if r.get("error"))
    exited = sum(1 for r in rows if r.get("exit_kind") not in (None, "NONE"))
    stalled = sum(1 for r in rows if (r.get("stalled_tasks") or 0) > 0)
    body = ["<h1>ktstr fleet triage</h1><div id=\"cards\">"]
    for label, value in (("dumps", n), ("scheduler exits", exited), ("with stalls", stalled),
                         ("unreadable", errors),
                         ("with suspicious BPF programs",
                          sum(1 for r in rows if (r.get("flagged_programs") or 0) > 0)),
                         ("damaged", sum(1 for r in rows if (r.get("damage") or 0) > 0))):
        body.append(f"<div class=\"card\"><b>{value}</b>{_e(label)}</div>")
    body.append("</div>")
    # [dumps, dumps with stalled tasks, stalled tasks] per (kernel, scheduler, exit kind): where
    # the exits and the stalls cluster.
    kinds: Dict[Tuple[str, str, str], List[int]] = {}
    for r in rows:
        k = (str(r.get("kernel_release") or "?"), str(r.get("schedulers") or "(none)"),
             str(r.get("exit_kind") or ("unreadable" if r.get("error") else "?")))
        c = kinds.setdefault(k, [0, 0, 0])
        c[0] += 1
        c[1] += 1 if (r.get("stalled_tasks") or 0) > 0 else 0
        c[2] += r.get("stalled_tasks") or 0
    body.append("<h2>Exits and stalls by kernel and scheduler</h2>" + _table(
        ("kernel", "scheduler", "exit kind", "dumps", "with stalls", "stalled tasks"),
        [(*k, *v) for k, v in sorted(kinds.items())], "exitkinds"))
    body.append("<h2>Stalled tasks</h2>" + bar_chart(
        [(str(r.get("name")), float(r.get("stalled_tasks") or 0)) for r in rows
         if r.get("stalled_tasks")], " tasks", "stalls", color="#b04ad0"))
    flagged = [(r.get("name"), p) for r in rows
               for p in filter(None, str(r.get("suspicious_programs") or "").split("; "))]
    body.append("<h2>Suspicious BPF programs</h2>" + (_table(
        ("dump", "program (worst severity: flags)"), flagged, "suspicious") if flagged else
        "<p id=\"suspicious\" class=\"muted\">none flagged by bpftriage</p>"))
    integrity = [(r.get("name"), f) for r in rows
                 for f in filter(None, str(r.get("kernel_integrity") or "").split("; "))]
    if integrity:
        body.append("<h2>Kernel tables pointing outside kernel text</h2>" + _table(
            ("dump", "finding"), integrity, "integrity"))
    rare = [(r.get("name"), p) for r in rows
            for p in filter(None, str(r.get("unique_programs") or "").split(";"))]
    body.append("<h2>BPF programs seen on one host only</h2>" + (_table(
        ("dump", "program (tag:name:type)"), rare, "rare") if rare else
        "<p id=\"rare\" class=\"muted\">none (or a fleet of one)</p>"))
    damaged = [(r.get("name"), r.get("damage"), r.get("damage_examples")) for r in rows
               if (r.get("damage") or 0) > 0]
    body.append("<h2>Damaged dumps</h2>" + (_table(("dump", "damage rows", "examples"),
                                                   damaged, "damaged") if damaged else
                                            "<p class=\"muted\">none</p>"))
    body.append("<h2>Time per dump</h2>" + bar_chart(
        [(str(r.get("name")), float(r.get("seconds") or 0)) for r in rows], " s", "times"))
    table_rows = []
    for r in rows:
        link = Raw(f"<a href=\"dumps/{_e(discover.safe_name(str(r.get('name'))))}/index.html\">"
                   f"{_e(r.get('name'))}</a>")
        status = Raw(f"<span class=\"err\">{_e(r.get('error'))}</span>") if r.get("error") \
            else r.get("exit_verdict")
        table_rows.append((link, r.get("format"), r.get("kernel_release"), r.get("arch"),
                           r.get("schedulers"), r.get("scheduler_state"), r.get("exit_kind"),
                           r.get("stalled_tasks"), r.get("bpf_progs"), r.get("flagged_programs"),
                           r.get("damage"), status))
    body.append("<h2>Dumps</h2>" + _table(
        ("dump", "format", "kernel", "arch", "scheduler", "state", "exit", "stalled", "progs",
         "flagged", "damage", "verdict / error"), table_rows, "dumps"))
    return _page("ktstr fleet triage", "".join(body))


def write_report(rows: Sequence[Dict[str, Any]], out_dir: str) -> List[str]:
    """Write DIR/index.html and one page per dump; returns every page written."""
    out = Path(out_dir)
    written = [str(out / "index.html")]
    (out / "index.html").write_text(fleet_page(rows))
    for r in rows:
        folder = out / "dumps" / discover.safe_name(str(r.get("name")))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "index.html").write_text(dump_page(r, folder))
        written.append(str(folder / "index.html"))
    return written


def page_of(out_dir: str, name: str) -> Optional[str]:
    p = Path(out_dir) / "dumps" / discover.safe_name(name) / "index.html"
    return str(p) if p.is_file() else None
