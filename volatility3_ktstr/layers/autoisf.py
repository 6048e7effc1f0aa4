"""Volatility automagic hook: make the kernel ISF from the image itself when none matches.

:class:`KtstrAutoIsfStacker` runs before every Linux stacker (ours at 33, Volatility's at 34
and 35) but after the file-format stackers (LiME, ELF, ... at 10-20), so it sees the
physical layer. If a banner in the image matches an ISF Volatility already knows it returns
at the first such banner (cheap). Otherwise it carves BTF + kallsyms + banner from the
image, writes the ISF into Volatility's user symbol cache, re-indexes the identifier cache
(so the stackers that follow find it in this very run) and returns None: the normal stackers
then build the kernel layer. A failure is one warning line; the run continues as before.

Imports Volatility; the rest of ``isf`` does not.
"""

import base64
import json
import logging
import os
import time
import urllib.parse
import urllib.request

from volatility3.framework import constants, interfaces
from volatility3.framework.automagic import symbol_cache
from volatility3.framework.layers import intel

from ..isf import carve as carvemod
from ..isf import fromdump
from ..isf.output import user_symbols_dir, write_isf
from ..isf.banner import BANNER_RE

vollog = logging.getLogger(__name__)

DISABLE_ENV = ("VOLATILITY3_KTSTR_NO_AUTOISF", "VOLATILITY3_KTSTR_DISABLE")
SCAN_CHUNK = 32 << 20
MAX_BANNERS = 64
# Layers our own reader handles directly (mmap of the file: faster than layer.read).
FILE_FORMATS = {"FileLayer": "raw", "Elf64Layer": "elf", "LimeLayer": "lime", "KdumpLayer": "kdump",
                "TruncatedElf64Layer": "elf", "TruncatedLimeLayer": "lime"}

_attempted = set()


class LayerImage:
    """carve's image interface over a Volatility physical layer."""

    def __init__(self, layer):
        self._layer = layer
        segs = getattr(layer, "_segments", None)
        if segs:
            self.ranges = [(s[0], s[2]) for s in sorted(segs)]
        else:
            lo = layer.minimum_address
            self.ranges = [(lo, layer.maximum_address + 1 - lo)]

    def read(self, phys, size):
        from .scan import read_window

        return read_window(self._layer, phys, size)

    def close(self):
        pass


def _file_path(context, layer):
    """Local path of the file under a raw/ELF/LiME layer, or None."""
    base = layer
    for _ in range(4):
        if type(base).__name__ == "FileLayer":
            url = urllib.parse.urlparse(base.location)
            if url.scheme == "file":
                return urllib.request.url2pathname(url.path)
            return None
        name = base.config.get("base_layer") if hasattr(base, "config") else None
        if not name or name not in context.layers:
            return None
        base = context.layers[name]
    return None


def image_for(context, layer_name):
    layer = context.layers[layer_name]
    fmt = FILE_FORMATS.get(type(layer).__name__)
    path = _file_path(context, layer) if fmt else None
    if path and os.path.isfile(path):
        try:
            image = fromdump.open_image(path)
            if image.format == fmt:
                return image
            image.close()
        except (OSError, ValueError):
            pass
    return LayerImage(layer)


def iter_banners(image, progress=None):
    """(phys, exact banner bytes) of the banners in the image, first to last; ``progress``
    (percent of the image's data) once per chunk."""
    n = 0
    total = sum(length for _s, length in image.ranges) or 1
    done = 0
    for start, length in image.ranges:
        for base, buf, lo, hi in carvemod._chunks(image, start, length, SCAN_CHUNK):
            if progress:
                progress(100.0 * done / total)
            done += hi - lo
            pos = buf.find(carvemod.BANNER_MAGIC, lo, hi)
            while pos >= 0:
                m = BANNER_RE.match(buf, pos, pos + 512)
                if m:
                    yield base + pos, m.group(0)
                    n += 1
                    if n >= MAX_BANNERS:
                        return
                pos = buf.find(carvemod.BANNER_MAGIC, pos + 1, hi)


def symbols_dir():
    """Volatility's user symbol cache (always on its search path)."""
    return user_symbols_dir()


MEMO_FILE = "ktstr-autoisf.json"
MAX_MEMO = 256


def _memo_path():
    return os.path.join(constants.CACHE_PATH, MEMO_FILE)


def _file_key(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


# Set: forget what earlier runs learnt about dump files (this banner memo, the stackers' scan
# hints), so the run reads what a first run reads. ktstr-minimize records with it.
NO_DUMP_MEMO_ENV = "VOLATILITY3_KTSTR_NO_DUMP_MEMO"


def dump_memo_enabled():
    return not os.environ.get(NO_DUMP_MEMO_ENV)


def memo_banner(path):
    """The banner remembered for this dump file (same size and mtime), or None."""
    if not dump_memo_enabled():
        return None
    try:
        with open(_memo_path()) as f:
            entry = json.load(f).get(path)
        if entry and entry[:2] == _file_key(path):
            return base64.b64decode(entry[2])
    except (OSError, ValueError, TypeError, IndexError):
        pass
    return None


def remember_banner(path, banner):
    """Remember the kernel banner of a dump file so later runs skip the banner scan."""
    try:
        try:
            with open(_memo_path()) as f:
                memo = json.load(f)
        except (OSError, ValueError):
            memo = {}
        memo[path] = _file_key(path) + [base64.b64encode(banner).decode()]
        if len(memo) > MAX_MEMO:
            memo = dict(list(memo.items())[-MAX_MEMO:])
        tmp = f"{_memo_path()}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(memo, f)
        os.replace(tmp, _memo_path())
    except OSError:
        pass        # only a speed-up


def known_banners():
    try:
        return symbol_cache.load_cache_manager().get_identifier_dictionary(operating_system="linux")
    except ValueError:
        return {}


def _known_by_vmcoreinfo(context, layer_name, known):
    """Whether the file carries VMCOREINFO (kdump, ELF note) naming a kernel (release and
    uname -v, read from init_uts_ns) for which a cached ISF exists: no banner scan then."""
    from .. import vmcoreinfo
    from ..layers import fileinfo

    try:
        ident = fileinfo.kernel_identity(context, layer_name)
    except Exception as e:  # only a shortcut: any failure means "scan as before"
        vollog.debug(f"ktstr: VMCOREINFO identity unavailable: {e}")
        return False
    return ident is not None and any(k and vmcoreinfo.banner_matches(k, *ident) for k in known)


def _known_by_cpu_notes(context, layer_name, known):
    """Whether the file's CPU notes (x86-64 CR3/CR4) lead to a kernel image holding a banner
    whose ISF is cached: no banner scan then (layers.cpustack reads a few page-table pages
    and a window of the image)."""
    from ..layers import cpustack

    try:
        return bool(cpustack.kernels_in_notes(context, layer_name, known))
    except Exception as e:  # only a shortcut: any failure means "scan as before"
        vollog.debug(f"ktstr: CPU notes unusable: {e}")
        return False


def ensure_isf(context, layer_name, progress_callback=None):
    """Build and cache the ISF for the image's kernel unless one is known. Returns the path
    written, or None."""
    layer = context.layers[layer_name]
    if isinstance(layer, intel.Intel) or "page_map_offset" in layer.config:
        return None            # a translation layer: the physical one was handled already
    key = (type(layer).__name__, _file_path(context, layer) or layer_name)
    if key in _attempted:
        return None
    _attempted.add(key)
    known = known_banners()
    path = _file_path(context, layer)
    seen_before = memo_banner(path) if path else None
    if seen_before is not None and seen_before in known:
        return None            # this file's kernel was seen before and its ISF is there
    if _known_by_vmcoreinfo(context, layer_name, known):
        return None            # the file's VMCOREINFO names a kernel whose ISF is there
    if _known_by_cpu_notes(context, layer_name, known):
        return None            # the CPUs' page tables lead to a kernel whose ISF is there
    image = image_for(context, layer_name)
    try:
        seen = False
        def looking(pct):
            if progress_callback:
                progress_callback(pct, "ktstr: looking for the kernel's banner")

        for _phys, text in iter_banners(image, looking):
            seen = True
            if text in known:
                if path:
                    remember_banner(path, text)
                return None
        if not seen:
            return None        # no Linux kernel here (or not one we can read)
        vollog.warning("ktstr: no symbol table matches this Linux kernel; building one from the "
                       "image's own BTF and kallsyms (once, ~20 s)")
        t0 = time.perf_counter()

        def progress(pct):
            if progress_callback:
                progress_callback(pct, "ktstr: scanning the image for BTF and kallsyms")

        c = fromdump.carve(image, "the image", progress=progress)
        if progress_callback:
            progress_callback(100, "ktstr: writing the symbol table")
        isf, banner = fromdump.build_isf(c)
        out = fromdump.default_path(symbols_dir(), banner, c.arch)
        write_isf(isf, out)
        symbol_cache.load_cache_manager().update()
        if path:
            remember_banner(path, banner)
        vollog.warning(f"ktstr: wrote {out} ({len(c.symbols)} symbols, "
                       f"{time.perf_counter() - t0:.0f} s); later runs use it directly")
        return out
    except (ValueError, OSError) as e:
        vollog.warning(f"ktstr: cannot build a symbol table from the image: {e}")
        return None
    finally:
        image.close()


class KtstrAutoIsfStacker(interfaces.automagic.StackerLayerInterface):
    """Never stacks a layer; makes sure an ISF for the image's kernel exists (see module doc)."""

    stack_order = 30
    exclusion_list = ["mac", "windows"]

    @classmethod
    def stack(cls, context, layer_name, progress_callback=None):
        if any(os.environ.get(v) for v in DISABLE_ENV):
            return None
        ensure_isf(context, layer_name, progress_callback)
        return None
