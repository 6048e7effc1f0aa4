"""The Volatility-free packages really load no Volatility (so walkers run on any Reader), and
the sched_ext package sits where DEVELOPING puts it: above bpf/ and walkers/, below views/."""

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "volatility3_ktstr"
VOL_FREE = ["btf", "core", "kds", "bpf", "walkers", "sched_ext", "render", "views", "dumpfile", "isf"]
VOL_FREE_MODULES = ["vmcoreinfo", "errors", "kernel_model"]


def vol_free_modules():
    mods = []
    for pkg in VOL_FREE:
        for p in sorted((PKG / pkg).glob("*.py")):
            name = p.stem
            mods.append(f"volatility3_ktstr.{pkg}" + ("" if name == "__init__" else f".{name}"))
    mods += [f"volatility3_ktstr.{m}" for m in VOL_FREE_MODULES if (PKG / f"{m}.py").exists()]
    return mods


def test_vol_free_packages_import_no_volatility():
    mods = vol_free_modules()
    assert len(mods) > 20
    code = (f"import sys, json, importlib\nsys.path.insert(0, {str(REPO)!r})\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] == 'volatility3')))")
    # volatility3 is importable here: the point is that nothing imports it
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# What sched_ext/ may import from this package (top-level names), and who may import it.
SCHED_EXT_MAY_IMPORT = {"sched_ext", "bpf", "kds", "core", "btf", "walkers", "errors"}
SCHED_EXT_IMPORTERS = {"sched_ext", "views", "plugins"}


def _package_imports(path):
    """Top-level names of volatility3_ktstr that the module at ``path`` imports."""
    rel = path.relative_to(PKG).parts
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel[:-1])[:len(rel) - node.level]   # the package the dots name
                parts = base + (node.module.split(".") if node.module else [])
                if parts:
                    out.add(parts[0])
                else:   # "from .. import x": x is a top-level module or package
                    out.update(a.name.split(".")[0] for a in node.names)
            elif node.module and node.module.split(".")[0] == "volatility3_ktstr":
                parts = node.module.split(".")[1:]
                out.update([parts[0]] if parts else [a.name.split(".")[0] for a in node.names])
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "volatility3_ktstr" and len(parts) > 1:
                    out.add(parts[1])
    return out


def test_sched_ext_imports_only_lower_layers():
    files = sorted((PKG / "sched_ext").glob("*.py"))
    assert len(files) >= 8
    bad = {str(p.relative_to(PKG)): sorted(_package_imports(p) - SCHED_EXT_MAY_IMPORT) for p in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_only_views_and_plugins_import_sched_ext():
    users = [str(p.relative_to(PKG)) for p in sorted(PKG.rglob("*.py"))
             if p.relative_to(PKG).parts[0] not in SCHED_EXT_IMPORTERS and "sched_ext" in _package_imports(p)]
    assert users == []
    # the check sees an import when there is one
    assert "sched_ext" in _package_imports(PKG / "views" / "scxstate.py")
    assert "bpf" in _package_imports(PKG / "sched_ext" / "struct_ops.py")
