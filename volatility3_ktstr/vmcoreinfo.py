"""VMCOREINFO: the kernel's own description of itself for dump tools (no Volatility import).

The kernel fills a page of ``KEY=VALUE`` lines (kernel/vmcore_info.c and each architecture's
``arch_crash_save_vmcoreinfo``) and exports it as the ``VMCOREINFO`` ELF note of /proc/vmcore;
makedumpfile copies it into the kdump sub-header, QEMU's ``-device vmcoreinfo`` into its ELF
cores. Value formats, as the kernel prints them:

- ``SYMBOL(name)=%lx`` (runtime address, KASLR applied), ``KERNELOFFSET=%lx``: bare hex;
- ``NUMBER(name)=%ld`` (decimal, may be negative: x86 ``phys_base``) -- but arm64 prints
  ``NUMBER(kimage_voffset)``, ``NUMBER(PHYS_OFFSET)``, ``NUMBER(TCR_EL1_T1SZ)`` as ``0x%llx``,
  so NUMBER accepts both (QEMU 7.2 read ``phys_base`` as hex and got it wrong);
- ``OFFSET(s.m)``, ``SIZE(s)``, ``LENGTH(x)``, ``PAGESIZE``, ``CRASHTIME``: decimal;
- anything else (``OSRELEASE``, ``BUILD-ID``, ``CONFIG_*``): text.

:func:`parse` gives a :class:`VmcoreInfo`, a dict keyed by the full key (``"SYMBOL(init_uts_ns)"``)
with helpers for the values stackers and carvers need.
"""

import re
from typing import Dict, Iterable, Optional, Tuple

X86_START_KERNEL_MAP = 0xFFFFFFFF80000000
MASK64 = (1 << 64) - 1
MAX_TEXT = 1 << 16          # VMCOREINFO is one page (4 KiB on every architecture today)

_HEX_KEYS = ("SYMBOL(",)
_DEC_KEYS = ("OFFSET(", "SIZE(", "LENGTH(")
_DEC_PLAIN = {"PAGESIZE", "CRASHTIME"}
_NAME_RE = re.compile(r"^([A-Za-z_]+)\(([^()]+)\)$")


class VmcoreInfo(dict):
    """Parsed VMCOREINFO: ``{full key: int or str}`` plus typed accessors."""

    text = b""

    def _named(self, kind: str, name: str) -> Optional[int]:
        value = self.get(f"{kind}({name})")
        return value if isinstance(value, int) else None

    def symbol(self, name: str) -> Optional[int]:
        return self._named("SYMBOL", name)

    def number(self, name: str) -> Optional[int]:
        return self._named("NUMBER", name)

    def offset(self, name: str) -> Optional[int]:
        return self._named("OFFSET", name)

    def symbols(self) -> Dict[str, int]:
        """``{name: runtime address}`` of every SYMBOL() line."""
        out = {}
        for key, value in self.items():
            m = _NAME_RE.match(key)
            if m and m.group(1) == "SYMBOL" and isinstance(value, int):
                out[m.group(2)] = value
        return out

    @property
    def osrelease(self) -> str:
        return str(self.get("OSRELEASE", ""))

    @property
    def kernel_offset(self) -> Optional[int]:
        value = self.get("KERNELOFFSET")
        return value if isinstance(value, int) else None

    @property
    def page_size(self) -> Optional[int]:
        value = self.get("PAGESIZE")
        return value if isinstance(value, int) else None

    @property
    def arch(self) -> Optional[str]:
        return arch(self)


def parse(data) -> Optional[VmcoreInfo]:
    """VMCOREINFO text (bytes or str, NUL-terminated or not) -> :class:`VmcoreInfo`.

    None for text that is not a filled-in VMCOREINFO: no ``OSRELEASE``, or the ``OSRELEASE=%s``
    format string the kernel image holds in .rodata.
    """
    if isinstance(data, str):
        data = data.encode("latin-1", "replace")
    data = bytes(data[:MAX_TEXT]).split(b"\0", 1)[0]
    info = VmcoreInfo()
    info.text = data
    for line in data.decode("latin-1").splitlines():
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            continue
        try:
            if key.startswith(_HEX_KEYS) or key == "KERNELOFFSET":
                info[key] = int(value, 16)
            elif key.startswith("NUMBER("):
                info[key] = int(value, 0) if value.lower().startswith(("0x", "-0x")) else int(value, 10)
            elif key.startswith(_DEC_KEYS) or key in _DEC_PLAIN:
                info[key] = int(value, 10)
            else:
                info[key] = value
        except ValueError:
            info[key] = value
    release = info.get("OSRELEASE")
    if not isinstance(release, str) or not release or "%" in release:
        return None
    return info


def best(texts: Iterable) -> Optional[VmcoreInfo]:
    """The most complete VMCOREINFO among several texts (KERNELOFFSET first, then SYMBOL count)."""
    found = None
    for text in texts:
        info = parse(text)
        if info is None:
            continue
        score = (info.kernel_offset is not None, len(info.symbols()))
        if found is None or score > found[0]:
            found = (score, info)
    return found[1] if found else None


# --- architecture facts ------------------------------------------------------------------------


def arch(info) -> Optional[str]:
    """'x86_64', 'arm64' or None, from keys only these architectures export."""
    if "NUMBER(kimage_voffset)" in info or "NUMBER(TCR_EL1_T1SZ)" in info:
        return "arm64"
    if "NUMBER(phys_base)" in info or "SYMBOL(init_top_pgt)" in info or "NUMBER(pgtable_l5_enabled)" in info:
        return "x86_64"
    return None


def x86_kernel_pa(info, va: int) -> Optional[int]:
    """Physical address of a kernel-image address on x86-64 (``__pa_symbol``):
    ``va - __START_KERNEL_map + phys_base``. None without ``NUMBER(phys_base)``."""
    phys_base = info.get("NUMBER(phys_base)")
    if not isinstance(phys_base, int):
        return None
    return (va - X86_START_KERNEL_MAP + phys_base) & MASK64


def x86_page_table_root(info) -> Optional[int]:
    """Physical address of the kernel's top page table (``init_top_pgt``, older kernels
    ``swapper_pg_dir``/``init_level4_pgt``)."""
    for name in ("SYMBOL(init_top_pgt)", "SYMBOL(swapper_pg_dir)", "SYMBOL(init_level4_pgt)"):
        va = info.get(name)
        if isinstance(va, int):
            return x86_kernel_pa(info, va)
    return None


def x86_levels(info) -> Optional[int]:
    """4 or 5 (``NUMBER(pgtable_l5_enabled)``); None when the kernel does not say (older
    kernels, which only had 4 levels unless built for LA57)."""
    flag = info.get("NUMBER(pgtable_l5_enabled)")
    if not isinstance(flag, int):
        return None
    return 5 if flag else 4


def arm64_page_offset(va_bits: int) -> int:
    """PAGE_OFFSET for a VA width (start of the linear map, bottom of the TTBR1 range)."""
    return ((1 << 64) - (1 << va_bits)) & MASK64


def arm64_config(info) -> Optional[Tuple[int, int, bool]]:
    """(granule, va_bits actually in use, 52-bit OA format) from arm64 VMCOREINFO."""
    granule = info.get("PAGESIZE")
    t1sz = info.get("NUMBER(TCR_EL1_T1SZ)")
    va_bits = 64 - t1sz if isinstance(t1sz, int) and 0 < t1sz < 64 else info.get("NUMBER(VA_BITS)")
    if granule not in (4096, 16384, 65536) or not isinstance(va_bits, int):
        return None
    if granule == 65536:
        lpa = info.get("NUMBER(MAX_PHYSMEM_BITS)") == 52
    else:
        # 4K/16K only reach 52 bits with LPA2 (TCR_EL1.DS=1), which also changes descriptors.
        lpa = va_bits > 48
    return granule, va_bits, lpa


def arm64_phys_offset(info) -> Optional[int]:
    """The RAM base (memstart_addr) with the VA_BITS=52-kernel-on-48-bit-CPU bias removed.

    Such kernels lower memstart_addr by PAGE_OFFSET(48) - PAGE_OFFSET(52) so that the
    compile-time PAGE_OFFSET keeps working; undo that to get a physical address.
    """
    phys = info.get("NUMBER(PHYS_OFFSET)")
    cfg_bits = info.get("NUMBER(VA_BITS)")
    actual = arm64_config(info)
    if not isinstance(phys, int):
        return None
    if isinstance(cfg_bits, int) and actual and actual[1] != cfg_bits:
        phys += arm64_page_offset(actual[1]) - arm64_page_offset(cfg_bits)
    return phys & MASK64


def arm64_kernel_pa(info, va: int) -> Optional[int]:
    """Physical address of a kernel-image address on arm64: ``va - kimage_voffset``."""
    kvo = info.get("NUMBER(kimage_voffset)")
    if not isinstance(kvo, int):
        return None
    return (va - kvo) & MASK64


def kernel_pa(info, va: int) -> Optional[int]:
    """Physical address of a kernel-image address (no page tables needed), or None."""
    which = arch(info)
    if which == "x86_64":
        return x86_kernel_pa(info, va)
    if which == "arm64":
        return arm64_kernel_pa(info, va)
    return None


# --- the kernel banner ---------------------------------------------------------------------------


def banner_prefix(release: str) -> bytes:
    """How ``linux_banner`` starts for a release: ``Linux version <release> (``."""
    return f"Linux version {release} (".encode("latin-1", "replace")


def banner_matches(banner: bytes, release: str, version: Optional[str] = None) -> bool:
    """Whether ``banner`` (``Linux version %s (%s@%s) (%s) %s\\n``) is the one of a kernel whose
    ``uname -r`` is ``release`` and ``uname -v`` (init_uts_ns.name.version) is ``version``."""
    if not banner.startswith(banner_prefix(release)):
        return False
    if version is None:
        return True
    text = banner.rstrip(b"\0").rstrip(b"\n")
    return text.endswith(b" " + version.encode("latin-1", "replace"))
