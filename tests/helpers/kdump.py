"""Write kdump-compressed files for tests, the way makedumpfile lays them out.

Written from makedumpfile's format (diskdump_mod.h, write_kdump_header/bitmaps/pages), not
from the reader under test: block 0 the disk_dump_header, block 1 the kdump_sub_header and the
ELF notes (VMCOREINFO among them), then the two bitmaps (block-aligned halves), one 24-byte
page descriptor per dumped page in pfn order, then the page data (with dump level bit 1, one
shared page of zeros that every zero page's descriptor points at).

:func:`build` returns the file's bytes; :func:`flatten` turns them into the flattened form
(``makedumpfile -F``); :func:`from_raw` streams a raw physical image into a kdump file.
"""

import os
import random
import struct
import zlib

BLOCK = 4096
SUB = struct.Struct("<QiiQQqQqQqQQQQ")
DESC = struct.Struct("<qIIQ")
FLAGS = {"none": 0, "zlib": 0x1, "lzo": 0x2, "snappy": 0x4, "zstd": 0x20}


def lzo_literal_stream(data: bytes) -> bytes:
    """A valid LZO1X stream that holds ``data`` as literals only (tests without python-lzo)."""
    n = len(data)
    if 4 <= n <= 238:
        return bytes([17 + n]) + data + b"\x11\x00\x00"
    rest = n - 18
    zeros, last = divmod(rest, 255)
    if last == 0:
        zeros, last = zeros - 1, 255
    return b"\x00" + bytes(zeros) + bytes([last]) + data + b"\x11\x00\x00"


def compress(kind: str, data: bytes) -> bytes:
    if kind == "zlib":
        return zlib.compress(data, 1)
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdCompressor(level=1).compress(data)
    if kind == "snappy":
        import cramjam
        return bytes(cramjam.snappy.compress_raw(data))
    if kind == "lzo":
        try:
            import lzo
            return lzo.compress(data, 1, False)
        except ImportError:
            return lzo_literal_stream(data)
    raise ValueError(kind)


def note(name: bytes, desc: bytes, ntype=0) -> bytes:
    name_z = name + b"\0"
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name_z), len(desc), ntype) + pad(name_z) + pad(desc)


# --- ELF notes as QEMU's dump-guest-memory writes them (target/*/arch_dump.c) ---------------

NT_PRSTATUS, NT_PRFPREG, NT_ARM_SVE = 1, 2, 0x405
X86_64_PR_REG = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
                 "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss",
                 "fs_base", "gs_base", "ds", "es", "fs", "gs")
AARCH64_PR_REG = tuple(f"x{i}" for i in range(31)) + ("sp", "pc", "pstate")


def prstatus(arch, pid, regs=None) -> bytes:
    """struct elf_prstatus of x86-64 (336 bytes) or aarch64 (392): pr_pid at 32, pr_reg at
    112 in the kernel's register order, pr_fpvalid after it."""
    names = X86_64_PR_REG if arch == "x86_64" else AARCH64_PR_REG
    regs = regs or {}
    out = bytearray(336 if arch == "x86_64" else 392)
    struct.pack_into("<I", out, 32, pid)
    struct.pack_into(f"<{len(names)}Q", out, 112, *(regs.get(n, 0) for n in names))
    struct.pack_into("<I", out, 112 + 8 * len(names), 1)
    return bytes(out)


def qemu_x86_state(regs=None) -> bytes:
    """QEMUCPUState version 1 (440 bytes): general registers, rip, rflags, ten segments, cr0..4,
    kernel_gs_base."""
    regs = regs or {}
    gprs = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15", "rip", "rflags")
    out = struct.pack("<II", 1, 440) + struct.pack("<18Q", *(regs.get(r, 0) for r in gprs))
    for seg in ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt"):
        out += struct.pack("<IIIIQ", regs.get(seg + "_sel", 0), 0xFFFFFFFF, 0, 0, regs.get(seg + "_base", 0))
    out += struct.pack("<5Q", *(regs.get(f"cr{i}", 0) for i in range(5)))
    return out + struct.pack("<Q", regs.get("kernel_gs_base", 0))


def qemu_notes(arch, cpus) -> bytes:
    """The notes QEMU writes per vCPU, for ``cpus`` [{register: value}]: x86-64 every
    NT_PRSTATUS then every "QEMU" CPU state; aarch64 NT_PRSTATUS, NT_PRFPREG (528 bytes) and
    NT_ARM_SVE ("LINUX", vector length 128 bits) per CPU, no system registers."""
    out = b""
    if arch == "x86_64":
        out += b"".join(note(b"CORE", prstatus(arch, i, r), NT_PRSTATUS) for i, r in enumerate(cpus))
        out += b"".join(note(b"QEMU", qemu_x86_state(r), 0) for r in cpus)
        return out
    for i, r in enumerate(cpus):
        out += note(b"CORE", prstatus(arch, i, r), NT_PRSTATUS)
        out += note(b"CORE", bytes(528), NT_PRFPREG)
        out += note(b"LINUX", struct.pack("<IIHHH", 0x230, 0x230, 16, 1, 0).ljust(0x230, b"\0"), NT_ARM_SVE)
    return out


def header(*, block_size=BLOCK, version=6, sub_hdr_size=1, bitmap_blocks=2, max_mapnr=0, status=0,
           release="6.1.0-test", uts_version="#1 SMP test", machine="x86_64", nr_cpus=2,
           sysname="Linux", nodename="test") -> bytes:
    """disk_dump_header; QEMU writes empty utsname fields but machine "Unknown"."""
    uts = b"".join(s.encode()[:64].ljust(65, b"\0") for s in
                   (sysname, nodename, release, uts_version, machine, "(none)" if sysname else ""))
    head = b"KDUMP   " + struct.pack("<i", version) + uts
    head = head.ljust(408, b"\0") + struct.pack("<qqIiiIIIIIIi", 0, 0, status, block_size, sub_hdr_size,
                                               bitmap_blocks, min(max_mapnr, 0xFFFFFFFF), 0, 0, 0, 0, nr_cpus)
    return head


def encode_page(page: bytes, kind: str):
    """(descriptor flags, stored bytes) of one page: compressed with ``kind`` unless that does not
    make it smaller (makedumpfile then stores the page as is)."""
    if kind != "none":
        c = compress(kind, page)
        if len(c) < len(page):
            return FLAGS[kind], c
    return 0, page


def build(pages, *, max_mapnr, ram=None, codec="zstd", block_size=BLOCK, dump_level=31,
          vmcoreinfo=b"", release="6.1.0-test", uts_version="#1 SMP test", machine="x86_64",
          version=6, split=None, incomplete=(), status=0, phys_base=0, one_bitmap=False,
          extra_sub_blocks=0, cpu_notes=b"", qemu=False):
    """The bytes of a kdump file holding ``pages`` ({pfn: block_size bytes}).

    ``ram``: pfns in the 1st bitmap (default: every pfn below max_mapnr); pfns of ``ram`` not in
    ``pages`` are the excluded ones. ``codec``: one name, or a function pfn -> name.
    ``split``: (start, end) pfns of a split part (``pages`` outside are left out).
    ``incomplete``: pfns whose descriptor is left zero (a dump cut short; sets the status bit).
    """
    bs = block_size
    notes = cpu_notes + (note(b"VMCOREINFO", vmcoreinfo) if vmcoreinfo else b"")
    sub_hdr_size = -(-(SUB.size + len(notes)) // bs) + extra_sub_blocks
    one = -(-((max_mapnr + 7) // 8) // bs) * bs
    bitmap_blocks = (one if one_bitmap else 2 * one) // bs
    ram = set(range(max_mapnr)) if ram is None else set(ram)
    start, end = split or (0, max_mapnr)
    dumped = sorted(p for p in pages if start <= p < end)
    bm1, bm2 = bytearray(one), bytearray(one)
    for p in ram | set(dumped):
        bm1[p >> 3] |= 1 << (p & 7)
    for p in dumped:
        bm2[p >> 3] |= 1 << (p & 7)
    bitmaps = bytes(bm2) if one_bitmap else bytes(bm1) + bytes(bm2)
    status |= FLAGS.get(codec, 0) if isinstance(codec, str) else 0
    if incomplete:
        status |= 0x8
    uts = dict(sysname="", nodename="", release="", uts_version="", machine="Unknown") if qemu else \
        dict(release=release, uts_version=uts_version, machine=machine)
    head = header(block_size=bs, version=version, sub_hdr_size=sub_hdr_size,
                  bitmap_blocks=bitmap_blocks, max_mapnr=max_mapnr, status=status, **uts)
    off_note = bs + SUB.size
    # the VMCOREINFO note's desc: after the CPU notes, its Nhdr and "VMCOREINFO\0" padded
    off_vmci = off_note + len(cpu_notes) + 12 + 12 if vmcoreinfo else 0
    sub = SUB.pack(phys_base, dump_level, 1 if split else 0, start, end, off_vmci, len(vmcoreinfo),
                   off_note if notes else 0, len(notes), 0, 0, start, end, max_mapnr)
    data_offset = (1 + sub_hdr_size + bitmap_blocks) * bs
    offset = data_offset + DESC.size * len(dumped)
    descs, data = [], []
    zero = bytes(bs)
    zero_offset = None
    if dump_level & 1:
        zero_offset = offset
        data.append(zero)
        offset += bs
    for p in dumped:
        page = pages[p]
        assert len(page) == bs
        if p in incomplete:
            descs.append(DESC.pack(0, 0, 0, 0))
            continue
        if zero_offset is not None and page == zero:
            descs.append(DESC.pack(zero_offset, bs, 0, 0))
            continue
        flags, blob = encode_page(page, codec(p) if callable(codec) else codec)
        descs.append(DESC.pack(offset, len(blob), flags, 0))
        data.append(blob)
        offset += len(blob)
    out = bytearray(head.ljust(bs, b"\0"))
    out += (sub + notes).ljust(sub_hdr_size * bs, b"\0")
    out += bitmaps.ljust(bitmap_blocks * bs, b"\0")
    assert len(out) == data_offset
    out += b"".join(descs) + b"".join(data)
    return bytes(out)


def layout(blob: bytes):
    """Offsets of a built file: {bitmap1, bitmap2, bitmap_len, data_offset, block_size}."""
    bs, sub_hdr_size, bitmap_blocks = struct.unpack_from("<iiI", blob, 428)
    bitmap1 = (1 + sub_hdr_size) * bs
    half = bitmap_blocks * bs // 2
    return {"block_size": bs, "bitmap1": bitmap1, "bitmap2": bitmap1 + half, "bitmap_len": half,
            "data_offset": bitmap1 + bitmap_blocks * bs}


def flatten(blob: bytes, record=65536, shuffle_seed=None, split_header=False) -> bytes:
    """The flattened form of a kdump file: 4 KiB 'makedumpfile' header, (offset, size, data)
    records in big-endian, then (-1, -1). ``split_header`` writes the first block in small
    pieces; ``shuffle_seed`` writes the records out of order (the format allows it)."""
    head = (b"makedumpfile" + bytes(4) + struct.pack(">qq", 1, 1)).ljust(4096, b"\0")
    pieces = []
    pos = 0
    if split_header:
        for a in range(0, BLOCK, 100):
            pieces.append((a, blob[a:a + 100]))
        pos = BLOCK
    while pos < len(blob):
        pieces.append((pos, blob[pos:pos + record]))
        pos += record
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(pieces)
    body = b"".join(struct.pack(">qq", off, len(d)) + d for off, d in pieces)
    return head + body + struct.pack(">qq", -1, -1)


def flatten_file(src_path, out_path, record=1 << 20):
    """:func:`flatten` of a file, streamed: records of ``record`` bytes in file order."""
    with open(src_path, "rb") as src, open(out_path, "wb") as out:
        out.write((b"makedumpfile" + bytes(4) + struct.pack(">qq", 1, 1)).ljust(4096, b"\0"))
        pos = 0
        while True:
            data = src.read(record)
            if not data:
                break
            out.write(struct.pack(">qq", pos, len(data)) + data)
            pos += len(data)
        out.write(struct.pack(">qq", -1, -1))
    return out_path


def from_raw(raw_path, out_path, ram_ranges, *, phys_base=0, codec="zstd", vmcoreinfo=b"",
             release="", uts_version="", machine="x86_64", dump_level=1, block_size=BLOCK,
             cpu_notes=b"", sub_phys_base=0, qemu=False, nr_cpus=2):
    """Stream a raw physical image (byte 0 = ``phys_base``) into a kdump file: every page of
    ``ram_ranges`` [(start, end)) is dumped (zero pages share one page of zeros, as with
    makedumpfile -d 1). Two passes over the raw file; memory stays at a few pages.

    ``block_size``: the file's unit (pfn = physical address / block_size; QEMU: 65,536 for
    aarch64). ``cpu_notes``: ELF notes put in the sub-header before VMCOREINFO (:func:`qemu_notes`).
    ``qemu``: empty utsname with machine "Unknown", as QEMU writes it. ``sub_phys_base``: the
    sub-header's phys_base (QEMU: the lowest RAM address)."""
    bs = block_size
    size = os.path.getsize(raw_path)
    top = max(e for _s, e in ram_ranges)
    max_mapnr = -(-top // bs)
    pfns = sorted({p for s, e in ram_ranges for p in range(s // bs, -(-e // bs))
                   if (p * bs) - phys_base + bs <= size and p * bs >= phys_base})
    vmci_note = note(b"VMCOREINFO", vmcoreinfo) if vmcoreinfo else b""
    notes = cpu_notes + vmci_note
    sub_hdr_size = -(-(SUB.size + len(notes)) // bs)
    one = -(-((max_mapnr + 7) // 8) // bs) * bs
    bm = bytearray(one)
    for p in pfns:
        bm[p >> 3] |= 1 << (p & 7)
    status = FLAGS.get(codec, 0) if isinstance(codec, str) else 0
    uts = dict(sysname="", nodename="", release="", uts_version="", machine="Unknown") if qemu else \
        dict(release=release, uts_version=uts_version, machine=machine)
    head = header(block_size=bs, sub_hdr_size=sub_hdr_size, bitmap_blocks=2 * one // bs,
                  max_mapnr=max_mapnr, status=status, nr_cpus=nr_cpus, **uts)
    off_note = bs + SUB.size
    off_vmci = off_note + len(cpu_notes) + 12 + 12 if vmcoreinfo else 0
    sub = SUB.pack(sub_phys_base, dump_level, 0, 0, max_mapnr, off_vmci, len(vmcoreinfo),
                   off_note if notes else 0, len(notes), 0, 0, 0, max_mapnr, max_mapnr)
    data_offset = (1 + sub_hdr_size + 2 * one // bs) * bs
    tmp = f"{out_path}.tmp{os.getpid()}"
    zero = bytes(bs)
    with open(raw_path, "rb") as raw, open(tmp, "wb") as out:
        out.write(head.ljust(bs, b"\0"))
        out.write((sub + notes).ljust(sub_hdr_size * bs, b"\0"))
        out.write(bytes(bm) * 2)
        offset = data_offset + DESC.size * len(pfns)
        zero_offset = offset
        out.seek(offset)
        out.write(zero)
        offset += bs
        descs = bytearray()
        for p in pfns:
            raw.seek(p * bs - phys_base)
            page = raw.read(bs)
            if page == zero:
                descs += DESC.pack(zero_offset, bs, 0, 0)
                continue
            flags, blob = encode_page(page, codec(p) if callable(codec) else codec)
            out.write(blob)
            descs += DESC.pack(offset, len(blob), flags, 0)
            offset += len(blob)
        out.seek(data_offset)
        out.write(descs)
    os.replace(tmp, out_path)
    return out_path


# --- a tiny 4-level x86-64 kernel to put in kdump files (layer and stacker tests, bench) ---

BS = 4096
KERNEL_MAP = 0xFFFFFFFF80000000
P, RW = 1, 2
PHYS_BASE = 0x100000           # where the kernel image sits in physical memory
RELEASE, VERSION = "6.99.0-test", "#3 SMP PREEMPT_DYNAMIC test build"
BANNER = f"Linux version {RELEASE} (builder@host) (gcc 14) {VERSION}\n\0".encode()
OTHER_BUILD = f"Linux version {RELEASE} (builder@host) (gcc 14) #2 SMP older build\n\0".encode()


def x86_kernel(excluded_va_offset=0x7000):
    """Pages of a tiny 4-level x86-64 kernel: init_top_pgt at image offset 0x1000 mapping the
    image (offsets 0..0x8000) at __START_KERNEL_map; init_uts_ns at offset 0x5000."""
    pages = {}

    def page(off):
        return pages.setdefault((PHYS_BASE + off) // BS, bytearray(BS))

    root, pdpt, pd, pt = 0x1000, 0x2000, 0x3000, 0x4000
    va = KERNEL_MAP
    struct.pack_into("<Q", page(root), 8 * ((va >> 39) & 511), (PHYS_BASE + pdpt) | P | RW)
    struct.pack_into("<Q", page(pdpt), 8 * ((va >> 30) & 511), (PHYS_BASE + pd) | P | RW)
    struct.pack_into("<Q", page(pd), 8 * ((va >> 21) & 511), (PHYS_BASE + pt) | P | RW)
    for off in range(0, 0x9000, BS):
        struct.pack_into("<Q", page(pt), 8 * (off >> 12), (PHYS_BASE + off) | P | RW)
    uts = page(0x5000)
    for i, text in enumerate(("Linux", "box", RELEASE, VERSION)):
        uts[i * 65:i * 65 + len(text)] = text.encode()
    page(0x6000)[:len(BANNER)] = BANNER
    page(0x8000)[:8] = b"DATAPAGE"
    pages.pop((PHYS_BASE + excluded_va_offset) // BS, None)      # excluded by the dump level
    vmci = (f"OSRELEASE={RELEASE}\nPAGESIZE=4096\nSYMBOL(init_uts_ns)={KERNEL_MAP + 0x5000:x}\n"
            f"OFFSET(uts_namespace.name)=0\nSYMBOL(_stext)={KERNEL_MAP:x}\n"
            f"SYMBOL(swapper_pg_dir)={KERNEL_MAP + root:x}\nSYMBOL(init_top_pgt)={KERNEL_MAP + root:x}\n"
            f"NUMBER(phys_base)={PHYS_BASE}\nNUMBER(pgtable_l5_enabled)=0\nKERNELOFFSET=0\n").encode()
    return {p: bytes(b) for p, b in pages.items()}, vmci


# --- ELF cores and LiME files of the same pages (truncation and container tests) ------------


def elf_core(pages, max_pfn, notes=b"", block=BS):
    """An ELF64 core of ``pages`` ({pfn: bytes}): one PT_LOAD over [0, max_pfn) blocks at
    physical 0, and a PT_NOTE with ``notes`` (records from :func:`note`) when given."""
    ehsize, phsize = 64, 56
    nph = 2 if notes else 1
    note_off = ehsize + nph * phsize
    load_off = -(-(note_off + len(notes)) // block) * block
    size = max_pfn * block
    ph = struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 0) if notes else b""
    ph += struct.pack("<IIQQQQQQ", 1, 7, load_off, 0, 0, size, size, block)
    ehdr = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack(
        "<HHIQQQIHHHHHH", 4, 62, 1, 0, ehsize, 0, 0, ehsize, phsize, nph, 0, 0, 0)
    mem = bytearray(size)
    for p, data in pages.items():
        mem[p * block:(p + 1) * block] = data
    return (ehdr + ph + notes).ljust(load_off, b"\0") + bytes(mem)


def lime_file(ranges):
    """A LiME file of ``ranges`` [(physical start, bytes)]: a 32-byte header per range."""
    out = b""
    for start, data in ranges:
        out += struct.pack("<IIQQQ", 0x4C694D45, 1, start, start + len(data) - 1, 0) + data
    return out
