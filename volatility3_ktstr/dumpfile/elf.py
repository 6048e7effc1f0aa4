"""ELF64 cores (QEMU ``dump-guest-memory``, kdump's /proc/vmcore, ``ktstr-minimize`` output).

PT_LOAD segments map file ranges to physical addresses (``p_paddr``); PT_NOTE segments carry
notes, among them the kernel's ``VMCOREINFO`` (QEMU with ``-device vmcoreinfo``, /proc/vmcore).
:func:`parse_core` works on any ``read(offset, size)`` function, so Volatility layers can use it
on their base file layer without this module importing Volatility.
"""

import dataclasses
import os
import struct
from typing import Callable, List, Tuple

from .errors import DumpError
from .image import FileImage
from .notes import Note

ELF_MAGIC = b"\x7fELF"
PT_LOAD, PT_NOTE = 1, 4
MAX_SEGMENTS = 0xFFFF           # e_phnum is 16 bits
MAX_NOTE_BYTES = 1 << 24
MAX_NOTES = 4096
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")


@dataclasses.dataclass
class ElfCore:
    """What an ELF64 core's headers say."""

    machine: int
    # (p_paddr, p_offset, p_filesz, p_memsz) of each PT_LOAD with file data
    loads: List[Tuple[int, int, int, int]]
    note_segments: List[Tuple[int, int]]          # (p_offset, p_filesz) of each PT_NOTE


def is_elf(head: bytes) -> bool:
    return head[:4] == ELF_MAGIC


def parse_core(read: Callable[[int, int], bytes], name="ELF file") -> ElfCore:
    """Program headers of a little-endian ELF64 core; DumpError (one line) otherwise."""
    ehdr = read(0, EHDR.size)
    if len(ehdr) < EHDR.size or ehdr[:4] != ELF_MAGIC:
        raise DumpError(f"{name}: not an ELF file (or shorter than its ELF header)")
    if ehdr[4] != 2 or ehdr[5] != 1:
        raise DumpError(f"{name}: only little-endian ELF64 cores are supported")
    fields = EHDR.unpack(ehdr)
    machine, phoff, phentsize, phnum = fields[2], fields[5], fields[9], fields[10]
    if phnum == 0 or phnum > MAX_SEGMENTS or phentsize < PHDR.size:
        raise DumpError(f"{name}: ELF core with {phnum} program headers of {phentsize} bytes")
    table = read(phoff, phentsize * phnum)
    if len(table) < phentsize * phnum:
        raise DumpError(f"{name}: program headers at {phoff:#x} run past the end of the file")
    loads, notes = [], []
    for i in range(phnum):
        p_type, _fl, off, _va, pa, filesz, memsz, _al = PHDR.unpack_from(table, i * phentsize)
        if p_type == PT_LOAD and filesz:
            loads.append((pa, off, filesz, memsz))
        elif p_type == PT_NOTE and filesz:
            notes.append((off, filesz))
    return ElfCore(machine, loads, notes)


def parse_notes(data: bytes) -> List[Note]:
    """[Note(name, desc, type)] of an ELF note segment (4-byte aligned Elf64_Nhdr records);
    a record running past the segment keeps what is there and ends the list."""
    out = []
    pos = 0
    for _ in range(MAX_NOTES):
        if pos + 12 > len(data):
            break
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        pos += 12
        name = data[pos:pos + namesz].rstrip(b"\0")
        pos += (namesz + 3) & ~3
        out.append(Note(name, data[pos:pos + descsz], ntype))
        pos += (descsz + 3) & ~3
    return out


def read_notes(read: Callable[[int, int], bytes], core: ElfCore):
    """[(name, desc)] of every PT_NOTE segment of ``core`` (bounded in size)."""
    out = []
    for off, size in core.note_segments:
        if size < MAX_NOTE_BYTES:
            out.extend(parse_notes(read(off, size)))
    return out


def vmcoreinfo_note(read: Callable[[int, int], bytes], core: ElfCore):
    """The VMCOREINFO note's text, or None."""
    for note in read_notes(read, core):
        if note.name == b"VMCOREINFO":
            return note.desc
    return None


def open_elf(path, size):
    """FileImage of an ELF core: one segment per PT_LOAD (clipped to the file), its notes."""
    with open(path, "rb") as f:
        def read(off, n):
            # Offsets come from the file's headers: anything outside it reads as nothing.
            if off < 0 or n <= 0 or off >= size:
                return b""
            return os.pread(f.fileno(), min(n, size - off), off)

        core = parse_core(read, path)
        notes = read_notes(read, core)
    segments = [(pa, off, min(filesz, max(0, size - off))) for pa, off, filesz, _m in core.loads]
    if not segments:
        raise DumpError(f"{path}: ELF file has no PT_LOAD segments (not a memory core)")
    return FileImage(path, segments, "elf", notes)
