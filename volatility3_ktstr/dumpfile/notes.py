"""Per-CPU registers from the ELF notes of dump files (no Volatility import).

ELF cores (QEMU ``dump-guest-memory``, /proc/vmcore) carry notes in PT_NOTE segments,
kdump-compressed files in their sub-header; both come here as :class:`Note` records
(``elf.parse_notes``). What the notes of one CPU say:

- ``NT_PRSTATUS`` ("CORE", type 1): ``struct elf_prstatus`` (include/uapi/linux/elfcore.h):
  ``pr_pid`` at 32, ``pr_reg`` at 112. Its size tells the machine: 336 bytes on x86-64
  (``pr_reg`` = ``struct user_regs_struct``, 27 longs, arch/x86/include/asm/user_64.h), 392 on
  aarch64 (``struct user_pt_regs``: x0..x30, sp, pc, pstate, arch/arm64/include/uapi/asm/ptrace.h).
  QEMU writes the CPU index in ``pr_pid``; /proc/vmcore the pid of the task running there.
- QEMU's own CPU state ("QEMU", type 0), x86 only (target/i386/arch_dump.c,
  ``QEMUCPUState``): version, size, the general registers, rip, rflags, ten segments
  (selector, limit, flags, pad, base), ``cr[0..4]`` and (version 1 with size 440)
  ``kernel_gs_base``. CR3 is the page-table root, CR4 bit 12 (LA57) the paging depth.
- aarch64 QEMU (target/arm/arch_dump.c) writes ``NT_PRSTATUS``, ``NT_PRFPREG`` and, with SVE,
  ``NT_ARM_SVE`` ("LINUX") per CPU, and no system registers: TTBR1_EL1/TCR_EL1 are in no
  QEMU note (checked up to QEMU 9), so arm64 files without VMCOREINFO find the kernel by
  the scan raw dumps use; the notes still tell the machine (the NT_PRSTATUS size).

:func:`cpu_states` is the one entry point (stacks and big-machine work reuse it):
``cpu_states(image) -> [CpuState]``, one per CPU in file order, registers by name; ``image``
is a ``dumpfile.open_image`` result or the notes of a Volatility layer
(``layers.fileinfo.layer_notes(context, layer_name)``: kdump, ELF cores, truncated ones).
:func:`machine_of_notes` tells the machine the notes describe (or None) and
:func:`describe_notes` says in a few words what the notes are (for error messages).
"""

import dataclasses
import struct
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

NT_PRSTATUS, NT_PRFPREG = 1, 2
NT_X86_XSTATE = 0x202
NT_ARM_SVE, NT_ARM_PAC_MASK = 0x405, 0x406
NT_QEMU = 0                       # QEMU's CPU-state note ("QEMU", type 0)
PR_PID, PR_REG = 32, 112

X86_64_PRSTATUS_SIZE = 336
AARCH64_PRSTATUS_SIZE = 392
X86_64_PR_REG = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
                 "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss",
                 "fs_base", "gs_base", "ds", "es", "fs", "gs")
AARCH64_PR_REG = tuple(f"x{i}" for i in range(31)) + ("sp", "pc", "pstate")
PRSTATUS_REGS = {X86_64_PRSTATUS_SIZE: ("x86_64", X86_64_PR_REG),
                 AARCH64_PRSTATUS_SIZE: ("aarch64", AARCH64_PR_REG)}

# QEMUCPUState (x86): u32 version, u32 size, then u64s; segments are 24 bytes each.
QEMU_X86_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10",
                 "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
QEMU_X86_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")
_QEMU_SEG = struct.Struct("<IIIIQ")
QEMU_X86_CR_OFFSET = 8 + 8 * len(QEMU_X86_GPRS) + _QEMU_SEG.size * len(QEMU_X86_SEGMENTS)
QEMU_X86_MIN_SIZE = QEMU_X86_CR_OFFSET + 5 * 8                   # 432: version 1 without gs base
MAX_CPUS = 8192


class Note(NamedTuple):
    """One ELF note: its name (without the NUL), type and descriptor bytes."""

    name: bytes
    desc: bytes
    type: int = 0


@dataclasses.dataclass
class CpuState:
    """One CPU's registers from a dump file's notes.

    ``cpu``: index in file order; ``arch``: "x86_64" or "aarch64"; ``pid``: ``pr_pid``
    (QEMU: the CPU index; /proc/vmcore: the task running there); ``regs``: name -> value
    (general registers from NT_PRSTATUS, control/system registers from CPU-state notes:
    ``cr0``..``cr4``, ``kernel_gs_base``, segment bases ``cs_base`` ...); ``sources``: the
    notes they came from.
    """

    cpu: int
    arch: str
    pid: Optional[int] = None
    regs: Dict[str, int] = dataclasses.field(default_factory=dict)
    sources: List[str] = dataclasses.field(default_factory=list)

    def get(self, name: str) -> Optional[int]:
        return self.regs.get(name)

    @property
    def page_table_root(self) -> Optional[int]:
        """Physical address of the page-table root when the notes give it (x86-64: CR3
        without its PCID/flag bits), else None."""
        if self.arch == "x86_64" and "cr3" in self.regs:
            return self.regs["cr3"] & 0x000FFFFFFFFFF000
        return None

    @property
    def la57(self) -> Optional[bool]:
        """x86-64: whether CR4.LA57 (bit 12) says 5-level paging; None without CR4."""
        if self.arch == "x86_64" and "cr4" in self.regs:
            return bool(self.regs["cr4"] >> 12 & 1)
        return None


def _prstatus(desc: bytes) -> Optional[Tuple[str, int, Dict[str, int]]]:
    known = PRSTATUS_REGS.get(len(desc))
    if known is None:
        return None
    arch, names = known
    values = struct.unpack_from(f"<{len(names)}Q", desc, PR_REG)
    return arch, struct.unpack_from("<I", desc, PR_PID)[0], dict(zip(names, values))


def _qemu_x86(desc: bytes) -> Optional[Dict[str, int]]:
    if len(desc) < QEMU_X86_MIN_SIZE:
        return None
    _version, size = struct.unpack_from("<II", desc)
    if size < QEMU_X86_MIN_SIZE or size > len(desc):
        return None
    regs = dict(zip(QEMU_X86_GPRS, struct.unpack_from(f"<{len(QEMU_X86_GPRS)}Q", desc, 8)))
    pos = 8 + 8 * len(QEMU_X86_GPRS)
    for seg in QEMU_X86_SEGMENTS:
        selector, limit, _flags, _pad, base = _QEMU_SEG.unpack_from(desc, pos)
        regs[f"{seg}_base"] = base
        if seg not in ("gdt", "idt"):
            regs[f"{seg}_sel"] = selector
        else:
            regs[f"{seg}_limit"] = limit
        pos += _QEMU_SEG.size
    for i, value in enumerate(struct.unpack_from("<5Q", desc, QEMU_X86_CR_OFFSET)):
        regs[f"cr{i}"] = value
    if size >= QEMU_X86_MIN_SIZE + 8:
        regs["kernel_gs_base"] = struct.unpack_from("<Q", desc, QEMU_X86_MIN_SIZE)[0]
    return regs


def _notes_of(image_or_notes) -> List[Note]:
    notes = getattr(image_or_notes, "notes", image_or_notes)
    return [n if isinstance(n, Note) else Note(*n) for n in notes or ()]


def cpu_states(image_or_notes) -> List[CpuState]:
    """Every CPU the notes describe, in file order, registers by name ([] without notes).

    Takes an image (anything with ``notes``: FileImage, KdumpFile) or a list of notes. The
    n-th CPU-state note of a kind belongs to the n-th NT_PRSTATUS (QEMU writes all
    NT_PRSTATUS notes, then all "QEMU" notes; /proc/vmcore has NT_PRSTATUS only).
    """
    cpus: List[CpuState] = []
    extra: Dict[str, int] = {"qemu": 0}
    for note in _notes_of(image_or_notes):
        if len(cpus) >= MAX_CPUS and note.type == NT_PRSTATUS:
            break
        if note.name == b"CORE" and note.type == NT_PRSTATUS:
            parsed = _prstatus(note.desc)
            if parsed is not None:
                arch, pid, regs = parsed
                cpus.append(CpuState(len(cpus), arch, pid, regs, ["NT_PRSTATUS"]))
        elif note.name == b"QEMU" and note.type == NT_QEMU:
            regs = _qemu_x86(note.desc)
            if regs is not None:
                _merge(cpus, extra, "qemu", "x86_64", regs, "QEMU")
    return cpus


def _merge(cpus, counters, kind, arch, regs, source) -> None:
    i = counters[kind]
    counters[kind] += 1
    if i >= MAX_CPUS:
        return
    if i < len(cpus):
        cpu = cpus[i]
        if cpu.arch != arch:
            return
        for name, value in regs.items():
            cpu.regs.setdefault(name, value)
        cpu.sources.append(source)
    else:
        cpus.append(CpuState(len(cpus), arch, None, dict(regs), [source]))


def machine_of_notes(notes: Iterable) -> Optional[str]:
    """"x86_64" or "aarch64" when the notes describe CPUs of one of them, else None."""
    arches = {c.arch for c in cpu_states(list(notes))}
    if len(arches) == 1:
        return arches.pop()
    notes = _notes_of(list(notes))
    if any(n.name == b"LINUX" and n.type in (NT_ARM_SVE, NT_ARM_PAC_MASK) for n in notes):
        return "aarch64"
    if any(n.name == b"LINUX" and n.type == NT_X86_XSTATE for n in notes):
        return "x86_64"
    return None


def describe_notes(notes: Iterable) -> str:
    """A few words on what the notes are: "2 NT_PRSTATUS of 392 bytes (aarch64), 2 QEMU ..."."""
    notes = _notes_of(list(notes))
    if not notes:
        return "no ELF notes"
    counts: Dict[str, int] = {}
    for n in notes:
        name = n.name.decode("latin-1", "replace") or "?"
        if n.name == b"CORE" and n.type == NT_PRSTATUS:
            arch = PRSTATUS_REGS.get(len(n.desc), ("unknown machine",))[0]
            key = f"NT_PRSTATUS of {len(n.desc)} bytes ({arch})"
        else:
            key = f"{name} type {n.type:#x} of {len(n.desc)} bytes"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{c} {k}" for k, c in list(counts.items())[:6])
