"""linux.ktstr.stacks on the real dumps: on x86_64/scx_sdt_la57 the stacks of the sleeping
threads (S, I, D) equal truth ``task_stacks`` (``/proc/PID/task/TID/stack`` in the guest) frame
by frame for at least 95% of them; on the other full dumps (x86-64 4-level, arm64 LPA2 and
VA48: no stack truth) at least 95% of the walks end where a kernel stack ends (ret_from_fork
for kernel threads, the syscall/exception entry for user tasks); BPF code is named with its
program id and source line; each CPU unwinds from its registers (truth's freeze-time registers,
the real vmcore's notes). scxstate's exit backtrace is checked in test_scx_exit_e2e.py. Skips
without KTSTR_DUMPS."""

import functools
from collections import defaultdict

import pytest

import dumps
import volrun

TRUTH_DUMP = "x86_64/scx_sdt_la57"
PLAUSIBLE_ENDS = ("ret_from_fork", "ret_from_fork_asm", "entry_SYSCALL_64_after_hwframe",
                  "el0t_64_sync", "el0t_64_irq", "common_startup_64", "start_secondary",
                  "secondary_startup_64_no_verify", "rest_init", "kernel_init")
OTHER_DUMPS = [d for d in dumps.list_dumps() if d != TRUTH_DUMP
               and d not in ("x86_64/scx_qmap_exit_error", "x86_64/scx_sdt_alloc")]   # minimized


def _skip_without(name):
    if dumps.dumps_root() is None:
        pytest.skip("KTSTR_DUMPS is unset (real-dump tests need it)")
    if name not in dumps.list_dumps():
        pytest.skip(f"{name} is not in the dumps folder")


@functools.lru_cache(maxsize=None)
def stacks_of(name):
    """{tid: (frames, note)} from one vol run."""
    rows = volrun.run_vol(name, "linux.ktstr.stacks").check().rows
    out = defaultdict(lambda: ([], ""))
    for r in rows:
        if r["Frame"] is None:
            out[r["TID"]] = ([], r["Note"])
        else:
            out[r["TID"]][0].append(r["Symbol"])
    return dict(out)


def test_sleeping_threads_equal_proc_stacks():
    _skip_without(TRUTH_DUMP)
    truth = [s for s in dumps.load_truth(TRUTH_DUMP).get("task_stacks", []) if s["state"] in "SID"]
    if not truth:
        pytest.skip("no task_stacks in truth.json")
    got = stacks_of(TRUTH_DUMP)
    equal = [s["tid"] for s in truth if s["tid"] in got and got[s["tid"]][0] == s["frames"]]
    differ = {s["tid"]: (got.get(s["tid"]), s["frames"]) for s in truth if s["tid"] not in equal}
    assert len(equal) >= 0.95 * len(truth), differ
    for tid, (frames, note) in got.items():
        if tid in differ:
            assert "stopped:" in note or "running" in note


@pytest.mark.slow
@pytest.mark.parametrize("name", OTHER_DUMPS or ["<no dumps>"])
def test_walks_end_at_a_stack_end(name):
    _skip_without(name)
    got = stacks_of(name)
    walked = {t: v for t, v in got.items() if "running on CPU" not in v[1]}
    plausible = [t for t, (frames, _) in walked.items()
                 if frames and frames[-1].split("+")[0] in PLAUSIBLE_ENDS]
    assert len(plausible) >= 0.95 * len(walked), {t: v for t, v in walked.items() if t not in plausible}


@pytest.mark.slow
def test_bpf_code_named_with_program_id_and_source_line():
    """Every scheduler program's JIT image (bpf_kallsyms) names a frame inside it with its
    program id (truth progs) and a file:line:col from its line_info."""
    _skip_without(TRUTH_DUMP)
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "helpers"))
    from vol_kctx import open_kctx
    from volatility3_ktstr.unwind import bpf_frame_text, code_names

    kernel = open_kctx(TRUTH_DUMP)
    ids = {p["id"] for p in dumps.load_truth(TRUTH_DUMP)["progs"]}
    progs = [s for s in code_names(kernel).bpf_symbols() if s.aux]
    assert progs
    for s in progs:
        text = bpf_frame_text(kernel, s.start + 1 + (s.end - s.start) // 2)
        assert text.startswith(s.name + "+0x"), text
        prog_id = int(text.split("(prog ")[1].split(",")[0])
        assert prog_id in ids, text
        assert ".bpf.c:" in text, text


@pytest.mark.slow
@pytest.mark.parametrize("name", [TRUTH_DUMP, "x86_64/scx_sdt"])
def test_cpu_stacks_from_the_registers_at_the_freeze(name):
    """QEMU's registers at ``stop`` (truth ``registers``: rip, rsp) unwind each CPU's current
    task (rq->curr, idle here) down to the CPU's start (common_startup_64)."""
    _skip_without(name)
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "helpers"))
    from vol_kctx import open_kctx
    from volatility3_ktstr import unwind
    from volatility3_ktstr.unwind.cpus import cpu_ranges, running_tasks

    kernel = open_kctx(name)
    curr = running_tasks(kernel)
    regs = dumps.load_truth(name)["registers"]
    assert regs and all(r["cpu"] in curr for r in regs)
    for r in regs:
        st = unwind.cpu_stack(kernel, {"rip": r["rip"], "rsp": r["rsp"]},
                              extra=cpu_ranges(kernel, r["cpu"], curr[r["cpu"]]))
        frames = [unwind.frame_text(kernel, f) for f in st.frames]
        assert st.ok, (frames, st.stop)
        assert frames[-1].startswith("common_startup_64+"), frames
        assert any(f.startswith("do_idle+") for f in frames), frames


@pytest.mark.slow
@pytest.mark.parametrize("name", dumps.list_vmcores() or ["<no vmcore>"])
def test_vmcore_cpus_unwound_from_their_notes(name):
    """The real vmcore carries each CPU's registers (NT_PRSTATUS + QEMU notes): every CPU row
    unwinds from them to the CPU's start; tasks whose saved frame makedumpfile left out say so."""
    if dumps.dumps_root() is None or name not in dumps.list_vmcores():
        pytest.skip("no real vmcore")
    rows = volrun.run_vol(dumps.dump_path(name), "linux.ktstr.stacks", name=name).check().rows
    cpu_rows = [r for r in rows if r["TID"] is None and r["Frame"] is None and r["CPU"] is not None]
    assert cpu_rows and all("NT_PRSTATUS" in r["Note"] for r in cpu_rows)
    for r in cpu_rows:
        frames = [x["Symbol"] for x in rows if x["TID"] is None and x["CPU"] == r["CPU"]
                  and x["Frame"] is not None]
        assert frames and frames[-1].startswith("common_startup_64+"), (r, frames)
    tasks = [r for r in rows if r["TID"] is not None and r["Frame"] is None]
    for r in tasks:
        assert "stopped:" in r["Note"] or "running" in r["Note"]


def _kctx(name):
    _skip_without(name)
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "helpers"))
    from vol_kctx import open_kctx

    return open_kctx(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["x86_64/scx_sdt", "arm64/scx_sdt_lpa2"])
def test_per_cpu_stacks_sized_by_the_kernel(name):
    """Every CPU's IRQ stack and x86-64 exception (IST) and entry stacks / arm64 overflow stack are
    found, sized from the kernel's types and symbols, and mapped in the dump."""
    from volatility3_ktstr.unwind.cpus import cpu_stacks

    kernel = _kctx(name)
    lay = kernel.layout
    for cpu in range(len(kernel.per_cpu_offsets())):
        stacks = {s.what: s for s in cpu_stacks(kernel, cpu)}
        if kernel.arch == "arm64":
            want = {"IRQ stack": kernel.symbol("__end_init_stack") - kernel.symbol("__start_init_stack"),
                    "overflow stack": kernel.symbol_size("overflow_stack")}
            assert stacks["overflow stack"].size_source == "BTF type of overflow_stack"
        else:
            want = {"IRQ stack": kernel.symbol_size("irq_stack_backing_store")}
            want.update({f"{n} exception stack": lay.field("cea_exception_stacks", f"{m}_stack").size
                         for n, m in (("#DF", "DF"), ("NMI", "NMI"), ("#DB", "DB"), ("#MC", "MCE"))})
            want["entry stack"] = lay.field("entry_stack", "stack").size
        for what, size in want.items():
            s = stacks[what]
            assert s.hi - s.lo == size, (cpu, s)
            kernel.reader.read(s.hi - 8, 8)          # mapped (raises ReadError if not)


@pytest.mark.slow
def test_trampolines_and_dispatchers_named_with_what_they_serve():
    """On the zoo dump each fentry/fexit/LSM attachment's trampoline names the function it
    traces (truth links' zoo_target) with the program kinds on it, and the XDP dispatcher its
    function."""
    name = "x86_64/scx_sdt_zoo"
    kernel = _kctx(name)
    from volatility3_ktstr.unwind import bpf_frame_text, code_names

    texts = [bpf_frame_text(kernel, s.start + 1) for s in code_names(kernel).bpf_symbols() if not s.aux]
    serves = [t.split(" (", 1)[1] for t in texts if " (" in t]
    links = dumps.load_truth(name).get("links", [])
    kinds = {"trace_fentry": "fentry", "trace_fexit": "fexit", "lsm_mac": None}
    checked = 0
    for link in links:
        if link.get("attach_type") not in kinds:
            continue
        func = link["zoo_target"].split(":", 1)[1]
        func = f"bpf_lsm_{func}" if link["attach_type"] == "lsm_mac" else func
        hit = [s for s in serves if s.startswith(f"trampoline of {func}:")]
        assert hit, (link, serves)
        kind = kinds[link["attach_type"]]
        assert kind is None or f"{kind} 1" in hit[0], (link, hit)
        checked += 1
    assert checked >= 3
    if any(link.get("type_name") == "xdp" for link in links):
        assert any(s.startswith("dispatcher of bpf_dispatcher_xdp_func, ") for s in serves), serves
    # threads sleeping in a traced function (the zoo's fexit on hrtimer_nanosleep) have the
    # trampoline on their stack: named with what it traces, the walk going on past it
    from volatility3_ktstr.kds import DamageLog
    from volatility3_ktstr.unwind import task_stack
    from volatility3_ktstr.views.stacks import _tasks

    names = code_names(kernel)
    through = 0
    for t in _tasks(kernel, DamageLog()):
        st = task_stack(kernel, t.kva)
        hits = [names.name(f.ip) for f in st.frames if names.name(f.ip).kind == "bpf_trampoline"]
        if hits:
            through += 1
            assert all(h.serves.startswith("trampoline of ") for h in hits), hits
            assert st.ok and st.frames[-1] != st.frames[0], st.stop
    fexit = [link for link in links if link.get("attach_type") == "trace_fexit"]
    assert through or not fexit
