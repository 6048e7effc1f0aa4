"""LA57 / arm64 layers on the real dumps of $KTSTR_DUMPS, checked against truth.json.

Every dump whose truth.json says 5-level x86-64 paging or arm64 must give a `linux.pslist`
(stock Volatility plugin, no extra flags beyond the symbol dir) equal to truth.json's process
list.  Skips with a reason when KTSTR_DUMPS is unset or holds no such dump.
"""

import tempfile
from pathlib import Path

import pytest

import dumps
import volrun

REPO = Path(__file__).resolve().parents[1]


def _needs_new_layer(truth) -> bool:
    paging = truth.get("paging") or {}
    return truth["run"]["arch"] == "arm64" or paging.get("levels") == 5


def _dumps(pred):
    return [n for n in dumps.list_dumps() if pred(dumps.load_truth(n))]


NEW_LAYER_DUMPS = _dumps(_needs_new_layer)
FOUR_LEVEL_DUMPS = _dumps(lambda t: t["run"]["arch"] == "x86_64" and (t.get("paging") or {}).get("levels") == 4)


def _params(names, what):
    if names:
        return dumps.smoke_first(names)
    reason = ("KTSTR_DUMPS is unset or not a directory" if dumps.dumps_root() is None
              else f"no {what} dump under {dumps.dumps_root()}")
    return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]


def task_comm(task) -> str:
    """What task_struct.comm holds for a truth.json task (older truth files lack task_comm)."""
    if "task_comm" in task:
        return task["task_comm"]
    comm = task["comm"]
    # /proc adds "-<wq>"/"+<wq>" to kworker names; rescuers are literally "kworker/R-<wq>".
    if comm.startswith("kworker/") and not comm.startswith("kworker/R-"):
        for sep in "-+":
            comm = comm.split(sep, 1)[0]
    return comm[:15]


def truth_processes(truth):
    return sorted((t["tid"], t["ppid"], task_comm(t)) for t in truth["tasks"] if t["tid"] == t["tgid"])


def _banner_cache(name):
    """{banner bytes: ISF url} for the dump's kernel, as Volatility's identifier cache holds it."""
    isf_dir = volrun.kernel_isf_dir(name)
    isf = next((isf_dir / "linux").glob("*.json.xz"))
    banner = (dumps.load_truth(name)["kernel"]["banner"] + "\n").encode() + b"\0"
    return {banner: isf.as_uri()}


def _file_layer(name):
    from volatility3.framework import contexts
    from volatility3.framework.layers import physical

    ctx = contexts.Context()
    ctx.config["base.location"] = dumps.dump_path(name).as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "base", "base"))
    return ctx


def _fake_cache(monkeypatch, stackers, banners):
    class Cache:
        def get_identifier_dictionary(self, operating_system=None):
            return banners

    monkeypatch.setattr(stackers.symbol_cache, "load_cache_manager", lambda *a, **k: Cache())
    monkeypatch.delenv(stackers.PHYS_BASE_ENV, raising=False)
    # No scan hints or banner memo from earlier runs: these tests are about the first run.
    monkeypatch.setattr(stackers.constants, "CACHE_PATH", tempfile.mkdtemp(prefix="ktstr-cache-"))


def _check_layer(layer, truth):
    from volatility3_ktstr.layers import LinuxAArch64, LinuxIntel32eLA57

    ks = truth["kernel"]["kallsyms_runtime"]
    if truth["run"]["arch"] == "arm64":
        assert isinstance(layer, LinuxAArch64)
        assert layer.config["arm64_va_bits"] == truth["paging"]["va_bits"]
        assert layer.config["arm64_granule"] == truth["paging"]["page_size"]
        assert len(layer.walk_configs[0].levels) == truth["paging"]["pgtable_levels_in_use"]
    else:
        assert isinstance(layer, LinuxIntel32eLA57)
    assert layer.config["kernel_virtual_offset"] == truth["kernel"]["kaslr"]["kaslr_offset"]
    # The kernel image lands where /proc/iomem said ("Kernel code").  TRUTH.md calls that
    # _stext's PA on arm64, but the dumps show _text's: the linux_banner copy in RAM sits at
    # PA(_text) + (linux_banner - _text), and VMCOREINFO's kimage_voffset agrees.
    phys, _layer = layer.translate(ks["_text"])
    assert phys == truth["memory"]["kernel_image"]["kernel_code_phys"]
    # Every task_struct pointer from task storage holds that task's comm.
    sdt = truth.get("sdt") or {}
    comm_off = {"arm64": 0x930, "x86_64": 0xD10}[truth["run"]["arch"]]  # TRUTH.md "Facts verified"
    for entry in sdt.get("per_task", []):
        comm = layer.read(entry["task_struct"] + comm_off, 16).split(b"\0", 1)[0].decode()
        assert comm == task_comm({"comm": entry["comm"]}) or entry["comm"].startswith(comm)


@pytest.mark.parametrize("name", _params(NEW_LAYER_DUMPS, "LA57/arm64"))
def test_stacker_vmcoreinfo_path(name, monkeypatch):
    from volatility3_ktstr.layers import stackers

    truth = dumps.load_truth(name)
    _fake_cache(monkeypatch, stackers, _banner_cache(name))
    ctx = _file_layer(name)
    layer = stackers.KtstrLinuxStacker.stack(ctx, "base")
    assert layer is not None, f"{name}: no layer stacked"
    _check_layer(layer, truth)
    assert layer.config["kernel_banner"].rstrip("\n\0") == truth["kernel"]["banner"]


@pytest.mark.parametrize("name", _params(NEW_LAYER_DUMPS, "LA57/arm64"))
def test_stacker_isf_path(name, monkeypatch):
    """Without VMCOREINFO: configuration from the ISF symbols, the image and validation."""
    from volatility3_ktstr.layers import stackers

    truth = dumps.load_truth(name)
    banners = _banner_cache(name)
    _fake_cache(monkeypatch, stackers, banners)
    ctx = _file_layer(name)
    hits = [(off, text) for kind, off, text in stackers.scan_image(ctx, "base") if kind == "banner"]
    layer = stackers.KtstrLinuxStacker._from_isf(ctx, "base", hits, banners)
    assert layer is not None, f"{name}: ISF path found nothing"
    _check_layer(layer, truth)


@pytest.mark.parametrize("name", _params(FOUR_LEVEL_DUMPS, "4-level x86-64"))
def test_stacker_declines_4level_early(name, monkeypatch):
    """A 4-level x86 dump is left to Volatility's stackers after reading little of the file
    (the VMCOREINFO text says so early); how long that takes is bench/ material."""
    from volatility3_ktstr.layers import stackers

    _fake_cache(monkeypatch, stackers, _banner_cache(name))
    ctx = _file_layer(name)
    seen = []
    real_scan = stackers.scan_image

    def counting_scan(*a, **k):
        for hit in real_scan(*a, **k):
            seen.append(hit[1])
            yield hit

    monkeypatch.setattr(stackers, "scan_image", counting_scan)
    assert stackers.KtstrLinuxStacker.stack(ctx, "base") is None
    size = ctx.layers["base"].maximum_address + 1
    assert seen and max(seen) < size // 2, "decided only after scanning most of the dump"


@pytest.mark.parametrize("name", _params(NEW_LAYER_DUMPS, "LA57/arm64"))
def test_pslist_matches_truth(name):
    truth = dumps.load_truth(name)
    res = volrun.run_vol(name, "linux.pslist").check()
    got = sorted((r["PID"], r["PPID"], r["COMM"]) for r in res.rows if r["__depth"] == 0)
    want = truth_processes(truth)
    assert got == want, (
        f"{name}: pslist differs from truth.json\nmissing: {sorted(set(want) - set(got))}\n"
        f"extra: {sorted(set(got) - set(want))}")


@pytest.mark.parametrize("name", _params(FOUR_LEVEL_DUMPS, "4-level x86-64"))
def test_4level_layer_from_the_isf_at_the_first_banner(name, monkeypatch):
    """A 4-level x86 kernel's layer from its ISF at the banner the scan meets first (issue #28:
    on a big machine VMCOREINFO may sit far above the kernel image): the same root and KASLR
    shift as the VMCOREINFO in memory says, the layer Volatility's VMCOREINFO stacker builds."""
    from volatility3.framework.layers import intel

    from volatility3_ktstr import vmcoreinfo
    from volatility3_ktstr.layers import stackers

    truth = dumps.load_truth(name)
    banners = _banner_cache(name)
    _fake_cache(monkeypatch, stackers, banners)
    ctx = _file_layer(name)
    hits = list(stackers.scan_image(ctx, "base"))
    banner_hits = [(off, text) for kind, off, text in hits if kind == "banner"]
    info = next(i for i in (vmcoreinfo.parse(t) for k, _o, t in hits if k == "vmcoreinfo")
                if i is not None and i.get("KERNELOFFSET") is not None)
    layer = stackers.KtstrLinuxStacker._from_isf(ctx, "base", banner_hits, banners, early=True)
    assert type(layer) is intel.Intel32e
    assert layer.config["page_map_offset"] == vmcoreinfo.x86_page_table_root(info)
    assert layer.config["kernel_virtual_offset"] == info["KERNELOFFSET"] == truth["kernel"]["kaslr"]["kaslr_offset"]
    ks = truth["kernel"]["kallsyms_runtime"]
    assert layer.translate(ks["_text"])[0] == truth["memory"]["kernel_image"]["kernel_code_phys"]
