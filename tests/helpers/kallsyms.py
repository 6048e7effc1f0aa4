"""Build small kallsyms tables in the kernel's formats (for tests of isf.kallsyms / isf.carve).

Token table: every byte used in a name is its own token; a few unused slots hold multi-byte
tokens ("init_", "task", ...) that the encoder uses greedily, so expansion is exercised.
"""

import struct

MULTI = [b"init_", b"task", b"_struct", b"sym_", b"kallsyms_", b"__"]


def make_tokens(entries):
    used = set()
    for kind, name, _addr in entries:
        used.update(kind.encode() + name.encode())
    tokens = [None] * 256
    for c in used:
        tokens[c] = bytes([c])
    free = [i for i in range(1, 256) if tokens[i] is None]
    multi = {}
    for tok in MULTI:
        i = free.pop(0)
        tokens[i] = tok
        multi[tok] = i
    for i in range(256):
        if tokens[i] is None:
            tokens[i] = b"~" + bytes([0x30 + i % 10])     # unused filler
    return tokens, multi


def encode(s, tokens, multi):
    out = bytearray()
    i = 0
    while i < len(s):
        for tok, idx in multi.items():
            if s.startswith(tok, i):
                out.append(idx)
                i += len(tok)
                break
        else:
            out.append(s[i])
            i += 1
    return bytes(out)


def align(buf, n):
    while len(buf) % n:
        buf += b"\0"


def build(entries, layout="pcrel", base=0xFFFFFFFF81000000, prefix=0x1000, big_entry=False,
          abs_percpu=()):
    """(bytes, table phys dict, relative-base) of tables for ``entries`` [(kind, name, addr)],
    sorted by address as the kernel sorts them. ``layout``: pcrel | baserel | baserel_old |
    baserel_62 | absolute. ``abs_percpu``: names stored as absolute values (baserel_old)."""
    entries = sorted(entries, key=lambda e: e[2])
    tokens, multi = make_tokens(entries)
    n = len(entries)
    names = bytearray()
    markers = []
    for i, (kind, name, _a) in enumerate(entries):
        if i % 256 == 0:
            markers.append(len(names))
        enc = encode(kind.encode() + name.encode(), tokens, multi)
        if len(enc) >= 0x80:
            names += bytes([0x80 | (len(enc) & 0x7F), len(enc) >> 7])
        else:
            names.append(len(enc))
        names += enc
    table = b"".join(t + b"\0" for t in tokens)
    index = []
    o = 0
    for t in tokens:
        index.append(o)
        o += len(t) + 1

    buf = bytearray(b"\xa5" * prefix)
    pos = {}
    if layout in ("baserel_old", "baserel_62", "absolute"):
        if layout == "absolute":
            align(buf, 8)
            pos["kallsyms_addresses"] = len(buf)
            for _k, _nm, a in entries:
                buf += struct.pack("<Q", a)
        else:
            rel_base = min(a for _k, nm, a in entries if nm not in abs_percpu)
            align(buf, 8)
            pos["kallsyms_offsets"] = len(buf)
            for _k, nm, a in entries:
                if nm in abs_percpu:
                    buf += struct.pack("<i", a)
                else:
                    buf += struct.pack("<i", -(a - rel_base) - 1 if abs_percpu else a - rel_base)
            align(buf, 8)
            pos["kallsyms_relative_base"] = len(buf)
            buf += struct.pack("<Q", rel_base)
        align(buf, 8)
        pos["kallsyms_num_syms"] = len(buf)
        buf += struct.pack("<Q", n)
    else:
        align(buf, 4)
        pos["kallsyms_num_syms"] = len(buf)
        buf += struct.pack("<I", n)
    pos["kallsyms_names"] = len(buf)
    buf += names
    align(buf, 4)
    pos["kallsyms_markers"] = len(buf)
    for m in markers:
        buf += struct.pack("<I", m)
    if layout == "baserel_62":      # 6.2-6.3: kallsyms_seqs_of_names before the token table
        pos["kallsyms_seqs_of_names"] = len(buf)
        for i in range(n):
            buf += struct.pack(">I", (i * 7919) % n)[1:]
    align(buf, 4)
    pos["kallsyms_token_table"] = len(buf)
    buf += table
    align(buf, 4)
    pos["kallsyms_token_index"] = len(buf)
    buf += struct.pack("<256H", *index)
    if layout == "pcrel":
        align(buf, 4)
        pos["kallsyms_offsets"] = len(buf)
        # Without a kallsyms_offsets symbol (no KALLSYMS_ALL) the table still sits somewhere.
        table_va = max(a for _k, _nm, a in entries) + 0x1000
        for _k, nm, a in entries:
            if nm == "kallsyms_offsets":
                table_va = a
        for i, (_k, _nm, a) in enumerate(entries):
            buf += struct.pack("<i", a - (table_va + 4 * i))
    elif layout == "baserel":
        rel_base = entries[0][2]
        align(buf, 4)
        pos["kallsyms_offsets"] = len(buf)
        for _k, _nm, a in entries:
            buf += struct.pack("<I", a - rel_base)
        align(buf, 8)
        pos["kallsyms_relative_base"] = len(buf)
        buf += struct.pack("<Q", rel_base)
    buf += b"\x01\x02\x03" * 64      # seqs_of_names-like tail
    buf += b"\0" * 4096
    return bytes(buf), pos


def sample_entries(n=700, text=0xFFFFFFFF81000000, with_data=True, big=False):
    """A plausible symbol list: _text first, functions, then data (optional)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = [("T", "_text", text), ("T", "_stext", text), ("T", "startup_64", text + 0x40)]
    for i in range(n):
        name = f"sym_{i}_{letters[i % 26]}{letters[(i * 7) % 26]}"
        out.append(("t" if i % 3 else "T", name, text + 0x1000 + 16 * i))
    out.append(("T", "abcdefghijklmnopqrstuvwxyz_init_task_struct", text + 0x100000))
    if big:
        out.append(("T", "x" * 150 + "_long", text + 0x100010))
    if with_data:
        d = text + 0x1000000
        for k, name in enumerate(["linux_banner", "kallsyms_num_syms", "kallsyms_names",
                                  "kallsyms_markers", "kallsyms_token_table", "kallsyms_token_index",
                                  "kallsyms_offsets", "init_task", "init_files", "init_top_pgt",
                                  "swapper_pg_dir", "map_idr", "__start_BTF", "__stop_BTF"]):
            out.append(("D", name, d + 0x100 * k))
    return out
