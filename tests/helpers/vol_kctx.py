"""A kernel adapter (kernel.KernelContext) for a real dump, in this process: for tests that need
objects read from a dump (a program's BTF, ...) without going through `vol`'s output."""

import functools
from pathlib import Path

import dumps
import volrun


@functools.lru_cache(maxsize=None)
def open_kctx(name):
    """KernelContext of dump ``name`` (its kernel ISF built once by tests/volrun.py)."""
    import volatility3.plugins
    import volatility3.symbols
    from volatility3 import framework
    from volatility3.framework import automagic, contexts, interfaces, plugins

    from volatility3_ktstr.kernel import KernelContext

    sym = str(volrun.kernel_isf_dir(name))
    plugin_dir = str(volrun.REPO / "volatility3_ktstr" / "plugins")
    if plugin_dir not in volatility3.plugins.__path__:
        volatility3.plugins.__path__.append(plugin_dir)
    if sym not in volatility3.symbols.__path__:
        volatility3.symbols.__path__.insert(0, sym)
    framework.import_files(volatility3.plugins, True)
    cls = next(c for c in framework.class_subclasses(interfaces.plugins.PluginInterface)
               if c.__module__.endswith("ktstr.maps"))
    ctx = contexts.Context()
    ctx.config["automagic.LayerStacker.single_location"] = Path(dumps.dump_path(name)).resolve().as_uri()
    plugin = plugins.construct_plugin(ctx, automagic.choose_automagic(automagic.available(ctx), cls),
                                      cls, "plugins", None, None)
    return KernelContext.from_plugin(plugin)
