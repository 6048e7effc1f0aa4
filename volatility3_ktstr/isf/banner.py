"""The exact `linux_banner` bytes Volatility keys a Linux ISF by."""

import re

BANNER_RE = re.compile(rb"Linux version [0-9][^\x00\n]{10,400}\n\x00")


def banner_bytes(text) -> bytes:
    """Bytes of the banner as the kernel stores it: the line, a newline and a NUL."""
    if isinstance(text, str):
        text = text.encode("utf-8")
    text = text.rstrip(b"\x00").rstrip(b"\n")
    if not text.startswith(b"Linux version "):
        raise ValueError(f"not a Linux banner (must start with 'Linux version '): {text[:40]!r}")
    return text + b"\n\x00"


def banner_from_elf(path, address):
    """Read the NUL-terminated banner at link-time ``address`` from an ELF's sections.

    Works on a stripped vmlinux (as extracted from vmlinuz): .rodata is still there. Returns
    None when no allocated section holds the address.
    """
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        elf = ELFFile(f)
        for sec in elf.iter_sections():
            start, size = sec["sh_addr"], sec["sh_size"]
            if not start or sec["sh_type"] == "SHT_NOBITS" or not start <= address < start + size:
                continue
            off = address - start
            f.seek(sec["sh_offset"] + off)
            data = f.read(min(1024, size - off))
            end = data.find(b"\x00")
            if end < 0 or not data.startswith(b"Linux version "):
                return None
            return data[:end + 1]
    return None
