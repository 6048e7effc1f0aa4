"""volatility3-ktstr: Volatility 3 plugins for sched_ext and BPF state in Linux memory dumps."""

import glob
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PTH = "volatility3_ktstr.pth"


class BuildPyWithPth(build_py):
    """Ship the .pth that lets a plain `vol` find our plugins (Volatility has no entry points).

    The file must land at the root of site-packages, so it is copied into build_lib next to the
    package rather than declared as package data. Editable installs drop it (see
    EditableWheelWithPth below).
    """

    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, PTH), os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


def _files(folder):
    """Files of a repo folder, relative to setup.py (as data_files wants them)."""
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, folder, "*"))
                  if os.path.isfile(p))


class _StrategyWithPth:
    """Wraps a setuptools editable strategy: write the wheel as it does, then add the .pth."""

    def __init__(self, strategy):
        self._strategy = strategy

    def __call__(self, wheel, files, mapping):
        self._strategy(wheel, files, mapping)
        if PTH not in wheel.namelist():
            with open(os.path.join(HERE, PTH), "rb") as f:
                wheel.writestr(PTH, f.read())

    def __enter__(self):
        self._strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self._strategy.__exit__(*exc)


cmdclass = {"build_py": BuildPyWithPth}
try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # setuptools < 64: `pip install -e` runs `develop`, no PEP 660 wheel
    editable_wheel = None
if editable_wheel is not None and hasattr(editable_wheel, "_select_strategy"):

    class EditableWheelWithPth(editable_wheel):
        """`pip install -e .` (PEP 660) puts only a package finder in the editable wheel and
        drops build_py's extra top-level file, so the .pth is added to that wheel here."""

        def _select_strategy(self, *args, **kwargs):
            return _StrategyWithPth(super()._select_strategy(*args, **kwargs))

    cmdclass["editable_wheel"] = EditableWheelWithPth


setup(
    name="volatility3-ktstr",
    version="0.1.0",
    description="Volatility 3 plugins that recover sched_ext and BPF state from Linux memory dumps",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read()
    if os.path.exists(os.path.join(HERE, "README.md"))
    else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["volatility3_ktstr", "volatility3_ktstr.*"]),
    # Plugin folders are namespace-less on purpose (no __init__.py in plugins/linux), so
    # find_packages does not see them: ship them as package data.
    package_data={"volatility3_ktstr": ["plugins/linux/ktstr/*.py", "plugins/*.py"]},
    include_package_data=True,
    install_requires=[
        "volatility3>=2.28.2,<2.29",  # the tested series (volpatches.TESTED_VERSIONS; README)
        "pyelftools>=0.29",
        "capstone>=5",
        # kdump-compressed vmcores: zstd pages (makedumpfile -z) and snappy pages (-p).
        "zstandard>=0.20",
        "cramjam>=2.7",
    ],
    extras_require={
        "test": ["pytest>=7", "jsonschema>=4", "zstandard>=0.20", "mypy>=1.10"],
        # LZO pages (makedumpfile -l) decode in pure Python without it; python-lzo is faster
        # but builds from source against liblzo2 (Debian: liblzo2-dev).
        "lzo": ["python-lzo>=1.15"],
        # ktstr-triage (volatility3_ktstr/fleet): Dask runs the fleet, pyarrow writes Parquet.
        "fleet": ["dask[distributed]>=2023.1", "pyarrow>=12"],
    },
    entry_points={
        "console_scripts": [
            "ktstr-isf=volatility3_ktstr.isf.cli:main",
            "ktstr-minimize=volatility3_ktstr.minimize:main",
            "ktstr-sample=volatility3_ktstr.sample:main",
            "ktstr-triage=volatility3_ktstr.fleet.cli:main",
        ]
    },
    # The bundled sample dump and its ISF (volatility3_ktstr/sample.py finds them here).
    data_files=[(f"share/volatility3-ktstr/{d}", _files(d)) for d in ("samples", "symbols/linux")],
    cmdclass=cmdclass,
)
