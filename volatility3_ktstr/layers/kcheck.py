"""Checks that a candidate page-table layer is the kernel's, when the usual check cannot run.

The stackers validate a layer by reading ``init_uts_ns`` through it. In a kdump file whose
dump level left that page out, or in a file cut short, the page is missing while the page
tables are there: :func:`_maps_unread_kernel` then checks that the tables map kernel-image
symbols where VMCOREINFO puts them. When the tables' root itself is missing,
:func:`_root_unreadable` says so in one line.
"""

import struct
from typing import Iterator, Optional

from volatility3.framework import exceptions

from volatility3_ktstr import vmcoreinfo as vmcimod

KERNEL_CHECK_SYMBOLS = ("init_uts_ns", "_stext", "swapper_pg_dir", "init_top_pgt", "_text")


def _maps_unread_kernel(layer, info) -> bool:
    """When init_uts_ns cannot be read (its page is excluded, or past the end of a truncated
    file), whether ``layer``'s page tables map at least two kernel-image symbols VMCOREINFO
    names to the physical addresses it gives them (the tables themselves were read; only the
    target pages are missing)."""
    uts = info.symbol("init_uts_ns")
    if uts is None:
        return False
    try:
        layer.read(uts, 1)
        return False                      # readable, and _uts_of said it is not this kernel
    except exceptions.InvalidAddressException:
        pass
    return _maps_kernel(layer, info)


def _maps_kernel(layer, info) -> bool:
    """Whether ``layer`` maps at least two kernel-image symbols of VMCOREINFO to the physical
    addresses VMCOREINFO gives them, and none elsewhere (the target pages need not be there)."""
    agree = 0
    for name in KERNEL_CHECK_SYMBOLS:
        va = info.symbol(name)
        pa = vmcimod.kernel_pa(info, va) if va is not None else None
        if pa is None:
            continue
        try:
            if layer._translate(va)[0] != pa:
                return False
        except exceptions.InvalidAddressException:
            continue
        agree += 1
    return agree >= 2


def _root_unreadable(context, layer_name, info) -> Optional[str]:
    """"the kernel's page tables (...) cannot be read: <why>" when the page-table root
    VMCOREINFO names is a page the file cannot give (excluded, past the end of a truncated
    file); else None."""
    explain = getattr(context.layers[layer_name], "explain_invalid", None)
    if explain is None:
        return None
    if vmcimod.arch(info) == "x86_64":
        root = vmcimod.x86_page_table_root(info)
    else:
        swapper, kvoff = info.get("SYMBOL(swapper_pg_dir)"), info.get("NUMBER(kimage_voffset)")
        root = (swapper - kvoff) & ((1 << 64) - 1) if isinstance(swapper, int) and isinstance(kvoff, int) else None
    err = explain(root) if root is not None else None
    if err is None:
        return None
    return (f"the kernel's page tables (root at physical {root:#x}) cannot be read: {err.reason}; "
            f"no kernel address can be translated")


X86_KERNEL_MAP_INDEX = 511           # the top-level entry of __START_KERNEL_map (4 and 5 levels)
KERNEL_IMAGE_SPAN = 1 << 30          # where that entry's table may lie after _stext
MAX_ROOT_SEARCH_PAGES = 1 << 20
MAX_ROOT_CANDIDATES = 64


def x86_root_copies(kdump, info) -> Iterator[tuple]:
    """(physical address, table of its last entry) of other top-level page tables of the
    kernel, for when the file lost init_top_pgt: each process's table holds a copy of the
    kernel half, whose last entry points into the kernel image (level3_kernel_pgt). Pages in
    the file, in pfn order, bounded; the caller picks and validates."""
    stext = info.symbol("_stext") or info.symbol("_text")
    lo = vmcimod.kernel_pa(info, stext) if stext is not None else None
    if lo is None:
        return
    hi = lo + KERNEL_IMAGE_SPAN
    shift, seen, found = kdump.page_shift, 0, 0
    step = max(1, kdump.block_size // 4096)
    for pfn, count in kdump.dumped_runs():
        for block in range(pfn, pfn + count):
            seen += 1
            if seen > MAX_ROOT_SEARCH_PAGES or found >= MAX_ROOT_CANDIDATES:
                return
            try:
                data = kdump.read(block << shift, kdump.block_size, pad=False)
            except Exception:          # a page the file cannot give: not a candidate
                continue
            for i in range(step):
                entry = struct.unpack_from("<Q", data, i * 4096 + X86_KERNEL_MAP_INDEX * 8)[0]
                target = entry & 0x000FFFFFFFFFF000
                if entry & 1 and lo <= target < hi:
                    found += 1
                    yield (block << shift) + i * 4096, target


def stack_from_root_copy(stacker, context, layer_name, info, banners):
    """x86-64 whose init_top_pgt the file lost (truncated, excluded): another top-level table
    with the kernel half (:func:`x86_root_copies`), with kernel-image addresses translated
    as ``__pa_symbol`` does where the tables below are missing too; checked by reading
    init_uts_ns (or the kernel-image mapping) as the original would be."""
    from volatility3_ktstr.layers import stackers

    kdump = getattr(context.layers[layer_name], "kdump", None)
    if kdump is None or vmcimod.arch(info) != "x86_64":
        return None
    la57 = vmcimod.x86_levels(info) == 5
    banner = stacker._banner_by_uts(context, layer_name, info, None, banners)
    copies = list(x86_root_copies(kdump, info))
    targets = [t for _r, t in copies]
    # Every copy points at the same kernel-map table: the most common target is it.
    common = max(set(targets), key=targets.count) if targets else None
    for root in [r for r, t in copies if t == common][:4]:
        new = stackers._build_x86(context, layer_name, root, info.get("KERNELOFFSET", 0) or 0, banner,
                                  la57, kernel_map_phys=info.get("NUMBER(phys_base)"))
        # The tables (or, where they are missing too, __pa_symbol) put the kernel image where
        # VMCOREINFO says, and init_uts_ns names this kernel unless its page is gone.
        if _maps_kernel(new, info) and (stackers._uts_of(context, new, info) is not None
                                        or _maps_unread_kernel(new, info)):
            return new
        stackers._drop_layers(context, [new.name])
    return None
