"""Translation layers Volatility 3 lacks: x86-64 LA57 and AArch64, plus their stacker.

- ``LinuxIntel32eLA57`` / ``Intel32eLA57`` (la57.py): Volatility's Intel layers with the PML5
  level; architecture metadata "Intel64", so every plugin that accepts Intel64 accepts them.
- ``LinuxAArch64`` / ``AArch64`` (arm64.py): stage-1 walks for both TTBR halves.  Config:
  ``memory_layer``, ``page_map_offset`` (TTBR0 root), ``page_map_offset_kernel`` (TTBR1 root),
  ``arm64_granule``, ``arm64_va_bits``, ``arm64_va_bits_user``, ``arm64_lpa``,
  ``kernel_virtual_offset``, ``kernel_banner``.  Architecture metadata "AArch64".
- ``stackers.KtstrLinuxStacker`` (stack_order 33, before the stock Linux stackers at 34/35)
  detects which one a dump needs; ``stackers.PhysicalBaseLayer`` shifts raw images whose byte
  0 is not physical address 0 (``KTSTR_PHYS_BASE`` / ``automagic.LayerStacker.ktstr_phys_base``).
  Linux plugins that require Intel64 accept LinuxAArch64 through a patch in
  ``volatility3_ktstr.volpatches``.  The plugin-folder module ``plugins/linux/ktstr/stacking.py``
  imports the stackers (so that `vol` registers them) and applies the patches.
"""

from volatility3_ktstr.layers.arm64 import AArch64, LinuxAArch64, WalkConfig  # noqa: F401
from volatility3_ktstr.layers.la57 import Intel32eLA57, LinuxIntel32eLA57  # noqa: F401
