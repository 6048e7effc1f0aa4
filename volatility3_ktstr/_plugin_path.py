"""Make `vol` find our plugins with no `-p`.

Volatility 3 discovers plugins only by importing every module under
``volatility3.plugins.__path__``. A .pth file calls :func:`install` at interpreter start-up; it
registers a one-shot import hook that, when (and only when) ``volatility3.plugins`` is imported,
appends our plugin folder to that package's ``__path__``. That list is the same object as
``volatility3.framework.constants.PLUGINS_PATH``, so ``vol -p`` keeps it too. Nothing here may
import volatility3: this runs at every Python start.
"""

import importlib.abc
import importlib.util
import os
import sys

PLUGINS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins")
_TARGET = "volatility3.plugins"


class _PluginPathFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        # Step aside so the normal machinery finds the real package, then wrap its loader.
        uninstall()
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            extend(module)

        spec.loader.exec_module = exec_module
        return spec


def extend(module) -> None:
    """Append our plugin folder to an imported volatility3.plugins package."""
    paths = getattr(module, "__path__", None)
    if paths is not None and PLUGINS_DIR not in paths:
        paths.append(PLUGINS_DIR)


def install() -> None:
    if os.environ.get("VOLATILITY3_KTSTR_DISABLE"):
        return
    loaded = sys.modules.get(_TARGET)
    if loaded is not None:
        extend(loaded)
        return
    if not any(isinstance(f, _PluginPathFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PluginPathFinder())


def uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PluginPathFinder)]
