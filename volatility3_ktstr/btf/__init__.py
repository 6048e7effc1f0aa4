"""BTF parsing with no Volatility dependency.

    from volatility3_ktstr.btf import Btf, load
    kernel = load("/sys/kernel/btf/vmlinux")
    prog = Btf.parse(blob, base=kernel)        # split BTF read out of a dump
    kernel.offsetof("task_struct", "comm")
"""

from .parser import Btf
from .sources import elf_arch, elf_section, guess_arch, load
from .types import INT_BOOL, INT_CHAR, INT_SIGNED, MODIFIERS, TRANSPARENT, BtfError, BtfType, Kind, Member

__all__ = [
    "Btf", "BtfError", "BtfType", "Kind", "Member", "load", "elf_section", "elf_arch", "guess_arch",
    "INT_SIGNED", "INT_CHAR", "INT_BOOL", "MODIFIERS", "TRANSPARENT",
]
