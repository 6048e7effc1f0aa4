"""One scheduler's state and the global sched_ext state.

New kernels (6.16+) keep a scheduler in ``struct scx_sched`` (``scx_root`` points at the root
one): the ops copy (``ops``), ``exit_kind``/``exit_info``, ``bypass_depth``, ``slice_dfl`` and
``watchdog_timeout``; sub-schedulers (7.x) add ``level``, ``ancestors[]`` and ``cgrp_path``.
Older kernels (6.12) keep the same things in globals (``scx_ops``, ``scx_exit_kind``,
``scx_exit_info``, ``scx_ops_bypass_depth``, ``scx_watchdog_timeout``), which are read only when
``scx_sched`` lacks the member. What cannot be read is a Damage in ``SchedState.damage``.
"""

from dataclasses import dataclass, field

from ..core import Layout, LayoutError, Reader, ReadError, Record
from ..kds import DamageLog
from .exit import ExitInfo, read_exit_info
from .symbols import SYMBOLS, enum_name, read_global

MAX_SUB_DEPTH = 8            # sub-scheduler nesting followed


@dataclass
class SchedState:
    """Scheduler-wide state. ``None`` means the kernel has no such thing (shown as N/A)."""

    sch: int = None              # struct scx_sched address (new kernels), 0 for NULL scx_root
    ops_addr: int = None         # the struct sched_ext_ops in use
    name: str = None
    ops_flags: int = None
    timeout_ms: int = None
    dispatch_max_batch: int = None
    exit_dump_len: int = None
    ops_hotplug_seq: int = None
    callbacks: list = field(default_factory=list)  # (member, function pointer) for set ones
    exit_kind: int = None
    exit: ExitInfo = None
    enable_state: int = None
    enable_state_str: str = None
    enabled: bool = None
    switching_all: bool = None
    switched_all: bool = None
    bypass_depth: int = None
    aborting: bool = None
    in_softlockup: bool = None
    breather_depth: int = None
    nr_rejected: int = None
    enable_seq: int = None
    hotplug_seq: int = None
    watchdog_timeout: int = None  # jiffies
    watchdog_timestamp: int = None  # jiffies of the watchdog's last run
    watchdog_interval: int = None   # jiffies between watchdog runs (7.x)
    slice_dfl: int = None
    jiffies: int = None
    level: int = None
    parent: int = None            # sub-schedulers: the parent scx_sched
    cgroup_path: str = None       # sub-schedulers: the cgroup they are attached to
    damage: DamageLog = field(default_factory=DamageLog)


def _static_key(reader, layout, addr):
    """True when the static key (``struct static_key_false``/``_true``) at ``addr`` is on."""
    if addr is None:
        return None
    off = layout.offset("static_key", "enabled")
    if layout.has("static_key_false", "key"):
        off += layout.offset("static_key_false", "key")
    size = layout.field("static_key", "enabled").size      # atomic_t: a signed int
    return int.from_bytes(reader.read(addr + off, size), "little", signed=True) > 0


def ops_callbacks(reader: Reader, layout: Layout, ops_addr: int,
                  callback_names: list[str]) -> list[tuple[str, int]]:
    """(member, pointer) for each callback of the ``sched_ext_ops`` at ``ops_addr`` that is set."""
    r = Record(reader, layout, "sched_ext_ops", ops_addr)
    return [(name, r.int(name)) for name in callback_names if r.int(name)]


def sched_ops_addr(layout: Layout, sch: int) -> int:
    return sch + layout.offset("scx_sched", "ops")


def sched_parent(reader: Reader, layout: Layout, sch: int, level: int | None) -> int | None:
    """``scx_parent(sch)``: ``ancestors[level - 1]`` (the flexible array at the end of
    ``struct scx_sched``), or None at level 0."""
    if not level or level < 0 or level > MAX_SUB_DEPTH * 8:
        return None
    return reader.ptr(sch + layout.offset("scx_sched", "ancestors") + reader.pointer_size * (level - 1))


def read_sched_state(reader: Reader, layout: Layout, syms: dict, callback_names=(), enable_state_names=None,
                     sch: int | None = None) -> SchedState:
    """The loaded scheduler and the global sched_ext state.

    ``syms``: :func:`symbols.resolve_symbols` output. ``callback_names``: the function-pointer
    members of ``struct sched_ext_ops`` (from the kernel's types). ``sch``: read this
    ``scx_sched`` (a sub-scheduler, or one found through a struct_ops map) instead of
    ``*scx_root``. Unreadable parts leave their fields None and add a Damage."""
    st = SchedState()

    def guard(what, fn):
        try:
            return fn()
        except (ReadError, LayoutError) as e:
            st.damage.add(what, 0, str(e), "corrupt" if isinstance(e, LayoutError) else "unreadable")
            return None

    sch_rec = None
    if sch is not None and layout.has("scx_sched"):
        st.sch = sch
    elif syms.get("root") is not None and layout.has("scx_sched"):
        st.sch = guard("scx_root", lambda: reader.ptr(syms["root"]))
    if st.sch:
        sch_rec = guard("struct scx_sched", lambda: Record(reader, layout, "scx_sched", st.sch))
        if sch_rec is not None:
            st.ops_addr = sched_ops_addr(layout, st.sch)
    elif st.sch is None and syms.get("ops") is not None:
        st.ops_addr = syms["ops"]

    if st.ops_addr:
        def ops():
            r = Record(reader, layout, "sched_ext_ops", st.ops_addr)
            st.name = r.str("name")
            st.ops_flags = r.int("flags")
            st.timeout_ms = r.int("timeout_ms")
            st.dispatch_max_batch = r.int("dispatch_max_batch")
            st.exit_dump_len = r.int("exit_dump_len")
            st.ops_hotplug_seq = r.int("hotplug_seq")
            st.callbacks = [(n, r.int(n)) for n in callback_names if r.int(n)]
        guard("struct sched_ext_ops", ops)

    if sch_rec is not None:
        _from_sched(reader, layout, st, sch_rec, guard)
    _from_globals(reader, layout, syms, st, guard, enable_state_names)
    return st


def _from_sched(reader, layout, st, r, guard):
    st.exit_kind = r.int("exit_kind")
    st.bypass_depth = r.int("bypass_depth")
    st.watchdog_timeout = r.int("watchdog_timeout")
    st.slice_dfl = r.int("slice_dfl")
    st.level = r.int("level")
    if st.level and layout.has("scx_sched", "ancestors"):
        st.parent = guard("scx_sched.ancestors", lambda: sched_parent(reader, layout, st.sch, st.level))
    cg = r.int("cgrp_path")
    if cg:
        st.cgroup_path = guard("scx_sched.cgrp_path", lambda: reader.cstring(cg, 4096))
    aborting = r.int("aborting")
    st.aborting = None if aborting is None else bool(aborting)
    ei = r.int("exit_info")
    if ei is not None:
        st.exit = read_exit_info(reader, layout, ei, st.exit_dump_len)


def _from_globals(reader, layout, g, st, guard, enable_state_names):
    """Globals: older kernels keep these outside scx_sched (only used when scx_sched lacks
    them); the enable state, static keys and counters are global on every kernel."""
    def glob(key):
        return read_global(reader, layout, g, key)

    if st.exit_kind is None:
        st.exit_kind = guard("scx_exit_kind", lambda: glob("exit_kind"))
    if st.exit is None and g.get("exit_info") is not None:
        ptr = guard("scx_exit_info", lambda: reader.ptr(g["exit_info"]))
        if ptr is not None:
            st.exit = read_exit_info(reader, layout, ptr, st.exit_dump_len)
    for key in ("bypass_depth", "watchdog_timeout", "slice_dfl"):
        if getattr(st, key) is None:
            setattr(st, key, guard(SYMBOLS[key][0], lambda k=key: glob(k)))
    if st.aborting is None and g.get("aborting") is not None:
        st.aborting = guard("scx_aborting", lambda: bool(glob("aborting")))

    st.enable_state = guard("enable state", lambda: glob("enable_state"))
    if st.enable_state is not None:
        st.enable_state_str = guard("enable state string", lambda: _state_string(
            reader, g.get("enable_state_str"), st.enable_state, enable_state_names))
    st.enabled = guard("__scx_enabled", lambda: _static_key(reader, layout, g.get("enabled_key")))
    st.switched_all = guard("__scx_switched_all",
                            lambda: _static_key(reader, layout, g.get("switched_all_key")))
    for key in ("switching_all", "in_softlockup"):
        if g.get(key) is not None:
            setattr(st, key, guard(SYMBOLS[key][0], lambda k=key: bool(glob(k))))
    for key in ("breather_depth", "nr_rejected", "enable_seq", "hotplug_seq", "jiffies",
                "watchdog_timestamp", "watchdog_interval"):
        setattr(st, key, guard(SYMBOLS[key][0], lambda k=key: glob(k)))


def _state_string(reader, str_array, state, names):
    """What sysfs ``state`` prints: ``scx_enable_state_str[state]`` read from memory; else the
    enum constant's name (``SCX_ENABLED`` -> ``enabled``)."""
    if str_array is not None and 0 <= state < 64:
        ptr = reader.ptr(str_array + reader.pointer_size * state)
        if ptr:
            return reader.cstring(ptr, 64)
    name = enum_name(names, state)
    if name is None:
        return None
    for p in ("SCX_OPS_", "SCX_"):
        if name.startswith(p):
            return name[len(p):].lower()
    return name.lower()
