"""A dump seen before stacks without scanning it (layers/stackers.py: remembered hits).

On the real dumps: the first stacking scans and remembers where VMCOREINFO and the banners
were; the second reads only there (scan_image is made to fail) and gets the same layer. On a
4-level x86 dump the second run builds what Volatility's own VMCOREINFO stacker builds (same
class, same configuration), which otherwise scans 360 MB for the banner."""

import json
import os

import pytest

import dumps
import volrun


def _dumps(levels=None, arch=None):
    out = []
    for name in dumps.list_dumps():
        truth = dumps.load_truth(name)
        if arch and truth["run"]["arch"] != arch:
            continue
        if levels and truth["paging"].get("levels") != levels:
            continue
        out.append(name)
    return out or [pytest.param(None, marks=pytest.mark.skip(reason="no such dump under KTSTR_DUMPS"))]


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Our stacker with a fake identifier cache and an empty Volatility cache folder."""
    from volatility3_ktstr.layers import stackers

    def setup(name):
        isf = next((volrun.kernel_isf_dir(name) / "linux").glob("*.json.xz"))
        banner = (dumps.load_truth(name)["kernel"]["banner"] + "\n").encode() + b"\0"
        banners = {banner: isf.as_uri()}

        class Cache:
            def get_identifier_dictionary(self, operating_system=None):
                return banners

        from volatility3.framework.automagic import symbol_cache

        monkeypatch.setattr(symbol_cache, "load_cache_manager", lambda *a, **k: Cache())
        monkeypatch.setattr(stackers.constants, "CACHE_PATH", str(tmp_path))
        monkeypatch.delenv(stackers.PHYS_BASE_ENV, raising=False)
        return banner

    return setup


def _file_layer(name):
    from volatility3.framework import contexts
    from volatility3.framework.layers import physical

    ctx = contexts.Context()
    ctx.config["base.location"] = dumps.dump_path(name).as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "base", "base"))
    return ctx


def _no_scan(monkeypatch, stackers):
    def fail(*a, **k):
        raise AssertionError("scanned the image")

    monkeypatch.setattr(stackers, "scan_image", fail)


def _config(layer):
    return {k: layer.config.get(k) for k in ("page_map_offset", "kernel_virtual_offset", "kernel_banner",
                                             "arm64_va_bits", "arm64_granule", "page_map_offset_kernel")}


def _new_layer_dumps():
    out = [n for n in dumps.list_dumps() if dumps.load_truth(n)["run"]["arch"] != "x86_64"
           or dumps.load_truth(n)["paging"].get("levels") == 5]
    return out or [pytest.param(None, marks=pytest.mark.skip(reason="no LA57/arm64 dump"))]


@pytest.mark.parametrize("name", _new_layer_dumps())
def test_la57_arm64_second_stacking_reads_only_remembered_offsets(name, env, monkeypatch):
    from volatility3_ktstr.layers import stackers

    env(name)
    first = stackers.KtstrLinuxStacker.stack(_file_layer(name), "base")
    assert first is not None
    _no_scan(monkeypatch, stackers)
    second = stackers.KtstrLinuxStacker.stack(_file_layer(name), "base")
    assert type(second) is type(first) and _config(second) == _config(first)


@pytest.mark.parametrize("name", _dumps(levels=4, arch="x86_64"))
def test_4level_second_stacking_is_volatility_s_layer_without_scans(name, env, monkeypatch):
    from volatility3.framework.automagic import linux as vol_linux
    from volatility3.framework.symbols.linux.extensions import network  # noqa: F401 (vol imports it)

    from volatility3_ktstr.layers import autoisf
    from volatility3_ktstr.layers import stackers

    banner = env(name)
    path = str(dumps.dump_path(name))
    # First run: ours leaves 4-level to Volatility (and remembers the VMCOREINFO offset); the
    # automatic-ISF stacker remembers the file's banner.
    assert stackers.KtstrLinuxStacker.stack(_file_layer(name), "base") is None
    autoisf.remember_banner(path, banner)
    stock_ctx = _file_layer(name)
    stock = vol_linux.LinuxIntelVMCOREINFOStacker.stack(stock_ctx, "base")
    assert stock is not None

    _no_scan(monkeypatch, stackers)
    ours = stackers.KtstrLinuxStacker.stack(_file_layer(name), "base")
    assert type(ours) is type(stock)
    assert ours.name == stock.name and ours.config_path == stock.config_path
    assert dict(ours.config) == dict(stock.config)
    assert ours.metadata.get("os") == "Linux"

    # Another file identity (rewritten dump): nothing is trusted, the normal path runs.
    hints = stackers._load_hints()
    hints[path]["key"][1] += 1
    with open(os.path.join(stackers.constants.CACHE_PATH, stackers.HINTS_FILE), "w") as f:
        json.dump(hints, f)
    assert stackers.recall_hits(_file_layer(name), "base") is None


@pytest.mark.parametrize("name", _dumps(levels=4, arch="x86_64"))
def test_4level_without_a_remembered_banner_leaves_it_to_volatility(name, env, monkeypatch):
    from volatility3_ktstr.layers import stackers

    env(name)
    assert stackers.KtstrLinuxStacker.stack(_file_layer(name), "base") is None
    assert stackers.recall_hits(_file_layer(name), "base")  # hits remembered
    assert stackers.KtstrLinuxStacker.stack(_file_layer(name), "base") is None  # no banner memo
