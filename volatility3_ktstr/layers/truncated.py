"""ELF cores and LiME files cut short (an interrupted copy): open with what they hold.

Volatility's ``Elf64Layer`` and ``LimeLayer`` map each segment as its header says; in a file
cut short the end of the last segments lies past the end of the file, and reads there fail
as "unmapped" somewhere in the file layer. :class:`TruncatedCoreStacker` (stack_order 9,
before their stackers at 10) puts subclasses of them on such files only: the segments are
clipped at the file's end, and ``explain_invalid`` (asked by kernel.LayerReader) names what
is missing: "beyond the end of a truncated file (expected N bytes, file has M)". Complete
files are left to Volatility's stackers, unchanged.
"""

import logging
import struct
from typing import List, Optional

from volatility3.framework import constants, exceptions, interfaces
from volatility3.framework.layers import elf as vol_elf
from volatility3.framework.layers import lime as vol_lime
from volatility3.framework.layers import physical

from ..dumpfile import DumpError, elf, lime
from ..dumpfile.errors import TruncatedPage, truncated_reason

vollog = logging.getLogger(__name__)

MAX_LIME_SEGMENTS = lime.MAX_SEGMENTS
MAX_PLAUSIBLE_SIZE = 1 << 48          # a "complete size" beyond this is a lying header


class _ClippedSegments:
    """Segments as the headers claim them, kept to explain; the layer's own clipped at the
    file's end."""

    _claimed: List[tuple] = []
    _expected = 0
    _file_size = 0

    def _load_segments(self) -> None:
        super()._load_segments()
        self._clip(self._segments)

    def _clip(self, claimed) -> None:
        size = self.context.layers[self._base_layer].maximum_address + 1
        self._claimed = list(claimed)
        self._file_size = size
        self._expected = max(off + length for _p, off, length, _m in self._claimed)
        clipped = [(p, off, min(length, size - off), min(length, size - off))
                   for p, off, length, _m in self._claimed if off < size]
        if not clipped:
            raise exceptions.LayerException(self.name, "every segment lies past the end of the file")
        self._segments = clipped

    def explain_invalid(self, offset: int) -> Optional[TruncatedPage]:
        """Why physical ``offset`` does not read, when it is past the end of the file."""
        for phys, off, length, _m in self._claimed:
            if phys <= offset < phys + length and off + (offset - phys) >= self._file_size:
                return TruncatedPage(offset, 1, truncated_reason(self._expected, self._file_size))
        return None

    def file_notes(self) -> list:
        """ELF notes (VMCOREINFO, CPU registers) of the file; none for LiME."""
        return []


class TruncatedElf64Layer(_ClippedSegments, vol_elf.Elf64Layer):
    """Volatility's Elf64Layer on an ELF core cut short."""

    def file_notes(self) -> list:
        base = self.context.layers[self._base_layer]
        return elf.read_notes(_reader(base), elf.parse_core(_reader(base), base.name))


class TruncatedLimeLayer(_ClippedSegments, vol_lime.LimeLayer):
    """Volatility's LimeLayer on a LiME file cut short."""

    def _load_segments(self) -> None:
        base = self.context.layers[self._base_layer]
        claimed = lime_segments(_reader(base), base.maximum_address + 1)
        if not claimed:
            raise vol_lime.LimeFormatException(self.name, "no LiME segments")
        self._clip(claimed)


def _reader(layer):
    def read(offset, size):
        try:
            return layer.read(offset, size, pad=True)
        except exceptions.InvalidAddressException:
            return b""
    return read


def lime_segments(read, size) -> List[tuple]:
    """(phys, file offset, length, length) of a LiME file's ranges as the headers claim them,
    in file order, bounded; [] when a header is bad (Volatility's stacker then decides)."""
    out: List[tuple] = []
    off = 0
    for _ in range(MAX_LIME_SEGMENTS):
        if off + 32 > size:
            break
        magic, _ver, start, end = struct.unpack("<IIQQ", read(off, 24).ljust(24, b"\0"))
        if magic != lime.LIME_MAGIC or end < start or (out and start <= out[-1][0] + out[-1][2] - 1):
            return []
        out.append((start, off + 32, end - start + 1, end - start + 1))
        off += 32 + end - start + 1
    return out


def truncated_elf(read, size, name) -> Optional[int]:
    """Expected size of an ELF core whose PT_LOAD data run past the end of the file, else None."""
    try:
        core = elf.parse_core(read, name)
    except DumpError:
        return None
    expected = max((off + filesz for _pa, off, filesz, _m in core.loads), default=0)
    return expected if expected > size else None


class TruncatedCoreStacker(interfaces.automagic.StackerLayerInterface):
    """Stacks TruncatedElf64Layer / TruncatedLimeLayer on ELF cores and LiME files cut short."""

    stack_order = 9

    @classmethod
    def stack(cls, context: interfaces.context.ContextInterface, layer_name: str,
              progress_callback: constants.ProgressCallback = None
              ) -> Optional[interfaces.layers.DataLayerInterface]:
        layer = context.layers[layer_name]
        if not isinstance(layer, (physical.FileLayer, physical.BufferDataLayer)):
            return None
        read = _reader(layer)
        size = layer.maximum_address + 1
        head = read(0, 64)
        if elf.is_elf(head):
            expected, kind, layer_cls = truncated_elf(read, size, layer.name), "ELF core", TruncatedElf64Layer
        elif lime.is_lime(head):
            segs = lime_segments(read, size)
            ends = [off + length for _p, off, length, _m in segs]
            expected = max(ends) if ends and max(ends) > size else None
            kind, layer_cls = "LiME file", TruncatedLimeLayer
        else:
            return None
        if expected is None or expected > MAX_PLAUSIBLE_SIZE:
            return None       # complete, or headers that lie: Volatility's stackers decide
        new_name = context.layers.free_layer_name(layer_cls.__name__)
        context.config[interfaces.configuration.path_join(new_name, "base_layer")] = layer_name
        try:
            new = layer_cls(context, new_name, new_name)
        except (exceptions.LayerException, DumpError) as e:
            vollog.debug(f"ktstr: truncated {kind} not stacked: {e}")
            return None
        vollog.warning(f"ktstr: truncated {kind}: expected {expected} bytes, file has {size}; "
                       f"memory past the end is reported as missing")
        return new
