"""The kernel's page tables from the CPU registers a dump file carries, without a scan.

QEMU's ELF cores and kdump files of x86-64 guests hold each vCPU's ``QEMUCPUState`` note
(``dumpfile.notes``): CR3 is the page-table root (the kernel half is the same in every
process's tables; with page-table isolation a CPU in user mode holds the user copy, one page
above, so both are tried) and CR4.LA57 the paging depth. From there:

1. the kernel image is the first mapped 2 MiB of the kernel map (``__START_KERNEL_map`` ..
   +1 GiB): its virtual address is ``_text`` plus the KASLR shift, its physical address the
   start of the image, both read from the kernel map's page directory (a few table pages,
   whatever the memory size; translations of the whole map when a table is unreadable);
2. the banner is looked for in the image (a bounded window, physically contiguous) and must
   be one whose ISF is in the identifier cache;
3. the shift is the banner's virtual address minus the ISF's ``linux_banner``; the layer is
   kept only if it translates ``linux_banner`` back to where the banner was read.

The automatic ISF stacker asks :func:`kernels_in_notes` first (a banner found this way has
its ISF, so no banner scan), the kernel stacker then builds the layer from the same answer.

arm64 QEMU files carry no system registers: target/arm/arch_dump.c writes per vCPU
NT_PRSTATUS (x0..x30, sp, pc, pstate), NT_PRFPREG and, with SVE, NT_ARM_SVE -- no TTBR1_EL1,
no TCR_EL1 -- so neither the page-table root nor the VA size is in the file. They, and any
file whose notes do not lead to a validated layer, take the scan path (low memory first,
where arm64 firmware loads the kernel image).
"""

import logging
import struct
from typing import Dict, List, Optional

from volatility3.framework import exceptions

from volatility3_ktstr.dumpfile import notes as notesmod
from volatility3_ktstr.layers import fileinfo
from volatility3_ktstr.layers.scan import KERNEL_IMAGE_WINDOW, SCAN_CHUNK, banner_keys, read_window

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


ENTRY_ADDR = 0x000FFFFFFFFFF000
HUGE_ADDR = 0x000FFFFFFFE00000
PAGE_PRESENT, PAGE_PSE = 1, 1 << 7
TABLE_BYTES = 4096


def _table(context, phys_layer, addr) -> Optional[tuple]:
    """The 512 entries of the page table at physical ``addr``, or None if unreadable."""
    try:
        return struct.unpack("<512Q", context.layers.read(phys_layer, addr, TABLE_BYTES))
    except exceptions.InvalidAddressException:
        return None


def _text_by_walk(context, phys_layer, root, la57) -> Optional[tuple]:
    """(virtual, physical) address of the first mapped 2 MiB of the kernel map, read from the
    page tables themselves: the root, the upper levels and the page directory of the kernel
    map (plus one page table when the kernel is mapped with 4 KiB pages), a handful of reads
    whatever the memory size. None when a table is unreadable (the caller then probes)."""
    va = X86_START_KERNEL_MAP
    table = root
    for shift in ((48, 39, 30) if la57 else (39, 30)):
        entries = _table(context, phys_layer, table)
        if entries is None:
            return None
        entry = entries[(va >> shift) & 511]
        if not entry & PAGE_PRESENT or entry & PAGE_PSE:
            return None
        table = entry & ENTRY_ADDR
    directory = _table(context, phys_layer, table)
    if directory is None:
        return None
    first = (va >> 21) & 511
    for i in range(first, 512):
        entry = directory[i]
        if not entry & PAGE_PRESENT:
            continue
        region = va + (i - first) * HUGE
        if entry & PAGE_PSE:
            return region, entry & HUGE_ADDR
        ptes = _table(context, phys_layer, entry & ENTRY_ADDR)
        if ptes is None:
            return None
        for j, pte in enumerate(ptes):
            if pte & PAGE_PRESENT:
                return region, (pte & ENTRY_ADDR) - j * 4096
    return None


def _text_of(layer) -> Optional[tuple]:
    """(virtual, physical) address of the first mapped 2 MiB of the kernel map (``_text`` +
    shift), by translation only (the page itself may be left out of the file). The fallback
    of :func:`_text_by_walk`: up to 8,192 translations."""
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
            data = read_window(context.layers[phys_layer], start + offset, SCAN_CHUNK + 512)
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


# The last layer's answer (the automatic ISF stacker asks first, then the kernel stacker).
_found: Dict[str, tuple] = {}


def kernels_in_notes(context, layer_name: str, banners: Dict[bytes, str]) -> List[tuple]:
    """(root, la57, text virtual, text physical, [(banner physical, banner key)]) for each
    page-table root the CPU notes give whose kernel image holds a banner of ``banners``."""
    layer = context.layers[layer_name]
    memo = _found.get(layer_name)
    if memo is not None and memo[0] is layer and memo[1] is context and memo[2] == set(banners):
        return memo[3]
    cpus = notesmod.cpu_states(fileinfo.layer_notes(context, layer_name))
    found = []
    from volatility3_ktstr.layers import stackers

    for root, la57 in x86_roots(cpus):
        text = _text_by_walk(context, layer_name, root, la57)
        if text is None:
            probe = stackers._build_x86(context, layer_name, root, 0, None, la57)
            text = _text_of(probe)
            stackers._drop_layers(context, [probe.name])
        if text is None:
            continue
        hits = _banners_in_image(context, layer_name, text[1], banners)
        if hits:
            found.append((root, la57, text[0], text[1], hits))
    _found.clear()
    _found[layer_name] = (layer, context, set(banners), found)
    return found


def stack_from_cpu_notes(stacker, context, layer_name: str, banners: Dict[bytes, str]):
    """The kernel's layer from the file's CPU notes (x86-64 CR3/CR4), or None."""
    found = kernels_in_notes(context, layer_name, banners)
    if not found:
        return None
    from volatility3_ktstr.layers import stackers

    tables: Dict[bytes, object] = {}
    for root, la57, text_va, text_pa, hits in found:
        for banner_pa, key in hits:
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
