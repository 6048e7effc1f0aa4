"""A scheduler that died (x86_64/scx_qmap_exit_error: scx_bpf_error() with its loader frozen):
scxstate's exit section against truth.json's `exit` (TRUTH.md): the verdict, the kernel's
scx_exit_info, the scheduler's own user_exit_info, the exit backtrace and the debug dump text."""

import pytest

import dumps
import volrun

EXITED = [d for d in dumps.list_dumps() if "exit" in dumps.load_truth(d) and not dumps.scheduler_live(d)]
pytestmark = pytest.mark.skipif(not EXITED, reason="no dump of a scheduler that exited (KTSTR_DUMPS)")


def _walk(rows):
    for r in rows:
        yield r
        yield from _walk(r.get("__children") or [])


def exit_rows(name):
    res = volrun.run_vol(name, "linux.ktstr.scxstate")
    assert res.rc == 0, res.stderr
    return [r for r in _walk(res.rows) if r["Section"] == "exit"]


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
        assert values(rows, obj, "reason") == [uei["reason"]] == [klog["disabled_reason"]], obj
        assert values(rows, obj, "msg") == [uei["msg"]] == [klog["msg"]], obj


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
    text = truth["dump_text"]["text"]
    lines = [r["Value"] for r in rows if r["Object"] == ops and r["Key"].startswith("dump[")]
    assert lines == text.rstrip("\n").split("\n")
    assert values(rows, ops, "dump") == [f"{len(lines)} lines, {truth['dump_text']['length']} bytes"]
