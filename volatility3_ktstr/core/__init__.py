"""Memory readers and type layouts the walkers run on (no Volatility import)."""

from .layout import BtfLayout, Field, Layout, LayoutError
from .percpu import percpu_sum
from .reader import BufferReader, ReadError, Reader
from .record import Record, read_int

__all__ = ["Reader", "ReadError", "BufferReader", "Layout", "BtfLayout", "Field", "LayoutError",
           "Record", "percpu_sum", "read_int"]
