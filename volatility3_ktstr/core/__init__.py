"""Memory readers and type layouts the walkers run on (no Volatility import)."""

from .layout import BtfLayout, Layout, LayoutError
from .reader import BufferReader, ReadError, Reader

__all__ = ["Reader", "ReadError", "BufferReader", "Layout", "BtfLayout", "LayoutError"]
