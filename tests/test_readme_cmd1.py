"""README command 1, run literally: a fresh venv in a fresh copy of the repo, `pip install .`,
then `vol -f "$(ktstr-sample)" linux.ktstr.sdtalloc` on the bundled sample.

HOME and XDG_CACHE_HOME point into the temp dir, so nothing is pre-cached: the sample must be
unpacked and its ISF installed by the command itself. pip keeps its configuration (local
wheel folders and indexes come from /etc and PIP_* variables, not HOME). The output must list
the sample's live allocations: the allocation indexes from the dump's truth.json when
KTSTR_DUMPS is set, else those recorded from the full dump when the sample was built.
"""

import json
import lzma
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SAMPLE = "scx_sdt-x86_64"
FENCE = re.compile(r"^```[ \t]*(?:sh|bash|shell|console)?[ \t]*\n(.*?)^```", re.M | re.S)


def first_command(text: str) -> str:
    """The first fenced code block of the README, as the shell will get it."""
    m = FENCE.search(text)
    if not m:
        pytest.fail("README.md has no fenced code block (command 1 must be the first one)")
    lines = [ln for ln in m.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return "\n".join(ln[2:] if ln.startswith("$ ") else ln for ln in lines)


def repo_files():
    """Files a fresh clone would have (tracked + untracked-but-not-ignored); None if no git."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"],
                             cwd=REPO, capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [p for p in out.decode().split("\0") if p and (REPO / p).is_file()]


def copy_repo(dst: Path) -> None:
    files = repo_files()
    if files is None:
        shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
        return
    for rel in files:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)


def clean_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KTSTR_", "VOLATILITY3_KTSTR")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    venv = os.environ.get("VIRTUAL_ENV")
    parts = env.get("PATH", "").split(os.pathsep)
    # The venv running pytest must not supply `vol` or `ktstr-sample`.
    env["PATH"] = os.pathsep.join(p for p in parts if not (venv and p.startswith(venv))
                                  and not (Path(p) / "ktstr-sample").exists())
    py = shutil.which("python3", path=env["PATH"])
    if py and "/.pyenv/shims/" in py and "PYENV_ROOT" not in env:
        env["PYENV_ROOT"] = str(Path(py).parents[1])  # pyenv's default follows HOME
    env["HOME"] = str(tmp / "home")
    env["XDG_CACHE_HOME"] = str(tmp / "cache")
    (tmp / "home").mkdir()
    return env


def expected_indexes():
    """(indexes of the live allocations, where they come from)."""
    manifest = json.loads((REPO / "samples" / f"{SAMPLE}.json").read_text())
    root = os.environ.get("KTSTR_DUMPS")
    source = Path(manifest["source"]).parent  # e.g. x86_64/scx_sdt
    truth = Path(root) / source / "truth.json" if root else None
    if truth and truth.is_file():
        sdt = json.loads(truth.read_text())["sdt"]
        return {int(d["idx"]) for d in sdt["data"] if d.get("live")}, str(truth)
    exp_path = REPO / "samples" / f"{SAMPLE}.expected.json.xz"
    expected = json.loads(lzma.decompress(exp_path.read_bytes()))
    for spec, result in expected.items():
        if spec.startswith("linux.ktstr.sdtalloc"):
            rows = result["rows"] or []
            key = next((k for k in (rows[0] if rows else {}) if k.lower() == "idx"), None)
            assert key, f"{exp_path}: the sdtalloc rows have no Idx column"
            return {int(r[key]) for r in rows if r.get(key) is not None}, str(exp_path)
    pytest.fail(f"{exp_path} has no linux.ktstr.sdtalloc run")


def indexes_in_output(stdout: str):
    """Idx column values of vol's text output (header row, then tab-separated rows)."""
    lines = [ln for ln in stdout.splitlines() if "\t" in ln]
    for i, line in enumerate(lines):
        cols = [c.strip().lower() for c in line.split("\t")]
        if "idx" in cols:
            at = cols.index("idx")
            found = set()
            for row in lines[i + 1:]:
                cells = row.split("\t")
                if len(cells) > at and re.fullmatch(r"\s*(0x[0-9a-f]+|\d+)\s*", cells[at]):
                    found.add(int(cells[at].strip(), 0))
            return found
    return None


def readme_command_1():
    if not README.is_file():
        pytest.fail(f"{README} does not exist: command 1 (set-up + sdtalloc on the sample) is missing")
    cmd = first_command(README.read_text(encoding="utf-8"))
    if "linux.ktstr.sdtalloc" not in cmd or "ktstr-sample" not in cmd:
        pytest.fail(f"README command 1 does not run linux.ktstr.sdtalloc on the sample: {cmd!r}")
    return cmd


def test_readme_command_1_sets_up_and_runs_sdtalloc_on_the_sample():
    """Quick: the command is there and does what the README promises (the run is below)."""
    readme_command_1()


@pytest.mark.install
def test_readme_command_1_runs_sdtalloc_on_the_sample(tmp_path):
    """The command, in a copy of the repo with a fresh venv: its output lists the sample's live
    allocations (install tier: a pip install and a vol run, a minute or more)."""
    cmd = readme_command_1()
    want, origin = expected_indexes()
    work = tmp_path / "repo"
    copy_repo(work)
    proc = subprocess.run(["bash", "-c", cmd], cwd=work, env=clean_env(tmp_path),
                          capture_output=True, text=True, timeout=1800)
    tail = (proc.stderr or proc.stdout)[-3000:]
    assert proc.returncode == 0, f"README command 1 exited {proc.returncode}:\n{tail}"
    assert not list((work / "samples").glob("*.elf")), "the sample was unpacked into the repo"
    got = indexes_in_output(proc.stdout)
    assert got is not None, f"no Idx column in the output:\n{proc.stdout[-3000:]}"
    assert want, f"no live allocations in {origin}"
    missing = sorted(want - got)
    assert not missing, f"allocations missing from the output (vs {origin}): {missing[:20]}"
