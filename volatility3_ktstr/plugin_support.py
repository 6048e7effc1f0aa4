"""Pieces every linux.ktstr plugin shares (requirements, kernel context, map selection).

Not a plugin base class on purpose: Volatility lists every PluginInterface subclass as a plugin.
"""

from volatility3.framework.configuration import requirements

from .bpf import maps as bpfmaps
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
    return list(bpfmaps.iter_maps(kctx.reader, kctx.layout, idr_addr, map_type_names(kctx), stats))


def select_maps(maps, ids=None, names=None, types=None):
    """Filter by ids, names and type names; an explicit id or name that matches nothing is an error."""
    out = [m for m in maps
           if (not ids or m.id in ids) and (not names or m.name in names)
           and (not types or m.type_name in types)]
    if (ids or names) and not out:
        want = ", ".join([f"id {i}" for i in ids or []] + [repr(n) for n in names or []])
        raise KtstrError(f"no BPF map matches {want}")
    return out
