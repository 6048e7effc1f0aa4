"""x86-64 5-level paging (LA57) translation layers.

Volatility 3's Intel layers walk a fixed list of levels (``_structure``), so LA57 is the
4-level layer with the PML5 level in front and a 57-bit virtual address width.  Everything
else (large-page handling, table caching, ``mapping``) is inherited unchanged.
"""

import collections

from volatility3.framework.layers import intel


class Intel32eLA57(intel.Intel32e):
    """Intel 64-bit paging with 5 levels (CR4.LA57=1): 57-bit canonical addresses."""

    # Same "Intel64" architecture as Intel32e so every plugin requiring Intel64 accepts it;
    # "la57" lets callers that care tell the two apart.
    _direct_metadata = collections.ChainMap({"la57": True}, intel.Intel32e._direct_metadata)
    _maxvirtaddr = 57
    _structure = [("page map level 5", 9, False)] + intel.Intel32e._structure


class LinuxIntel32eLA57(intel.LinuxIntel32e, Intel32eLA57):
    """LA57 with Linux's PTE rules (PROT_NONE PFN inversion), as LinuxIntel32e.

    Inherits LinuxIntel32e so code that tests ``isinstance(layer, LinuxIntel32e)`` keeps
    working.  The PFN mask differs: LinuxIntel32e uses 46 bits to stay compatible with
    pre-4.17 kernels, but every kernel that can enable 5-level paging defines
    __PHYSICAL_MASK_SHIFT as 52, so PROT_NONE-inverted entries are inverted over 52 bits.
    """

    _maxphyaddr = 52
