"""Recover sched_ext and BPF state from Linux memory dumps with Volatility 3.

This package must stay cheap to import: a .pth file imports it at every Python start-up
(see _plugin_path). Nothing here may import volatility3.
"""

__version__ = "0.1.0"
