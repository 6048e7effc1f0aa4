"""End to end: the ISF built from the dump alone (`ktstr-isf --from-dump`) and the one built from
the kernel's btf.raw + System.map give identical plugin output.

x86_64/scx_sdt always; every dump with KTSTR_E2E_ALL=1 (each vol run takes a while).
"""

import os

import pytest

import dumps
import volrun

ALL = os.environ.get("KTSTR_E2E_ALL") == "1"
DUMPS = [d for d in dumps.list_dumps() if ALL or d == "x86_64/scx_sdt"]
PLUGINS = ["linux.pslist", "linux.ktstr.maps", "linux.ktstr.localstorage"]
QUICK_PLUGIN = "linux.ktstr.maps"     # the quick tier's check; the others are slow
pytestmark = pytest.mark.skipif(not DUMPS, reason="KTSTR_DUMPS is unset or holds no x86_64/scx_sdt")

_built = {}


def fromdump_isf_dir(name):
    """Symbol dir with the ISF made by `ktstr-isf --from-dump` (cached per generator code)."""
    if name in _built:
        return _built[name]
    from volatility3_ktstr.isf import cli

    d = volrun.CACHE / f"fromdump-{volrun.code_digest()}" / name.replace("/", "_")
    out = d / "linux" / "kernel-from-dump.json.xz"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"tmp{os.getpid()}.json.xz")
        assert cli.main(["--from-dump", str(dumps.dump_path(name)), "-o", str(tmp)]) == 0
        os.replace(tmp, out)
    _built[name] = d
    return d


def plugin_available(plugin):
    mod = plugin.split(".")[-1]
    return plugin == "linux.pslist" or (volrun.KTSTR_PLUGIN_DIR / f"{mod}.py").exists()


@pytest.mark.parametrize("plugin", [p if p == QUICK_PLUGIN else pytest.param(p, marks=pytest.mark.slow)
                                    for p in PLUGINS])
@pytest.mark.parametrize("name", DUMPS)
def test_same_output_as_system_map_isf(name, plugin):
    if not plugin_available(plugin):
        pytest.skip(f"{plugin} is not in the tree yet")
    ref = volrun.run_vol(name, plugin).check()
    got = volrun.run_vol(dumps.dump_path(name), plugin, symbol_dirs=[fromdump_isf_dir(name)]).check()
    assert ref.rows, f"{plugin} gave no rows with the System.map ISF"
    assert got.rows == ref.rows


@pytest.mark.slow   # a fresh Volatility cache: the ISF is carved, written and validated
@pytest.mark.parametrize("name", DUMPS[:1])
def test_vol_without_any_isf_builds_one_once(name, tmp_path):
    """A fresh Volatility cache and no -s: the autoisf stacker builds the ISF from the dump,
    says so once, and pslist equals the System.map ISF's output; the next run reuses it."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    dump = dumps.dump_path(name)
    first = volrun.run_vol(dump, "linux.pslist", env=env).check()
    assert "building one from the image" in first.stderr and "wrote" in first.stderr
    written = list((tmp_path / "xdg" / "volatility3" / "symbols" / "linux").glob("*.json.gz"))
    assert len(written) == 1
    ref = volrun.run_vol(name, "linux.pslist").check()
    assert first.rows == ref.rows
    again = volrun.run_vol(dump, "linux.pslist", env=env).check()
    assert "building one" not in again.stderr
    assert again.rows == ref.rows
