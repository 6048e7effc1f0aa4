"""Stackers that put the kernel's page-table layer on a Linux memory image.

``KtstrLinuxStacker`` runs before Volatility's Linux stackers (stack_order 33 < 34).

0. The file's own VMCOREINFO (kdump-compressed sub-header, ELF core note; ``fileinfo``): the
   layer for any x86-64 kernel (4 or 5 levels) or arm64 kernel is built from it directly --
   ``NUMBER(phys_base)`` (not the kdump sub-header's, which QEMU 7.2 writes wrong), KERNELOFFSET,
   ``SYMBOL(init_top_pgt)``/``swapper_pg_dir``, ``NUMBER(pgtable_l5_enabled)``, arm64 VA bits,
   ``kimage_voffset`` -- and the cached banner is chosen by release and ``uname -v``: no scan.

Otherwise it returns None -- leaving the stock path untouched -- unless the image holds an
x86-64 kernel running 5-level paging or an arm64 kernel. Evidence, cheapest first:

1. VMCOREINFO text in physical memory (``NUMBER(pgtable_l5_enabled)``, ``NUMBER(VA_BITS)``,
   ``NUMBER(TCR_EL1_T1SZ)``, ``NUMBER(kimage_voffset)``, ``SYMBOL(swapper_pg_dir)``,
   ``KERNELOFFSET`` ...).  A 4-level x86 kernel says ``pgtable_l5_enabled=0`` early in the
   scan and we stop there.
2. Otherwise the kernel ISF matched by banner (Volatility's identifier cache): kernel image
   symbols are read at ``banner_location + (symbol - linux_banner)`` since the image is
   physically contiguous (``__pgtable_l5_enabled``, ``kimage_voffset``, ``init_task.files``).
   A cached banner met before any VMCOREINFO text is tried this way at once (4-level x86-64
   too, as the layer Volatility's VMCOREINFO stacker would build): the scan stops at the
   kernel image, low in memory, instead of reading on, on a big machine maybe for hundreds of
   GiB, to VMCOREINFO (issue #28).

Every candidate configuration is validated by translating kernel addresses and checking
what they point at (``init_uts_ns`` release string, or the banner itself) before use.

Raw arm64 dumps start at the RAM base (0x40000000 on QEMU virt).  The base comes from, in
order: the ``KTSTR_PHYS_BASE`` environment variable, the config value
``automagic.LayerStacker.ktstr_phys_base``, ELF/LiME headers (those layers already map
physical addresses), then auto-detection (VMCOREINFO PHYS_OFFSET, kimage_voffset, a
short list of common RAM bases), each validated.  A non-zero base puts a
``PhysicalBaseLayer`` between the file and the translation layer.

Linux plugins accept the AArch64 layer thanks to two patches of Volatility that live, with
every other one, in ``volatility3_ktstr.volpatches``.
"""

import logging
import os
import re
import struct
from typing import Dict, List, Optional, Tuple

from volatility3.framework import constants, exceptions, interfaces
from volatility3.framework.automagic import symbol_cache
from volatility3.framework.configuration import requirements
from volatility3.framework.layers import intel, physical, segmented

from volatility3_ktstr import vmcoreinfo as vmcimod
from volatility3_ktstr.layers import cpustack, fileinfo, truncated  # noqa: F401 (registers its stacker)
from volatility3_ktstr.layers.arm64 import LinuxAArch64, WalkConfig
from volatility3_ktstr.layers.la57 import KtstrLinuxIntel32e, LinuxIntel32eLA57
# The scan and the per-file memo live in their own modules; their names stay importable here
# (and patchable: stack() looks them up in this module).
from volatility3_ktstr.layers.scan import (  # noqa: F401
    KERNEL_IMAGE_WINDOW, MAX_BANNER_HITS, MAX_BANNER_LEN, MAX_VMCOREINFO_BYTES, MAX_VMCOREINFO_HITS,
    SCAN_CHUNK, _BANNER_MAGIC, _VMCI_MAGIC, _read, _u64, banner_keys, read_window, scan_image)
from volatility3_ktstr.layers.kcheck import _maps_unread_kernel, _root_unreadable, stack_from_root_copy
from volatility3_ktstr.layers.stackmemo import (  # noqa: F401
    HINTS_FILE, MAX_HINT_FILES, STOCK_X86, _find_note, _hints_key, _load_hints, _recording,
    _vmcoreinfo_note_size, intel32e_layer, recall_hits, remember_hits, stock_x86_layer)

vollog = logging.getLogger(__name__)

PHYS_BASE_ENV = "KTSTR_PHYS_BASE"
PHYS_BASE_CONFIG = "automagic.LayerStacker.ktstr_phys_base"
X86_START_KERNEL_MAP = 0xFFFFFFFF80000000
# RAM bases tried for raw arm64 images when nothing better is known (QEMU virt, common SoCs).
COMMON_ARM64_RAM_BASES = (0x40000000, 0x80000000, 0x0)
# Cached banners tried as the kernel's own before the scan reaches VMCOREINFO (copies of the
# banner elsewhere in memory fail the check; each try costs a few reads).
MAX_EARLY_TRIES = 8


# --- pure helpers -------------------------------------------------------------------------


# VMCOREINFO parsing and facts live in volatility3_ktstr.vmcoreinfo (one parser for the package);
# these names stay for callers of this module.
parse_vmcoreinfo = vmcimod.parse
vmcoreinfo_arch = vmcimod.arch
arm64_page_offset = vmcimod.arm64_page_offset
arm64_config_from_vmcoreinfo = vmcimod.arm64_config
arm64_phys_offset_from_vmcoreinfo = vmcimod.arm64_phys_offset


def arm64_candidate_configs(hint: Optional[Tuple[int, int, bool]] = None) -> List[Tuple[int, int, bool]]:
    """Configurations Linux can run with, most common first; ``hint`` (if any) leads."""
    configs = [
        (4096, 48, False), (4096, 52, True), (4096, 39, False),
        (65536, 48, False), (65536, 52, True), (65536, 52, False), (65536, 42, False), (65536, 48, True),
        (16384, 48, False), (16384, 47, False), (16384, 52, True), (16384, 36, False),
    ]
    if hint in configs:
        configs.remove(hint)
    return ([hint] if hint else []) + configs


def arm64_root_candidates(root: int, cfg: Tuple[int, int, bool], compiled_va_bits: Optional[int]) -> List[int]:
    """TTBR1 root candidates: swapper_pg_dir, plus the offset a kernel built for 52-bit VA
    applies to TTBR1 when the CPU only gives it 48 bits with the same level count (64K)."""
    granule, va_bits, lpa = cfg
    roots = [root]
    for built in {compiled_va_bits or 52, 52}:
        if built > va_bits:
            try:
                big, small = WalkConfig(granule, built, True), WalkConfig(granule, va_bits, lpa)
            except ValueError:
                continue
            if len(big.levels) == len(small.levels):
                roots.append(root + big.levels[0][2] - small.levels[0][2])
    return roots


def parse_int(value) -> Optional[int]:
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip(), 0)
    except ValueError:
        return None



def configured_phys_base(context) -> Optional[int]:
    """Physical address of byte 0 of a raw image, when the user gave one (env, then config)."""
    for origin, value in ((PHYS_BASE_ENV, os.environ.get(PHYS_BASE_ENV)),
                          (PHYS_BASE_CONFIG, context.config.get(PHYS_BASE_CONFIG, None))):
        if value is None or value == "":
            continue
        parsed = parse_int(value)
        if parsed is None or parsed < 0:
            vollog.warning("ktstr: ignoring %s=%r: not a non-negative integer (e.g. 0x40000000)", origin, value)
            continue
        return parsed
    return None


# --- layers built by the stacker ------------------------------------------------------------


class PhysicalBaseLayer(segmented.SegmentedLayer):
    """Shows a raw image whose byte 0 is physical address ``phys_base`` at its physical addresses."""

    def _load_segments(self) -> None:
        base = self.context.layers[self._base_layer]
        size = base.maximum_address + 1 - base.minimum_address
        phys = self.config["phys_base"]
        self._segments = [(phys, base.minimum_address, size, size)]

    @classmethod
    def get_requirements(cls) -> List[interfaces.configuration.RequirementInterface]:
        return super().get_requirements() + [
            requirements.IntRequirement(name="phys_base", optional=False,
                                        description="Physical address of the first byte of the base layer"),
        ]


def _physical_view(context, layer_name: str, phys_base: int) -> str:
    """Layer name whose offsets are physical addresses (adds a PhysicalBaseLayer if needed)."""
    if not phys_base:
        return layer_name
    name = context.layers.free_layer_name("KtstrPhysical")
    path = interfaces.configuration.path_join("KtstrStacker", name)
    context.config[interfaces.configuration.path_join(path, "base_layer")] = layer_name
    context.config[interfaces.configuration.path_join(path, "phys_base")] = phys_base
    context.add_layer(PhysicalBaseLayer(context, path, name))
    return name


def _build_arm64(context, phys_layer: str, root: int, cfg: Tuple[int, int, bool], kvo: int, banner: Optional[bytes]) -> LinuxAArch64:
    granule, va_bits, lpa = cfg
    name = context.layers.free_layer_name("KtstrAArch64")
    path = interfaces.configuration.path_join("KtstrStacker", name)
    join = interfaces.configuration.path_join
    context.config[join(path, "memory_layer")] = phys_layer
    context.config[join(path, "page_map_offset")] = root
    context.config[join(path, "page_map_offset_kernel")] = root
    context.config[join(path, "arm64_granule")] = granule
    context.config[join(path, "arm64_va_bits")] = va_bits
    context.config[join(path, "arm64_lpa")] = lpa
    context.config[join(path, "kernel_virtual_offset")] = kvo
    if banner:
        context.config[join(path, "kernel_banner")] = str(banner, "latin-1")
    return LinuxAArch64(context, path, name, metadata={"os": "Linux"})


def _build_x86(context, phys_layer: str, root: int, kvo: int, banner: Optional[bytes],
               la57: bool, kernel_map_phys: Optional[int] = None) -> intel.LinuxIntel32e:
    """LinuxIntel32eLA57 (5 levels) or Volatility's LinuxIntel32e (4 levels; with
    ``explain_invalid`` for page tables a kdump file lacks)."""
    name = context.layers.free_layer_name("KtstrLA57" if la57 else "KtstrIntel32e")
    path = interfaces.configuration.path_join("KtstrStacker", name)
    join = interfaces.configuration.path_join
    context.config[join(path, "memory_layer")] = phys_layer
    context.config[join(path, "page_map_offset")] = root
    context.config[join(path, "kernel_virtual_offset")] = kvo
    if banner:
        context.config[join(path, "kernel_banner")] = str(banner, "latin-1")
    if kernel_map_phys is not None:
        context.config[join(path, "ktstr_kernel_map_phys")] = kernel_map_phys
    cls = LinuxIntel32eLA57 if la57 else KtstrLinuxIntel32e
    return cls(context, path, name, metadata={"os": "Linux"})


def _build_la57(context, phys_layer: str, root: int, kvo: int, banner: Optional[bytes]) -> LinuxIntel32eLA57:
    return _build_x86(context, phys_layer, root, kvo, banner, True)


def _set_banner(context, layer, banner: Optional[bytes]) -> None:
    if banner:
        context.config[interfaces.configuration.path_join(layer.config_path, "kernel_banner")] = \
            str(banner, "latin-1")


def _uts_matches(context, layer, info) -> bool:
    """True if init_uts_ns (VMCOREINFO address) reads back as Linux + OSRELEASE through layer."""
    return _uts_of(context, layer, info) is not None


def _uts_of(context, layer, info) -> Optional[Tuple[str, str]]:
    """(release, version) of init_uts_ns read through the virtual ``layer``, when it says Linux
    and OSRELEASE; else None."""
    return fileinfo.read_uts(layer.read, info, physical=False)


def _drop_layers(context, names: List[str]) -> None:
    for name in names:
        if name in context.layers:
            try:
                context.layers.del_layer(name)
            except Exception:  # a layer still depended upon: leave it, the clone is discarded
                pass


# --- the stacker ------------------------------------------------------------------------------


class KtstrLinuxStacker(interfaces.automagic.StackerLayerInterface):
    """Stacks LinuxIntel32eLA57 or LinuxAArch64 when the image needs it; otherwise None."""

    stack_order = 33
    exclusion_list = ["mac", "windows"]

    @classmethod
    def stack(
        cls,
        context: interfaces.context.ContextInterface,
        layer_name: str,
        progress_callback: constants.ProgressCallback = None,
    ) -> Optional[interfaces.layers.DataLayerInterface]:
        layer = context.layers[layer_name]
        if isinstance(layer, (intel.Intel, LinuxAArch64)):
            return None
        try:
            banners = symbol_cache.load_cache_manager().get_identifier_dictionary(operating_system="linux")
        except ValueError:
            banners = {}
        if not banners:
            return None

        # The file's own VMCOREINFO (kdump sub-header, ELF note): no scan of memory at all.
        direct = fileinfo.layer_vmcoreinfo(context, layer_name)
        if direct is not None and vmcoreinfo_arch(direct):
            result = cls._from_vmcoreinfo(context, layer_name, direct, [], banners, any_levels=True)
            if result is not None:
                return result
            why = _root_unreadable(context, layer_name, direct)
            if why:
                result = stack_from_root_copy(cls, context, layer_name, direct, banners)
                if result is not None:
                    vollog.warning(f"ktstr: {why.split('; ')[0]}; using a copy of its kernel half "
                                   f"at physical {result.config['page_map_offset']:#x}")
                    return result
                # Stacking cannot fail loudly: say why once, so that Volatility's "Unable to
                # validate the plugin requirements" is not all the user sees.
                vollog.warning(f"ktstr: {why}")
            vollog.info("ktstr: the file's VMCOREINFO did not give a working configuration; "
                        "searching memory")

        # The CPUs' registers (QEMU's x86 CPU state: CR3, CR4): no scan either.
        result = cpustack.stack_from_cpu_notes(cls, context, layer_name, banners)
        if result is not None:
            return result

        # A dump seen before: read where the useful hits were last time instead of scanning
        # (the LA57 dump's kernel image sits 600 MB in); a full scan if that does not stack.
        remembered = recall_hits(context, layer_name)
        if remembered is not None:
            result = cls._stack_from(context, layer_name, remembered, banners)
            if result is STOCK_X86:
                result = stock_x86_layer(context, layer_name, remembered, banners)
            if result is not None:
                return result
        seen: List[Tuple[str, int]] = []
        scan = _recording(scan_image(context, layer_name, progress_callback), seen)
        result = cls._stack_from(context, layer_name, scan, banners)
        if result is STOCK_X86:
            _find_note(context, layer_name, scan, seen)
        if result is not None:
            remember_hits(context, layer_name, seen)
        return None if result is STOCK_X86 else result

    @classmethod
    def _stack_from(cls, context, layer_name, scan, banners):
        vmcis: List[Tuple[int, Dict[str, object]]] = []
        hits: List[Tuple[int, bytes]] = []
        early: set = set()
        for kind, offset, text in scan:
            if kind == "vmcoreinfo":
                info = parse_vmcoreinfo(text)
                if info is None:
                    continue
                arch = vmcoreinfo_arch(info)
                if arch == "x86_64" and not info.get("NUMBER(pgtable_l5_enabled)"):
                    vollog.debug("ktstr: VMCOREINFO says 4-level x86-64 paging; leaving it to the stock stackers")
                    return STOCK_X86
                if arch:
                    vmcis.append((offset, info))
            else:
                hits.append((offset, text))
                key = next((k for k in banner_keys(text) if k in banners), None)
                if not vmcis and key is not None and len(early) < MAX_EARLY_TRIES:
                    # A cached kernel's banner: its ISF says where the page tables are (the
                    # image is physically contiguous), so the scan stops here instead of
                    # reading on, maybe to the end of a huge dump, for VMCOREINFO text.
                    early.add(offset)
                    result = cls._from_isf(context, layer_name, [(offset, text)], banners, early=True)
                    if result is not None:
                        return result
            if vmcis and cls._banner_for(vmcis[0][1], hits, banners)[1]:
                break  # have the configuration and a cached banner: no need to read further

        if vmcis:
            for _offset, info in vmcis:
                result = cls._from_vmcoreinfo(context, layer_name, info, hits, banners)
                if result is not None:
                    return result
            vollog.debug("ktstr: VMCOREINFO found but no configuration validated")
        return cls._from_isf(context, layer_name, hits, banners)

    # -- VMCOREINFO path --

    @staticmethod
    def _banner_for(info, hits, banners) -> Tuple[Optional[bytes], bool]:
        """(banner key for kernel_banner, whether it is in the ISF cache) matching OSRELEASE."""
        prefix = f"Linux version {info['OSRELEASE']} (".encode("latin-1")
        fallback = []
        for _off, text in hits:
            if not text.startswith(prefix):
                continue
            keys = banner_keys(text)
            for key in keys:
                if key in banners:
                    return key, True
            if keys:
                fallback.append(keys[0])
        # No ISF: still record a banner so the "no symbols" message names the kernel.  Prefer
        # one with a build number ("#1 SMP"): other copies (e.g. a template without it) exist.
        fallback.sort(key=lambda k: re.search(rb"\) #\d", k) is None)
        return (fallback[0] if fallback else None), False

    @staticmethod
    def _banner_by_uts(context, phys_layer, info, uts, banners) -> Optional[bytes]:
        """The cached banner of the kernel whose uname -r/-v are ``uts``, without a scan.

        linux_banner is "Linux version <release> (<builder>) (<compiler>) <version>\\n": the
        release and version pick it among the cached banners; if builds differ only in builder
        or compiler, the candidates are looked for in the kernel image (a bounded window after
        _stext, physical, the image being physically contiguous).
        """
        if uts is None:     # init_uts_ns unreadable: the release alone, when it is unambiguous
            found = [k for k in banners if k and vmcimod.banner_matches(k, info.osrelease)]
            return found[0] if len({banners[k] for k in found}) == 1 else None
        release, version = uts
        found = [k for k in banners if k and vmcimod.banner_matches(k, release, version)]
        if len({banners[k] for k in found}) <= 1:
            return found[0] if found else None
        stext = info.symbol("_stext") or info.symbol("_text")
        start = vmcimod.kernel_pa(info, stext) if stext is not None else None
        if start is None:
            return found[0]
        window = b""
        for offset in range(0, KERNEL_IMAGE_WINDOW, SCAN_CHUNK):
            try:
                window = read_window(context.layers[phys_layer], start + offset, SCAN_CHUNK)
            except exceptions.InvalidAddressException:
                continue
            for key in found:
                if key.rstrip(b"\0") in window:
                    return key
        return found[0]

    @classmethod
    def _from_vmcoreinfo(cls, context, layer_name, info, hits, banners, any_levels=False):
        """The kernel's layer from VMCOREINFO, validated by reading init_uts_ns through it.

        ``any_levels``: also build 4-level x86-64 (otherwise left to the stock stackers, which
        the scan path has already paid for); used for VMCOREINFO from the file's headers.
        """
        banner, cached = cls._banner_for(info, hits, banners)
        arch = vmcoreinfo_arch(info)
        kvo = info.get("KERNELOFFSET", 0) or 0
        if arch == "x86_64":
            root = vmcimod.x86_page_table_root(info)
            if root is None:
                return None
            levels = vmcimod.x86_levels(info)
            if levels == 5 or not any_levels:
                tries = [True]
            else:
                tries = [False] if levels == 4 else [False, True]
            for base in cls._x86_bases(context, layer_name):
                added = []
                phys = _physical_view(context, layer_name, base)
                if phys != layer_name:
                    added.append(phys)
                for la57 in tries:
                    new = _build_x86(context, phys, root, kvo, banner, la57)
                    uts = _uts_of(context, new, info)
                    if uts is not None or _maps_unread_kernel(new, info):
                        if not cached:
                            _set_banner(context, new, cls._banner_by_uts(context, phys, info, uts, banners)
                                        or banner)
                        vollog.debug("ktstr: %s from VMCOREINFO, root %#x, KASLR %#x",
                                     "LA57" if la57 else "4-level", root, kvo)
                        return new
                    _drop_layers(context, [new.name])
                _drop_layers(context, added)
            return None

        cfg = arm64_config_from_vmcoreinfo(info)
        kvoff = info.get("NUMBER(kimage_voffset)")
        swapper = info.get("SYMBOL(swapper_pg_dir)")
        if cfg is None or not isinstance(kvoff, int) or not isinstance(swapper, int):
            return None
        root = (swapper - kvoff) & ((1 << 64) - 1)
        extra = [arm64_phys_offset_from_vmcoreinfo(info)]
        compiled = info.get("NUMBER(VA_BITS)")
        for base in cls._phys_bases(context, layer_name, extra):
            added = []
            phys = _physical_view(context, layer_name, base)
            if phys != layer_name:
                added.append(phys)
            for candidate_root in arm64_root_candidates(root, cfg, compiled if isinstance(compiled, int) else None):
                try:
                    new = _build_arm64(context, phys, candidate_root, cfg, kvo, banner)
                except exceptions.LayerException:
                    continue
                uts = _uts_of(context, new, info)
                if uts is not None or _maps_unread_kernel(new, info):
                    if not cached:
                        _set_banner(context, new, cls._banner_by_uts(context, phys, info, uts, banners)
                                    or banner)
                    vollog.debug("ktstr: AArch64 from VMCOREINFO, %s root %#x base %#x", cfg, candidate_root, base)
                    return new
            _drop_layers(context, added)
        return None

    @staticmethod
    def _x86_bases(context, layer_name: str) -> List[int]:
        return KtstrLinuxStacker._phys_bases(context, layer_name, [], guesses=())

    @staticmethod
    def _phys_bases(context, layer_name: str, derived: List[Optional[int]],
                     guesses=COMMON_ARM64_RAM_BASES) -> List[int]:
        """Physical addresses of the layer's byte 0 to try, best first."""
        layer = context.layers[layer_name]
        if not isinstance(layer, (physical.FileLayer, physical.BufferDataLayer)):
            return [0]  # ELF, LiME, ...: the format's headers already place data at physical addresses
        configured = configured_phys_base(context)
        if configured is not None:
            return [configured]
        bases: List[int] = []
        for base in [b for b in derived if b is not None] + [0] * (not guesses) + list(guesses):
            if base not in bases:
                bases.append(base)
        return bases

    # -- ISF path (no VMCOREINFO) --

    @classmethod
    def _from_isf(cls, context, layer_name, hits, banners, early=False):
        """The kernel's layer from the ISF of a cached banner found at a physical offset, or
        None: x86-64 5-level and arm64; ``early`` (the scan has not met VMCOREINFO yet) also
        x86-64 4-level."""
        # Heavy imports, only on this path.  LinuxKernelIntermedSymbols registers classes from
        # extension submodules that `vol` imports via its plugins but a library caller may not.
        from volatility3.framework.symbols import linux as linux_symbols
        from volatility3.framework.symbols.linux.extensions import network  # noqa: F401

        # One ISF load per distinct banner (loading costs seconds); then try each copy's offset.
        offsets_by_key: Dict[bytes, List[int]] = {}
        for offset, text in hits:
            key = next((k for k in banner_keys(text) if k in banners), None)
            if key is not None:
                offsets_by_key.setdefault(key, []).append(offset)
        for key, offsets in offsets_by_key.items():
            table_name = context.symbol_space.free_table_name("KtstrStacker")
            try:
                table = linux_symbols.LinuxKernelIntermedSymbols(
                    context, "temporary." + table_name, name=table_name, isf_url=banners[key]
                )
            except Exception as excp:  # a broken ISF must not stop stacking
                vollog.info("ktstr: cannot load ISF %s: %s", banners[key], excp)
                continue
            context.symbol_space.append(table)
            symbols = set(table.symbols)
            if "linux_banner" not in symbols:
                continue
            for offset in offsets:
                if "init_top_pgt" in symbols:
                    result = cls._la57_from_isf(context, layer_name, table, offset, key)
                    if result is None and early:
                        # Only before the scan met VMCOREINFO: the layer that stacker would
                        # build from it later. With none in memory at all, Volatility's
                        # banner stacker keeps the job, as before.
                        result = cls._x86_4level_from_isf(context, layer_name, table, offset, key)
                elif "kimage_voffset" in symbols and "swapper_pg_dir" in symbols:
                    result = cls._arm64_from_isf(context, layer_name, table, offset, key)
                else:
                    result = None
                if result is not None:
                    return result
        return None

    @staticmethod
    def _image_reader(context, layer_name, table, banner_offset):
        """Reads kernel-image symbols at banner_offset + (symbol - linux_banner)."""
        anchor = table.get_symbol("linux_banner").address

        def at(symbol: str, extra: int = 0) -> Optional[int]:
            if symbol not in table.symbols:
                return None
            return banner_offset + table.get_symbol(symbol).address - anchor + extra

        return at

    @staticmethod
    def _virtual_shift(context, layer_name, table, at) -> Optional[int]:
        """KASLR virtual shift from init_task.files (a pointer to init_files), like Volatility."""
        if "init_task" not in table.symbols or "init_files" not in table.symbols:
            return None
        try:
            files_off = table.get_type("task_struct").relative_child_offset("files")
        except (exceptions.SymbolError, KeyError, AttributeError):
            return None
        value = _u64(context, layer_name, at("init_task", files_off))
        if value is None:
            return None
        return (value - table.get_symbol("init_files").address) & ((1 << 64) - 1)

    @classmethod
    def _la57_from_isf(cls, context, layer_name, table, offset, key):
        at = cls._image_reader(context, layer_name, table, offset)
        flag_at = at("__pgtable_l5_enabled")
        flag = _read(context, layer_name, flag_at, 4) if flag_at is not None else None
        if not flag or not struct.unpack("<I", flag)[0]:
            return None  # 4-level (or unknown): the stock stacker's job
        shift = cls._virtual_shift(context, layer_name, table, at)
        if shift is None:
            return None
        for base in cls._x86_bases(context, layer_name):
            phys = _physical_view(context, layer_name, base)
            new = _build_la57(context, phys, at("init_top_pgt") + base, shift, key)
            banner_va = table.get_symbol("linux_banner").address + shift
            try:
                if new.translate(banner_va)[0] == offset + base:
                    return new
            except exceptions.InvalidAddressException:
                pass
            _drop_layers(context, [phys] if phys != layer_name else [])
        return None

    @classmethod
    def _x86_4level_from_isf(cls, context, layer_name, table, offset, key):
        """A 4-level x86-64 kernel's layer from its ISF: ``init_top_pgt`` and the KASLR shift
        read in the kernel image around the banner at ``offset``. The layer is the one
        Volatility's VMCOREINFO stacker builds (``Intel32e``, the same configuration; see
        stackmemo.stock_x86_layer), kept only if it translates ``linux_banner`` back to
        ``offset``; None otherwise (a 5-level kernel, a raw file not starting at physical 0)."""
        at = cls._image_reader(context, layer_name, table, offset)
        flag_at = at("__pgtable_l5_enabled")
        flag = _read(context, layer_name, flag_at, 4) if flag_at is not None else None
        if flag and struct.unpack("<I", flag)[0]:
            return None
        if cls._x86_bases(context, layer_name) != [0]:
            return None
        shift = cls._virtual_shift(context, layer_name, table, at)
        root = at("init_top_pgt")
        if shift is None or root is None or shift & 0xFFF:
            return None
        new = intel32e_layer(context, layer_name, key, root, shift)
        banner_va = (table.get_symbol("linux_banner").address + shift) & ((1 << 64) - 1)
        try:
            if new.translate(banner_va)[0] == offset:
                vollog.debug("ktstr: 4-level x86-64 from the ISF, root %#x, KASLR %#x", root, shift)
                return new
        except exceptions.InvalidAddressException:
            pass
        return None

    @classmethod
    def _arm64_from_isf(cls, context, layer_name, table, offset, key):
        at = cls._image_reader(context, layer_name, table, offset)
        kvoff = _u64(context, layer_name, at("kimage_voffset"))
        shift = cls._virtual_shift(context, layer_name, table, at)
        link_banner = table.get_symbol("linux_banner").address
        derived = []
        if kvoff is not None and shift is not None:
            # PA(banner) = VA(banner) - kimage_voffset, and PA = layer offset + base.
            derived.append((link_banner + shift - kvoff - offset) & ((1 << 64) - 1))
        bases = cls._phys_bases(context, layer_name, derived)
        shifts = [shift] if shift is not None else []
        for base in bases:
            phys = _physical_view(context, layer_name, base)
            root = at("swapper_pg_dir") + base
            for cfg in arm64_candidate_configs():
                for candidate_root in arm64_root_candidates(root, cfg, None):
                    for vshift in shifts:
                        try:
                            new = _build_arm64(context, phys, candidate_root, cfg, vshift, key)
                            ok = new.translate(link_banner + vshift)[0] == offset + base
                            ok = ok and new.translate(table.get_symbol("init_task").address + vshift)[0] == at("init_task") + base
                        except exceptions.InvalidAddressException:
                            ok = False
                        except exceptions.LayerException:
                            continue
                        if ok:
                            return new
            _drop_layers(context, [phys] if phys != layer_name else [])
        return None
