"""Volatility's own Linux plugins on the shared dumps with the package's kernel ISF (BTF +
System.map, no DWARF): each exits 0 without a traceback or "unexpected situation", and where
the dump or its kernel files give an independent answer, the rows match it (kallsyms against
System.map, tracepoints against the __tracepoint_* symbols, pscallstack's frames against
System.map and truth.json's threads, ftrace against the kernel's ftrace_ops list, the process
lists against truth.json). Every plugin Volatility ships is either run or listed in
helpers/stock_plugins.NOT_RUN with the reason.

Slow tier: every plugin on every dump. Quick tier: a few fast ones of those the ISF's symbol
types fixed, on the smoke dump."""

import json
import struct

import pytest

import dumps
import volrun
from helpers import stock_plugins as sp

_CACHE = {}


def _run(name, plugin):
    key = (name, plugin)
    if key not in _CACHE:
        _CACHE[key] = volrun.run_vol(name, plugin, timeout=1800)
    return _CACHE[key]


def test_every_volatility_linux_plugin_is_run_or_listed():
    from volatility3 import framework
    import volatility3.plugins

    framework.import_files(volatility3.plugins, True)
    shipped = {name for name, cls in framework.list_plugins().items()
               if name.startswith("linux.") and ".ktstr." not in name
               and cls.__module__.startswith("volatility3.") and not _deprecated_alias(cls)}
    listed = set(sp.RUN) | set(sp.NOT_RUN)
    # VmaYaraScan imports only with yara-python installed.
    assert shipped <= listed and listed - shipped <= {"linux.vmayarascan.VmaYaraScan"}, (
        sorted(shipped - listed), sorted(listed - shipped))
    assert not set(sp.RUN) & set(sp.NOT_RUN)
    assert set(sp.EMPTY_ON_THESE_GUESTS) <= set(sp.RUN) and set(sp.MUST_GIVE_ROWS) <= set(sp.RUN)


def _deprecated_alias(cls):
    """linux.check_afinfo & co.: 2.28 keeps the old names as PluginRenameClass stand-ins."""
    from volatility3.framework import deprecation

    return issubclass(cls, deprecation.PluginRenameClass)


def _system_map(name):
    kdir = dumps.kernel_dir(name)
    out = {}
    with open(kdir / "System.map") as f:
        for line in f:
            addr, _kind, sym = line.split()[:3]
            out.setdefault(sym, set()).add(int(addr, 16))
    return out


def _check_clean(res, plugin):
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "unexpected situation" not in res.stderr, res.stderr[-3000:]
    assert res.rc == 0, f"{plugin}: exit {res.rc}\n{res.stderr[-2000:]}"
    json.loads(res.stdout)


def _kaslr_shift(rows, smap, mask):
    text = [r for r in rows if r["SymbolName"] == "_text" and r["SubSystem"] == "core"]
    assert len(text) == 1
    return (text[0]["Addr"] - min(smap["_text"])) & mask


def _verify(name, plugin, rows):
    """Checks against what the dump's kernel files and truth.json say independently."""
    truth = dumps.load_truth(name)
    mask = (1 << 64) - 1
    if plugin == "linux.kallsyms.Kallsyms":
        smap = _system_map(name)
        core = [r for r in rows if r["SubSystem"] == "core"]
        mask = (1 << (max(r["Addr"] for r in core).bit_length())) - 1
        shift = _kaslr_shift(core, smap, mask)
        wrong = [r["SymbolName"] for r in core
                 if (r["Addr"] - shift) & mask not in {a & mask for a in smap.get(r["SymbolName"], ())}]
        assert not wrong, (len(wrong), wrong[:5])
        assert len(core) >= 0.99 * sum(len(v) for v in smap.values())
    elif plugin == "linux.tracing.tracepoints.CheckTracepoints":
        smap = _system_map(name)
        names = {r["tracepoint"] for r in rows}
        assert names and all(f"__tracepoint_{n}" in smap for n in names), names
    elif plugin == "linux.pscallstack.PsCallStack":
        smap = _system_map(name)
        tids = {t["tid"] for t in truth["tasks"]}
        assert {r["TID"] for r in rows} <= tids
        named = [r for r in rows if r.get("Name")]
        assert named and all(r["Name"] in smap for r in named if r.get("Module") == "kernel")
    elif plugin == "linux.tracing.ftrace.CheckFtrace":
        assert bool(rows) == _ftrace_ops_registered(name)
    elif plugin in ("linux.pslist.PsList", "linux.pstree.PsTree", "linux.psaux.PsAux"):
        leaders = {t["tgid"] for t in truth["tasks"]
                   if t.get("kind", "task") == "task" and t["tid"] == t["tgid"]}
        assert {r["PID"] for r in rows} == leaders
    elif plugin == "linux.boottime.Boottime":
        assert len(rows) == 1


def _ftrace_ops_registered(name):
    """Whether ftrace_ops_list points anywhere but &ftrace_list_end in the dump."""
    from helpers.vol_kctx import open_kctx

    kctx = open_kctx(name)
    head, end = kctx.symbol("ftrace_ops_list"), kctx.symbol("ftrace_list_end")
    size = kctx.layout.size("pointer") if kctx.layout.has("pointer") else 8
    value = int.from_bytes(kctx.reader.read(head, size), "little")
    return kctx.canonical(value) != end


def _params():
    names = [n for n in dumps.list_dumps() if n in sp.MATRIX_DUMPS + sp.FIXED_DUMPS]
    if not names:
        return [pytest.param(None, None, id="no-dumps")]
    smoke = dumps.smoke_dump(names)
    out = []
    for name in names:
        for plugin in sp.RUN if name in sp.MATRIX_DUMPS else sp.FIXED:
            quick = name == smoke and plugin in sp.QUICK
            out.append(pytest.param(name, plugin, id=f"{name}-{plugin}",
                                    marks=() if quick else pytest.mark.slow))
    return out


@pytest.mark.parametrize("name,plugin", _params())
def test_stock_plugin_on_dump(name, plugin):
    if name is None:
        pytest.skip("no dumps (KTSTR_DUMPS unset or empty)")
    res = _run(name, plugin)
    _check_clean(res, plugin)
    if plugin in sp.MUST_GIVE_ROWS:
        assert res.rows, f"{plugin} gave no rows on {name}\n{res.stderr[-2000:]}"
    _verify(name, plugin, res.rows)
