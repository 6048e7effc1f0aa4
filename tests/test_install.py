"""Installation: after `pip install .` and after `pip install -e .` into a fresh venv, a plain
`vol -h` (no -p) lists our plugins; the .pth does not import volatility3 at Python start;
plugin names are not substrings of each other (vol picks plugins by substring)."""

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import volrun

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = volrun.KTSTR_PLUGIN_DIR


def plugin_names():
    """Full names vol lists (linux.ktstr.<module>.<Class>) of the plugin classes in the tree."""
    return [f"linux.ktstr.{module}.{cls}" for module, cls in volrun.plugin_classes()]


def test_plugin_names_are_not_substrings_of_each_other():
    names = plugin_names()
    assert names, f"no plugin class found under {PLUGIN_DIR}"
    for a in names:
        for b in names:
            assert a == b or a not in b, f"{a} is a substring of {b}: `vol {a}` is ambiguous"
        short = a.rsplit(".", 1)[0]
        hits = [b for b in names if short in b]
        assert hits == [a], f"`vol {short}` matches {hits}"
    modules = [n.rsplit(".", 2)[1] for n in names]
    assert len(set(modules)) == len(modules), "one plugin class per module"


def test_no_init_in_plugin_namespace_dirs():
    # An __init__.py in plugins/linux hides Volatility's own Linux plugins.
    assert not (REPO / "volatility3_ktstr" / "plugins" / "linux" / "__init__.py").exists()
    assert not (PLUGIN_DIR / "__init__.py").exists()


def copy_tree(dst):
    """The working tree as git sees it (tracked + untracked, not ignored), without build
    leftovers: building in the repo itself would leave build/ and *.egg-info behind."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        if rel.startswith((".venv/", "build/")) or ".egg-info/" in rel:
            continue
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory):
    return copy_tree(tmp_path_factory.mktemp("src"))


def fresh_venv(path):
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin"


def run(argv, **kw):
    env = dict(os.environ)
    for var in ("PYTHONPATH", "VOLATILITY3_KTSTR_DISABLE", "VIRTUAL_ENV"):
        env.pop(var, None)
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env,
                          timeout=600, **kw)


@pytest.mark.install
@pytest.mark.parametrize("mode", ["regular", "editable"])
def test_install_and_vol_lists_plugins(mode, source_copy, tmp_path):
    bin_dir = fresh_venv(tmp_path / "venv")
    args = ["-e", str(source_copy)] if mode == "editable" else [str(source_copy)]
    proc = run([bin_dir / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    site = Path(run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    assert (site / "volatility3_ktstr.pth").is_file(), sorted(p.name for p in site.iterdir())

    # The .pth runs at every start but must not import volatility3 (0.1-0.25 s each time).
    probe = run([bin_dir / "python", "-c", "import sys; print('volatility3' in sys.modules, "
                 "any(type(f).__name__ == '_PluginPathFinder' for f in sys.meta_path))"], cwd=tmp_path)
    assert probe.stdout.split() == ["False", "True"], probe.stderr

    helptext = run([bin_dir / "vol", "-h"], cwd=tmp_path)
    assert helptext.returncode == 0, helptext.stderr
    listed = sorted(set(re.findall(r"^\s+(linux\.ktstr\.\S+)", helptext.stdout, re.M)))
    expected = plugin_names()
    assert expected, "no plugin modules in the tree yet"
    assert listed == expected
    # Every short name picks exactly one plugin among all vol lists, core plugins included.
    all_names = re.findall(r"^\s{4}([a-z][\w.]+\.[A-Z]\w*)\s", helptext.stdout, re.M)
    for name in expected:
        short = name.rsplit(".", 1)[0]
        assert [n for n in all_names if short in n] == [name]
    failed = re.search(r"could not be loaded.*", helptext.stdout + helptext.stderr, re.S | re.I)
    assert not failed or "ktstr" not in failed.group(0), failed.group(0)
    # Volatility's own Linux plugins are still there (no __init__.py shadowing them).
    assert "linux.pslist.PsList" in all_names

    if mode == "regular":
        # The installed copy is used, not the source tree: plugins live in site-packages.
        where = run([bin_dir / "python", "-c", "import volatility3_ktstr._plugin_path as p; print(p.PLUGINS_DIR)"],
                    cwd=tmp_path).stdout.strip()
        assert where.startswith(str(site))
    proc = run([bin_dir / "python", "-m", "pip", "uninstall", "-y", "-q", "volatility3-ktstr"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (site / "volatility3_ktstr.pth").exists()
