"""Shared fixtures. Real-data fixtures skip with a reason when their input is absent."""

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# Test the working tree even when an older copy of the package is installed (pip install .).
for p in (str(TESTS), str(REPO)):
    if p not in sys.path:
        sys.path.insert(0, p)

import dumps  # noqa: E402

MACHINE_BTF = Path("/sys/kernel/btf/vmlinux")


@pytest.fixture(scope="session")
def dumps_root():
    root = dumps.dumps_root()
    if root is None:
        pytest.skip("KTSTR_DUMPS is unset or not a directory (real-dump tests need it)")
    return root


def kernel_dirs():
    """kernels/<release>/ folders of the dumps folder ([] without KTSTR_DUMPS)."""
    root = dumps.dumps_root()
    return sorted(p for p in (root / "kernels").iterdir() if p.is_dir()) if root else []


@pytest.fixture(scope="session")
def machine_btf_path():
    if not (MACHINE_BTF.exists() and os.access(MACHINE_BTF, os.R_OK)):
        pytest.skip(f"{MACHINE_BTF} is not readable on this machine")
    return MACHINE_BTF


@pytest.fixture(scope="session")
def machine_btf(machine_btf_path):
    from volatility3_ktstr import btf

    return btf.load(machine_btf_path)


@pytest.fixture(scope="session")
def amd64_kernel_dir(dumps_root):
    """The x86-64 kernel folder of the dumps (btf.raw, System.map, vmlinux.zst)."""
    for d in kernel_dirs():
        if d.name.endswith("-amd64"):
            return d
    pytest.skip("no *-amd64 kernel folder under KTSTR_DUMPS/kernels")


@pytest.fixture(scope="session")
def amd64_kernel_btf(amd64_kernel_dir):
    from volatility3_ktstr import btf

    return btf.load(amd64_kernel_dir / "btf.raw")


# --- tiers ------------------------------------------------------------------------------------

TIERS = ("slow", "fuzz", "install")


def enabled_tiers():
    """Marked tiers to run: KTSTR_TEST_TIERS="all" or a comma list (".ci/run" sets "all")."""
    raw = os.environ.get("KTSTR_TEST_TIERS", "").strip()
    if raw == "all":
        return set(TIERS)
    return {t.strip() for t in raw.split(",") if t.strip()}


def pytest_collection_modifyitems(config, items):
    on = enabled_tiers()
    for item in items:
        off = [t for t in TIERS if t in item.keywords and t not in on]
        if off:
            item.add_marker(pytest.mark.skip(
                reason=f"tier {off[0]!r} is off (KTSTR_TEST_TIERS=all or ={off[0]} turns it on)"))
