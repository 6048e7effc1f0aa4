"""A scheduler that died (x86_64/scx_qmap_exit_error: scx_bpf_error() with its loader frozen):
scxstate's exit section against truth.json's `exit` (TRUTH.md): the verdict, the kernel's
scx_exit_info, the scheduler's own user_exit_info, the exit backtrace and the debug dump text."""

import functools
import re

import pytest

import dumps
import volrun

EXITED = [d for d in dumps.list_dumps() if "exit" in dumps.load_truth(d) and not dumps.scheduler_live(d)]
pytestmark = pytest.mark.skipif(not EXITED, reason="no dump of a scheduler that exited (KTSTR_DUMPS)")


def _walk(rows):
    for r in rows:
        yield r
        yield from _walk(r.get("__children") or [])


@functools.lru_cache(maxsize=None)
def state_rows(name):
    res = volrun.run_vol(name, "linux.ktstr.scxstate")
    assert res.rc == 0, res.stderr
    return list(_walk(res.rows))


def exit_rows(name):
    return [r for r in state_rows(name) if r["Section"] == "exit"]


def values(rows, obj, key):
    return [r["Value"] for r in rows if r["Object"] == obj and r["Key"] == key]


@pytest.mark.parametrize("name", EXITED or ["<none>"])
def test_exit_equals_truth(name):
    truth = dumps.load_truth(name)["exit"]
    uei, klog = truth["uei"], truth["kernel_log"]
    kind = f"{uei['kind_name'].removeprefix('SCX_EXIT_')} ({uei['kind']})"
    rows = exit_rows(name)
    (verdict,) = values(rows, "summary", "verdict")
    assert verdict.startswith("EXITED: ") and kind in verdict, verdict
    assert f"({uei['reason']}): {uei['msg']}" in verdict, verdict
    # the kernel's scx_exit_info and the scheduler's own user_exit_info copy
    for obj in (f"kernel {klog['disabled_ops_name']}", f"uei {uei['map_name']}"):
        assert values(rows, obj, "kind") == [kind], obj
    ker, own = f"kernel {klog['disabled_ops_name']}", f"uei {uei['map_name']}"
    assert values(rows, ker, "reason") == [uei["reason"]] == [klog["disabled_reason"]]
    assert values(rows, ker, "msg") == [uei["msg"]] == [klog["msg"]]
    # the scheduler's copy equals the kernel's record (consistency in truth): said once
    assert truth["consistency"]["uei_reason_equals_kernel_reason_for_kind"]
    assert values(rows, own, "same_as") == ["the kernel's scx_exit_info above: exit_code, reason, msg"]
    assert values(rows, own, "reason") == []
    # the scheduler was torn down before the dump; the exit's time is the kernel log's
    (torn,) = values(rows, "summary", "torn_down")
    assert torn.startswith("yes: scx_root is NULL")
    secs = truth["timing"]["dmesg_disabled_s"]
    (at,) = values(rows, "summary", "exit_time")
    assert at.startswith(f"[{secs:12.6f}]"), (at, secs)


@pytest.mark.parametrize("name", EXITED or ["<none>"])
def test_exit_backtrace_and_dump_text_equal_truth(name):
    truth = dumps.load_truth(name)["exit"]
    ops = f"kernel {truth['kernel_log']['disabled_ops_name']}"
    rows = exit_rows(name)
    want = truth["kernel_log"]["backtrace"]                 # "sym+0xoff/0xsize" as printk has it
    got = [r["Value"] for r in rows if r["Object"] == ops and r["Key"].startswith("bt[")]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if w.startswith("bpf_"):   # BPF programs and trampolines: named from bpf_kallsyms,
            # programs followed by "(prog ID, source line or why there is none)"
            assert g.split(" (prog ")[0] == w.split("/")[0], (g, w)
            assert (" (prog " in g) == w.startswith("bpf_prog_"), (g, w)
        else:
            assert g == w.split("/")[0], (g, w)
    # the debug dump text once (the kernel's copy; the uei copy named as a source of the same
    # text); its parts that have no rows elsewhere are rows here
    text = truth["dump_text"]["text"]
    lines = text.rstrip("\n").split("\n")
    (source,) = values(rows, "debug dump", "source")
    assert source.endswith(f": {len(lines)} lines, {truth['dump_text']['length']} bytes"), source
    assert source.startswith("scx_exit_info.dump of "), source
    (same,) = values(rows, "debug dump", "same_text")
    assert truth["dump_text"]["map_name"] in same and truth["uei"]["map_name"] in same
    ops = [line for line in lines if line.startswith("QMAP FIFO")]
    assert [r["Value"] for r in rows if r["Object"] == "debug dump"
            and r["Key"].startswith("ops.dump[")] == ops
    # the dump's backtrace is the bt[] rows; the frames only the text names (BPF) listed
    named = [r["Value"] for r in rows if r["Object"] == "debug dump" and r["Key"].startswith("bt[")]
    assert named == [w for w, g in zip(want, got) if g.startswith("0xffff")]
    # no text twice: every line of the dump appears in at most one exit row
    dump_rows = [r["Value"] for r in rows if r["Object"] in ("debug dump", f"uei {truth['uei']['map_name']}")]
    assert not any(v == line for line in lines[5:30] for v in dump_rows)


# --- the state at the exit against the kernel's debug dump text, field by field --------------

TASK_RE = re.compile(r"^ ([ *])(\S) (.+)\[(\d+)\]\s*(\S*)\s+([+-]\d+)ms$")


def truth_tasks(text):
    """[(cpu, header fields, {key: value})] of the dump text: read here with its own small
    parser (not the package's), ``a/b=x/y`` split."""
    out, cpu = [], None
    for line in text.split("\n"):
        m = re.match(r"^CPU\s+(\d+)\s*:", line)
        if m:
            cpu = int(m[1])
            continue
        m = TASK_RE.match(line)
        if m:
            out.append((cpu, m.groups(), {}))
            continue
        if out and line.startswith("      ") and "=" in line:
            for k, v in re.findall(r"([\w/]+)=(\S+)", line):
                out[-1][2].update(zip(k.split("/"), v.split("/")))
    return out


def cpu_list(hexmask):
    v = int(hexmask.replace(",", ""), 16)
    cpus = [c for c in range(v.bit_length()) if v >> c & 1]
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in _ranges(cpus)) or "-"


def _ranges(cpus):
    out = []
    for c in cpus:
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


@pytest.mark.parametrize("name", EXITED or ["<none>"])
def test_at_exit_task_rows_equal_the_dump_text(name):
    """scxtasks' At=exit rows: every task of the kernel's debug dump, each field as printed."""
    truth = dumps.load_truth(name)["exit"]
    want = truth_tasks(truth["dump_text"]["text"])
    assert want, "the dump text lists no task"
    res = volrun.run_vol(name, "linux.ktstr.scxtasks")
    assert res.rc == 0, res.stderr
    rows = [r for r in _walk(res.rows) if (r["At"] or "").startswith("exit")]
    assert len(rows) == len(want)
    secs = truth["timing"]["dmesg_disabled_s"]
    for r, (cpu, (marker, state, comm, pid, _own, ms), f) in zip(rows, want):
        assert r["At"] == f"exit [{secs:12.6f}]"
        assert (r["PID"], r["COMM"], r["State"], r["RunnableAtMs"]) == (int(pid), comm, state, int(ms))
        assert r["Where"] == (f"running on CPU {cpu}" if marker == "*" else f"runnable on CPU {cpu}")
        assert r["DSQ"] == int(f["dsq_id"], 16)
        for col, key in (("SliceNs", "slice"), ("DsqVtime", "dsq_vtime"), ("Weight", "weight"),
                         ("StickyCPU", "sticky"), ("HoldingCPU", "holding_cpu"), ("QSeq", "qseq"),
                         ("NoMig", "no_mig")):
            assert r[col] == int(f[key]), (col, r[col], f[key])
        assert r["DsqFlags"] == int(f["dsq_flags"], 16)
        assert r["CPUs"] == cpu_list(f["cpus"])
        assert r["OpsState"].startswith("NONE" if f["ops_state"] == "0" else "")
    # live rows say At=dump; the loader's threads are back in fair after the teardown
    assert all(r["At"] == "dump" for r in _walk(res.rows) if not (r["At"] or "").startswith("exit"))


@pytest.mark.parametrize("name", EXITED or ["<none>"])
def test_at_exit_cpu_rows_equal_the_dump_text(name):
    truth = dumps.load_truth(name)["exit"]
    text = truth["dump_text"]["text"]
    rows = [r for r in state_rows(name) if r["Section"] == "cpu" and r["At"].startswith("exit")]
    blocks = re.findall(r"^CPU\s+(\d+)\s*: (.*)\n\s+curr=(.*)\[(\d+)\] class=(\w+)", text, re.M)
    assert blocks
    for cpu, fields, comm, pid, cls in blocks:
        got = {r["Key"]: r["Value"] for r in rows if r["Object"] == f"cpu{cpu}"}
        f = dict(re.findall(r"(\w+)=(\S+)", fields))
        assert got["scx.nr_running"] == f["nr_run"]
        assert got["cpu_released"] == f["cpu_rel"]
        for key, name_ in (("ksync", "kick_sync"), ("pnt_seq", "pnt_seq"), ("ops_qseq", "ops_qseq")):
            if key in f:
                assert got[name_] == f[key]
        assert got["curr"] == f"{pid} {comm} ({cls.removesuffix('_sched_class')})"
    # a task's stack and the scheduler's ops.dump_task lines come with it
    stack = [r["Value"] for r in rows if r["Key"].startswith("stack[")]
    assert stack and all(line.strip() in text for line in stack)


@pytest.mark.parametrize("name", EXITED or ["<none>"])
def test_output_after_an_exit_is_at_most_half(name):
    """Before the exit rows were built, scxstate printed 440 rows on the exit dump (the dump
    text twice, the backtrace three times): now each once, and the whole at most half."""
    rows = state_rows(name)
    assert len(rows) <= 220, len(rows)
    values = [r["Value"] for r in rows if r["Section"] == "exit" and r["Value"]]
    frames = [v for v in values if re.search(r"\+0x[0-9a-f]+(/0x[0-9a-f]+)?$", v)]
    keys = [v.split("/")[0].split("] ")[-1].strip() for v in frames]
    assert len(keys) == len(set(keys)), "a backtrace frame shown twice"


@pytest.mark.parametrize("name", EXITED or ["<none>"])
def test_sched_ctx_from_arena_globals_equals_truth(name):
    """The scheduler's per-CPU context read from its arena globals (scx_qmap: qa.cpu_ctxs, an
    array of struct cpu_ctx indexed by CPU) equals truth's ``arena_globals`` bytes, decoded here
    with the program's BTF at the address the source row names, CPU by CPU; and equals the
    scheduler's own ops.dump_cpu line of the debug dump where the scheduler printed one."""
    import re

    from helpers.vol_kctx import open_kctx
    from volatility3_ktstr.btf import Kind
    from volatility3_ktstr.render import render, render_text

    truth = dumps.load_truth(name)
    globs = [g for g in truth.get("arena_globals") or [] if g.get("hex")]
    if not globs:
        pytest.skip(f"{name}: truth has no arena globals bytes")
    (glob,) = globs
    region = bytes.fromhex(glob["hex"])
    rows = state_rows(name)
    sources = [r["Value"] for r in rows if r["Section"] == "cpu" and r["Object"] == "sched_ctx"
               and r["Key"] == "source" and ": arena global of " in r["Value"]]
    assert sources, "no arena global taken as per-CPU context"
    kctx = open_kctx(name)
    ops = [m for m in kctx.maps() if m.type_name == "struct_ops" and m.btf_kva]
    btf = kctx.btf_at(ops[0].btf_kva)
    (sec,) = [t for t in btf.own_types if t.kind == Kind.DATASEC and t.name.startswith(".addr_space")]
    by_var = {n: (tid, off) for n, tid, off, _ in btf.datasec_vars(sec.id)}
    ncpu = truth["run"]["smp"]
    for s in sources:
        path = s.split(":", 1)[0]
        user = int(re.search(r" at (0x[0-9a-f]+) ", s).group(1), 16)
        var, _, member = path.partition(".")
        tid, off = by_var[var]
        bit, m = btf.member_path(tid, member) if member else (0, None)
        assert user == glob["addr"] + off + bit // 8, (path, hex(user))
        arr = btf.resolve(m.type if m else tid)
        size = btf.size_of(arr.type)
        for c in range(ncpu):
            at = user - glob["addr"] + c * size
            want = render_text(render(btf, arr.type, region[at:at + size]), 512)
            got = [r["Value"] for r in rows if r["Section"] == "cpu" and r["Object"] == f"cpu{c}"
                   and r["Key"] == "sched_ctx" and r["Value"].startswith(f"{path}[{c}] ")]
            assert got == [f"{path}[{c}] ({btf.type_name(arr.type)}): {want}"], (c, got, want)
    # scx_qmap's ops.dump_cpu prints its cpu_ctx fields: the same numbers as the live values
    dumped = {r["Object"]: r["Value"] for r in rows if r["Section"] == "cpu"
              and r["Key"] == "ops.dump_cpu[0]"}
    for cpu_obj, line in dumped.items():
        fields = dict(re.findall(r"(\w+)=(\d+)", line))
        live = [r["Value"] for r in rows if r["Section"] == "cpu" and r["Object"] == cpu_obj
                and r["Key"] == "sched_ctx"]
        both = [dict(re.findall(r"(\w+)=(\d+)", v)) for v in live]
        assert any(fields.items() <= b.items() for b in both), (cpu_obj, line, live)
