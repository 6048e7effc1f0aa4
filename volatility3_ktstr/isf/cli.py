"""`ktstr-isf`: make a Volatility 3 ISF for a Linux kernel from its BTF and symbols."""

import argparse
import json
import os
import sys

from .. import btf as btfmod
from . import banner as bannermod
from .generator import file_source, generate
from .output import default_name, user_symbols_dir, write_isf
from .symbols import SymbolFileError, load_symbol_file, unrelocate


class CliError(Exception):
    pass


def build(args):
    if not os.path.exists(args.btf):
        raise CliError(f"no such file: {args.btf} (pass a vmlinux ELF with .BTF or a raw BTF "
                       f"file such as /sys/kernel/btf/vmlinux)")
    kernel_btf = btfmod.load(args.btf)
    elf_arch = btfmod.elf_arch(args.btf)
    arch = args.arch or elf_arch or btfmod.guess_arch(kernel_btf) or "x86_64"
    sources = [file_source("dwarf", args.btf)]
    symbols = None
    sym_path = args.system_map or args.kallsyms
    if sym_path:
        if not os.path.exists(sym_path):
            raise CliError(f"no such symbol file: {sym_path}")
        symbols = load_symbol_file(sym_path)
        sources.append(file_source("system-map", sym_path))
        if args.kallsyms:
            symbols, shift = unrelocate(symbols, arch, args.text_base)
            if shift:
                print(f"kallsyms: removed KASLR shift {shift:#x}", file=sys.stderr)
    else:
        raise CliError("no symbols: pass --system-map FILE or --kallsyms FILE")

    if args.banner:
        banner = bannermod.banner_bytes(args.banner)
    elif elf_arch:
        addr = symbols.get("linux_banner", (None,))[0]
        if addr is None:
            raise CliError("the symbol file has no linux_banner: pass --banner 'Linux version ...'")
        banner = bannermod.banner_from_elf(args.btf, addr)
        if banner is None:
            raise CliError(f"no banner at linux_banner ({addr:#x}) in {args.btf}'s sections: "
                           f"pass --banner 'Linux version ...'")
    else:
        raise CliError(f"{args.btf} is raw BTF, which holds no banner: pass --banner "
                       f"'Linux version ...' (the first line of the guest's dmesg or /proc/version)")
    if symbols is not None and "linux_banner" not in symbols:
        raise CliError("the symbol file has no linux_banner (a kallsyms without "
                       "CONFIG_KALLSYMS_ALL?): pass System.map instead")
    isf = generate(kernel_btf, symbols, banner, arch, sources)
    out = args.output or os.path.join(user_symbols_dir(), default_name(banner, arch))
    write_isf(isf, out)
    return out, banner, isf


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="ktstr-isf",
        description="Make a Volatility 3 symbol table (ISF) for a Linux kernel from its BTF and "
                    "System.map/kallsyms. Written where Volatility looks by default unless -o.")
    p.add_argument("btf", metavar="VMLINUX_OR_BTF", nargs="?",
                   help="vmlinux ELF (stripped is fine, needs .BTF) or raw BTF (/sys/kernel/btf/vmlinux)")
    p.add_argument("--from-dump", metavar="DUMP",
                   help="instead of VMLINUX_OR_BTF: carve BTF, kallsyms and banner from a memory dump "
                        "(raw, ELF core, LiME); --system-map/--kallsyms then override the kallsyms")
    p.add_argument("-v", "--verbose", action="store_true", help="print carving steps and timings")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--system-map", metavar="FILE", help="System.map of the same build")
    g.add_argument("--kallsyms", metavar="FILE", help="/proc/kallsyms text (read as root)")
    p.add_argument("--banner", metavar="TEXT", help="the kernel banner ('Linux version ...')")
    p.add_argument("--arch", choices=["x86_64", "arm64"], help="default: from the ELF or the BTF")
    p.add_argument("--text-base", type=lambda s: int(s, 0), default=None,
                   help="link-time address of _text, to undo KASLR in --kallsyms (default per arch)")
    p.add_argument("-o", "--output", metavar="OUT.json.xz", help="output file (.json, .json.xz, .json.gz)")
    args = p.parse_args(argv)
    if not args.btf and not args.from_dump:
        p.error("give VMLINUX_OR_BTF or --from-dump DUMP")
    try:
        if args.from_dump:
            from .fromdump import cli_build
            out, banner, isf = cli_build(args)
        else:
            out, banner, isf = build(args)
    except (CliError, SymbolFileError, btfmod.BtfError, ValueError, OSError) as e:
        print(f"ktstr-isf: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    print(f"banner: {banner.rstrip(bytes([0, 10])).decode('utf-8', 'replace')}")
    print(f"{len(isf['user_types'])} types, {len(isf['enums'])} enums, {len(isf['symbols'])} symbols")
    return 0


if __name__ == "__main__":
    sys.exit(main())
