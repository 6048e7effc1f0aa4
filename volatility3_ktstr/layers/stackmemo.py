"""Where the last scan of a dump file found things ($CACHE/ktstr-stack-hints.json), and the
stock 4-level x86 layer rebuilt from those hits without Volatility's own scans."""

import logging
import os
import struct
from typing import List, Optional, Tuple

from volatility3.framework import constants, interfaces
from volatility3.framework.layers import intel

from volatility3_ktstr.layers.scan import (MAX_BANNER_LEN, MAX_VMCOREINFO_BYTES, _BANNER_MAGIC,
                                           _VMCI_MAGIC, _read)

vollog = logging.getLogger(__name__)

HINTS_FILE = "ktstr-stack-hints.json"
MAX_HINT_FILES = 256
_MAGIC_BY_KIND = {"banner": (_BANNER_MAGIC, MAX_BANNER_LEN), "vmcoreinfo": (_VMCI_MAGIC, MAX_VMCOREINFO_BYTES)}


def _hints_key(context, layer_name):
    """(dump file path, [size, mtime_ns, layer class]) of the file under a physical layer."""
    from volatility3_ktstr.layers.autoisf import _file_path

    layer = context.layers[layer_name]
    path = _file_path(context, layer)
    if not path:
        return None, None
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return path, [st.st_size, st.st_mtime_ns, type(layer).__name__]


def _load_hints():
    import json

    try:
        with open(os.path.join(constants.CACHE_PATH, HINTS_FILE)) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def recall_hits(context, layer_name) -> Optional[List[Tuple[str, int, bytes]]]:
    """The hits a previous scan of this dump file stacked with, read again at their offsets
    (each still starting with its magic), or None."""
    from volatility3_ktstr.layers.autoisf import dump_memo_enabled

    if not dump_memo_enabled():
        return None
    path, key = _hints_key(context, layer_name)
    entry = _load_hints().get(path) if path else None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    out = []
    for kind, offset in entry.get("hits") or []:
        magic, maxlen = _MAGIC_BY_KIND.get(kind, (None, 0))
        if magic is None or not isinstance(offset, int):
            return None
        text = _read(context, layer_name, offset, maxlen)
        if text is None:
            text = _read(context, layer_name, offset, len(magic))
        if not text or not text.startswith(magic):
            return None
        out.append((kind, offset, text))
    return out or None


def remember_hits(context, layer_name, hits: List[Tuple[str, int]]) -> None:
    import json

    path, key = _hints_key(context, layer_name)
    if not path:
        return
    data = _load_hints()
    data.pop(path, None)
    data[path] = {"key": key, "hits": [list(h) for h in hits]}
    if len(data) > MAX_HINT_FILES:
        data = dict(list(data.items())[-MAX_HINT_FILES:])
    target = os.path.join(constants.CACHE_PATH, HINTS_FILE)
    tmp = f"{target}.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, target)
    except OSError:
        pass  # only a speed-up


# _stack_from's answer for "VMCOREINFO says 4-level x86-64": Volatility's stackers' job.
STOCK_X86 = object()


def stock_x86_layer(context, layer_name, hits, banners):
    """The layer Volatility's LinuxIntelVMCOREINFOStacker builds for this image, from the
    remembered VMCOREINFO offset and the banner remembered for the file (isf.autoisf), so
    without its two scans of the image (VMCOREINFO note, then the banner: 360 MB into the
    x86 dump). Same checks, same computations (its own functions), same layer and config;
    None whenever anything differs from what it would see, and then it runs as usual."""
    from volatility3.framework.automagic import linux as vol_linux
    from volatility3.framework.constants import linux as linux_constants
    from volatility3.framework.symbols import linux as linux_symbols

    from volatility3_ktstr.layers.autoisf import _file_path, memo_banner

    vmci = vol_linux.LinuxIntelVMCOREINFOStacker
    if not vmci._check_versions():
        return None
    path = _file_path(context, context.layers[layer_name])
    banner = memo_banner(path) if path else None
    if banner is None or banner not in banners or not banners.get(banner):
        return None
    for kind, offset, _text in hits:
        descsz = _vmcoreinfo_note_size(context, layer_name, offset) if kind == "vmcoreinfo" else None
        if not descsz:
            continue
        data = _read(context, layer_name, offset, descsz)
        if data is None or not data.startswith(linux_constants.OSRELEASE_TAG):
            continue
        info = linux_symbols.VMCoreInfo._vmcoreinfo_data_to_dict(data)
        if not info:
            continue
        shifts = vmci._vmcoreinfo_find_aslr(info)
        if not shifts:
            continue
        kaslr_shift, aslr_shift = shifts
        dtb = vmci._vmcoreinfo_get_dtb(info, aslr_shift, kaslr_shift)
        if dtb is None:
            continue
        is_32bit, _is_pae = vmci._vmcoreinfo_is_32bit(info)
        prefix = f"Linux version {info['OSRELEASE']} (".encode()
        valid = [b for b in banners if b and b.startswith(prefix)]
        if is_32bit or banner not in valid or (len(valid) == 1 and valid[0] != banner):
            return None
        vollog.debug("ktstr: 4-level x86-64 from remembered VMCOREINFO at %#x, DTB %#x", offset, dtb)
        return intel32e_layer(context, layer_name, banner, dtb, aslr_shift)
    return None


def _vmcoreinfo_note_size(context, layer_name, offset) -> Optional[int]:
    """n_descsz if the VMCOREINFO text at ``offset`` is the payload of the ELF note Volatility's
    VMCOREINFO stacker looks for (Elf64_Note, "VMCOREINFO\\0\\0", the text); else None."""
    from volatility3.framework.constants import linux as linux_constants

    magic = linux_constants.VMCOREINFO_MAGIC_ALIGNED
    note = _read(context, layer_name, offset - len(magic) - 12, 12 + len(magic))
    if note is None or note[12:] != magic:
        return None
    namesz, descsz, ntype = struct.unpack("<III", note[:12])
    if namesz != len(linux_constants.VMCOREINFO_MAGIC) or ntype != 0 or descsz == 0:
        return None
    return descsz


NOTE_SEARCH_BYTES = 256 << 20


def _find_note(context, layer_name, scan, seen) -> None:
    """After a 4-level x86 decision on the first run: read on (``scan`` records what it yields)
    to the VMCOREINFO ELF note when the deciding text was another copy (the kernel also keeps
    the text in a page of its own), at most NOTE_SEARCH_BYTES further, so that the next run
    finds it among the remembered hits."""
    start = seen[-1][1] if seen else 0
    if any(k == "vmcoreinfo" and _vmcoreinfo_note_size(context, layer_name, off) for k, off in seen):
        return
    for kind, offset, _text in scan:
        if offset - start > NOTE_SEARCH_BYTES:
            return
        if kind == "vmcoreinfo" and _vmcoreinfo_note_size(context, layer_name, offset):
            return


def _recording(scan, seen: List[Tuple[str, int]]):
    for kind, offset, text in scan:
        seen.append((kind, offset))
        yield kind, offset, text


def intel32e_layer(context, layer_name: str, banner: bytes, dtb: int, shift: int) -> intel.Intel32e:
    """The 4-level x86-64 kernel layer Volatility's VMCOREINFO stacker would build: over
    ``layer_name``, page tables at ``dtb``, the kernel moved by ``shift``, the banner that names
    its symbol table."""
    from volatility3.framework.automagic import linux as vol_linux

    join = interfaces.configuration.path_join
    name = context.layers.free_layer_name("primary")
    config_path = join("vmcoreinfo", name)
    context.config[join(config_path, vol_linux.LinuxSymbolFinder.banner_config_key)] = banner.decode("latin-1")
    context.config[join(config_path, "memory_layer")] = layer_name
    context.config[join(config_path, "page_map_offset")] = dtb
    context.config[join(config_path, "kernel_virtual_offset")] = shift
    return intel.Intel32e(context, config_path=config_path, name=name, metadata={"os": "Linux"})
