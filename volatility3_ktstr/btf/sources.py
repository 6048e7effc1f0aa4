"""Where BTF comes from: raw files (/sys/kernel/btf/vmlinux), ELF files (.BTF of a vmlinux or a
BPF object, via pyelftools) and byte blobs read out of a dump."""

import os

from .parser import Btf
from .types import BtfError

ELF_MAGIC = b"\x7fELF"
# e_machine values we map to Volatility-style architecture names.
ELF_MACHINES = {62: "x86_64", 183: "arm64", 3: "x86", 40: "arm"}


def load(path, base=None) -> Btf:
    """Parse BTF from a raw BTF file or from the .BTF section of an ELF file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise BtfError(f"cannot read {path}: {e.strerror}", None) from None
    if head == ELF_MAGIC:
        return Btf.parse(elf_section(path, ".BTF"), base=base, source=path)
    with open(path, "rb") as f:
        return Btf.parse(f.read(), base=base, source=path)


def elf_section(path, name) -> bytes:
    """Bytes of section ``name`` of an ELF file; BtfError naming the section if absent."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            sec = elf.get_section_by_name(name)
            if sec is None:
                raise BtfError(f"ELF file has no {name} section (kernel built without "
                               f"CONFIG_DEBUG_INFO_BTF?)", None, path)
            return sec.data()
    except ELFError as e:
        raise BtfError(f"not a readable ELF file: {e}", None, path) from None


def elf_arch(path):
    """Architecture name of an ELF file ('x86_64', 'arm64', ...) or None if not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != ELF_MAGIC:
        return None
    little = head[5] == 1
    machine = int.from_bytes(head[18:20], "little" if little else "big")
    return ELF_MACHINES.get(machine)


def guess_arch(btf: Btf):
    """Guess the kernel architecture from its BTF (pt_regs differs per architecture)."""
    for t in btf.find("user_pt_regs"):
        if t.is_struct and t.member("pstate") is not None:
            return "arm64"
    for t in btf.find("pt_regs"):
        if t.is_struct and t.member("r15") is not None:
            return "x86_64"
    return None
