"""The typed public surfaces type-check (mypy; which modules: pyproject.toml [tool.mypy])."""

import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "ktstr-mypy-cache"      # warm runs take a few seconds

api = pytest.importorskip("mypy.api", reason="mypy is in the test extra: pip install -e '.[test]'")


def mypy(*args):
    out, err, status = api.run(["--config-file", str(REPO / "pyproject.toml"),
                                "--cache-dir", str(CACHE), *args])
    return status, out + err


def test_public_surfaces_type_check(monkeypatch):
    monkeypatch.chdir(REPO)          # [tool.mypy] files are relative to the checkout
    status, out = mypy()
    assert status == 0, out
    assert "Success" in out


def test_a_type_error_at_a_public_surface_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    bad = tmp_path / "caller.py"
    bad.write_text("from volatility3_ktstr.kds import DamageLog, tree_nodes\n"
                   "from volatility3_ktstr.views import Grid\n"
                   "nodes = tree_nodes('root', lambda n: [], damage=DamageLog())\n"
                   "row: int = Grid(('A', int)).row(A=1)\n")
    status, out = mypy(str(bad))
    assert status == 1, out
    assert 'incompatible type "str"; expected "int"' in out
    assert "Incompatible types in assignment" in out
