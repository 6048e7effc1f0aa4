"""linux.ktstr.bpftriage: flags with reasons on the real zoo dump (the zoo's programs on
sensitive hooks flagged, none of the scheduler's), the flags a careful rootkit's DKOM adds,
and the syscall-table/ftrace integrity check on a synthetic kernel (an entry outside the kernel
text, one into a BPF image)."""

import pytest

import dumps
from helpers.bpfworld import TEXT, World
from volatility3_ktstr.bpf import triage
from volatility3_ktstr.kds import DamageLog

ZOO = "x86_64/scx_sdt_zoo"

# zoo programs and the flag each must carry (the hook they sit on is sensitive)
EXPECTED = {"zoo_kprobe": "target:kprobe", "zoo_kretprobe": "target:kretprobe",
            "zoo_kmulti": "target:kprobe", "zoo_tp": "target:tracepoint",
            "zoo_lsm_file_op": "target:trampoline", "zoo_lsm_cgroup": "target:lsm",
            "zoo_xdp": "target:xdp", "zoo_tcx_in": "target:tcx", "zoo_tcx_eg": "target:tcx",
            "zoo_tcx_legacy": "target:tcx", "zoo_nf": "target:netfilter",
            "zoo_sk_lookup": "target:sk_lookup", "zoo_sk_verdict": "target:sockmap"}


def test_call_and_target_flags():
    assert [f.flag for f in triage.call_flags(["probe_write_user", "map_lookup_elem"],
                                              ["bpf_send_signal_task"])] == [
        "helper:probe_write_user", "kfunc:bpf_send_signal_task"]
    # the list: each a flag with a reason
    for helper in ("probe_write_user", "override_return", "send_signal", "copy_from_user_task",
                   "d_path", "sys_bpf", "probe_read_user"):
        (f,) = triage.call_flags([helper], [])
        assert f.flag == f"helper:{helper}" and f.reason and f.evidence == f"calls bpf_{helper}"
    # reading the current task's user memory from a hook reads other processes' memory
    (f,) = triage.call_flags(["probe_read_user_str"], [], ["raw_tracepoint sys_enter", "kprobe do_sys_openat2"])
    assert f.severity == triage.MEDIUM and "other processes'" in f.reason
    assert f.evidence == "calls bpf_probe_read_user_str on raw_tracepoint sys_enter (+1 more)"
    assert triage.call_flags(["probe_read_user_str"], [])[0].severity == triage.LOW
    (f,) = triage.call_flags([], ["bpf_copy_from_user_task_str_dynptr"], ["kprobe x"])
    assert f.severity == triage.HIGH and "another task" in f.reason
    assert triage.target_flags("kprobe", "__x64_sys_getdents64", "perf_event")[0].severity == triage.HIGH
    assert triage.target_flags("trampoline", "tcp4_seq_show", "trace_fexit")[0].severity == triage.HIGH
    assert triage.target_flags("raw_tracepoint", "sys_enter", "raw_tp")[0].flag == "target:raw_tracepoint"
    assert triage.target_flags("uprobe", "/usr/lib/libpam.so.0+0x1234", "")[0].severity == triage.HIGH
    assert triage.target_flags("uprobe", "/bin/bpf_zoo+0x54c0", "") == []
    assert triage.target_flags("trampoline", "hrtimer_nanosleep", "trace_fentry") == []
    assert triage.target_flags("raw_tracepoint", "sched_switch", "raw_tp") == []


def _table_world(entries, ksym_range=None):
    w = World()
    mem = w.mem
    w.syms["_stext"], w.syms["_etext"] = TEXT, TEXT + 0x200000
    table = mem.alloc(8 * len(entries) + 64)
    for i, e in enumerate(entries):
        mem.u64(table + 8 * i, e)
    w.syms["sys_call_table"] = table
    w.syms["sys_call_table_end"] = table + 8 * len(entries)
    if ksym_range:
        k = mem.new("bpf_ksym", start=ksym_range[0], end=ksym_range[1], name="bpf_trampoline_6442", prog=0)
        mem.list_add_tail(w.syms["bpf_kallsyms"], k + w.L.offset("bpf_ksym", "lnode"))
    return w.kctx()


def test_syscall_table_entries_outside_text_or_into_bpf_code_are_found():
    bpf = (0xFFFFFFFFA0000000, 0xFFFFFFFFA0001000)
    k = _table_world([TEXT + 0x100, TEXT + 0x200, 0xFFFFFFFFC0123456, bpf[0] + 0x10], bpf)
    damage = DamageLog()
    n, found = triage.syscall_findings(k, triage.CodeMap(k, damage), damage)
    assert n == 4 and not damage
    assert [(f.index, f.reason) for f in found] == [
        (2, "points outside the kernel text"), (3, "points into BPF code (bpf_trampoline_6442)")]


def test_clean_syscall_table_has_no_finding():
    k = _table_world([TEXT + 0x100 * i for i in range(1, 9)])
    damage = DamageLog()
    n, found = triage.syscall_findings(k, triage.CodeMap(k, damage), damage)
    assert n == 8 and found == []


def _available():
    root = dumps.dumps_root()
    return root is not None and (root / ZOO / "truth.json").is_file()


needs_zoo = pytest.mark.skipif(not _available(), reason=f"KTSTR_DUMPS is unset or has no {ZOO}")


def _rows(kctx):
    from volatility3_ktstr.views import bpftriage

    names = [c.name for c in bpftriage.GRID.columns]
    return [dict(zip(names, v)) for _l, v in bpftriage.rows(kctx)]


@needs_zoo
def test_zoo_flags_the_sensitive_programs_and_none_of_the_schedulers():
    from helpers.vol_kctx import open_kctx

    truth = dumps.load_truth(ZOO)
    got = _rows(open_kctx(ZOO))
    flags = {}
    for r in got:
        if r["Kind"] == "prog":
            assert r["Reason"] and r["Severity"] in ("high", "medium", "low", "info"), r
            flags.setdefault(r["Name"], set()).add(r["Flag"])
    for name, flag in EXPECTED.items():
        assert flag in flags.get(name, set()), (name, flags.get(name))
    # the syscall tracepoint program reads user strings of whichever process enters a syscall
    (tp_read,) = [r for r in got if r["Name"] == "zoo_tp" and r["Flag"] == "helper:probe_read_user_str"]
    assert tp_read["Severity"] == "medium" and "other processes'" in tp_read["Reason"]
    sched = {p["name"] for p in truth["progs"] if p["type_name"] == "struct_ops"}
    assert not sched & set(flags), sched & set(flags)
    assert not [r for r in got if r["Kind"] == "prog" and r["Flag"] in ("hidden", "unheld")]
    summary = next(r for r in got if r["Kind"] == "summary")
    assert "0 outside kernel text" in summary["Evidence"] and "syscall tables: 0 " not in summary["Evidence"]
    assert not [r for r in got if r["Kind"] in ("sys_call_table", "?")]
    # The fleet table's columns from these rows: every flagged program, none of the scheduler's.
    from volatility3_ktstr.fleet import summarize

    facts = summarize.triage_facts(got)
    listed = {p.split(" (id ")[0] for p in facts["suspicious_programs"].split("; ")}
    assert listed == set(flags) and facts["flagged_programs"] == len(flags)
    assert not listed & sched and facts["kernel_integrity"] is None


@needs_zoo
def test_dkom_hidden_programs_are_flagged_hidden_and_unheld():
    from helpers.dkom import PatchedReader, hide_programs
    from helpers.vol_kctx import open_kctx

    kctx = open_kctx(ZOO)
    truth = dumps.load_truth(ZOO)
    pid = next(p["id"] for p in truth["progs"] if p["name"] == "zoo_kprobe")
    patched = kctx.with_reader(PatchedReader(kctx.reader, hide_programs(kctx, [pid])))
    mine = {r["Flag"]: r for r in _rows(patched) if r["Kind"] == "prog" and r["ID"] == pid}
    assert {"hidden", "unheld", "target:kprobe"} <= set(mine), set(mine)
    assert "kprobe_table" in mine["hidden"]["Evidence"]
    # Scans that read every fd table leave "unheld" without a caveat; when one process's fd
    # table is unreadable, the flag names that gap (a holder may be in it).
    assert mine["unheld"]["Evidence"] == "" and "skipped" not in mine["unheld"]["Reason"]
    from volatility3_ktstr.bpf import fds as bpffds

    other = next(f for f in bpffds.bpf_fds(kctx.bpf_kernel(), kctx.symbol("init_task"))
                 if f.kind == "prog" and f.obj not in {p.kva for p in kctx.bpf_kernel().progs
                                                       if p.id == pid})
    lay, reader = kctx.layout, kctx.reader
    files = reader.ptr(other.task + lay.offset("task_struct", "files"))
    words = hide_programs(kctx, [pid])
    words[files + lay.offset("files_struct", "fdt")] = 0x1000        # an unmapped fdtable
    gapped = kctx.with_reader(PatchedReader(kctx.reader, words))
    mine = {r["Flag"]: r for r in _rows(gapped) if r["Kind"] == "prog" and r["ID"] == pid}
    assert "fd scan skipped" in mine["unheld"]["Evidence"], mine["unheld"]
    assert "unless a holder is in what the scans skipped" in mine["unheld"]["Reason"]


def test_null_entries_are_not_judged_and_trailing_non_pointers_end_the_table():
    """A table whose length the next symbol overestimates ends at the first trailing word that is
    no kernel pointer (string bytes); NULL entries (a page missing from the dump) are damage."""
    garbage = int.from_bytes(b"__func__", "little")
    k = _table_world([TEXT + 0x100, 0, TEXT + 0x300, garbage])
    damage = DamageLog()
    n, found = triage.syscall_findings(k, triage.CodeMap(k, damage), damage)
    assert n == 2 and found == []
    assert any("1 entries read as NULL" in str(d) for d in damage)
