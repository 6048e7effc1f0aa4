"""AArch64 (ARMv8-A / ARMv9-A) stage-1 translation layer for Linux dumps.

One layer serves both halves of the address space the way the MMU does: addresses with
bit 63 set are walked from the TTBR1 root (``page_map_offset_kernel``), the others from
the TTBR0 root (``page_map_offset``).  Process layers built by Volatility's
``_add_process_layer`` replace ``page_map_offset`` with ``mm->pgd`` and keep the kernel
root, which matches Linux on arm64 (user page tables hold no kernel entries).  When both
roots are equal the layer is a kernel layer and the lower half is unmapped: Linux never
runs with swapper_pg_dir in TTBR0, so walking user addresses through it would only alias
kernel entries.

Supported: 4K/16K/64K granules, any VA width from 25 to 48 bits, 52 bits with LPA2
(4K/16K, TCR_EL1.DS=1) or with 64K pages (FEAT_LVA), block descriptors only at the levels
where the architecture defines them, and 52-bit output addresses (LPA2: OA[51:50] in
descriptor bits 9:8; 64K FEAT_LPA: OA[51:48] in bits 15:12).
"""

import collections
import functools
import struct
from typing import Any, Dict, Iterable, List, Optional, Tuple

from volatility3.framework import exceptions, interfaces
from volatility3.framework.configuration import requirements
from volatility3.framework.layers import linear

_GRANULE_SHIFT = {4096: 12, 16384: 14, 65536: 16}
_MASK64 = (1 << 64) - 1
_unpack_q = struct.Struct("<Q").unpack_from


class WalkConfig:
    """Static description of one translation regime (one TTBRn): levels, masks, legality.

    Pure data, so it can be checked in isolation and shared by both halves.
    """

    def __init__(self, granule: int, va_bits: int, lpa: bool) -> None:
        if granule not in _GRANULE_SHIFT:
            raise ValueError(f"unsupported arm64 granule {granule} (4096, 16384 or 65536)")
        if not (25 <= va_bits <= 48 or (va_bits == 52 and (lpa or granule == 65536))):
            raise ValueError(
                f"unsupported arm64 VA width {va_bits} for granule {granule}"
                " (25..48, or 52 with LPA2/64K)"
            )
        self.granule = granule
        self.va_bits = va_bits
        self.lpa = lpa
        self.page_shift = shift = _GRANULE_SHIFT[granule]
        stride = shift - 3
        resolved = va_bits - shift
        nlevels = -(-resolved // stride)
        top_bits = resolved - stride * (nlevels - 1)
        first = 4 - nlevels
        if first < -1 or (first == -1 and not (granule == 4096 and lpa)):
            raise ValueError(f"arm64 VA width {va_bits} needs too many levels for granule {granule}")
        # Levels where a block descriptor (bits[1:0] == 0b01) is architecturally defined.
        if granule == 4096:
            blocks = {1, 2} | ({0} if lpa else set())
        else:
            blocks = {2} | ({1} if lpa else set())
        levels = []
        for i, level in enumerate(range(first, 4)):
            bits = top_bits if i == 0 else stride
            lshift = shift + stride * (3 - level)
            levels.append((lshift, (1 << bits) - 1, (1 << bits) * 8, level in blocks, level))
        self.levels: Tuple[Tuple[int, int, int, bool, int], ...] = tuple(levels)
        self.first_level = first
        # Output-address decoding (also used for next-level table addresses).
        if lpa and granule != 65536:
            self._oa_low = ((1 << 50) - 1) & ~((1 << shift) - 1)
            self._oa_hi_shift, self._oa_hi_mask, self._oa_hi_pos = 8, 0x3, 50
        elif lpa:
            self._oa_low = ((1 << 48) - 1) & ~((1 << shift) - 1)
            self._oa_hi_shift, self._oa_hi_mask, self._oa_hi_pos = 12, 0xF, 48
        else:
            self._oa_low = ((1 << 48) - 1) & ~((1 << shift) - 1)
            self._oa_hi_shift = None

    def output_address(self, desc: int) -> int:
        oa = desc & self._oa_low
        if self._oa_hi_shift is not None:
            oa |= ((desc >> self._oa_hi_shift) & self._oa_hi_mask) << self._oa_hi_pos
        return oa

    def __repr__(self) -> str:
        return f"WalkConfig(granule={self.granule}, va_bits={self.va_bits}, lpa={self.lpa})"


class AArch64(linear.LinearlyMappedLayer):
    """Translation layer for AArch64 stage-1 page tables (both TTBR0 and TTBR1 halves)."""

    _direct_metadata = collections.ChainMap(
        {"architecture": "AArch64"},
        {"mapped": True},
        interfaces.layers.TranslationLayerInterface._direct_metadata,
    )
    _bits_per_register = 64
    # A descriptor's struct format, as Intel layers name it: Volatility's kallsyms API reads
    # the kernel's byte order from it (little-endian descriptors; this layer reads no other).
    _entry_format = "<Q"

    def __init__(
        self,
        context: interfaces.context.ContextInterface,
        config_path: str,
        name: str,
        metadata: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(context=context, config_path=config_path, name=name, metadata=metadata)
        cfg = self.config
        self._base_layer = cfg["memory_layer"]
        self._page_map_offset = cfg["page_map_offset"]
        kroot = cfg.get("page_map_offset_kernel", None)
        self._kernel_root = self._page_map_offset if kroot is None else kroot
        granule = cfg.get("arm64_granule", None) or 4096
        va_bits = cfg.get("arm64_va_bits", None) or 48
        user_bits = cfg.get("arm64_va_bits_user", None) or va_bits
        lpa = bool(cfg.get("arm64_lpa", False))
        try:
            self._kwalk = WalkConfig(granule, va_bits, lpa)
            self._uwalk = WalkConfig(granule, user_bits, lpa)
        except ValueError as excp:
            raise exceptions.LayerException(name, str(excp)) from None
        self._user_enabled = self._page_map_offset != self._kernel_root
        self._kernel_start = (_MASK64 << va_bits) & _MASK64
        self._user_end = 1 << user_bits
        self._page_shift = self._kwalk.page_shift
        self._page_size = 1 << self._page_shift
        self._vpage_mask = _MASK64 & ~(self._page_size - 1)
        self._base_read = context.layers[self._base_layer].read

    # --- properties Volatility code expects on a translation layer ---------------------

    @property
    def page_size(self) -> int:
        return self._page_size

    @property
    def page_shift(self) -> int:
        return self._page_shift

    @property
    def page_mask(self) -> int:
        return self._vpage_mask

    @property
    def bits_per_register(self) -> int:
        return self._bits_per_register

    @property
    def minimum_address(self) -> int:
        return 0

    @property
    def maximum_address(self) -> int:
        return _MASK64

    @property
    def walk_configs(self) -> Tuple[WalkConfig, WalkConfig]:
        """(kernel/TTBR1, user/TTBR0) walk descriptions."""
        return self._kwalk, self._uwalk

    def canonicalize(self, addr: int) -> int:
        return addr & _MASK64

    def decanonicalize(self, addr: int) -> int:
        return addr & _MASK64

    @property
    def dependencies(self) -> List[str]:
        return [self._base_layer]

    # --- translation ---------------------------------------------------------------------

    def _fault(self, offset: int, bits: int, entry: int, why: str):
        return exceptions.PagedInvalidAddressException(self.name, offset, bits, entry, why)

    @functools.lru_cache(maxsize=1025)
    def _table(self, address: int, size: int) -> Optional[bytes]:
        try:
            return self._base_read(address, size)
        except exceptions.InvalidAddressException:
            return None

    @functools.lru_cache(maxsize=4096)
    def _walk(self, vpage: int) -> Tuple[int, int]:
        """Walks the tables for a page-aligned VA; returns (leaf output base, leaf shift)."""
        if vpage >> 63:
            if vpage < self._kernel_start:
                raise self._fault(vpage, self._kwalk.va_bits, 0, "Address outside the TTBR1 range")
            walk, table = self._kwalk, self._kernel_root
        else:
            if vpage >= self._user_end:
                raise self._fault(vpage, self._uwalk.va_bits, 0, "Address outside the TTBR0 range")
            if not self._user_enabled:
                raise self._fault(vpage, self._uwalk.va_bits, 0, "No TTBR0 (user) table for this layer")
            walk, table = self._uwalk, self._page_map_offset
        page_shift = walk.page_shift
        oa = walk.output_address
        for lshift, imask, tsize, block_ok, level in walk.levels:
            data = self._table(table, tsize)
            if data is None:
                fault = self._fault(vpage, lshift, table, f"Level {level} table at {table:#x} is not in memory")
                fault.ktstr_missing_table = table
                raise fault
            desc = _unpack_q(data, ((vpage >> lshift) & imask) << 3)[0]
            kind = desc & 3
            if kind == 3:
                if lshift == page_shift:
                    return oa(desc), lshift
                table = oa(desc)
                continue
            if kind == 1 and block_ok:
                return oa(desc) & ~((1 << lshift) - 1), lshift
            fault = self._fault(vpage, lshift, desc, f"Invalid level {level} descriptor {desc:#x}")
            if lshift == page_shift:
                fault.ktstr_leaf_table = (table, tsize)    # lets _mapping skip the table's holes
            raise fault
        raise self._fault(vpage, page_shift, 0, "Walk ended without a leaf")  # unreachable

    def explain_invalid(self, offset: int):
        """Why ``offset`` does not read, when the physical layer can say (kdump files: a page
        table or the page excluded, or past the end of a truncated file); else None."""
        explain = getattr(self._context.layers[self._base_layer], "explain_invalid", None)
        if explain is None:
            return None
        try:
            phys = self._translate(offset)[0]
        except exceptions.InvalidAddressException as e:
            missing = getattr(e, "ktstr_missing_table", None)
            return explain(missing) if missing is not None else None
        return explain(phys)

    def _translate(self, offset: int) -> Tuple[int, int, str]:
        base, shift = self._walk(offset & self._vpage_mask)
        return base | (offset & ((1 << shift) - 1)), 1 << shift, self._base_layer

    def _next_region(self, offset: int) -> Optional[int]:
        """If offset lies in an address-space hole, the first address after it (or None)."""
        if offset >> 63:
            return self._kernel_start if offset < self._kernel_start else None
        if offset >= self._user_end or not self._user_enabled:
            return self._kernel_start
        return None

    def _next_leaf(self, offset: int, table: int, tsize: int) -> int:
        """The first VA after ``offset`` whose page descriptor in its last-level ``table`` is a
        valid page, or the VA just past what the table maps. A sparse mapping (a BPF arena's
        4 GiB with a few pages) is then skipped a table at a time, not a fault per page."""
        shift = self._page_shift
        data = self._table(table, tsize)
        span = (tsize // 8) << shift
        table_va = offset & ~(span - 1) & _MASK64
        first = ((offset >> shift) & (tsize // 8 - 1)) + 1
        if data is not None:
            for i, (desc,) in enumerate(struct.iter_unpack("<Q", data[first * 8:]), first):
                if desc & 3 == 3:
                    return table_va + (i << shift)
        return table_va + span

    def _mapping(
        self, offset: int, length: int, ignore_errors: bool = False
    ) -> Iterable[Tuple[int, int, int, int, str]]:
        base = self._context.layers[self._base_layer]
        if length == 0:
            try:
                mapped, _, layer_name = self._translate(offset)
                if not base.is_valid(mapped):
                    raise exceptions.InvalidAddressException(layer_name, mapped)
            except exceptions.InvalidAddressException:
                if not ignore_errors:
                    raise
                return
            yield offset, 0, mapped, 0, layer_name
            return
        end = offset + length
        while offset < end:
            try:
                mapped, size, layer_name = self._translate(offset)
                chunk = min(size - (offset & (size - 1)), end - offset)
                if not base.is_valid(mapped, chunk):
                    raise exceptions.InvalidAddressException(layer_name, mapped)
            except exceptions.PagedInvalidAddressException as excp:
                if not ignore_errors:
                    raise
                nxt = self._next_region(offset)
                if nxt is None:
                    leaf = getattr(excp, "ktstr_leaf_table", None)
                    if leaf is not None:
                        nxt = self._next_leaf(offset, *leaf)
                    else:
                        nxt = (offset | ((1 << excp.invalid_bits) - 1)) + 1
                offset = nxt
                continue
            except exceptions.InvalidAddressException:
                if not ignore_errors:
                    raise
                offset += chunk
                continue
            yield offset, chunk, mapped, chunk, layer_name
            offset += chunk

    def mapping(
        self, offset: int, length: int, ignore_errors: bool = False
    ) -> Iterable[Tuple[int, int, int, int, str]]:
        """Sorted (offset, length, mapped_offset, mapped_length, layer) runs, merged when contiguous."""
        run = None
        for item in self._mapping(offset, length, ignore_errors):
            if run and run[0] + run[1] == item[0] and run[2] + run[3] == item[2] and run[4] == item[4]:
                run = (run[0], run[1] + item[1], run[2], run[3] + item[3], run[4])
                continue
            if run:
                yield run
            run = item
        if run:
            yield run

    def is_valid(self, offset: int, length: int = 1) -> bool:
        try:
            covered = 0
            for _, sublength, _, _, _ in self.mapping(offset, length):
                covered += sublength
            return covered == length
        except exceptions.InvalidAddressException:
            return False

    @classmethod
    def get_requirements(cls) -> List[interfaces.configuration.RequirementInterface]:
        return [
            requirements.TranslationLayerRequirement(name="memory_layer", optional=False),
            requirements.IntRequirement(
                name="page_map_offset", optional=False,
                description="TTBR0 (user) root table physical address; equal to the kernel root for a kernel-only layer",
            ),
            requirements.IntRequirement(
                name="page_map_offset_kernel", optional=True,
                description="TTBR1 (kernel) root table physical address (swapper_pg_dir)",
            ),
            requirements.IntRequirement(name="arm64_granule", optional=True, default=4096,
                                        description="Translation granule in bytes (4096, 16384, 65536)"),
            requirements.IntRequirement(name="arm64_va_bits", optional=True, default=48,
                                        description="Kernel VA width (64 - TCR_EL1.T1SZ)"),
            requirements.IntRequirement(name="arm64_va_bits_user", optional=True, default=0,
                                        description="User VA width (64 - TCR_EL1.T0SZ); 0: same as arm64_va_bits"),
            requirements.BooleanRequirement(name="arm64_lpa", optional=True, default=False,
                                            description="52-bit output address descriptor format (LPA2 / 64K LPA)"),
            requirements.IntRequirement(name="kernel_virtual_offset", optional=True),
            requirements.StringRequirement(name="kernel_banner", optional=True),
        ]


class LinuxAArch64(AArch64):
    """AArch64 layer for Linux kernels (name kept separate so Linux-only rules can grow here)."""
