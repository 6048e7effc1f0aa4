"""Memory readers and type layouts the walkers run on (no Volatility import)."""

from .layout import BtfLayout, Field, Layout, LayoutError
from .reader import BufferReader, ReadError, Reader
from .record import Record, read_int

__all__ = ["Reader", "ReadError", "BufferReader", "Layout", "BtfLayout", "Field", "LayoutError",
           "Record", "read_int"]
