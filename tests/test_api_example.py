"""docs/API.md's third-party plugin: built into a temporary plugin folder, its KtstrKernel
requirement resolved (and refused for a version we do not provide), run on a real dump."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

import dumps
import volrun

REPO = Path(__file__).resolve().parents[1]
API_DOC = REPO / "docs" / "API.md"


def example_source():
    text = API_DOC.read_text()
    after = text[text.index("## Worked example"):]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    (root / "linux").mkdir()
    (root / "linux" / "schedsummary.py").write_text(example_source())
    return root


def load(plugin_dir):
    spec = importlib.util.spec_from_file_location("ktstr_api_example", plugin_dir / "linux" / "schedsummary.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_requires_the_versioned_api_and_it_resolves(plugin_dir):
    from volatility3.framework import contexts
    from volatility3.framework.configuration import requirements

    from volatility3_ktstr.plugin_support import KtstrKernel

    mod = load(plugin_dir)
    (req,) = [r for r in mod.SchedSummary.get_requirements() if isinstance(r, requirements.VersionRequirement)]
    ctx = contexts.Context()
    assert req.unsatisfied(ctx, "plugins.SchedSummary") == {}
    # The same requirement for a version this package does not provide is refused.
    major, minor, _ = KtstrKernel.version
    for version in ((major + 1, 0, 0), (major, minor + 1, 0)):
        other = requirements.VersionRequirement(name="ktstr", component=KtstrKernel, version=version)
        assert other.unsatisfied(ctx, "plugins.SchedSummary")
    # Every view the API names exists and has columns.
    from volatility3_ktstr.plugin_support import VIEWS

    assert all(KtstrKernel.columns(v) for v in VIEWS)


def test_example_runs_on_a_real_dump(plugin_dir):
    names = [n for n in dumps.list_dumps() if "scx_sdt" in n and n.startswith("x86_64/")]
    if not names:
        pytest.skip("KTSTR_DUMPS unset or without an x86_64 scx_sdt dump")
    name = dumps.smoke_dump(names)
    truth = dumps.load_truth(name)
    dirs = [str(plugin_dir)] + ([str(volrun.PLUGINS_DIR)] if volrun.plugin_dir_args() else [])
    res = volrun.run_vol(name, "linux.schedsummary", extra_global=("-p", ";".join(dirs)))
    assert res.rc == 0, res.stderr[-2000:]
    rows = json.loads(res.stdout)
    cpus = [r for r in rows if r["Item"] == "cpu"]
    assert cpus and all(r["Value"].isdigit() for r in cpus), cpus
    sched = {r["Name"]: r["Value"] for r in rows if r["Item"] == "scheduler"}
    assert sched.get("enable_state") == "enabled" and sched.get("name"), sched
    ops = {r["Name"] for r in rows if r["Item"] == "struct_ops"}
    assert ops == {p["name"] for p in truth["progs"] if p["type_name"] == "struct_ops"}, ops
    assert sched["name"] == truth["scheduler"]["name"].removeprefix("scx_"), (sched, truth["scheduler"])
    possible = truth["kernel"]["meta"].get("possible_cpus")
    if possible:
        assert len(cpus) == possible
