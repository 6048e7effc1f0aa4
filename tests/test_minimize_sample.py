"""The bundled sample (samples/): its manifest, ktstr-sample, and the plugins' output on it.

samples/<name>.expected.json.xz holds each plugin's rows on the *full* dump, recorded when the
sample was built; the plugins must print the same rows on the sample. If a plugin's output
changes on purpose, rebuild the sample: tools/make_sample.sh (needs KTSTR_DUMPS).
"""

import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest

import volrun
from volatility3_ktstr import minimize as m
from volatility3_ktstr import sample

REPO = Path(__file__).resolve().parents[1]
NAME = sample.DEFAULT_SAMPLE
REBUILD = "if a plugin's output changed on purpose, rebuild the sample: tools/make_sample.sh"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("xdg")


@pytest.fixture(scope="module")
def unpacked(cache):
    """(sample path, installed ISF paths): default locations under a fresh XDG_CACHE_HOME."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        path = sample.unpack(NAME)
        isfs = sample.install_isf(NAME)
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME")
        else:
            os.environ["XDG_CACHE_HOME"] = old
    return path, isfs


def test_sample_files_are_small_and_described():
    info = sample.manifest(NAME)
    xz = REPO / "samples" / info["file"]
    assert xz.is_file() and xz.stat().st_size < 8 << 20
    assert info["format"] == "elf" and info["runs"] and info["source"].endswith("dump.raw")
    assert sorted((REPO / "symbols" / "linux").glob("*.json.xz")), "the sample's ISF is missing"
    assert (REPO / "samples" / f"{NAME}.expected.json.xz").is_file()


def test_unpack_goes_to_the_cache_and_checks_the_hash(unpacked, cache):
    path, isfs = unpacked
    info = sample.manifest(NAME)
    assert path.parent == cache / "volatility3-ktstr" / "samples"
    assert path.stat().st_size == info["size"]
    assert all(p.parent == cache / "volatility3" / "symbols" / "linux" for p in isfs)
    src = m.open_source(str(path))
    assert len(src.loads) == info["segments"]
    assert sum(n for _, _, n in src.loads) == info["pages"] * m.PAGE


def test_unpack_replaces_a_damaged_copy(unpacked):
    path, _ = unpacked
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert sample.unpack(NAME, cache=path.parent) == path
    assert path.read_bytes() == data


def test_cli_prints_the_path(cache, tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    out = subprocess.run([sys.executable, "-m", "volatility3_ktstr.sample", "--symbols-dir",
                          str(tmp_path / "sym")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_file()
    assert list((tmp_path / "sym" / "linux").glob("*.json.xz"))
    bad = subprocess.run([sys.executable, "-m", "volatility3_ktstr.sample", "nope"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("ktstr-sample: error: ")
    assert bad.stderr.strip().count("\n") == 0


def _expected():
    return json.loads(lzma.decompress((REPO / "samples" / f"{NAME}.expected.json.xz").read_bytes()))


# README command 1's plugin: the quick tier runs it; the other plugins are the slow tier's.
QUICK_SPEC = "linux.ktstr.sdtalloc.SdtAlloc"


def check_plugins_on_the_sample(unpacked, expected):
    path, isfs = unpacked
    runs = [m.Run.parse(spec) for spec in expected]
    # volrun's persistent Volatility cache (ISF validation is paid once), the ISF via -s.
    results = m.run_plugins(str(path), runs, record=False, jobs=2, env=volrun.vol_env(),
                            symbol_dirs=[isfs[0].parents[1]])
    diffs = {}
    for spec, got in zip(expected, results):
        want = m.RunResult(m.Run.parse(spec), expected[spec]["rc"],
                           json.dumps(expected[spec]["rows"]), "")
        diff = m.compare_outputs(want, got)
        if diff:
            diffs[spec] = diff + ("" if got.rc == 0 else f" ({m._last_line(got.stderr)})")
    assert not diffs, f"{REBUILD}: {json.dumps(diffs, indent=1)}"


def _quick_spec(expected):
    return QUICK_SPEC if QUICK_SPEC in expected else next(iter(expected))


def test_readme_plugin_prints_on_the_sample_what_it_prints_on_the_full_dump(unpacked):
    expected = _expected()
    spec = _quick_spec(expected)
    check_plugins_on_the_sample(unpacked, {spec: expected[spec]})


@pytest.mark.slow
def test_plugins_print_on_the_sample_what_they_print_on_the_full_dump(unpacked):
    """Every other recorded plugin run (9 vol runs in all with the quick one)."""
    expected = _expected()
    quick = _quick_spec(expected)
    check_plugins_on_the_sample(unpacked, {k: v for k, v in expected.items() if k != quick})
