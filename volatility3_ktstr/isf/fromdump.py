"""Build a kernel ISF from nothing but a memory dump: `ktstr-isf --from-dump DUMP`.

Reads physical memory from a raw dump, an ELF core (QEMU dump-guest-memory, kdump ELF), a
LiME file or a kdump-compressed vmcore through :mod:`volatility3_ktstr.dumpfile` (pread of
large chunks or page by page; no whole-file read, no Volatility needed), carves the kernel BTF,
banner, VMCOREINFO and kallsyms (:mod:`.carve`), turns kallsyms into link-time addresses and
calls the generator.
"""

import hashlib
import os
import sys
import time

from .. import vmcoreinfo as vmcimod
from ..dumpfile import DumpError, open_image  # noqa: F401  (re-exported: callers use fromdump.*)
from ..dumpfile.lime import LIME_MAGIC  # noqa: F401
from . import carve as carvemod
from . import kallsyms as ksmod
from .generator import generate
from .output import default_name, user_symbols_dir, write_isf
from .symbols import DEFAULT_TEXT, load_symbol_file, unrelocate


# --- the pipeline ----------------------------------------------------------------------------


class Carved:
    """What came out of the dump."""

    btf = blob = btf_phys = banner = symbols = arch = kallsyms = vmcoreinfo = None
    how = ""
    from_kallsyms = False
    timings = None


def _arch_of(btf, vmci, forced):
    if forced:
        return forced
    from .. import btf as btfmod
    arch = btfmod.guess_arch(btf)
    if arch:
        return arch
    return (vmcimod.arch(vmci) if vmci else None) or "x86_64"


def carve(image, name="dump", arch=None, text_base=None, symbol_file=None, kallsyms_text=False,
          banner=None, log=None, progress=None):
    """Carve everything the ISF needs from ``image``; raises DumpError naming what is missing.

    ``symbol_file``: a System.map (or kallsyms text when ``kallsyms_text``) to use instead of
    the in-memory kallsyms. ``text_base``: link-time _text (default: the architecture's).
    ``banner``: the banner text to use instead of the one in the image.
    """
    log = log or (lambda msg: None)
    c = Carved()
    c.timings = {}
    t0 = time.perf_counter()
    res = carvemod.scan(image, progress=progress)
    c.timings["scan"] = time.perf_counter() - t0
    log(f"scanned {sum(n for _p, n in image.ranges) >> 20} MiB: {res!r}")
    ks = None
    if symbol_file is None:
        t = time.perf_counter()
        ks, errors = carvemod.carve_kallsyms(image, [p for p, _ in res.hits["kallsyms"]])
        if ks is None and "kallsyms" not in res.full:
            log("no kallsyms near the banners; searching the whole image")
            carvemod.scan_full(image, res, ["kallsyms"])
            ks, errors = carvemod.carve_kallsyms(image, [p for p, _ in res.hits["kallsyms"]])
        c.timings["kallsyms"] = time.perf_counter() - t
        if ks is None:
            why = f" ({errors[0]})" if errors else ""
            raise DumpError(f"no kallsyms tables in {name}{why} (kernel without CONFIG_KALLSYMS, or an "
                            f"unknown layout): pass the kernel's System.map with --system-map FILE")
        c.kallsyms = ks
        log(f"kallsyms: {len(ks)} symbols, {ks.layout} layout, token table at {ks.phys['kallsyms_token_table']:#x}")

    t = time.perf_counter()
    found = carvemod.carve_btf(image, res, ks)
    if found is None and "btf" not in res.full:
        log("no kernel BTF near the banners; searching the whole image")
        carvemod.scan_full(image, res, ["btf"])
        found = carvemod.carve_btf(image, res, ks)
    c.timings["btf"] = time.perf_counter() - t
    if found is None:
        raise DumpError(f"no kernel BTF in {name} (no 0xEB9F blob with task_struct; kernel built "
                        f"without CONFIG_DEBUG_INFO_BTF?): pass the kernel's vmlinux or BTF file "
                        f"and its System.map instead of --from-dump")
    c.btf, c.blob, c.btf_phys = found
    texts = image.vmcoreinfo_texts() if hasattr(image, "vmcoreinfo_texts") else []
    c.arch = _arch_of(c.btf, carvemod.best_vmcoreinfo(texts), arch)
    log(f"BTF: {len(c.blob)} bytes at {c.btf_phys:#x}, arch {c.arch}")
    if ks is not None:
        text = carvemod.vmcoreinfo_in_memory(image, ks, c.arch)
        if text:
            texts.append(text)
    c.vmcoreinfo = carvemod.best_vmcoreinfo(texts)
    if c.vmcoreinfo:
        log(f"VMCOREINFO: OSRELEASE={c.vmcoreinfo.get('OSRELEASE')}, "
            f"KERNELOFFSET={c.vmcoreinfo.get('KERNELOFFSET', 0):#x}")

    if symbol_file is not None:
        c.symbols = load_symbol_file(symbol_file)
        if kallsyms_text:
            c.symbols, _shift = unrelocate(c.symbols, c.arch, text_base)
        c.how = f"symbols from {os.path.basename(symbol_file)}"
    else:
        if not ks.has_data_symbols():
            missing = ksmod.missing_required({n: 1 for n in ks.names}, c.arch)
            raise DumpError(f"kallsyms in {name} has no data symbols (kernel without "
                            f"CONFIG_KALLSYMS_ALL): missing {', '.join(missing)}; pass the "
                            f"kernel's System.map with --system-map FILE")
        base = text_base if text_base is not None else DEFAULT_TEXT.get(c.arch)
        c.symbols, c.how = ksmod.link_time(ks, base, c.vmcoreinfo)
        c.from_kallsyms = True
    missing = ksmod.missing_required(c.symbols, c.arch)
    if missing:
        raise DumpError(f"symbols missing from {'the symbol file' if symbol_file else 'kallsyms in ' + name}: "
                        f"{', '.join(missing)}; pass the kernel's System.map with --system-map FILE")
    log(f"symbols: {len(c.symbols)} ({c.how})")

    release = c.vmcoreinfo.get("OSRELEASE") if c.vmcoreinfo else None
    if banner:
        from .banner import banner_bytes
        c.banner = banner_bytes(banner)
    else:
        c.banner = carvemod.carve_banner(image, res, ks, release)
    if c.banner is None:
        raise DumpError(f"no 'Linux version ...' banner in {name}: pass --banner 'Linux version ...'")
    c.timings["total"] = time.perf_counter() - t0
    return c


def sources_of(c):
    """ISF metadata entries for the carved inputs (names independent of the dump file, so the
    same kernel gives the same ISF from any of its dumps)."""
    h = hashlib.sha256()
    for name in sorted(c.symbols):
        addr, kind = c.symbols[name]
        h.update(f"{addr:x} {kind} {name}\n".encode())
    return [
        {"kind": "dwarf", "name": "btf-in-memory", "hash_type": "sha256",
         "hash_value": hashlib.sha256(c.blob).hexdigest()},
        {"kind": "system-map", "name": "kallsyms-in-memory" if c.from_kallsyms else "system-map",
         "hash_type": "sha256", "hash_value": h.hexdigest()},
    ]


def build_isf(c):
    """(ISF dict, banner bytes) of what :func:`carve` found."""
    return generate(c.btf, c.symbols, c.banner, c.arch, sources_of(c)), c.banner


def default_path(directory, banner, arch):
    """Where an ISF built from a dump goes by default. gzip, not xz: ~10x faster to write
    for a 20 MB ISF (about 3 s saved) and faster for Volatility to load on every run."""
    return os.path.join(directory, default_name(banner, arch, ".json.gz"))


def cli_build(args):
    """`ktstr-isf --from-dump DUMP [...]`: returns (output path, banner, isf) like cli.build."""

    path = args.from_dump
    if getattr(args, "btf", None):
        raise DumpError("give either VMLINUX_OR_BTF or --from-dump, not both")
    verbose = getattr(args, "verbose", False)

    def log(msg):
        if verbose:
            print(f"ktstr-isf: {msg}", file=sys.stderr)

    t0 = time.perf_counter()
    with open_image(path) as image:
        c = carve(image, os.path.basename(path), arch=args.arch, text_base=args.text_base,
                  symbol_file=args.system_map or args.kallsyms, kallsyms_text=bool(args.kallsyms),
                  banner=args.banner, log=log)
    t1 = time.perf_counter()
    c.kallsyms = None         # the decoded tables are not needed any more (memory)
    isf, banner = build_isf(c)
    t2 = time.perf_counter()
    out = args.output or default_path(user_symbols_dir(), banner, c.arch)
    write_isf(isf, out)
    log(f"carve {t1 - t0:.1f} s, generate {t2 - t1:.1f} s, write {time.perf_counter() - t2:.1f} s")
    return out, banner, isf
