"""Translation layers that Volatility 3 lacks: x86-64 LA57 and AArch64."""

from volatility3_ktstr.layers.arm64 import AArch64, LinuxAArch64, WalkConfig  # noqa: F401
from volatility3_ktstr.layers.la57 import Intel32eLA57, LinuxIntel32eLA57  # noqa: F401
