"""Fleet triage test material: what a table row must say about a dump, from its truth.json."""

from typing import Any, Dict, List

# Columns that depend on the run (timing, where the file is), not on the dump.
RUN_COLUMNS = ("name", "file", "seconds", "probe_seconds", "cpu_seconds",
               "probe_cpu_seconds", "started", "peak_rss_mb", "per_plugin", "unique_programs")


def truth_mismatches(row: Dict[str, Any], truth: Dict[str, Any]) -> List[str]:
    """Differences between a triage row's verdict columns and the dump's truth.json."""
    bad = []

    def check(column, want):
        if row.get(column) != want:
            bad.append(f"{column}: table {row.get(column)!r}, truth {want!r}")

    check("error", None)
    check("kernel_release", truth["kernel"]["meta"]["release"])
    scx = truth.get("sched_ext") or {}
    exit_info = truth.get("exit")
    if exit_info:
        uei = exit_info["uei"]
        check("exit_kind", str(uei["kind_name"]).replace("SCX_EXIT_", "", 1))
        check("exit_code", uei["kind"])
        check("exit_reason", uei["reason"])
        check("exit_message", uei["msg"])
        timing = exit_info.get("timing") or {}
        if isinstance(timing, dict) and timing.get("dmesg_disabled_s") is not None:
            check("exit_time_s", float(timing["dmesg_disabled_s"]))
        check("scheduler_state", exit_info["sysfs_state_after"])
        ops = (exit_info.get("kernel_log") or {}).get("disabled_ops_name")
        if ops:
            check("schedulers", ops)
    else:
        check("exit_kind", "NONE")
        if scx.get("root/ops"):
            check("schedulers", scx["root/ops"])
        if scx.get("state"):
            check("scheduler_state", scx["state"])
    return bad


def comparable(row: Dict[str, Any]) -> Dict[str, Any]:
    """A row without its run-dependent columns (two runs over the same dump must agree)."""
    return {k: v for k, v in row.items() if k not in RUN_COLUMNS and not k.endswith(
        ("_seconds", "_peak_rss_mb"))}
