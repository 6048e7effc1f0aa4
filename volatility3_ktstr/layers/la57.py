"""x86-64 5-level paging (LA57) translation layers.

Volatility 3's Intel layers walk a fixed list of levels (``_structure``), so LA57 is the
4-level layer with the PML5 level in front and a 57-bit virtual address width.  Everything
else (large-page handling, table caching, ``mapping``) is inherited unchanged.
"""

import collections
from typing import Optional

from volatility3.framework import exceptions
from volatility3.framework.layers import intel


KERNEL_MAP = 0xFFFFFFFF80000000      # __START_KERNEL_map
KERNEL_MAP_SIZE = 1 << 30


class TableExplainMixin:
    """``explain_invalid(virtual address)`` for Intel layers: when the walk fails because a
    page table itself cannot be read (Volatility then names only the virtual address), the
    physical layer says why that table page is missing (a kdump file's dump level, a file cut
    short), as it does for data pages. kernel.LayerReader asks the layer of the exception."""

    _missing_table: Optional[int] = None

    def _translate(self, offset: int):
        """Volatility's walk; when it fails because a page table is missing from the file and
        the layer knows where the kernel image is (config ``ktstr_kernel_map_phys``, set only
        for files that lost page tables), kernel-image addresses translate as the kernel's
        own ``__pa_symbol`` does: ``va - __START_KERNEL_map + phys_base``."""
        self._missing_table = None
        try:
            return super()._translate(offset)
        except exceptions.PagedInvalidAddressException:
            phys = self.config.get("ktstr_kernel_map_phys", None)
            if (self._missing_table is None or phys is None
                    or not KERNEL_MAP <= offset < KERNEL_MAP + KERNEL_MAP_SIZE):
                raise
            return offset - KERNEL_MAP + phys, 1 << 12, self._base_layer

    def _get_valid_table(self, base_address: int):
        table = super()._get_valid_table(base_address)
        if table is None:
            self._missing_table = base_address
        return table

    def explain_invalid(self, offset: int):
        explain = getattr(self._context.layers[self._base_layer], "explain_invalid", None)
        if explain is None:
            return None
        self._missing_table = None
        try:
            phys, _size, _layer = self._translate(offset)
        except exceptions.InvalidAddressException:
            return explain(self._missing_table) if self._missing_table is not None else None
        return explain(phys)


class KtstrLinuxIntel32e(TableExplainMixin, intel.LinuxIntel32e):
    """Volatility's 4-level Linux layer, unchanged but for :class:`TableExplainMixin`."""


class Intel32eLA57(intel.Intel32e):
    """Intel 64-bit paging with 5 levels (CR4.LA57=1): 57-bit canonical addresses."""

    # Same "Intel64" architecture as Intel32e so every plugin requiring Intel64 accepts it;
    # "la57" lets callers that care tell the two apart.
    _direct_metadata = collections.ChainMap({"la57": True}, intel.Intel32e._direct_metadata)
    _maxvirtaddr = 57
    _structure = [("page map level 5", 9, False)] + intel.Intel32e._structure


class LinuxIntel32eLA57(TableExplainMixin, intel.LinuxIntel32e, Intel32eLA57):
    """LA57 with Linux's PTE rules (PROT_NONE PFN inversion), as LinuxIntel32e.

    Inherits LinuxIntel32e so code that tests ``isinstance(layer, LinuxIntel32e)`` keeps
    working.  The PFN mask differs: LinuxIntel32e uses 46 bits to stay compatible with
    pre-4.17 kernels, but every kernel that can enable 5-level paging defines
    __PHYSICAL_MASK_SHIFT as 52, so PROT_NONE-inverted entries are inverted over 52 bits.
    """

    _maxphyaddr = 52
