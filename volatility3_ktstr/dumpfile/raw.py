"""Raw physical images (QEMU ``pmemsave``, ``/dev/mem`` copies): byte 0 is ``phys_base``."""

import os

from .image import FileImage


def open_raw(path, phys_base=0, size=None):
    """FileImage of a raw image whose first byte is physical address ``phys_base``."""
    if size is None:
        size = os.path.getsize(path)
    return FileImage(path, [(phys_base, 0, size)], "raw")
