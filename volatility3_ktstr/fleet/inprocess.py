"""Run linux.ktstr plugins (and stock ones) in this process, output exactly as `vol -r json`.

`vol -f DUMP PLUGIN` pays, per process: importing Volatility and every plugin, decoding the
kernel ISF, stacking the layers. :class:`DumpSession` pays the import once per process, the ISF
decode once per ISF file and process (volpatches' memo), and the stacking once per dump: the
first plugin is built the way the CLI builds it (same automagic, stackers and symbol paths),
later plugins take the first one's kernel configuration. Each plugin's TreeGrid is rendered by
Volatility's own JsonRenderer, so ``PluginRun.json_text`` is the bytes `vol -q -r json` prints.

Imports Volatility (lazily: the fleet CLI parses its arguments without it).
"""

import contextlib
import dataclasses
import io
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..isf.output import user_symbols_dir

_IMPORT_LOCK = threading.Lock()
_imported = False


class OpenError(Exception):
    """Volatility could not open a dump; the message is one line saying why."""


@dataclasses.dataclass
class PluginRun:
    """One plugin on one dump."""

    plugin: str                 # as a user types it: "linux.ktstr.scxstate"
    rc: int                     # what `vol` would exit with: 0, 2 (KtstrError), 1 (other)
    json_text: str              # stdout of `vol -q -r json` (empty when rc != 0)
    error: str                  # one line when rc != 0
    seconds: float
    peak_rss_mb: Optional[float]  # the process's peak RSS while the plugin ran (Linux VmHWM)


def plugin_modules() -> Dict[str, type]:
    """{"linux.ktstr.scxstate": class, ...}: every Volatility plugin class this process can run,
    keyed by the name `vol` takes (module path below volatility3.plugins, then the class for
    modules with more than one)."""
    _import_plugins()
    from volatility3 import framework
    from volatility3.framework import interfaces

    out: Dict[str, type] = {}
    for cls in framework.class_subclasses(interfaces.plugins.PluginInterface):
        mod = cls.__module__
        if not mod.startswith("volatility3.plugins."):
            continue
        out[mod[len("volatility3.plugins."):]] = cls
    return out


def ktstr_plugins() -> List[str]:
    """Every linux.ktstr plugin, sorted."""
    return sorted(n for n in plugin_modules() if n.startswith("linux.ktstr."))


def _import_plugins() -> None:
    global _imported
    with _IMPORT_LOCK:
        if _imported:
            return
        import volatility3.plugins
        from volatility3 import framework

        from .. import _plugin_path

        if _plugin_path.PLUGINS_DIR not in volatility3.plugins.__path__:
            volatility3.plugins.__path__.append(_plugin_path.PLUGINS_DIR)
        framework.require_interface_version(2, 0, 0)
        framework.import_files(volatility3.plugins, True)
        _imported = True


def set_symbol_dirs(dirs: Sequence[str]) -> None:
    """Put ``dirs`` in front of Volatility's symbol search path (as `vol -s` does)."""
    import volatility3.symbols
    from volatility3.framework import constants

    wanted = [os.path.abspath(d) for d in dirs]
    volatility3.symbols.__path__ = wanted + [p for p in constants.SYMBOL_BASEPATHS
                                             if p not in wanted]


def _vmhwm_reset() -> bool:
    """Reset this process's peak-RSS mark (Linux: writing 5 to clear_refs); False elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _vmhwm_mb() -> Optional[float]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def paging_of(layer: Any) -> str:
    """The translation scheme of a kernel layer (:meth:`DumpSession.paging`)."""
    from volatility3.framework.layers import intel

    walk = getattr(layer, "_kwalk", None)          # this package's arm64 layer
    if walk is not None:
        return (f"arm64, {walk.va_bits}-bit VA, {walk.granule // 1024} KiB pages, "
                f"{len(walk.levels)} levels" + (", LPA2" if walk.lpa else ""))
    levels = len(getattr(layer, "_structure", ()) or ())
    if isinstance(layer, intel.Intel32e):
        return f"x86-64, {levels} levels" + (" (LA57)" if levels == 5 else "")
    if isinstance(layer, intel.Intel):
        return f"x86 ({type(layer).__name__}), {levels} levels"
    return f"{type(layer).__name__}, {levels} levels" if levels else type(layer).__name__


class DumpSession:
    """One dump opened in this process; :meth:`run` renders a plugin as `vol -r json` would."""

    def __init__(self, dump: str, symbol_dirs: Sequence[str] = ()) -> None:
        _import_plugins()
        from volatility3.framework import contexts

        set_symbol_dirs(list(symbol_dirs))
        path = Path(dump)
        if not path.is_file():
            raise OpenError(f"{dump}: no such file")
        self.path = path
        self.context = contexts.Context()
        self._first_config: Optional[object] = None
        self._classes = plugin_modules()

    def _construct(self, cls: type) -> object:
        from volatility3.framework import automagic, exceptions, plugins
        from volatility3.framework.automagic import stacker
        from volatility3.framework.configuration import requirements

        ctx = self.context
        if self._first_config is None:
            ctx.config["automagic.LayerStacker.single_location"] = \
                requirements.URIRequirement.location_from_file(str(self.path.resolve()))
            ctx.config["automagic.LayerStacker.stackers"] = stacker.choose_os_stackers(cls)
            ams = automagic.choose_automagic(automagic.available(ctx), cls)
        else:
            ctx.config.splice(f"plugins.{cls.__name__}", self._first_config)
            # The first plugin's kernel module, layer stack and symbol table satisfy this one
            # too (every linux.ktstr plugin requires the one kernel): no automagic pass (each
            # re-lists the symbol folders and re-checks the stack, ~20 ms per plugin). A
            # plugin needing more than that gets the automagic as `vol` would run it.
            if not cls.unsatisfied(ctx, f"plugins.{cls.__name__}"):
                ams = []
            else:
                ams = automagic.choose_automagic(automagic.available(ctx), cls)
        try:
            plugin = plugins.construct_plugin(ctx, ams, cls, "plugins", None, None)
        except exceptions.UnsatisfiedException as e:
            raise OpenError(why_unopened(self.path, e)) from None
        if self._first_config is None:
            self._first_config = ctx.config.branch(f"plugins.{cls.__name__}")
        return plugin

    def kernel_isf(self) -> Optional[str]:
        """Local path of the kernel ISF this dump was opened with (after a first run)."""
        import urllib.parse
        import urllib.request

        for name in self.context.symbol_space:
            url = self.context.symbol_space[name].config.get("isf_url", "")
            parsed = urllib.parse.urlparse(url)
            if parsed.scheme == "file" and "linux" in url:
                return urllib.request.url2pathname(parsed.path)
        return None

    def paging(self) -> Optional[str]:
        """How the kernel's addresses translate ("x86-64, 4 levels", "arm64, 52-bit VA, 4 KiB
        pages, 5 levels, LPA2"), once a plugin has run; None before. The same whichever
        stacker built the layer (from VMCOREINFO, CPU notes or a scan)."""
        for name in list(self.context.modules):
            layer_name = self.context.modules[name].layer_name
            if layer_name in self.context.layers:
                return paging_of(self.context.layers[layer_name])
        return None

    def run(self, plugin: str) -> PluginRun:
        """Build and render ``plugin``; failures are a PluginRun with rc and a one-line error.
        Raises :class:`OpenError` when the dump itself cannot be opened."""
        from volatility3.cli import text_renderer

        cls = self._classes.get(plugin)
        if cls is None:
            return PluginRun(plugin, 1, "", f"no plugin named {plugin}", 0.0, None)
        measured = _vmhwm_reset()
        t0 = time.perf_counter()
        out, err = io.StringIO(), io.StringIO()
        rc, error = 0, ""
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                built = self._construct(cls)
                text_renderer.JsonRenderer().render(built.run())
        except OpenError:
            raise
        except SystemExit as e:       # errors.cli_errors: "<plugin>: error: ..." and exit 2
            rc = e.code if isinstance(e.code, int) else 1
            error = _last_line(err.getvalue()) or f"exit status {rc}"
        except Exception as e:        # what `vol` would print as a traceback: one line here
            rc, error = 1, f"{type(e).__name__}: {e}".splitlines()[0][:500]
        seconds = time.perf_counter() - t0
        peak = _vmhwm_mb() if measured else None
        return PluginRun(plugin, rc, out.getvalue() if rc == 0 else "", error, seconds, peak)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines()
             if ln.strip() and not ln.startswith(("WARNING", "Volatility 3 Framework"))]
    return lines[-1][:500] if lines else ""


def why_unopened(path: Path, excp: object) -> str:
    """One line: what Volatility could not satisfy."""
    names = sorted({p.rsplit(".", 1)[-1] for p in getattr(excp, "unsatisfied", {})})
    msg = f"Volatility cannot open this dump (unsatisfied: {', '.join(names)})"
    if {"symbol_table_name", "layer_name"} & set(names):
        msg += ": no kernel ISF matches it and none could be made from the dump, " \
               "or no kernel page tables were found"
    return msg


def symbols_home() -> str:
    """Volatility's user symbol folder (always on its search path)."""
    return str(Path(user_symbols_dir()).parent)
