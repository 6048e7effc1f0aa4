"""Pieces every linux.ktstr plugin shares (requirements, kernel context, map selection).

Not a plugin base class on purpose: Volatility lists every PluginInterface subclass as a plugin.
"""

from volatility3.framework.configuration import requirements

from .bpf import helpers as bh
from .bpf import maps as bpfmaps
from .bpf import progs as bpfprogs
from .core import ReadError
from .errors import KtstrError
from .kernel import ARCHITECTURES, KernelContext


def kernel_requirement():
    return requirements.ModuleRequirement(name="kernel", description="Linux kernel",
                                          architectures=ARCHITECTURES)


def map_type_names(kctx):
    """Map type numbers to bpftool names, from the kernel's own enum when the ISF has it."""
    try:
        enum = kctx.module.get_enumeration("bpf_map_type")
        constants = dict(enum.choices)
    except Exception:  # older ISF or no such enum: uapi numbering is stable
        constants = {}
    return bpfmaps.type_names_from_enum(constants, "BPF_MAP_TYPE_", bpfmaps.UAPI_MAP_TYPES)


def list_maps(kctx: KernelContext, stats=None):
    """All BPF maps of the dump (BpfMap records, id order)."""
    kctx.require_type("bpf_map")
    idr_addr = kctx.require_symbol("map_idr", "the BPF map registry")
    try:
        return list(bpfmaps.iter_maps(kctx.reader, kctx.layout, idr_addr, map_type_names(kctx), stats))
    except ReadError as e:
        raise KtstrError(_registry_unreadable("map_idr", idr_addr, e)) from None


def list_progs(kctx: KernelContext, stats=None):
    """All BPF programs of the dump (BpfProg records, id order)."""
    idr_addr = kctx.require_symbol("prog_idr", "the BPF program registry")
    kctx.require_type("bpf_prog")
    names = bpfprogs.prog_type_names(bh.enum_constants(kctx, "bpf_prog_type"))
    try:
        return list(bpfprogs.iter_progs(kctx.reader, kctx.layout, idr_addr, names, stats))
    except ReadError as e:
        raise KtstrError(_registry_unreadable("prog_idr", idr_addr, e)) from None


def _registry_unreadable(symbol, addr, err):
    # The registry head lives in the kernel image: a truncated or damaged dump is the usual cause.
    return (f"kernel symbol '{symbol}' at {addr:#x} is unreadable ({err.reason}): "
            f"the dump is truncated or damaged there")


def select_maps(maps, ids=None, names=None, types=None):
    """Filter by ids, names and type names; an explicit id or name that matches nothing is an error."""
    out = [m for m in maps
           if (not ids or m.id in ids) and (not names or m.name in names)
           and (not types or m.type_name in types)]
    if (ids or names) and not out:
        want = ", ".join([f"id {i}" for i in ids or []] + [repr(n) for n in names or []])
        raise KtstrError(f"no BPF map matches {want}")
    return out
