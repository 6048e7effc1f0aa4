"""Registers the ktstr stackers with Volatility: kdump-compressed files, LA57/AArch64/VMCOREINFO.

Volatility imports every module under its plugin directories before automagic runs, and
the LayerStacker picks up every StackerLayerInterface subclass that has been imported.
Importing the stackers module here is therefore all it takes; this module deliberately
defines no PluginInterface class (it would show up as a plugin).
"""

from volatility3_ktstr.layers import kdump, stackers  # noqa: F401  (import registers the stackers)
