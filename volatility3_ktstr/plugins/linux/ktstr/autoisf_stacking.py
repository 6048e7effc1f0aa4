"""Registers the ktstr automatic-ISF stacker with Volatility (see volatility3_ktstr.layers.autoisf).

Volatility imports every module under its plugin directories before automagic runs, and the
LayerStacker uses every StackerLayerInterface subclass imported by then. This module defines
no plugin class on purpose (it would be listed as a plugin).
"""

from volatility3_ktstr.layers import autoisf  # noqa: F401  (import registers the stacker)
