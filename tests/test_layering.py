"""The Volatility-free packages really load no Volatility (so walkers run on any Reader)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "volatility3_ktstr"
VOL_FREE = ["btf", "core", "kds", "bpf", "walkers", "render", "views", "dumpfile", "isf"]
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
