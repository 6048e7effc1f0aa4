"""What a dump file carries about its kernel outside memory: VMCOREINFO (and uname through
it), and the ELF notes with each CPU's registers (:func:`layer_notes`, for ``dumpfile.notes``).

- kdump-compressed files: the sub-header's VMCOREINFO (:class:`~.kdump.KdumpLayer`);
- ELF cores: the ``VMCOREINFO`` note (/proc/vmcore, QEMU with ``-device vmcoreinfo``), read
  from the ELF program headers of the file under Volatility's ``Elf64Layer``.

Both cost a few small reads, whatever the dump's size, and no scan of memory. The kernel's
``uname -r``/``-v`` come from ``init_uts_ns`` at its physical address (kernel-image symbols
need no page tables: ``__pa_symbol``), which also checks that this VMCOREINFO belongs to the
memory in the file.
"""

import logging
from typing import List, Optional, Tuple

from volatility3.framework import exceptions

from .. import vmcoreinfo
from ..dumpfile import DumpError, elf
from ..dumpfile.notes import Note

vollog = logging.getLogger(__name__)

UTS_FIELD = 65


def layer_notes(context, layer_name: str) -> List[Note]:
    """The ELF notes a physical layer's file carries (kdump sub-header, ELF core PT_NOTEs:
    VMCOREINFO, each CPU's registers); [] for raw files, LiME, or damaged notes."""
    layer = context.layers[layer_name]
    if hasattr(layer, "file_notes"):
        return layer.file_notes()
    if type(layer).__name__ != "Elf64Layer":
        return []
    base_name = layer.config.get("base_layer", None)
    if base_name not in context.layers:
        return []
    base = context.layers[base_name]

    def read(offset, size):
        try:
            return base.read(offset, size, pad=True)
        except exceptions.InvalidAddressException:
            return b""

    try:
        return elf.read_notes(read, elf.parse_core(read, base_name))
    except DumpError as e:
        vollog.debug(f"ktstr: no ELF notes: {e}")
        return []


def layer_vmcoreinfo(context, layer_name: str) -> Optional[vmcoreinfo.VmcoreInfo]:
    """The VMCOREINFO a physical layer's file carries, or None (raw files, LiME, no note)."""
    layer = context.layers[layer_name]
    if hasattr(layer, "vmcoreinfo_texts"):
        texts = layer.vmcoreinfo_texts()
    else:
        texts = [n.desc for n in layer_notes(context, layer_name) if n.name == b"VMCOREINFO"][:1]
    return vmcoreinfo.best(texts)


def read_uts(read, info, physical: bool = True) -> Optional[Tuple[str, str]]:
    """(release, version) of ``init_uts_ns`` read with ``read(address, size)``: at its physical
    address (``physical``) or its virtual one (``read`` of a kernel layer). None unless it says
    "Linux" and the release VMCOREINFO names."""
    uts = info.symbol("init_uts_ns")
    if uts is None:
        return None
    uts += info.offset("uts_namespace.name") or 0
    addr = vmcoreinfo.kernel_pa(info, uts) if physical else uts
    if addr is None:
        return None
    try:
        data = read(addr, UTS_FIELD * 4)
    except exceptions.InvalidAddressException:
        return None
    fields = [data[i * UTS_FIELD:(i + 1) * UTS_FIELD].split(b"\0", 1)[0].decode("latin-1")
              for i in range(4)]
    if fields[0] != "Linux" or fields[2] != info.osrelease:
        return None
    return fields[2], fields[3]


def kernel_identity(context, layer_name: str) -> Optional[Tuple[str, str]]:
    """(release, version) of the kernel of a dump whose file carries VMCOREINFO, or None."""
    info = layer_vmcoreinfo(context, layer_name)
    if info is None:
        return None
    layer = context.layers[layer_name]
    return read_uts(layer.read, info)
