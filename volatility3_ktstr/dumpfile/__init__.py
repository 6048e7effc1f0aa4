"""Dump files as physical memory images, one module per format (no Volatility import).

- :mod:`.raw`: raw images (byte 0 = a given physical address);
- :mod:`.elf`: ELF64 cores (QEMU ``dump-guest-memory``, /proc/vmcore, ``ktstr-minimize``);
- :mod:`.lime`: LiME files;
- :mod:`.kdump`: kdump-compressed files (makedumpfile, QEMU ``-z``), plain or flattened.

:func:`open_image` detects the format from the first bytes and returns an image with
``format``, ``ranges``, ``read(phys, size)`` (zero-padded), ``vmcoreinfo_texts()`` and
``close()`` (see :mod:`.image`). Errors: :mod:`.errors`.
"""

import os

from .errors import CorruptPage, DumpError, ExcludedPage, MissingCodec, PageError  # noqa: F401

HEAD_BYTES = 64


def sniff(head: bytes) -> str:
    """"kdump", "kdump-flat", "elf", "lime" or "raw" from a file's first bytes."""
    from . import elf, kdump, lime

    if kdump.is_kdump(head):
        return "kdump"
    if kdump.is_flattened(head):
        return "kdump-flat"
    if elf.is_elf(head):
        return "elf"
    if lime.is_lime(head):
        return "lime"
    return "raw"


def open_image(path, phys_base=0):
    """The physical memory image of a dump file, whatever its format (DumpError if unreadable).

    ``phys_base``: physical address of byte 0 of a raw image (other formats say it themselves).
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        raise DumpError(f"cannot read dump {path}: {e.strerror}") from None
    kind = sniff(head)
    if kind in ("kdump", "kdump-flat"):
        from .kdump import open_kdump

        return open_kdump(path)
    if kind == "elf":
        from .elf import open_elf

        return open_elf(path, size)
    if kind == "lime":
        from .lime import open_lime

        return open_lime(path, size)
    from .raw import open_raw

    return open_raw(path, phys_base, size)
