"""Kernel symbol addresses from a System.map or a procfs-format kallsyms file."""

import os


class SymbolFileError(ValueError):
    """A symbol file that cannot be used; the message names the file and the problem."""


# Link-time address of _text when the kernel is not relocated: the default
# __START_KERNEL_map + CONFIG_PHYSICAL_START on x86-64, KIMAGE_VADDR on arm64 (5.8+).
DEFAULT_TEXT = {"x86_64": 0xFFFFFFFF81000000, "arm64": 0xFFFF800080000000}


def parse_symbol_lines(lines, source="symbols"):
    """Map name -> (address, type letter) from `addr type name [module]` lines.

    Module symbols (a trailing `[module]`) and `__pfx_` padding labels are dropped; for a name
    defined twice (static functions in several files) the first definition is kept, as
    System.map order is address order and Volatility needs one address per name.
    """
    syms = {}
    bad = 0
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if len(parts) < 3:
            if line.strip():
                bad += 1
            continue
        if len(parts) > 3 and parts[3].startswith("["):
            continue
        addr_s, kind, name = parts[0], parts[1], parts[2]
        try:
            addr = int(addr_s, 16)
        except ValueError:
            bad += 1
            if bad > 100 and not syms:
                raise SymbolFileError(f"{source}: line {n} is not `address type name`: {line.strip()[:60]!r}")
            continue
        if name.startswith("__pfx_") or name in syms:
            continue
        syms[name] = (addr, kind)
    if not syms:
        raise SymbolFileError(f"{source}: no symbols found (expected System.map or kallsyms lines)")
    return syms


def load_symbol_file(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return parse_symbol_lines(f, os.path.basename(path))
    except OSError as e:
        raise SymbolFileError(f"cannot read symbol file {path}: {e.strerror}") from None


def unrelocate(syms, arch, text_base=None):
    """Shift runtime (KASLR) kallsyms back to link-time addresses.

    Returns (symbols, shift). ``text_base`` is the link-time `_text`; the default per
    architecture holds for distribution kernels. A zero `_text` (kallsyms read without
    privileges) cannot be used at all.
    """
    text = syms.get("_text")
    if text is None:
        return syms, 0
    if text[0] == 0:
        raise SymbolFileError("kallsyms addresses are all zero: read /proc/kallsyms as root "
                              "(or set kernel.kptr_restrict=0)")
    base = text_base if text_base is not None else DEFAULT_TEXT.get(arch)
    if base is None or text[0] == base:
        return syms, 0
    shift = text[0] - base
    # Only kernel-image symbols move with the image; absolute ('A'/'a') ones do not.
    out = {}
    for name, (addr, kind) in syms.items():
        if kind in "Aa" or abs(addr - text[0]) >= 1 << 32:
            out[name] = (addr, kind)
        else:
            out[name] = ((addr - shift) & 0xFFFFFFFFFFFFFFFF, kind)
    return out, shift
