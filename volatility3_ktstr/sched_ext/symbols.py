"""sched_ext's kernel symbols, its globals (read with widths from the layout) and enum decoding.

Which symbol a kernel has is decided by the symbol table, never by a version number: each key
of :data:`SYMBOLS` lists names newest first and the first one present is used.
"""

from collections.abc import Callable

from ..core import Field, Layout, LayoutError, Reader

MASK64 = (1 << 64) - 1
SLICE_INF = MASK64

# Symbol names, newest first: the first one the symbol table has is used.
SYMBOLS = {
    "root": ("scx_root",),
    "ops": ("scx_ops",),
    "sched_all": ("scx_sched_all",),
    "enable_state": ("scx_enable_state_var", "scx_ops_enable_state_var"),
    "enable_state_str": ("scx_enable_state_str", "scx_ops_enable_state_str"),
    "enabled_key": ("__scx_enabled", "__scx_ops_enabled"),
    "switched_all_key": ("__scx_switched_all",),
    "switching_all": ("scx_switching_all",),
    "nr_rejected": ("scx_nr_rejected",),
    "enable_seq": ("scx_enable_seq",),
    "hotplug_seq": ("scx_hotplug_seq",),
    "in_softlockup": ("scx_in_softlockup",),
    "breather_depth": ("scx_breather_depth",),
    "bypass_depth": ("scx_bypass_depth", "scx_ops_bypass_depth"),
    "aborting": ("scx_aborting",),
    "exit_kind": ("scx_exit_kind",),
    "exit_info": ("scx_exit_info",),
    "watchdog_timeout": ("scx_watchdog_timeout",),
    "watchdog_timestamp": ("scx_watchdog_timestamp",),
    "watchdog_interval": ("scx_watchdog_interval",),
    "slice_dfl": ("scx_slice_dfl",),
    "event_stats_cpu": ("event_stats_cpu",),
    "dsq_hash": ("dsq_hash",),
    "global_dsqs": ("global_dsqs",),
    "dsq_global": ("scx_dsq_global",),
    "tasks": ("scx_tasks",),
    "runqueues": ("runqueues",),
    "jiffies": ("jiffies_64", "jiffies"),
    "nr_node_ids": ("nr_node_ids",),
    "prb": ("prb",),
    "bpf_stats_key": ("bpf_stats_enabled_key",),
}

# The C type each global is declared with (kernel/sched/ext.c, kernel/time/jiffies.c). Globals
# have no struct to ask, so their fields come from the layout of these types (global_field).
GLOBAL_TYPES = {
    "enable_state": "atomic_t",
    "switching_all": "bool",
    "in_softlockup": "unsigned long",       # a bit word (test_and_set_bit)
    "breather_depth": "atomic_t",
    "bypass_depth": "int",
    "aborting": "bool",
    "exit_kind": "atomic_t",
    "nr_rejected": "atomic_long_t",
    "enable_seq": "atomic_long_t",
    "hotplug_seq": "atomic_long_t",
    "watchdog_timeout": "unsigned long",
    "watchdog_timestamp": "unsigned long",
    "watchdog_interval": "unsigned long",
    "slice_dfl": "u64",
    "jiffies": "u64",
    "nr_node_ids": "unsigned int",
}

SCHED_CLASSES = ("stop", "dl", "rt", "fair", "ext", "idle")


def resolve_symbols(lookup: Callable[[str], int | None]) -> dict[str, int | None]:
    """{key: address or None} for :data:`SYMBOLS`, plus ``class:<name>`` for the sched classes.

    ``lookup(name)`` returns a symbol's address or None."""
    out = {}
    for key, names in SYMBOLS.items():
        out[key] = next((a for a in map(lookup, names) if a is not None), None)
    for cls in SCHED_CLASSES:
        out["class:" + cls] = lookup(f"{cls}_sched_class")
    return out


def class_names(syms: dict) -> dict[int, str]:
    """{sched_class address: short name} from :func:`resolve_symbols` output."""
    return {syms["class:" + c]: c for c in SCHED_CLASSES if syms.get("class:" + c)}


def _counter(layout: Layout, atomic: str, stand_in: str, path: str) -> Field:
    """``<atomic>.counter``; a layout without the typedef'd struct (some ISFs leave typedefs
    of anonymous structs out) gives the width of a member of the same C type instead
    (``static_key.enabled`` is an atomic_t; ``list_head.next`` is as wide as a long on LP64)."""
    if layout.has(atomic, "counter"):
        return layout.field(atomic, "counter")
    f = layout.field(stand_in, path)
    return Field(offset=0, size=f.size, signed=True, kind="int", type_name=atomic)


def global_field(layout: Layout, ctype: str) -> Field:
    """The Field of a global of C type ``ctype``, relative to the global's address. The atomics
    are the layout's own structs (their ``counter``); ``int`` and ``unsigned int`` are as wide
    as atomic_t's counter; ``unsigned long`` and ``u64`` as atomic64_t's (LP64), read unsigned;
    ``bool`` is C's ``_Bool``, one byte on every Linux ABI."""
    narrow = _counter(layout, "atomic_t", "static_key", "enabled")
    if ctype == "atomic_t":
        return narrow
    wide = _counter(layout, "atomic64_t", "list_head", "next")
    if ctype == "atomic_long_t":
        return wide
    if ctype in ("int", "unsigned int"):
        return Field(offset=0, size=narrow.size, signed=ctype == "int", kind="int", type_name=ctype)
    if ctype in ("unsigned long", "u64"):
        return Field(offset=0, size=wide.size, signed=False, kind="int", type_name=ctype)
    if ctype == "bool":
        return Field(offset=0, size=1, signed=False, kind="bool", type_name="_Bool")
    raise LayoutError(f"no layout for a global of C type {ctype!r}")


def read_global(reader: Reader, layout: Layout, syms: dict, key: str) -> int | None:
    """The global ``key`` of :data:`SYMBOLS` (field from :func:`global_field`), or None when
    absent."""
    addr = syms.get(key)
    if addr is None:
        return None
    f = global_field(layout, GLOBAL_TYPES[key])
    return f.decode(reader.read(addr, f.end))


# --- enum decoding -------------------------------------------------------------------------


def enum_name(constants, value: int, prefix: str = "") -> str | None:
    """Name of ``value`` in enum ``constants`` ((name, value) pairs), prefix stripped; or None."""
    for name, v in constants or ():
        if v == value and not name.startswith("__"):
            return name[len(prefix):] if name.startswith(prefix) else name
    return None


def decode_flags(constants, value: int, prefix: str = "", unsigned_bits: int = 64) -> str:
    """'A|B|FIELD_VALUE' for a flags word described by an enum.

    Single-bit constants are flags. A ``*_MASK`` constant (with ``*_SHIFT``/``*_BITS``) starts a
    multi-bit field; the constants after it, up to the next ``*_SHIFT``, are that field's values
    (the kernel declares them in this order, e.g. ``SCX_TASK_STATE_MASK`` then ``SCX_TASK_NONE``
    .. ``SCX_TASK_DEAD``). Unnamed bits are shown as hex."""
    if constants is None:
        return f"{value:#x}"
    full = (1 << unsigned_bits) - 1
    flags, fields, current = [], [], None
    for name, v in constants:
        v &= full
        if name.startswith("__") or name.endswith(("_SHIFT", "_BITS")):
            if name.endswith("_SHIFT"):
                current = None
            continue
        if name.endswith("_MASK"):
            current = (v, [])
            fields.append(current)
            continue
        if current is not None and v & ~current[0] == 0:
            current[1].append((name, v))
        elif v and v & (v - 1) == 0:
            flags.append((name, v))
    parts, left = [], value & full
    for name, v in flags:
        if left & v:
            parts.append(name[len(prefix):] if name.startswith(prefix) else name)
            left &= ~v
    for i, (mask, values) in enumerate(fields):
        if not values:
            continue
        fv = left & mask
        left &= ~mask
        # The first field (a state) is always shown; later ones only when non-zero.
        if fv == 0 and i > 0:
            continue
        name = next((n for n, v in values if v == fv), None)
        parts.append((name[len(prefix):] if name.startswith(prefix) else name) if name else
                     f"{mask:#x}={fv:#x}")
    if left:
        parts.append(f"{left:#x}")
    return "|".join(parts) if parts else "0"


def ops_state_text(value: int | None, constants) -> str | None:
    """``scx.ops_state``: the low bits are the state (enum scx_ops_state), the rest a qseq."""
    if value is None:
        return None
    shift = next((v for n, v in constants or () if n.endswith("QSEQ_SHIFT")), None)
    if shift is None:
        return f"{value:#x}"
    state = value & ((1 << shift) - 1)
    name = enum_name(constants, state, "SCX_OPSS_") or str(state)
    qseq = value >> shift
    return f"{name} qseq={qseq}" if qseq else name
