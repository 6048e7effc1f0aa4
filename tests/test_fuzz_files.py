"""Hostile files through the real `vol` CLI: truncated dumps and corrupt ISF files.

Uses the bundled sample (a real minimized dump, samples/) so each run takes seconds. What a user
may see is documented in README ("Errors and exit status"): exit 0 with rows; exit 2 and one
line `linux.ktstr.<plugin>: error: ...` when something the plugin needs is missing or
unreadable; exit 1 with Volatility's own "Unable to validate the plugin requirements" when the
file cannot be opened as a Linux kernel at all. Never a traceback.
"""

import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest

import volrun

pytestmark = pytest.mark.fuzz      # hostile files, each through a real `vol` run

REPO = Path(__file__).resolve().parents[1]
# Volatility validates a changed ISF with jsonschema (about a minute each); the ISFs here are
# broken on purpose, so the check is skipped in these runs by hiding jsonschema.
_VOL = ("import sys; sys.modules['jsonschema'] = None; sys.argv[0] = 'vol'; "
        "from volatility3.cli import main; main()")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("xdg")
    return dict(os.environ, XDG_CACHE_HOME=str(cache))


@pytest.fixture(scope="module")
def sample_path(env):
    out = subprocess.run([sys.executable, "-m", "volatility3_ktstr.sample"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return Path(out.stdout.strip())


def vol(env, dump, plugin, *args, symbols=None):
    argv = [sys.executable, "-c", _VOL, "-q", "-r", "json"]
    if symbols:
        argv += ["-s", str(symbols)]
    argv += ["-f", str(dump), plugin, *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("fraction", [0.0001, 0.3, 0.8, 0.97])
def test_truncated_dump(tmp_path, env, sample_path, fraction):
    data = sample_path.read_bytes()
    cut = tmp_path / "cut.elf"
    cut.write_bytes(data[:int(len(data) * fraction)])
    for plugin in ("linux.ktstr.sdtalloc", "linux.ktstr.maps"):
        volrun.check_documented(vol(env, cut, plugin), plugin)


def _write_isf(folder, isf):
    src = sorted((REPO / "symbols" / "linux").glob("*.json.xz"))[0]
    (folder / "linux").mkdir(parents=True)
    out = folder / "linux" / src.name
    out.write_bytes(lzma.compress(isf if isinstance(isf, bytes) else json.dumps(isf).encode(),
                                  preset=0))
    return folder


@pytest.fixture(scope="module")
def sample_isf():
    src = sorted((REPO / "symbols" / "linux").glob("*.json.xz"))[0]
    return json.loads(lzma.decompress(src.read_bytes()))


def test_truncated_isf_file(tmp_path, sample_path, sample_isf):
    text = json.dumps(sample_isf).encode()
    symbols = _write_isf(tmp_path / "sym", text[: len(text) // 3])
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    volrun.check_documented(vol(env, sample_path, "linux.ktstr.maps", symbols=symbols), "linux.ktstr.maps")


@pytest.mark.parametrize("section, name, plugin, expect", [
    ("user_types", "bpf_map", "linux.ktstr.maps", "struct bpf_map"),
    ("symbols", "map_idr", "linux.ktstr.sdtalloc", "'map_idr'"),
])
def test_isf_without_what_a_plugin_needs_names_it(tmp_path, sample_path, sample_isf, section, name,
                                                  plugin, expect):
    isf = dict(sample_isf, **{section: dict(sample_isf[section])})
    del isf[section][name]
    symbols = _write_isf(tmp_path / "sym", isf)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    out = vol(env, sample_path, plugin, symbols=symbols)
    volrun.check_documented(out, plugin)
    assert out.returncode == 2 and expect in out.stderr, out.stderr[-2000:]


# --- the containers themselves (helpers/containerfuzz.py) ---------------------------------------

from helpers import containerfuzz  # noqa: E402

CONTAINER_SEEDS = 3


@pytest.mark.parametrize("base_name", [b.name for b in containerfuzz.synthetic_bases()])
def test_damaged_containers_open_or_refuse_in_one_line(tmp_path, base_name):
    """Every kind of container damage on every container: no traceback, bounded time, one-line
    refusals, every page read or named, nothing lost outside the damage."""
    base = next(b for b in containerfuzz.synthetic_bases() if b.name == base_name)
    findings = []
    tallies = containerfuzz.run([base], CONTAINER_SEEDS, 1, str(tmp_path),
                                on_finding=lambda m, r, f: findings.append(f"{m.describe()}: {f}\n{r.message}"))
    assert not findings, "\n".join(findings[:5])
    assert all(t.mutants == CONTAINER_SEEDS for t in tallies.values())
    assert sum(t.pages_read for t in tallies.values()) > 0


def test_damaged_real_vmcore(tmp_path):
    import dumps

    names = dumps.list_vmcores()
    if not names:
        pytest.skip("KTSTR_DUMPS is not set or has no vmcore")
    base = containerfuzz.real_base(names[0], dumps.dump_path(names[0]), sample=128)
    findings = []
    containerfuzz.run([base], 2, 1, str(tmp_path),
                      on_finding=lambda m, r, f: findings.append(f"{m.describe()}: {f}\n{r.message}"))
    assert not findings, "\n".join(findings[:5])
