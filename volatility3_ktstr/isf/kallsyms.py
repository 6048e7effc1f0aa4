"""Decode the kernel's compressed kallsyms tables found in a memory image.

The tables (scripts/kallsyms.c output, kernel/kallsyms.c reader):

- ``kallsyms_token_table``: 256 NUL-terminated tokens; ``kallsyms_token_index``: 256 u16
  offsets of them. A byte that occurs in some symbol name keeps itself as its token, so the
  tokens of 'a'..'z' always read "a\\0b\\0...z\\0": that is the anchor we search for.
- ``kallsyms_names``: per symbol a length (1 byte, or 2 as ULEB128 when the top bit is set,
  6.1+) and that many token indexes; the expansion is the type letter then the name.
- ``kallsyms_markers``: offset in names of every 256th symbol (u32; unsigned long before).
- ``kallsyms_num_syms``: right before the names (u32; unsigned long before).
- Addresses, one entry per symbol in address order, in one of these layouts:
    ``pcrel``   s32 ``kallsyms_offsets`` after the token index, each relative to its own
                position (no ``kallsyms_relative_base``; current kernels, incl. the 7.2 here);
    ``baserel`` s32 ``kallsyms_offsets`` + u64 ``kallsyms_relative_base``, after the token
                index (6.4+) or before ``kallsyms_num_syms`` (4.6-6.3); negative entries are
                absolute per-CPU values when KALLSYMS_ABSOLUTE_PERCPU was set;
    ``absolute`` u64 ``kallsyms_addresses`` before ``kallsyms_num_syms`` (before 4.6).

Addresses are decoded as runtime values (``baserel``/``absolute``) or as offsets from the
start of ``kallsyms_offsets`` (``pcrel``, whose runtime base is not stored anywhere); the
caller turns either into link-time addresses (:func:`link_time`).

Everything works on a window of physical memory (bytes + the physical address of byte 0), so
it needs no page tables: the kernel image is physically contiguous.
"""

import struct
from array import array

ANCHOR = b"".join(bytes([c]) + b"\0" for c in range(ord("a"), ord("z") + 1))
ANCHOR_INDEX = ord("a")  # token index of the first anchor token
MAX_ENTRY = 512          # KSYM_NAME_LEN: a compressed entry is never longer
MAX_TOKEN = 64           # longer "tokens" mean this is not a token table
KERNEL_VA_MIN = 0xFFFF000000000000

# Symbols the ISF cannot do without (Volatility's Linux stackers and our plugins).
REQUIRED_DATA = ("linux_banner", "init_task", "init_files")
DTB_SYMBOLS = {"x86_64": ("init_top_pgt", "init_level4_pgt"), "arm64": ("swapper_pg_dir",)}


class KallsymsError(ValueError):
    """The tables are not there or do not decode; the message says which part."""


class Kallsyms:
    """Decoded kallsyms: parallel lists in table (address) order.

    ``addrs`` are runtime addresses, or for ``layout == "pcrel"`` offsets from the start of
    the ``kallsyms_offsets`` table. ``absolute[i]`` marks values that do not move with KASLR
    (absolute per-CPU symbols of the ``baserel`` layout).
    """

    def __init__(self, names, kinds, addrs, absolute, layout, phys):
        self.names = names
        self.kinds = kinds
        self.addrs = addrs
        self.absolute = absolute
        self.layout = layout
        self.phys = phys            # physical addresses of the tables, by name
        self._first = None

    def __len__(self):
        return len(self.names)

    def index(self, name):
        """Index of the first symbol called ``name`` or None."""
        if self._first is None:
            first = {}
            for i, n in enumerate(self.names):
                first.setdefault(n, i)
            self._first = first
        return self._first.get(name)

    def value(self, name):
        i = self.index(name)
        return None if i is None else self.addrs[i]

    def has_data_symbols(self):
        """True when data symbols are there (CONFIG_KALLSYMS_ALL)."""
        return any(self.index(n) is not None for n in REQUIRED_DATA)


# --- locating the tables ---------------------------------------------------------------------


def _cstrings(data, pos, count, limit=MAX_TOKEN):
    """``count`` NUL-terminated strings from ``pos``: (list, end) or None if one is bad."""
    out = []
    for _ in range(count):
        end = data.find(b"\0", pos, pos + limit + 1)
        if end <= pos:
            return None
        out.append(bytes(data[pos:end]))
        pos = end + 1
    return out, pos


def find_token_table(data, anchor_pos):
    """(table start, tokens, token_index start) around an anchor hit, or None.

    The anchor is token 0x61. The rest of the table follows it; the u16 token index follows
    the table (after alignment padding) and tells where the table starts.
    """
    rest = _cstrings(data, anchor_pos, 256 - ANCHOR_INDEX)
    if rest is None:
        return None
    _, table_end = rest
    for align in (2, 4, 8):
        ti = (table_end + align - 1) & ~(align - 1)
        if ti + 512 > len(data):
            return None
        index = struct.unpack_from("<256H", data, ti)
        if index[0] != 0 or any(b <= a for a, b in zip(index, index[1:])):
            continue
        start = anchor_pos - index[ANCHOR_INDEX]
        if start < 0:
            continue
        parsed = _cstrings(data, start, 256)
        if parsed is None or parsed[1] != table_end:
            continue
        tokens = parsed[0]
        if all(start + index[i] == start + sum(len(t) + 1 for t in tokens[:i]) for i in (1, 97, 255)):
            return start, tokens, ti
    return None


def _u_array(data, start, end, width):
    a = array("I" if width == 4 else "Q")
    start = max(0, start)
    end = start + ((end - start) // width) * width
    a.frombytes(bytes(data[start:end]))
    return a


def find_markers(data, table_start, max_bytes=1 << 18):
    """Candidates (markers start, width, markers) for the markers array before the token
    table: a run of increasing values from 0, u32 (unsigned long on older kernels).

    Directly before the table first (4.x-6.1 and 6.4+); then (6.2-6.3) with
    kallsyms_seqs_of_names, 3 bytes per symbol, in between: yielded lazily, as finding the
    run costs a pass over that region.
    """
    yield from markers_at_table(data, table_start, max_bytes)
    yield from _markers_before_seqs(data, table_start)


def markers_at_table(data, table_start, max_bytes=1 << 18):
    """The candidates of :func:`find_markers` that end right at the token table (cheap)."""
    out = []
    for width in (4, 8):
        end = table_start & ~(width - 1)
        lo = end - (min(end, max_bytes) // width) * width
        a = _u_array(data, lo, end, width)
        j = len(a)
        pad = 0
        while j > 0 and a[j - 1] == 0 and pad < 2:   # alignment padding before the token table
            j -= 1
            pad += 1
        last = j
        while j > 1 and a[j - 2] < a[j - 1]:
            j -= 1
        j -= 1
        if j >= 0 and a[j] == 0 and last - j >= 1:
            out.append((lo + j * width, width, list(a[j:last])))
    return out


def _markers_before_seqs(data, table_start, max_syms=1 << 21):
    """Markers (u32) followed by 3-byte seqs_of_names for n symbols, n within the markers'
    256-symbol granularity, then the token table."""
    lo = max(0, table_start - 3 * max_syms - (1 << 18)) & ~3
    a = _u_array(data, lo, table_start & ~3, 4)
    i = len(a) - 2
    while i >= 0:
        # A run start: 0 then the offset of symbol 256, at least 256 one-byte entries on.
        if a[i] == 0 and 256 * 2 <= a[i + 1] <= 256 * (MAX_ENTRY + 2):
            j = i + 1
            while j + 1 < len(a) and a[j] < a[j + 1] <= a[j] + 256 * (MAX_ENTRY + 2):
                j += 1
            k = j - i + 1
            mend = lo + 4 * (j + 1)
            gap = table_start - mend
            if 3 * 256 * (k - 1) < gap <= 3 * 256 * k + 8:
                yield lo + 4 * i, 4, list(a[i:j + 1])
        i -= 1


def _entry_len(data, pos):
    b = data[pos]
    if b & 0x80:
        return ((b & 0x7F) | (data[pos + 1] << 7)), 2
    return b, 1


def _skip(data, pos, count, end):
    """Position after ``count`` names entries from ``pos``, or None if they overrun ``end``."""
    for _ in range(count):
        if pos >= end:
            return None
        n, h = _entry_len(data, pos)
        if n == 0:
            return None
        pos += h + n
    return pos if pos <= end else None


def find_names(data, markers_start, markers):
    """(num_syms position, width, names start, num_syms) or None.

    kallsyms_num_syms sits right before the names; the markers say how many symbols there
    are within 256, and where every 256th entry starts, which pins the candidate down.
    """
    k = len(markers)
    last = markers[-1]
    # The names end at or before the markers; the last 1..256 entries follow markers[-1].
    lo = max(0, markers_start - last - 256 * (MAX_ENTRY + 2) - 16)
    hi = markers_start - last
    for pos in range(hi - (hi % 4), lo - 1, -4):
        if pos < 8:
            break
        for width in (4, 8):
            nsp = pos - width
            n = int.from_bytes(data[nsp:nsp + width], "little")
            if not 256 * (k - 1) < n <= 256 * k:
                continue
            names = pos
            # The next markers must match the walk of the entries.
            check = names
            ok = True
            for m in range(1, min(k, 4)):
                check = _skip(data, check, 256, markers_start)
                if check is None or check != names + markers[m]:
                    ok = False
                    break
            if ok:
                return nsp, width, names, n
    return None


def decode_names(data, names, count, tokens, end):
    """(names, kinds, end position) of ``count`` entries."""
    out = []
    getter = tokens.__getitem__
    join = b"".join
    pos = names
    for _ in range(count):
        if pos >= end:
            raise KallsymsError(f"kallsyms_names overruns the markers after {len(out)} symbols")
        n = data[pos]
        if n & 0x80:
            n = (n & 0x7F) | (data[pos + 1] << 7)
            pos += 2
        else:
            pos += 1
        out.append(join(map(getter, data[pos:pos + n])))
        pos += n
    if pos > end:
        raise KallsymsError("kallsyms_names overruns the markers")
    # One decode and split instead of one per symbol; "\n" never occurs in a token.
    lines = b"\n".join(out).decode("latin-1").split("\n")
    return [s[1:] for s in lines], [s[:1] or "?" for s in lines], pos


def _nondecreasing(values):
    return all(b >= a for a, b in zip(values, values[1:]))


def _kernel_va(v):
    return v >= KERNEL_VA_MIN


def decode_addresses(data, count, ti_end, num_syms_pos):
    """(layout, addrs, absolute flags, table position) for the address table."""
    n = count
    tried = []
    # After the token index (6.4+): pcrel, or baserel with relative_base after the offsets.
    for align in (4, 8):
        off = (ti_end + align - 1) & ~(align - 1)
        if off + 4 * n + 8 > len(data):
            continue
        raw = array("i")
        raw.frombytes(bytes(data[off:off + 4 * n]))
        rb_pos = (off + 4 * n + 7) & ~7
        base = int.from_bytes(data[rb_pos:rb_pos + 8], "little")
        if _kernel_va(base):
            addrs, absolute = _baserel(raw, base)
            if _nondecreasing(addrs):
                return "baserel", addrs, absolute, off
        rel = [4 * i + v for i, v in enumerate(raw)]
        if _nondecreasing(rel):
            return "pcrel", rel, None, off
        tried.append(f"offsets at +{off - ti_end}")
    # Before kallsyms_num_syms (4.6-6.3 and older).
    for rb_pos in (num_syms_pos - 8, (num_syms_pos - 8) & ~7):
        base = int.from_bytes(data[rb_pos:rb_pos + 8], "little") if rb_pos >= 0 else 0
        if not _kernel_va(base):
            continue
        for end in (rb_pos, rb_pos - 4):
            start = end - 4 * n
            if start < 0:
                continue
            raw = array("i")
            raw.frombytes(bytes(data[start:end]))
            addrs, absolute = _baserel(raw, base)
            if _nondecreasing(addrs) and _kernel_va(addrs[-1]):
                return "baserel", addrs, absolute, start
    for end in (num_syms_pos, num_syms_pos & ~7):
        start = end - 8 * n
        if start < 0:
            continue
        a = _u_array(data, start, end, 8)
        if len(a) == n and _nondecreasing(a) and _kernel_va(a[-1]):
            return "absolute", list(a), None, start
    raise KallsymsError("no kallsyms address table (offsets/addresses) next to the names or "
                        "token index in any known layout")


def _baserel(raw, base):
    # Without KALLSYMS_ABSOLUTE_PERCPU every entry is an unsigned offset; with it a
    # non-negative entry is an absolute value and a negative one base - 1 - entry.
    unsigned = [base + (v & 0xFFFFFFFF) for v in raw]
    if _nondecreasing(unsigned):
        return unsigned, None
    addrs = []
    absolute = []
    for v in raw:
        if v >= 0:
            addrs.append(v)
            absolute.append(True)
        else:
            addrs.append(base - 1 - v)
            absolute.append(False)
    return addrs, absolute


def decode_at(data, anchor_pos, phys0=0):
    """Decode the tables around an anchor hit in ``data`` (physical address of byte 0:
    ``phys0``). Raises KallsymsError naming what does not fit."""
    tt = find_token_table(data, anchor_pos)
    if tt is None:
        raise KallsymsError("no token table/token index at the anchor")
    table_start, tokens, ti = tt
    nm = None
    for markers_start, _mw, markers in find_markers(data, table_start):
        nm = find_names(data, markers_start, markers)
        if nm is not None:
            break
    if nm is None:
        raise KallsymsError("no kallsyms_markers/kallsyms_num_syms/kallsyms_names before the token table")
    nsp, _nw, names_start, count = nm
    names, kinds, _end = decode_names(data, names_start, count, tokens, markers_start)
    layout, addrs, absolute, addr_pos = decode_addresses(data, count, ti + 512, nsp)
    phys = {
        "kallsyms_num_syms": phys0 + nsp,
        "kallsyms_names": phys0 + names_start,
        "kallsyms_markers": phys0 + markers_start,
        "kallsyms_token_table": phys0 + table_start,
        "kallsyms_token_index": phys0 + ti,
        "kallsyms_offsets" if layout != "absolute" else "kallsyms_addresses": phys0 + addr_pos,
    }
    return Kallsyms(names, kinds, addrs, absolute, layout, phys)


# --- link-time addresses ---------------------------------------------------------------------


def link_time(ks, text_link, vmcoreinfo=None):
    """name -> (link-time address, type letter), first definition of a name wins.

    ``text_link``: link-time address of ``_text`` (per-arch default for distribution
    kernels). With VMCOREINFO (runtime ``SYMBOL(x)`` values and ``KERNELOFFSET``) the exact
    base is derived instead; returns (symbols, how) where ``how`` says which was used.
    """
    text = ks.value("_text")
    if text is None:
        text = ks.value("_stext")
        if text is None:
            raise KallsymsError("kallsyms has no _text/_stext to anchor addresses")
    how = "default _text"
    shift = None
    if vmcoreinfo and vmcoreinfo.get("KERNELOFFSET") is not None:
        koff = vmcoreinfo["KERNELOFFSET"]
        votes = {}
        symbols = vmcoreinfo.symbols() if hasattr(vmcoreinfo, "symbols") else vmcoreinfo.get("SYMBOL") or {}
        for name, runtime in sorted(symbols.items()):
            v = ks.value(name)
            if v is None or (ks.layout != "pcrel" and not _kernel_va(v)):
                continue
            # runtime = value + (runtime shift); link = runtime - KERNELOFFSET
            votes.setdefault((runtime - koff - v) & 0xFFFFFFFFFFFFFFFF, []).append(name)
        if votes:
            best, names = max(votes.items(), key=lambda kv: len(kv[1]))
            # A VMCOREINFO of another kernel (stale) would put _text somewhere odd.
            if _kernel_va((text + best) & 0xFFFFFFFFFFFFFFFF):
                shift = best
                how = (f"VMCOREINFO ({len(names)} of {sum(map(len, votes.values()))} SYMBOL()s agree, "
                       f"KERNELOFFSET={koff:#x})")
    if shift is None:
        shift = text_link - text
    out = {}
    absolute = ks.absolute
    for i, (name, kind, addr) in enumerate(zip(ks.names, ks.kinds, ks.addrs)):
        if name in out or name.startswith("__pfx_"):
            continue
        if absolute is not None and absolute[i]:
            out[name] = (addr, kind)
        else:
            out[name] = ((addr + shift) & 0xFFFFFFFFFFFFFFFF, kind)
    return out, how


def missing_required(symbols, arch):
    """Names of required symbols absent from ``symbols`` (DTB: any one of the arch's)."""
    missing = [n for n in REQUIRED_DATA if n not in symbols]
    dtb = DTB_SYMBOLS.get(arch, ())
    if dtb and not any(n in symbols for n in dtb):
        missing.append("/".join(dtb))
    return missing
