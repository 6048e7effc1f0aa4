"""QEMU-shaped kdump files of the real dumps print exactly what the raw dumps print.

A real arm64 QEMU kdump is not in the shared dumps, so the case is written from the raw dumps
in QEMU's format (tests/dumps.py ``qemu_kdump_of``: 64 KiB blocks, pfns from physical 0, the
lowest RAM address as phys_base, utsname empty with machine "Unknown", each vCPU's notes as
QEMU writes them per architecture, no VMCOREINFO, zlib pages; plain and flattened). The arm64
files find their kernel by the scan raw dumps use (QEMU writes no TTBR1/TCR), the x86-64 ones
(64 KiB blocks: a QEMU whose target page size is not 4 KiB) from CR3/CR4 in QEMU's CPU state.
One run in the quick tier, every plugin on every form in the slow tier.
"""

import json

import pytest

import dumps
import volrun

PLUGINS = ["linux.pslist"] + volrun.ktstr_plugins()
QUICK = ("arm64/scx_sdt_va48@qemu-flat", "linux.ktstr.scxtasks")


def _params():
    out = []
    for name in dumps.qemu_variants():
        for plugin in PLUGINS:
            marks = () if (name, plugin) == QUICK else (pytest.mark.slow,)
            out.append(pytest.param(name, plugin, marks=marks, id=f"{name}-{plugin}"))
    return out or [pytest.param(None, None, marks=pytest.mark.skip(reason="KTSTR_DUMPS is not set"))]


@pytest.mark.parametrize("name, plugin", _params())
def test_plugin_prints_on_the_qemu_kdump_what_it_prints_on_the_raw_dump(name, plugin):
    base = dumps.base_name(name)
    kd = volrun.run_vol(dumps.dump_path(name), plugin, name=base)
    raw = volrun.run_vol(base, plugin)
    assert raw.rc == 0, raw.stderr[-2000:]
    assert kd.rc == raw.rc, kd.stderr[-2000:]
    if plugin == "linux.ktstr.stacks":
        # the one thing a kdump has that a raw dump lacks: each vCPU's registers (QEMU's notes), so
        # the stacks of the CPUs and of the tasks running on them are the file's own
        kd_rows, raw_rows = _without_cpu_stacks(kd.stdout), _without_cpu_stacks(raw.stdout)
        assert kd_rows == raw_rows, f"{plugin} on {name}: task stacks differ from the raw dump's"
        assert sum(r["CPU"] is not None and r["PID"] is None for r in json.loads(kd.stdout)) == \
            dumps.load_truth(base)["run"]["smp"], "one CPU row per vCPU note"
        return
    assert kd.stdout == raw.stdout, (
        f"{plugin} on {name}: {len(kd.rows)} rows, raw dump {len(raw.rows)}\n{kd.stderr[-1500:]}")


def _without_cpu_stacks(stdout):
    """linux.ktstr.stacks rows without the CPUs' stacks and those of the tasks running on them
    (both come from the file's CPU registers, which raw dumps do not have)."""
    return [r for r in json.loads(stdout) if r["CPU"] is None and not any(
        w in (r["Note"] or "") for w in ("running on CPU", "registers"))]


def test_qemu_kdump_form_is_what_qemu_writes():
    """The file under test has QEMU's shape (so the check above is about that shape)."""
    if not dumps.qemu_variants():
        pytest.skip("KTSTR_DUMPS is not set")
    from volatility3_ktstr import dumpfile
    from volatility3_ktstr.dumpfile import notes

    name = QUICK[0]
    with dumpfile.open_image(str(dumps.dump_path(name))) as img:
        assert img.flattened and img.block_size == 65536 and img.utsname["machine"] == "Unknown"
        assert img.machine == "aarch64" and not img.vmcoreinfo_texts()
        assert img.sub_phys_base == 0x40000000 and img.max_mapnr == 0x80000000 // 65536
        assert len(notes.cpu_states(img)) == dumps.load_truth(name)["run"]["smp"]
        assert img.compression == "zlib"


@pytest.mark.slow
def test_kdump_that_names_no_machine_is_tried_not_refused(tmp_path):
    """No utsname machine, no notes, no VMCOREINFO: nothing in the file says what it is, so the
    stacker tries each architecture on what memory holds and keeps the one whose kernel it
    finds (here arm64, by the scan raw dumps use)."""
    from helpers import kdump as kdumpbuilder
    from volatility3_ktstr import dumpfile

    name = "arm64/scx_sdt_va48"
    if name not in dumps.list_dumps():
        pytest.skip("KTSTR_DUMPS is not set")
    truth = dumps.load_truth(name)
    ranges = dumps.ram_ranges(truth)
    path = kdumpbuilder.from_raw(dumps.dump_path(name), tmp_path / "bare.kdump", ranges,
                                 phys_base=truth["memory"].get("dump_raw_phys_base", 0), codec="zlib",
                                 block_size=65536, qemu=True, sub_phys_base=min(s for s, _e in ranges))
    with dumpfile.open_image(str(path)) as img:
        assert img.machine is None and not img.notes
    kd = volrun.run_vol(path, "linux.ktstr.scxtasks", name=name)
    raw = volrun.run_vol(name, "linux.ktstr.scxtasks")
    assert kd.rc == raw.rc == 0 and kd.stdout == raw.stdout, kd.stderr[-1500:]
