"""Volatility layer and stacker for kdump-compressed files (makedumpfile, QEMU ``-z``).

A thin :class:`~volatility3.framework.interfaces.layers.DataLayerInterface` over
:class:`volatility3_ktstr.dumpfile.kdump.KdumpFile`: offsets are physical addresses, reads
decompress pages on demand (bounded cache). Pages the dump level excluded raise
:class:`KdumpExcludedPageException`, other unreadable pages :class:`KdumpPageException`; both are
``InvalidAddressException`` subclasses (Volatility's own code treats them as unmapped memory)
that carry a one-line ``ktstr_reason``, which :class:`volatility3_ktstr.kernel.LayerReader`
turns into the walkers' :class:`~volatility3_ktstr.dumpfile.errors.ExcludedPage` / ReadError.

:class:`KdumpStacker` (stack_order 15, among Volatility's file-format stackers) recognises the
"KDUMP   " signature or the flattened "makedumpfile" header in the first bytes of a file
layer. The layer keeps the file's VMCOREINFO (``vmcoreinfo_texts()``), from which
``stackers.KtstrLinuxStacker`` stacks the kernel's page tables without scanning the image.
"""

import logging
import re
from typing import Iterator, List, Optional, Tuple

from volatility3.framework import constants, exceptions, interfaces
from volatility3.framework.configuration import requirements
from volatility3.framework.layers import physical

from ..dumpfile import kdump as kdumpmod
from ..dumpfile.errors import DumpError, ExcludedPage, PageError

vollog = logging.getLogger(__name__)


class KdumpPageException(exceptions.InvalidAddressException):
    """A page of a kdump file that cannot be read; ``ktstr_reason`` says why (one line)."""

    def __init__(self, layer_name, address, reason):
        super().__init__(layer_name, address, f"{reason} (physical {address:#x})")
        self.ktstr_reason = reason


class KdumpExcludedPageException(KdumpPageException):
    """A page makedumpfile excluded by its dump level (``dump_level``): not damage."""

    def __init__(self, layer_name, address, dump_level):
        super().__init__(layer_name, address, ExcludedPage(address, 1, dump_level).reason)
        self.dump_level = dump_level


class KdumpFormatException(exceptions.LayerException):
    """The file has a kdump signature but cannot be read (the message says why)."""


class _LayerSource:
    """A kdump file's bytes through its Volatility file layer."""

    def __init__(self, context, layer_name):
        self._layer = context.layers[layer_name]
        self.size = self._layer.maximum_address + 1
        self.name = _display_name(self._layer)

    def read(self, offset, size):
        if size <= 0 or offset >= self.size:
            return b""
        size = min(size, self.size - offset)
        try:
            return self._layer.read(offset, size, pad=True)
        except exceptions.InvalidAddressException:
            return b""

    def close(self):
        pass


def _display_name(layer) -> str:
    location = getattr(layer, "location", None) or layer.config.get("location", None)
    if isinstance(location, str) and location:
        return re.sub(r"^file://", "", location).rsplit("/", 1)[-1] or location
    return layer.name


class KdumpLayer(interfaces.layers.DataLayerInterface):
    """Physical memory of a kdump-compressed file (plain or flattened)."""

    def __init__(self, context: interfaces.context.ContextInterface, config_path: str, name: str,
                 metadata: Optional[dict] = None) -> None:
        super().__init__(context, config_path, name, metadata)
        self._base_layer = self.config["base_layer"]
        source = _LayerSource(context, self._base_layer)
        try:
            if kdumpmod.is_flattened(source.read(0, 32)):
                source = kdumpmod.FlatSource(source)
            self._kdump = kdumpmod.KdumpFile(source)
        except DumpError as e:
            raise KdumpFormatException(name, str(e)) from None
        for warning in self._kdump.warnings:
            vollog.warning(f"ktstr: {source.name}: {warning}")

    @property
    def kdump(self) -> kdumpmod.KdumpFile:
        return self._kdump

    def vmcoreinfo_texts(self) -> List[bytes]:
        return self._kdump.vmcoreinfo_texts()

    def file_notes(self) -> list:
        """The ELF notes of the sub-header (``dumpfile.notes.cpu_states`` reads them)."""
        return list(self._kdump.notes)

    def explain_invalid(self, offset: int) -> Optional[PageError]:
        """Why the page at physical ``offset`` cannot be read (excluded, absent, corrupt), or
        None if it can."""
        try:
            self._kdump.read(offset, 1, pad=False)
        except PageError as e:
            return e
        return None

    def reset_caches(self) -> None:
        self._kdump.reset_caches()

    @property
    def minimum_address(self) -> int:
        return self._kdump.minimum_address

    @property
    def maximum_address(self) -> int:
        return self._kdump.maximum_address

    def is_valid(self, offset: int, length: int = 1) -> bool:
        return self._kdump.is_dumped(offset, length)

    def read(self, offset: int, length: int, pad: bool = False) -> bytes:
        try:
            return self._kdump.read(offset, length, pad)
        except ExcludedPage as e:
            raise KdumpExcludedPageException(self.name, e.addr, e.dump_level) from None
        except PageError as e:
            raise KdumpPageException(self.name, e.addr, e.reason) from None

    def write(self, offset: int, data: bytes) -> None:
        raise exceptions.LayerException(self.name, "kdump-compressed files are read-only")

    @property
    def dependencies(self) -> List[str]:
        return [self._base_layer]

    @classmethod
    def get_requirements(cls) -> List[interfaces.configuration.RequirementInterface]:
        return [requirements.TranslationLayerRequirement(name="base_layer", optional=False)]

    # Scans visit only the pages in the file (a 1 TB machine's vmcore may hold a few GB), and
    # read with padding: excluded pages inside a chunk scan as zeros instead of losing the chunk.
    def data_runs(self) -> Iterator[Tuple[int, int]]:
        """(first pfn, count) of the runs of pages in the file, runs closer than
        RUN_MERGE_GAP pages merged, streamed from the bitmap (a big machine's fragmented
        dump has millions of runs: none are kept)."""
        run = None
        for pfn, n in self._kdump.dumped_runs():
            if run is not None and pfn - (run[0] + run[1]) <= kdumpmod.RUN_MERGE_GAP:
                run = (run[0], pfn + n - run[0])
                continue
            if run is not None:
                yield run
            run = (pfn, n)
        if run is not None:
            yield run

    def _scan_iterator(self, scanner, sections):
        shift = self._kdump.page_shift
        step = scanner.chunk_size
        for section_start, section_length in sections:
            section_end = section_start + section_length
            for pfn, n in self.data_runs():
                start = max(section_start, pfn << shift)
                end = min(section_end, (pfn + n) << shift)
                while start < end:
                    size = min(end - start, step + scanner.overlap)
                    yield [(self.name, start, size)], start + size
                    start += min(size, step)

    def _scan_chunk(self, scanner, progress, iterator_value):
        data_to_scan, chunk_end = iterator_value
        data = b"".join(self.read(address, size, pad=True) for _l, address, size in data_to_scan)
        progress.value = chunk_end
        return list(scanner(data, chunk_end - len(data)))


class KdumpStacker(interfaces.automagic.StackerLayerInterface):
    """Puts a KdumpLayer on a file whose first bytes say it is kdump-compressed."""

    stack_order = 15

    @classmethod
    def stack(cls, context: interfaces.context.ContextInterface, layer_name: str,
              progress_callback: constants.ProgressCallback = None
              ) -> Optional[interfaces.layers.DataLayerInterface]:
        layer = context.layers[layer_name]
        if not isinstance(layer, (physical.FileLayer, physical.BufferDataLayer)):
            return None
        try:
            head = layer.read(0, 32, pad=True)
        except exceptions.InvalidAddressException:
            return None
        if not (kdumpmod.is_kdump(head) or kdumpmod.is_flattened(head)):
            return None
        new_name = context.layers.free_layer_name("KdumpLayer")
        context.config[interfaces.configuration.path_join(new_name, "base_layer")] = layer_name
        try:
            new = KdumpLayer(context, new_name, new_name)
        except KdumpFormatException as e:
            # Stacking cannot fail loudly; say why once so "Unable to validate" is not all the
            # user sees.
            vollog.warning(f"ktstr: {' '.join(str(a) for a in e.args)}")
            return None
        vollog.info(f"ktstr: {new.kdump.describe()}")
        return new
