"""Small synthetic kernel memory images for the ISF carver (isf.carve / isf.fromdump) and the
automatic ISF stacker: a kernel "image" at physical ``P0`` with kallsyms tables
(:mod:`helpers.kallsyms`), the banner, a BTF blob and VMCOREINFO, written as a raw file, an ELF
core (two PT_LOADs with a hole, optional VMCOREINFO note) or a LiME file.
"""

import struct

from volatility3_ktstr.isf import fromdump

from . import kallsyms as synth

TEXT = 0xFFFFFFFF81000000
KASLR = 0x1C000000
P0 = 0x200000            # physical address of _text
BANNER = b"Linux version 7.2.0-test (nobody@example) (gcc 16) #1 SMP PREEMPT_DYNAMIC\n\0"


def tiny_btf(pad_strings=0):
    """A valid BTF with the core types the carver insists on (empty structs)."""
    names = [b"task_struct", b"mm_struct", b"list_head", b"int"]
    strings = b"\0"
    offs = []
    for n in names:
        offs.append(len(strings))
        strings += n + b"\0"
    strings += b"x" * pad_strings + (b"\0" if pad_strings else b"")
    types = b""
    for off in offs[:3]:
        types += struct.pack("<III", off, 4 << 24, 16)           # STRUCT, vlen 0, size 16
    types += struct.pack("<IIII", offs[3], 1 << 24, 4, (1 << 24) | 32)  # INT signed 32
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def make_image(btf_blob, with_data=True, layout="pcrel", vmcoreinfo=True):
    """(memory bytes, entries): kernel 'image' at P0 with kallsyms, banner, BTF, VMCOREINFO."""
    tables_at = P0 + 0x100000
    banner_at = P0 + 0x80000
    btf_at = P0 + 0x400000
    entries = synth.sample_entries(text=TEXT, with_data=with_data)
    if with_data:
        entries += [("B", "vmcoreinfo_data", TEXT + 0x90000), ("D", "page_offset_base", TEXT + 0x90008)]
    _, pos = synth.build(entries, layout, prefix=0)
    if with_data:
        where = {n: TEXT + tables_at - P0 + off for n, off in pos.items()}
        where.update(linux_banner=TEXT + banner_at - P0, __start_BTF=TEXT + btf_at - P0,
                     __stop_BTF=TEXT + btf_at - P0 + len(btf_blob),
                     vmcoreinfo_data=TEXT + 0x90000, page_offset_base=TEXT + 0x90008)
        entries = [(k, n, where.get(n, a)) for k, n, a in entries]
    runtime = [(k, n, a + KASLR) for k, n, a in entries]
    blob, pos2 = synth.build(runtime, layout, prefix=0)
    mem = bytearray(16 << 20)
    mem[tables_at:tables_at + len(blob)] = blob
    mem[banner_at:banner_at + len(BANNER)] = BANNER
    mem[btf_at:btf_at + len(btf_blob)] = btf_blob
    # The vmcoreinfo page in the direct map (page_offset_base + PA).
    vmci_pa = 0xC00000
    pob = 0xFFFF9A0000000000
    mem[P0 + 0x90000:P0 + 0x90008] = struct.pack("<Q", pob + vmci_pa)
    mem[P0 + 0x90008:P0 + 0x90010] = struct.pack("<Q", pob)
    if vmcoreinfo:
        init_task = dict((n, a) for _k, n, a in runtime).get("init_task", 0)
        text = (f"OSRELEASE=7.2.0-test\nPAGESIZE=4096\nSYMBOL(init_task)={init_task:x}\n"
                f"NUMBER(phys_base)=0\nKERNELOFFSET={KASLR:x}\n").encode()
        mem[vmci_pa:vmci_pa + len(text)] = text
    return bytes(mem), entries


def write_raw(tmp_path, mem):
    p = tmp_path / "mem.raw"
    p.write_bytes(mem)
    return p


def write_elf(tmp_path, mem, note=b""):
    """ELF64 core with two PT_LOADs (a hole between) and an optional VMCOREINFO note."""
    split = 0x100000
    segs = [(0, mem[:split - 0x1000]), (split, mem[split:])]
    phnum = len(segs) + (1 if note else 0)
    off = 64 + 56 * phnum
    notes = b""
    if note:
        notes = struct.pack("<III", 11, len(note), 0) + b"VMCOREINFO\0\0" + note
        notes += b"\0" * (-len(notes) % 4)
    ph = b""
    data = b""
    if note:
        ph += struct.pack("<IIQQQQQQ", 4, 0, off, 0, 0, len(notes), len(notes), 4)
        data += notes
    for pa, chunk in segs:
        ph += struct.pack("<IIQQQQQQ", 1, 7, off + len(data), 0, pa, len(chunk), len(chunk), 4096)
        data += chunk
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9 + struct.pack(
        "<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    p = tmp_path / "mem.elf"
    p.write_bytes(ehdr + ph + data)
    return p


def write_lime(tmp_path, mem):
    p = tmp_path / "mem.lime"
    with open(p, "wb") as f:
        for start, end in ((0, 0x9FFFF), (0x100000, len(mem) - 1)):
            f.write(struct.pack("<IIQQQ", fromdump.LIME_MAGIC, 1, start, end, 0))
            f.write(mem[start:end + 1])
    return p
