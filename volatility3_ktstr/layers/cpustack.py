"""The kernel's page tables from the CPU registers a dump file carries, without a scan.

QEMU's ELF cores and kdump files of x86-64 guests hold each vCPU's ``QEMUCPUState`` note
(``dumpfile.notes``): CR3 is the page-table root (the kernel half is the same in every
process's tables; with page-table isolation a CPU in user mode holds the user copy, one page
above, so both are tried) and CR4.LA57 the paging depth. From there:

1. the kernel image is the first mapped 2 MiB of the kernel map (``__START_KERNEL_map`` ..
   +1 GiB): its virtual address is ``_text`` plus the KASLR shift, its physical address the
   start of the image;
2. the banner is looked for in the image (a bounded window, physically contiguous) and must
   be one whose ISF is in the identifier cache;
3. the shift is the banner's virtual address minus the ISF's ``linux_banner``; the layer is
   kept only if it translates ``linux_banner`` back to where the banner was read.

arm64 QEMU files carry no system registers (TTBR1/TCR are in no QEMU note): they, and any
file whose notes do not lead to a validated layer, take the scan path.
"""

import logging
from typing import Dict, List, Optional

from volatility3.framework import exceptions

from volatility3_ktstr.dumpfile import notes as notesmod
from volatility3_ktstr.layers import fileinfo
from volatility3_ktstr.layers.scan import KERNEL_IMAGE_WINDOW, SCAN_CHUNK, banner_keys

vollog = logging.getLogger(__name__)

X86_START_KERNEL_MAP = 0xFFFFFFFF80000000
KERNEL_MAP_SIZE = 1 << 30
HUGE = 2 << 20
PTI_USER_BIT = 1 << 12
MAX_ROOTS = 4
PROBE_PAGES = 16
_BANNER = b"Linux version "


def x86_roots(cpus: List[notesmod.CpuState]) -> List[tuple]:
    """(root, la57) candidates from the CPUs' CR3/CR4, kernel copy first, bounded."""
    out: List[tuple] = []
    for cpu in cpus:
        root, la57 = cpu.page_table_root, cpu.la57
        if root is None or la57 is None:
            continue
        for r in (root & ~PTI_USER_BIT, root):
            if (r, la57) not in out:
                out.append((r, la57))
    return out[:MAX_ROOTS]


def _text_of(layer) -> Optional[tuple]:
    """(virtual, physical) address of the first mapped 2 MiB of the kernel map (``_text`` +
    shift), by translation only (the page itself may be left out of the file)."""
    for va in range(X86_START_KERNEL_MAP, X86_START_KERNEL_MAP + KERNEL_MAP_SIZE, HUGE):
        # A page the file left out does not translate either: the next few pages say where
        # the first one is.
        for page in range(PROBE_PAGES):
            try:
                return va, layer.translate(va + page * 4096)[0] - page * 4096
            except exceptions.InvalidAddressException:
                continue
    return None


def _banners_in_image(context, phys_layer, start, banners) -> List[tuple]:
    """(physical address, banner key) of cached banners in the kernel image window."""
    found = []
    for offset in range(0, KERNEL_IMAGE_WINDOW, SCAN_CHUNK):
        try:
            data = context.layers.read(phys_layer, start + offset, SCAN_CHUNK + 512, pad=True)
        except exceptions.InvalidAddressException:
            continue
        pos = data.find(_BANNER)
        while 0 <= pos < SCAN_CHUNK and len(found) < 16:
            key = next((k for k in banner_keys(data[pos:pos + 512]) if k in banners), None)
            if key is not None:
                found.append((start + offset + pos, key))
            pos = data.find(_BANNER, pos + 1)
        if found:
            return found
    return found


def stack_from_cpu_notes(stacker, context, layer_name: str, banners: Dict[bytes, str]):
    """The kernel's layer from the file's CPU notes (x86-64 CR3/CR4), or None."""
    cpus = notesmod.cpu_states(fileinfo.layer_notes(context, layer_name))
    roots = x86_roots(cpus)
    if not roots:
        return None
    from volatility3_ktstr.layers import stackers

    tables: Dict[bytes, object] = {}
    for root, la57 in roots:
        probe = stackers._build_x86(context, layer_name, root, 0, None, la57)
        text = _text_of(probe)
        stackers._drop_layers(context, [probe.name])
        if text is None:
            continue
        text_va, text_pa = text
        for banner_pa, key in _banners_in_image(context, layer_name, text_pa, banners):
            table = tables.get(key) or _symbol_table(context, banners[key])
            if table is None:
                continue
            tables[key] = table
            anchor = table.get_symbol("linux_banner").address
            shift = (text_va + (banner_pa - text_pa) - anchor) & ((1 << 64) - 1)
            new = stackers._build_x86(context, layer_name, root, shift, key, la57)
            try:
                ok = new.translate((anchor + shift) & ((1 << 64) - 1))[0] == banner_pa
            except exceptions.InvalidAddressException:
                ok = False
            if ok:
                vollog.debug("ktstr: %s from the CPU notes, CR3 %#x, KASLR shift %#x",
                             "LA57" if la57 else "4-level", root, shift)
                return new
            stackers._drop_layers(context, [new.name])
    return None


def _symbol_table(context, isf_url):
    """The kernel symbol table of an ISF (only ``linux_banner`` is needed), or None."""
    # LinuxKernelIntermedSymbols registers classes from extension submodules a library caller
    # may not have imported.
    from volatility3.framework.symbols import linux as linux_symbols
    from volatility3.framework.symbols.linux.extensions import network  # noqa: F401

    name = context.symbol_space.free_table_name("KtstrCpuNotes")
    try:
        table = linux_symbols.LinuxKernelIntermedSymbols(context, "temporary." + name, name=name,
                                                         isf_url=isf_url)
    except Exception as excp:  # a broken ISF must not stop stacking
        vollog.info("ktstr: cannot load ISF %s: %s", isf_url, excp)
        return None
    if "linux_banner" not in set(table.symbols):
        return None
    return table
