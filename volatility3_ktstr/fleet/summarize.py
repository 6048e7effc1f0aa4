"""One table row per dump, from the rows the linux.ktstr plugins printed (`vol -r json` trees).

Consumes the plugins' output as a user sees it (no walker is called again here), so a column
means what the plugin's rows mean. No Volatility import.
"""

import re
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

Rows = List[Dict[str, Any]]

# Words the walkers' damage rows use when they skip guest memory (views.Grid.damage notes).
DAMAGE_WORDS = re.compile(r"unreadable|skipped|corrupt|excluded|truncated|cycle|bound reached|"
                          r"not read whole|zeroed", re.I)
# Notes that explain a choice rather than report damage.
NOT_DAMAGE = re.compile(r"^(not dumped|nothing pinned)", re.I)
_KIND_NUM = re.compile(r"^([A-Z_]+)\s*\((-?\d+)\)")
_LOG_TIME = re.compile(r"^\[\s*(\d+\.\d+)\]")
TOP_EVENTS = 3

# Columns every table has, in order (per-plugin seconds/MB columns follow them).
COLUMNS: Tuple[str, ...] = (
    "name", "file", "format", "size", "sha256", "kernel_release", "arch", "paging",
    "schedulers", "scheduler_state", "exit_kind", "exit_code", "exit_reason", "exit_message",
    "exit_time_s", "exit_verdict", "stalled_tasks", "top_events", "bpf_maps", "bpf_progs",
    "bpf_links", "hidden_objects", "unverifiable_objects", "flagged_programs",
    "suspicious_programs", "kernel_integrity", "program_fingerprints", "unique_programs",
    "damage", "damage_examples", "seconds", "probe_seconds", "cpu_seconds", "probe_cpu_seconds",
    "started", "peak_rss_mb", "error",
)
# linux.ktstr.bpftriage's severities, worst first.
SEVERITIES = ("high", "medium", "low", "info")


def flatten(rows: Iterable[Dict[str, Any]], depth: int = 0) -> Iterator[Dict[str, Any]]:
    """Rows of a `vol -r json` tree, parents before their children."""
    for row in rows:
        yield row
        yield from flatten(row.get("__children") or [], depth + 1)


def _section(rows: Rows, section: str) -> List[Dict[str, Any]]:
    return [r for r in rows if r.get("Section") == section]


def exit_facts(scx: Rows) -> Dict[str, Any]:
    """exit_kind/code/reason/message/time/verdict from linux.ktstr.scxstate's exit section: the
    kernel's scx_exit_info first, the scheduler's own uei record when the kernel's is gone."""
    out: Dict[str, Any] = {"exit_kind": None, "exit_code": None, "exit_reason": None,
                           "exit_message": None, "exit_time_s": None, "exit_verdict": None}
    by_obj: Dict[str, Dict[str, Any]] = {}
    for r in scx:
        if r.get("Section") != "exit":
            continue
        if r.get("Object") == "summary" and r.get("Key") == "verdict":
            out["exit_verdict"] = r.get("Value")
        by_obj.setdefault(str(r.get("Object")), {}).setdefault(str(r.get("Key")), r.get("Value"))
    sources = sorted((o for o in by_obj if o.startswith(("kernel ", "uei "))),
                     key=lambda o: (not o.startswith("kernel "), o))
    for obj in sources:
        facts = by_obj[obj]
        m = _KIND_NUM.match(str(facts.get("kind") or ""))
        if not m:
            continue
        out["exit_kind"], out["exit_code"] = m.group(1), int(m.group(2))
        if m.group(1) != "NONE":
            out["exit_reason"] = facts.get("reason")
            out["exit_message"] = facts.get("msg")
        break
    if out["exit_kind"] not in (None, "NONE"):
        for r in scx:
            if r.get("Object") == "kernel log" and r.get("Key") == "line" and \
                    " disabled" in str(r.get("Value")) and "sched_ext" in str(r.get("Value")):
                m = _LOG_TIME.match(str(r.get("Value")))
                if m:
                    out["exit_time_s"] = float(m.group(1))
    return out


def scheduler_facts(scx: Rows) -> Dict[str, Any]:
    names, states = [], []
    for r in _section(scx, "scheduler"):
        if r.get("Key") == "name" and r.get("Value") and r.get("Value") not in names:
            names.append(str(r["Value"]))
        if r.get("Key") == "enable_state" and r.get("Value"):
            states.append(str(r["Value"]))
    stalled = None
    for r in _section(scx, "watchdog"):
        if r.get("Key") == "stalled_tasks":
            try:
                stalled = int(str(r.get("Value")).split()[0])
            except (ValueError, IndexError):
                stalled = None
    events: List[Tuple[int, str]] = []
    for r in _section(scx, "events"):
        key = str(r.get("Key"))
        if key.startswith("SCX_EV_") and not key.startswith("cpu"):
            try:
                events.append((int(str(r.get("Value"))), key[len("SCX_EV_"):]))
            except ValueError:
                continue
    top = sorted((e for e in events if e[0]), key=lambda e: (-e[0], e[1]))[:TOP_EVENTS]
    return {"schedulers": ",".join(names) or None,
            "scheduler_state": states[0] if states else None,
            "stalled_tasks": stalled,
            "top_events": ", ".join(f"{k}={v}" for v, k in top) or None}


def program_fingerprints(progs: Rows) -> List[str]:
    """tag:name:type of every program linux.ktstr.progs listed (sorted, distinct)."""
    out = set()
    for r in progs:
        if r.get("Tag") or r.get("Name"):
            out.add(f"{r.get('Tag') or '?'}:{r.get('Name') or '?'}:{r.get('Type') or '?'}")
    return sorted(out)


def triage_facts(rows: Optional[Rows]) -> Dict[str, Any]:
    """flagged_programs, suspicious_programs and kernel_integrity from linux.ktstr.bpftriage:
    every flagged program as ``name (id N, worst severity: flag, flag)``, worst first; every
    syscall-table or ftrace finding above "info" as ``table[index] name: reason``."""
    if rows is None:
        return {"flagged_programs": None, "suspicious_programs": None, "kernel_integrity": None}
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    progs: Dict[Tuple[Any, str], Dict[str, Any]] = {}
    integrity = []
    for r in rows:
        sev = str(r.get("Severity") or "")
        if r.get("Kind") == "prog":
            p = progs.setdefault((r.get("ID"), str(r.get("Name") or "?")),
                                 {"worst": len(SEVERITIES), "flags": []})
            p["worst"] = min(p["worst"], rank.get(sev, len(SEVERITIES)))
            if r.get("Flag") and r["Flag"] not in p["flags"]:
                p["flags"].append(str(r["Flag"]))
        elif r.get("Flag") == "integrity" and sev in rank and sev != "info":
            integrity.append(f"{r.get('Kind')}[{r.get('ID')}] {r.get('Name') or '?'}: "
                             f"{r.get('Reason') or sev}")
    ordered = sorted(progs.items(), key=lambda kv: (kv[1]["worst"], str(kv[0][1]), str(kv[0][0])))
    text = [f"{name} (id {pid}, "
            f"{SEVERITIES[p['worst']] if p['worst'] < len(SEVERITIES) else '?'}: "
            f"{', '.join(p['flags'])})" for (pid, name), p in ordered]
    return {"flagged_programs": len(progs), "suspicious_programs": "; ".join(text) or None,
            "kernel_integrity": "; ".join(integrity) or None}


def damage_rows(outputs: Dict[str, Rows]) -> List[str]:
    """'<plugin>: <note>' of every row whose Error/Note reports skipped or unreadable memory."""
    out = []
    for plugin, rows in sorted(outputs.items()):
        if plugin.endswith("bpfhidden"):
            continue      # its Error column explains verdicts (counted as unverifiable)
        for r in rows:
            note = str(r.get("Error") or r.get("Note") or "")
            if note and DAMAGE_WORDS.search(note) and not NOT_DAMAGE.match(note):
                out.append(f"{plugin.rsplit('.', 1)[-1]}: {note}")
    return out


def _count(rows: Optional[Rows]) -> Optional[int]:
    if rows is None:
        return None
    return sum(1 for r in rows if "ID" not in r or (isinstance(r.get("ID"), int) and r["ID"] >= 0))


def summarize(outputs: Dict[str, Rows]) -> Dict[str, Any]:
    """The plugin-derived columns of one dump's row. ``outputs``: plugin -> flattened rows
    (absent when the plugin did not run or failed)."""
    scx = outputs.get("linux.ktstr.scxstate") or []
    row: Dict[str, Any] = {}
    row.update(exit_facts(scx))
    row.update(scheduler_facts(scx))
    row["bpf_maps"] = _count(outputs.get("linux.ktstr.maps"))
    row["bpf_progs"] = _count(outputs.get("linux.ktstr.progs"))
    row["bpf_links"] = _count(outputs.get("linux.ktstr.links"))
    hidden = outputs.get("linux.ktstr.bpfhidden")
    if hidden is not None:
        verdicts = [str(r.get("Verdict") or "") for r in hidden if r.get("Kind") != "summary"]
        row["hidden_objects"] = sum(1 for v in verdicts if v == "hidden")
        row["unverifiable_objects"] = sum(1 for v in verdicts if v == "unverifiable")
    else:
        row["hidden_objects"] = row["unverifiable_objects"] = None
    row.update(triage_facts(outputs.get("linux.ktstr.bpftriage")))
    fps = program_fingerprints(outputs.get("linux.ktstr.progs") or [])
    row["program_fingerprints"] = ";".join(fps) or None
    dmg = damage_rows(outputs)
    row["damage"] = len(dmg)
    row["damage_examples"] = " | ".join(d[:160] for d in dmg[:3]) or None
    return row


def _fingerprints(row: Dict[str, Any]) -> List[str]:
    return sorted(set(filter(None, str(row.get("program_fingerprints") or "").split(";"))))


def mark_unique_programs(rows: Sequence[Dict[str, Any]]) -> None:
    """Set each row's unique_programs: its program fingerprints no other dump of the fleet has.
    A program whose name could not be read (``tag:?:type``, e.g. its aux page excluded from a
    vmcore) is the same program as any of that tag and type: it neither is unique for want of
    a name nor makes the named one look unique."""
    exact: Dict[str, set] = {}
    by_tag_type: Dict[Tuple[str, str], set] = {}
    nameless: Dict[Tuple[str, str], set] = {}
    for i, r in enumerate(rows):
        for fp in _fingerprints(r):
            tag, name, ptype = (fp.split(":", 2) + ["", ""])[:3]
            exact.setdefault(fp, set()).add(i)
            by_tag_type.setdefault((tag, ptype), set()).add(i)
            if name == "?":
                nameless.setdefault((tag, ptype), set()).add(i)
    for i, r in enumerate(rows):
        only = []
        for fp in _fingerprints(r):
            tag, name, ptype = (fp.split(":", 2) + ["", ""])[:3]
            if name == "?":
                others = by_tag_type[(tag, ptype)]
            else:
                others = exact[fp] | nameless.get((tag, ptype), set())
            if not others - {i}:
                only.append(fp)
        r["unique_programs"] = ";".join(only) or None if len(rows) > 1 else None


def release_of(banner: Optional[str]) -> Optional[str]:
    """'7.2.13+deb14-amd64' of 'Linux version 7.2.13+deb14-amd64 (...'."""
    if not banner:
        return None
    parts = banner.split()
    return parts[2] if len(parts) > 2 and parts[0] == "Linux" else None


def arch_of(banner: Optional[str], machine: Optional[str] = None) -> Optional[str]:
    """x86_64 / arm64 from the banner's compiler triplet (or the ELF machine when given)."""
    if machine:
        return machine
    text = banner or ""
    for needle, arch in (("aarch64", "arm64"), ("arm64", "arm64"), ("x86_64", "x86_64"),
                         ("amd64", "x86_64")):
        if needle in text:
            return arch
    return None
