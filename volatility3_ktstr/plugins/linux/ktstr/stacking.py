"""Hooks volatility3-ktstr into Volatility: our stackers (kdump-compressed files, LA57, AArch64,
VMCOREINFO) and the patches of volpatches.

Volatility imports every module under its plugin directories before automagic runs, and the
LayerStacker picks up every StackerLayerInterface subclass that has been imported, so importing
the stackers here registers them. ``volpatches.apply()`` is called from here and nowhere else in
a ``vol`` run (see that module for what each patch does and how to turn them off). This module
deliberately defines no PluginInterface class (it would show up as a plugin).
"""

from volatility3_ktstr import volpatches
from volatility3_ktstr.layers import kdump, stackers  # noqa: F401  (import registers the stackers)

volpatches.apply()
