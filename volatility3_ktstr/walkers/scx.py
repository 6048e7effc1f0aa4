"""sched_ext state from kernel memory: schedulers, per-CPU run queues, dispatch queues, tasks,
event counters and the watchdog's view.

Kernel layout (kernel/sched/ext*.c, kernel/sched/ext/). New kernels (6.16+) keep a scheduler in
``struct scx_sched`` (``scx_root`` points at the root one): the ops copy (``ops``),
``exit_kind``/``exit_info``, the user DSQ hash (``dsq_hash``), global DSQs per NUMA node
(``pnode[n]->global_dsq`` or ``global_dsqs[n]``), per-CPU data (``pcpu``: event counters and
the bypass DSQ; 6.17 had ``event_stats_cpu`` instead), ``bypass_depth`` and
``watchdog_timeout``. Kernels with sub-schedulers (7.x) link every scheduler on
``scx_sched_all`` (``scx_sched.all``), each with ``level``, ``ancestors[]``, ``cgrp_path`` and
``children``/``sibling``; the kernel copy of a struct_ops ``sched_ext_ops`` points back at its
scheduler through ``ops.priv`` until the BPF link is detached, which keeps a disabled scheduler
(``scx_root`` NULL, off ``scx_sched_all``) reachable with its exit info. Older kernels (6.12)
keep the same things in globals (``scx_ops``, ``scx_exit_kind``, ``scx_exit_info``,
``dsq_hash``, ``global_dsqs``/``scx_dsq_global``, ``scx_ops_bypass_depth``,
``scx_watchdog_timeout``; 6.15 per-CPU ``event_stats_cpu``); which one a kernel has is decided
by the symbols and types present, never by version numbers.

A DSQ (``struct scx_dispatch_q``) queues tasks on ``list`` through
``task_struct.scx.dsq_list.node`` (vtime DSQs keep that list in vtime order and also an rbtree in
``priq``); BPF DSQ iterators insert cursor nodes flagged ``SCX_DSQ_LNODE_ITER_CURSOR``, which are
skipped. Every task known to sched_ext is on ``scx_tasks`` through ``scx.tasks_node`` (the
``scx_task_iter`` cursor, flagged ``SCX_TASK_CURSOR``, is skipped). A runnable task is on its
rq's ``scx.runnable_list`` through ``scx.runnable_node``, oldest first: the watchdog checks
``jiffies - scx.runnable_at`` of each against the timeout.

Everything here takes a :class:`Reader`, a :class:`Layout` and plain values (addresses, enum
constants); nothing imports Volatility. Structs are read with :class:`Record` (widths from the
layout), lists and tables with :mod:`volatility3_ktstr.kds` (bounded, cycle-checked); what
cannot be read is reported in the result (``errors`` / ``damage``), never raised past the caller.
"""

from dataclasses import dataclass, field

from .. import kds
from ..bpf import progs as bpfprogs
from ..core import LayoutError, ReadError, Record, percpu_sum

MAX_DSQ_TASKS = 1 << 16      # per DSQ list walk
MAX_TASKS = 1 << 20          # scx_tasks walk
MAX_RUNNABLE = 1 << 16       # per runnable_list walk
MAX_SCHEDS = 1024            # schedulers over all discovery paths
MAX_SUB_DEPTH = 8            # sub-scheduler nesting followed
MAX_NODES = 1024             # NUMA nodes
MAX_CALLBACK_LINKS = 256     # struct_ops links[] entries
EXIT_MSG_MAX = 1024          # longest exit reason/message read (SCX_EXIT_MSG_LEN)
EXIT_DUMP_DFL = 32768        # SCX_EXIT_DUMP_DFL_LEN: dump buffer size when ops.exit_dump_len is 0
EXIT_DUMP_MAX = 1 << 20      # longest debug dump read
EXIT_BT_MAX = 1024           # backtrace entries read (SCX_EXIT_BT_LEN is 64)
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

# Widths of the globals read (their C types; globals have no struct layout to ask).
_GLOBAL = {  # key: (size, signed)
    "enable_state": (4, True),      # atomic_t
    "switching_all": (1, False),    # bool
    "in_softlockup": (4, False),    # bool (int in some versions: any non-zero byte is true)
    "breather_depth": (4, True),    # atomic_t
    "bypass_depth": (4, True),      # int
    "aborting": (1, False),         # bool
    "exit_kind": (4, False),        # atomic_t
    "nr_rejected": (8, True),       # atomic_long_t
    "enable_seq": (8, True),        # atomic_long_t
    "hotplug_seq": (8, True),       # atomic_long_t
    "watchdog_timeout": (8, False),  # unsigned long
    "watchdog_timestamp": (8, False),  # unsigned long
    "watchdog_interval": (8, False),  # unsigned long
    "slice_dfl": (8, False),        # u64
    "jiffies": (8, False),          # u64
}

SCHED_CLASSES = ("stop", "dl", "rt", "fair", "ext", "idle")


def resolve_symbols(lookup):
    """{key: address or None} for :data:`SYMBOLS`, plus ``class:<name>`` for the sched classes.

    ``lookup(name)`` returns a symbol's address or None."""
    out = {}
    for key, names in SYMBOLS.items():
        out[key] = next((a for a in map(lookup, names) if a is not None), None)
    for cls in SCHED_CLASSES:
        out["class:" + cls] = lookup(f"{cls}_sched_class")
    return out


def class_names(syms):
    """{sched_class address: short name} from :func:`resolve_symbols` output."""
    return {syms["class:" + c]: c for c in SCHED_CLASSES if syms.get("class:" + c)}


# --- enum decoding -------------------------------------------------------------------------


def enum_name(constants, value, prefix=""):
    """Name of ``value`` in enum ``constants`` ((name, value) pairs), prefix stripped; or None."""
    for name, v in constants or ():
        if v == value and not name.startswith("__"):
            return name[len(prefix):] if name.startswith(prefix) else name
    return None


def decode_flags(constants, value, prefix="", unsigned_bits=64):
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


def _damage_text(damage):
    return "; ".join(str(d) for d in damage) + (f"; {damage.dropped} more" if damage.dropped else "")


# --- exit information ----------------------------------------------------------------------


@dataclass
class ExitInfo:
    """``struct scx_exit_info``: kind, exit code, reason and message strings, the backtrace
    (``bt[bt_len]``, kernel text addresses) and the debug dump text (``dump``)."""

    addr: int = None
    kind: int = None
    exit_code: int = None
    exit_cpu: int = None          # 7.x: the CPU that initiated the exit (negative: unknown)
    flags: int = None             # SCX_EFLAG_*
    reason: str = None
    msg: str = None
    bt: list = field(default_factory=list)
    bt_len: int = None
    dump: str = None
    errors: list = field(default_factory=list)

    @property
    def error(self):
        return "; ".join(self.errors) if self.errors else None


def read_text(reader, addr, max_len):
    """(text up to its NUL or ``max_len`` bytes, error or None): page by page, so a dump whose
    tail is unreadable still gives its head."""
    out = bytearray()
    while len(out) < max_len:
        chunk = min(max_len - len(out), 4096 - ((addr + len(out)) & 0xFFF))
        data = reader.try_read(addr + len(out), chunk)
        if data is None:
            return out.decode("utf-8", "replace"), f"unreadable at {addr + len(out):#x}"
        end = data.find(b"\0")
        if end >= 0:
            out += data[:end]
            return out.decode("utf-8", "replace"), None
        out += data
    return out.decode("utf-8", "replace"), None


def read_exit_info(reader, layout, addr, dump_len=None):
    """``struct scx_exit_info`` at ``addr``. ``dump_len``: size of the dump buffer
    (``ops.exit_dump_len``, 0 for the kernel default)."""
    ei = ExitInfo(addr=addr)
    if not addr:
        ei.errors.append("no exit info (NULL)")
        return ei
    try:
        r = Record(reader, layout, "scx_exit_info", addr)
    except ReadError as e:
        ei.errors.append(f"scx_exit_info unreadable: {e.reason}")
        return ei
    ei.kind = r.int("kind")
    ei.exit_code = r.int("exit_code")
    ei.exit_cpu = r.int("exit_cpu")
    ei.flags = r.int("flags")
    for attr, limit in (("reason", EXIT_MSG_MAX), ("msg", EXIT_MSG_MAX)):
        ptr = r.int(attr)
        if ptr:
            text, err = read_text(reader, ptr, limit)
            setattr(ei, attr, text)
            if err:
                ei.errors.append(f"exit_info.{attr} {err}")
        elif ptr == 0:
            setattr(ei, attr, "")
    bt, n = r.int("bt"), r.int("bt_len")
    ei.bt_len = n
    if bt and n:
        word = reader.pointer_size
        count = min(n, EXIT_BT_MAX)
        raw = reader.try_read(bt, word * count)
        if raw is None:
            ei.errors.append(f"exit_info.bt unreadable at {bt:#x}")
        else:
            ei.bt = [int.from_bytes(raw[i:i + word], "little") for i in range(0, len(raw), word)]
        if n > EXIT_BT_MAX:
            ei.errors.append(f"exit_info.bt_len {n}: only {EXIT_BT_MAX} entries read")
    dump = r.int("dump")
    if dump:
        text, err = read_text(reader, dump, min(dump_len or EXIT_DUMP_DFL, EXIT_DUMP_MAX))
        ei.dump = text
        if err:
            ei.errors.append(f"exit_info.dump {err}")
    return ei


# --- the scheduler ---------------------------------------------------------------------------


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
    errors: list = field(default_factory=list)


def read_global(reader, syms, key):
    """The global ``key`` of :data:`SYMBOLS` (width from :data:`_GLOBAL`), or None when absent."""
    addr = syms.get(key)
    if addr is None:
        return None
    size, signed = _GLOBAL[key]
    return int.from_bytes(reader.read(addr, size), "little", signed=signed)


def _static_key(reader, layout, addr):
    """True when the static key (``struct static_key_false``/``_true``) at ``addr`` is on."""
    if addr is None:
        return None
    off = layout.offset("static_key", "enabled")
    if layout.has("static_key_false", "key"):
        off += layout.offset("static_key_false", "key")
    size = layout.field("static_key", "enabled").size      # atomic_t: a signed int
    return int.from_bytes(reader.read(addr + off, size), "little", signed=True) > 0


def ops_callbacks(reader, layout, ops_addr, callback_names):
    """(member, pointer) for each callback of the ``sched_ext_ops`` at ``ops_addr`` that is set."""
    r = Record(reader, layout, "sched_ext_ops", ops_addr)
    return [(name, r.int(name)) for name in callback_names if r.int(name)]


def sched_ops_addr(layout, sch):
    return sch + layout.offset("scx_sched", "ops")


def read_sched_state(reader, layout, syms, callback_names=(), enable_state_names=None, sch=None):
    """The loaded scheduler and the global sched_ext state.

    ``syms``: :func:`resolve_symbols` output. ``callback_names``: the function-pointer members
    of ``struct sched_ext_ops`` (from the kernel's types). ``sch``: read this ``scx_sched``
    (a sub-scheduler, or one found through a struct_ops map) instead of ``*scx_root``.
    Unreadable parts leave their fields None and add a line to ``errors``."""
    st = SchedState()

    def guard(what, fn):
        try:
            return fn()
        except (ReadError, LayoutError) as e:
            st.errors.append(f"{what}: {e}")
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
        r = sch_rec
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
    # Globals: older kernels keep these outside scx_sched (only used when scx_sched lacks them).
    g = syms
    if st.exit_kind is None:
        st.exit_kind = guard("scx_exit_kind", lambda: read_global(reader, g, "exit_kind"))
    if st.exit is None and g.get("exit_info") is not None:
        ptr = guard("scx_exit_info", lambda: reader.ptr(g["exit_info"]))
        if ptr is not None:
            st.exit = read_exit_info(reader, layout, ptr, st.exit_dump_len)
    for key in ("bypass_depth", "watchdog_timeout", "slice_dfl"):
        if getattr(st, key) is None:
            setattr(st, key, guard(SYMBOLS[key][0], lambda k=key: read_global(reader, g, k)))
    if st.aborting is None and g.get("aborting") is not None:
        st.aborting = guard("scx_aborting", lambda: bool(read_global(reader, g, "aborting")))

    st.enable_state = guard("enable state", lambda: read_global(reader, g, "enable_state"))
    if st.enable_state is not None:
        st.enable_state_str = guard("enable state string", lambda: _state_string(
            reader, g.get("enable_state_str"), st.enable_state, enable_state_names))
    st.enabled = guard("__scx_enabled", lambda: _static_key(reader, layout, g.get("enabled_key")))
    st.switched_all = guard("__scx_switched_all",
                            lambda: _static_key(reader, layout, g.get("switched_all_key")))
    for key in ("switching_all", "in_softlockup"):
        if g.get(key) is not None:
            setattr(st, key, guard(SYMBOLS[key][0], lambda k=key: bool(read_global(reader, g, k))))
    for key in ("breather_depth", "nr_rejected", "enable_seq", "hotplug_seq", "jiffies",
                "watchdog_timestamp", "watchdog_interval"):
        setattr(st, key, guard(SYMBOLS[key][0], lambda k=key: read_global(reader, g, k)))
    return st


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


# --- every scheduler -----------------------------------------------------------------------


def sched_parent(reader, layout, sch, level):
    """``scx_parent(sch)``: ``ancestors[level - 1]`` (the flexible array at the end of
    ``struct scx_sched``), or None at level 0."""
    if not level or level < 0 or level > MAX_SUB_DEPTH * 8:
        return None
    return reader.ptr(sch + layout.offset("scx_sched", "ancestors") + reader.pointer_size * (level - 1))


@dataclass
class SchedRef:
    """A scheduler found in memory and how: ``via`` lists the paths that reach it
    (``scx_root``, ``scx_sched_all``, ``children of 0x...``, ``struct_ops map <id> <name>``)."""

    addr: int
    via: list = field(default_factory=list)
    depth: int = 0                 # nesting under the first scheduler that reaches it
    parent: int = None


def sub_scheds(reader, layout, root, max_depth=MAX_SUB_DEPTH, max_total=MAX_SCHEDS, damage=None):
    """Sub-schedulers under ``root`` (``scx_sched.children``, linked by ``sibling``), depth
    first: [(scx_sched address, depth, parent)]; what could not be walked goes to ``damage``.
    Kernels without sub-schedulers give []."""
    damage = damage if damage is not None else kds.DamageLog()
    if not root or not (layout.has("scx_sched", "children") and layout.has("scx_sched", "sibling")):
        return []
    out, seen = [], {root}
    stack = [(root, 0, None)]
    while stack:
        sch, depth, parent = stack.pop()
        if depth:
            out.append((sch, depth, parent))
        if depth >= max_depth:
            damage.add("sub-scheduler", sch, f"deeper than {max_depth}: children not walked", "bound")
            continue
        found = []
        for child in kds.list_entries(reader, layout, sch + layout.offset("scx_sched", "children"),
                                      "scx_sched", "sibling", limit=max_total, damage=damage,
                                      what=f"children list of {sch:#x}"):
            if child in seen:
                damage.add(f"children list of {sch:#x}", child, "cycle (scheduler already visited)", "cycle")
                break
            if len(seen) >= max_total:
                damage.add(f"children list of {sch:#x}", child, f"more than {max_total} schedulers", "bound")
                break
            seen.add(child)
            found.append(child)
        stack.extend((c, depth + 1, sch) for c in reversed(found))
    return out


def find_scheds(reader, layout, syms, extra=(), damage=None):
    """Every ``struct scx_sched`` reachable: ``scx_root``, the ``scx_sched_all`` list, the
    ``children`` of each, and ``extra`` [(address, how)] (the ``ops.priv`` of struct_ops maps).
    Returns [SchedRef], root first, then each tree depth first; [] on kernels without
    ``struct scx_sched``."""
    damage = damage if damage is not None else kds.DamageLog()
    if not layout.has("scx_sched"):
        return []
    refs = {}

    def add(addr, how, depth=0, parent=None):
        if not addr:
            return None
        ref = refs.get(addr)
        if ref is None:
            if len(refs) >= MAX_SCHEDS:
                damage.add("scheduler", addr, f"more than {MAX_SCHEDS} schedulers", "bound")
                return None
            ref = refs[addr] = SchedRef(addr, depth=depth, parent=parent)
        if how not in ref.via:
            ref.via.append(how)
        return ref

    if syms.get("root") is not None:
        try:
            add(reader.ptr(syms["root"]), "scx_root")
        except ReadError as e:
            damage.add("scx_root", syms["root"], f"unreadable ({e.reason})")
    if syms.get("sched_all") is not None and layout.has("scx_sched", "all"):
        for sch in kds.list_entries(reader, layout, syms["sched_all"], "scx_sched", "all",
                                    limit=MAX_SCHEDS, damage=damage, what="scx_sched_all node"):
            add(sch, "scx_sched_all")
    for addr, how in extra:
        add(addr, how)
    for top in list(refs):
        for child, depth, parent in sub_scheds(reader, layout, top, damage=damage):
            ref = add(child, f"children of {parent:#x}", depth, parent)
            if ref is not None and ref.parent is None:
                ref.depth, ref.parent = depth, parent
    # Tree order: each top-level scheduler followed by its descendants (depth first).
    kids = {}
    for ref in refs.values():
        kids.setdefault(ref.parent, []).append(ref)
    out, seen = [], set()

    def emit(ref, depth):
        if ref.addr in seen or depth > MAX_SUB_DEPTH:
            return
        seen.add(ref.addr)
        out.append(ref)
        for k in kids.get(ref.addr, ()):
            emit(k, depth + 1)

    for ref in refs.values():
        if ref.parent is None or ref.parent not in refs:
            emit(ref, 0)
    out.extend(r for r in refs.values() if r.addr not in seen)   # parent cycles: still listed
    return out


# --- dispatch queues ---------------------------------------------------------------------------


@dataclass
class DsqOffsets:
    """Offsets of the DSQ list walk, from the layout once."""

    dsq_list: int         # scx_dispatch_q.list (list_head)
    dsq_size: int
    lnode_node: int       # task_struct offset of the list_head linking a task into a DSQ
    lnode_flags: int      # task_struct offset of scx_dsq_list_node.flags, or None
    cursor_flag: int      # SCX_DSQ_LNODE_ITER_CURSOR (0 when the kernel has no cursors)
    flags_size: int = 4

    @classmethod
    def from_layout(cls, layout, cursor_flag=1):
        scx = layout.offset("task_struct", "scx")
        flags_size = 4
        if layout.has("sched_ext_entity", "dsq_list.node"):
            node = scx + layout.offset("sched_ext_entity", "dsq_list.node")
            flags = None
            if layout.has("sched_ext_entity", "dsq_list.flags"):
                f = layout.field("sched_ext_entity", "dsq_list.flags")
                flags, flags_size = scx + f.offset, f.size
        else:  # older: a plain list_head (dsq_node or dsq_list)
            node = scx + layout.first("sched_ext_entity", "dsq_list", "dsq_node")
            flags, cursor_flag = None, 0
        return cls(dsq_list=layout.offset("scx_dispatch_q", "list"),
                   dsq_size=layout.size("scx_dispatch_q"),
                   lnode_node=node, lnode_flags=flags, cursor_flag=cursor_flag,
                   flags_size=flags_size)


@dataclass
class TaskListWalk:
    """Tasks found on a kernel list (a DSQ's, or ``scx_tasks``), in list order, with the
    iterator cursors skipped and what stopped the walk early."""

    tasks: list = field(default_factory=list)   # task_struct addresses, list order
    cursors: int = 0                            # iterator cursors skipped
    damage: kds.DamageLog = field(default_factory=kds.DamageLog)

    @property
    def error(self):
        """Why the walk stopped early, if it did."""
        return _damage_text(self.damage) if self.damage else None

    @property
    def truncated(self):
        return any(d.kind == "bound" for d in self.damage)


DsqWalk = TaskWalk = TaskListWalk


def walk_dsq_list(reader, layout, offs: DsqOffsets, dsq_addr, max_tasks=MAX_DSQ_TASKS) -> DsqWalk:
    """Tasks queued on the DSQ at ``dsq_addr`` in list order (bounded, cycle-safe); BPF
    iterator cursors (``dsq_list.flags & SCX_DSQ_LNODE_ITER_CURSOR``) are counted, not listed."""
    w = DsqWalk()
    check = offs.lnode_flags is not None and offs.cursor_flag
    window = (offs.lnode_flags - offs.lnode_node, offs.flags_size) if check else None
    nodes = kds.list_nodes(reader, layout, dsq_addr + offs.dsq_list, limit=max_tasks,
                           damage=w.damage, what="DSQ list node", window=window)
    if not check:
        w.tasks = [n - offs.lnode_node for n in nodes]
        return w
    rel = offs.lnode_flags - offs.lnode_node
    lo = min(rel, layout.offset("list_head", "next"))
    for node, raw in nodes:
        flags = int.from_bytes(raw[rel - lo:rel - lo + offs.flags_size], "little")
        if flags & offs.cursor_flag:
            w.cursors += 1
        else:
            w.tasks.append(node - offs.lnode_node)
    return w


@dataclass
class Dsq:
    addr: int
    kind: str                     # "global", "user", "local", "bypass"
    id: int = None
    nr: int = None
    seq: int = None
    vtime: bool = None            # priq in use (vtime ordering); None when unknown
    cpu: int = None               # local/bypass DSQs
    node: int = None              # global DSQs
    walk: DsqWalk = None
    error: str = None


def read_dsq(reader, layout, offs: DsqOffsets, addr, kind, walk=True, **extra) -> Dsq:
    d = Dsq(addr=addr, kind=kind, **extra)
    try:
        r = Record(reader, layout, "scx_dispatch_q", addr)
    except ReadError as e:
        d.error = f"struct scx_dispatch_q unreadable: {e.reason}"
        return d
    d.id = r.int("id")
    d.nr = r.int("nr")
    d.seq = r.int("seq")
    if r.has("priq") and layout.has("rb_root", "rb_node"):
        d.vtime = bool(r.int("priq.rb_node"))
    elif r.has("priq"):
        d.vtime = False
    if walk:
        d.walk = walk_dsq_list(reader, layout, offs, addr)
    return d


def global_dsq_addrs(reader, layout, sch, syms, nr_nodes):
    """[(node, DSQ address)] of the global DSQs; errors as strings."""
    out, errors = [], []
    nr_nodes = max(1, min(nr_nodes or 1, MAX_NODES))
    word = reader.pointer_size

    def ptrs(arr):
        raw = reader.read(arr, word * nr_nodes) if arr else b""
        return [(n, int.from_bytes(raw[word * n:word * n + word], "little")) for n in range(len(raw) // word)]

    try:
        if sch and layout.has("scx_sched", "pnode") and layout.has("scx_sched_pnode", "global_dsq"):
            inner = layout.offset("scx_sched_pnode", "global_dsq")
            out = [(n, p + inner) for n, p in ptrs(reader.ptr(sch + layout.offset("scx_sched", "pnode"))) if p]
        elif sch and layout.has("scx_sched", "global_dsqs"):
            out = [(n, p) for n, p in ptrs(reader.ptr(sch + layout.offset("scx_sched", "global_dsqs"))) if p]
        elif syms.get("global_dsqs") is not None:
            out = [(n, p) for n, p in ptrs(reader.ptr(syms["global_dsqs"])) if p]
        elif syms.get("dsq_global") is not None:
            out = [(0, syms["dsq_global"])]
    except ReadError as e:
        errors.append(f"global DSQ array unreadable: {e.reason}")
    return out, errors


def user_dsq_addrs(reader, layout, sch, syms, damage=None):
    """Addresses of every user DSQ (the scheduler's DSQ hash table) and errors as strings."""
    if sch and layout.has("scx_sched", "dsq_hash"):
        ht = sch + layout.offset("scx_sched", "dsq_hash")
    elif syms.get("dsq_hash") is not None:
        ht = syms["dsq_hash"]
    else:
        return [], ["no DSQ hash table in this kernel"]
    log = kds.DamageLog()
    off = layout.offset("scx_dispatch_q", "hash_node")
    addrs = [n - off for n in kds.rhashtable_nodes(reader, layout, ht, damage=log, what="DSQ hash node")]
    if damage is not None:
        damage.extend(log)
    return addrs, [str(d) for d in log]


# --- per-CPU run queues ------------------------------------------------------------------------


@dataclass
class CpuState:
    cpu: int
    rq: int
    nr_running: int = None
    scx_nr_running: int = None
    flags: int = None
    curr: int = None
    local_dsq: Dsq = None
    bypass_dsq: Dsq = None
    error: str = None


def _pcpu_base(reader, layout, sch):
    """(``scx_sched.pcpu`` per-CPU base, or None)."""
    if sch and layout.has("scx_sched", "pcpu"):
        try:
            return reader.ptr(sch + layout.offset("scx_sched", "pcpu"))
        except ReadError:
            return None
    return None


def read_cpus(reader, layout, runqueues, percpu_offsets, offs: DsqOffsets, sch=None, walk=True):
    """One :class:`CpuState` per possible CPU (``rq`` = ``runqueues`` + per-CPU offset)."""
    out = []
    pcpu = _pcpu_base(reader, layout, sch) if layout.has("scx_sched_pcpu", "bypass_dsq") else None
    bypass_off = layout.offset("scx_sched_pcpu", "bypass_dsq") if pcpu else None
    local_off = layout.offset("rq", "scx.local_dsq")
    paths = ["nr_running", "curr", "scx.nr_running", "scx.flags"]
    for cpu, pco in enumerate(percpu_offsets):
        rq = percpu_sum(runqueues, pco)
        c = CpuState(cpu=cpu, rq=rq)
        out.append(c)
        try:
            r = Record(reader, layout, "rq", rq, paths)
        except ReadError as e:
            c.error = f"struct rq unreadable: {e.reason}"
            continue
        c.nr_running = r.int("nr_running")
        c.scx_nr_running = r.int("scx.nr_running")
        c.flags = r.int("scx.flags")
        c.curr = r.int("curr")
        c.local_dsq = read_dsq(reader, layout, offs, rq + local_off, "local", walk=walk, cpu=cpu)
        if pcpu:
            c.bypass_dsq = read_dsq(reader, layout, offs, (percpu_sum(pcpu, pco) + bypass_off) & MASK64,
                                    "bypass", walk=walk, cpu=cpu)
    return out


def runnable_list(reader, layout, rq, damage=None, limit=MAX_RUNNABLE):
    """Tasks on ``rq->scx.runnable_list`` (linked through ``task_struct.scx.runnable_node``) in
    list order: the order the watchdog checks them, oldest ``runnable_at`` first."""
    if not layout.has("rq", "scx.runnable_list"):
        return []
    return list(kds.list_entries(reader, layout, rq + layout.offset("rq", "scx.runnable_list"),
                                 "task_struct", "scx.runnable_node", limit=limit, damage=damage,
                                 what="runnable_list node"))


# --- tasks -----------------------------------------------------------------------------------


TASK_PATHS = ("pid", "tgid", "comm", "sched_class", "on_rq", "on_cpu", "thread_info.cpu", "cpu",
              "policy")
SCX_PATHS = ("sched", "dsq", "ops_state", "flags", "dsq_flags", "weight", "sticky_cpu",
             "holding_cpu", "runnable_at", "runnable_node", "slice", "dsq_vtime", "tasks_node",
             "ddsp_dsq_id", "disallow")


@dataclass
class ScxTask:
    addr: int
    pid: int = None
    tgid: int = None
    comm: str = None
    sched_class: int = None
    cpu: int = None
    on_rq: int = None
    on_cpu: int = None
    policy: int = None
    sched: int = None
    dsq: int = None
    ops_state: int = None
    flags: int = None
    dsq_flags: int = None
    weight: int = None
    sticky_cpu: int = None
    holding_cpu: int = None
    runnable_at: int = None
    runnable_linked: bool = None   # on its rq's runnable_list (what the watchdog checks)
    slice: int = None
    dsq_vtime: int = None
    error: str = None


def _task_paths(layout):
    paths = [p for p in TASK_PATHS if layout.has("task_struct", p)]
    paths += ["scx." + p for p in SCX_PATHS if layout.has("sched_ext_entity", p)]
    return paths


def read_task(reader, layout, addr) -> ScxTask:
    """The task and sched_ext fields of the ``task_struct`` at ``addr`` (one bulk read)."""
    t = ScxTask(addr=addr)
    try:
        r = Record(reader, layout, "task_struct", addr, _task_paths(layout))
    except ReadError as e:
        t.error = f"task_struct unreadable: {e.reason}"
        return t
    t.pid = r.int("pid")
    t.tgid = r.int("tgid")
    t.comm = r.str("comm")
    t.sched_class = r.int("sched_class")
    t.cpu = r.first_int("thread_info.cpu", "cpu")
    t.on_rq = r.int("on_rq")
    t.on_cpu = r.int("on_cpu")
    t.policy = r.int("policy")
    for attr in ("sched", "dsq", "ops_state", "flags", "dsq_flags", "weight", "sticky_cpu",
                 "holding_cpu", "runnable_at", "slice", "dsq_vtime"):
        setattr(t, attr, r.int("scx." + attr))
    if r.has("scx.runnable_node"):
        nxt = r.int("scx.runnable_node.next")
        own = r.addr_of("scx.runnable_node")
        # list_del_init leaves the node pointing at itself; a never-added node is zeroed.
        t.runnable_linked = bool(nxt) and nxt != own and nxt < MASK64 - 4096 and nxt >> 48 != 0xdead
    return t


def walk_scx_tasks(reader, layout, head, cursor_flag=0, max_tasks=MAX_TASKS) -> TaskWalk:
    """Tasks on the ``scx_tasks`` list at ``head`` (``task_struct.scx.tasks_node``), in order.

    Cursor entries (``scx.flags & cursor_flag``, the ``scx_task_iter`` cursor) are skipped."""
    w = TaskWalk()
    node_off = layout.offset("task_struct", "scx.tasks_node")
    if not cursor_flag:
        w.tasks = [n - node_off for n in kds.list_nodes(reader, layout, head, limit=max_tasks,
                                                          damage=w.damage, what="scx_tasks node")]
        return w
    f = layout.field("sched_ext_entity", "flags")
    rel = f.offset - layout.offset("sched_ext_entity", "tasks_node")
    lo = min(rel, layout.offset("list_head", "next"))
    for node, raw in kds.list_nodes(reader, layout, head, limit=max_tasks, damage=w.damage,
                                    what="scx_tasks node", window=(rel, f.size)):
        if int.from_bytes(raw[rel - lo:rel - lo + f.size], "little") & cursor_flag:
            w.cursors += 1
        else:
            w.tasks.append(node - node_off)
    return w


def runnable_for(task: ScxTask, jiffies, linked=None):
    """Jiffies the task has waited runnable (``jiffies - scx.runnable_at``), or None when it is
    not on a runnable list (asleep or running: ``runnable_at`` is stale then) or the value is
    in the future (not meaningful). ``linked`` (found on a runnable_list walk) overrides the
    task's own ``runnable_node`` check."""
    on_list = task.runnable_linked if linked is None else linked
    if not on_list or jiffies is None or task.runnable_at is None:
        return None
    age = (jiffies - task.runnable_at) & MASK64
    return None if age >= 1 << 63 else age


def is_starved(age, watchdog_timeout):
    """What the sched_ext watchdog checks: runnable for longer than the timeout (jiffies)."""
    return bool(age is not None and watchdog_timeout and age > watchdog_timeout)


def ops_state_text(value, constants):
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


# --- event counters ------------------------------------------------------------------------


@dataclass
class EventStats:
    """``SCX_EV_*`` counters (``struct scx_event_stats``, 6.15+) per CPU and summed, as sysfs
    ``events`` prints them (``scx_read_events``: the sum over every possible CPU)."""

    names: list = field(default_factory=list)     # members of struct scx_event_stats, in order
    per_cpu: list = field(default_factory=list)   # [(cpu, [values] or None when unreadable)]
    source: str = None
    errors: list = field(default_factory=list)

    @property
    def totals(self):
        sums = [0] * len(self.names)
        for _, values in self.per_cpu:
            if values is not None:
                sums = [a + b for a, b in zip(sums, values)]
        return sums


def read_events(reader, layout, sch, percpu_offsets, syms=None):
    """The event counters of the scheduler at ``sch``: ``scx_sched.pcpu->event_stats`` (7.x),
    ``scx_sched.event_stats_cpu`` (6.17), or the per-CPU global ``event_stats_cpu`` (6.15);
    None on kernels without event counters."""
    if not layout.has("scx_event_stats"):
        return None
    ev = EventStats()
    if sch and layout.has("scx_sched", "pcpu") and layout.has("scx_sched_pcpu", "event_stats"):
        base, inner = _pcpu_base(reader, layout, sch), layout.offset("scx_sched_pcpu", "event_stats")
        ev.source = "scx_sched.pcpu->event_stats"
    elif sch and layout.has("scx_sched", "event_stats_cpu"):
        try:
            base = Record(reader, layout, "scx_sched", sch, ["event_stats_cpu"]).int("event_stats_cpu")
        except ReadError:
            base = None
        inner = 0
        ev.source = "scx_sched.event_stats_cpu"
    elif syms and syms.get("event_stats_cpu") is not None:
        base, inner = syms["event_stats_cpu"], 0
        ev.source = "event_stats_cpu (per-CPU)"
    else:
        return None
    fields = [(n, f) for n, f in layout.members("scx_event_stats") if f.kind in ("int", "struct")]
    ev.names = [n for n, _ in fields]
    if not base:
        ev.errors.append(f"{ev.source}: per-CPU pointer NULL or unreadable")
        return ev
    size = layout.size("scx_event_stats")
    for cpu, pco in enumerate(percpu_offsets):
        if cpu and not pco:
            continue
        addr = (percpu_sum(base, pco) + inner) & MASK64
        raw = reader.try_read(addr, size)
        if raw is None:
            ev.per_cpu.append((cpu, None))
            ev.errors.append(f"cpu{cpu}: scx_event_stats unreadable at {addr:#x}")
            continue
        ev.per_cpu.append((cpu, [_signed(f, raw) for _, f in fields]))
    return ev


def _signed(f, raw):
    """Counters are s64 (some are atomic64_t structs): decode signed by the member's width."""
    v = f.decode(raw)
    if f.kind == "struct" and f.size and v >> (8 * f.size - 1):
        v -= 1 << (8 * f.size)
    return v


# --- struct_ops: the BPF program behind each callback ------------------------------------------


@dataclass
class StructOpsCallback:
    member: str
    kfunc: int            # kvalue slot: the trampoline the kernel calls
    prog_id: int = None   # uvalue slot: the kernel stores the program's id there
    prog_name: str = None
    prog: int = None      # struct bpf_prog address


def struct_ops_value_data(layout, value_struct=None):
    """Offset of the ops struct inside a struct_ops value (``bpf_struct_ops_<ops>.data`` when the
    kernel has the specific type, else the generic ``bpf_struct_ops_value.data``)."""
    if value_struct and layout.has(value_struct, "data"):
        return layout.offset(value_struct, "data")
    return layout.offset("bpf_struct_ops_value", "data")


def struct_ops_kdata(layout, st_map, value_struct=None):
    """Address of the kernel copy of the ops (``kvalue.data``) of the struct_ops map ``st_map``
    (the ``struct bpf_struct_ops_map`` address)."""
    kvalue = layout.offset("bpf_struct_ops_map", "kvalue")
    return st_map + kvalue + struct_ops_value_data(layout, value_struct)


def struct_ops_sched(reader, layout, st_map, value_struct=None):
    """``ops.priv`` of a sched_ext struct_ops map: the ``scx_sched`` it registered (set while
    the BPF link is attached, NULL after unregistration); None when the kernel has no ``priv``."""
    if not layout.has("sched_ext_ops", "priv"):
        return None
    kdata = struct_ops_kdata(layout, st_map, value_struct)
    return Record(reader, layout, "sched_ext_ops", kdata, ["priv"]).int("priv")


def struct_ops_callbacks(reader, layout, st_map, ops_struct, callback_names, value_struct=None):
    """Callbacks implemented by the struct_ops map at ``st_map`` and their programs.

    The kernel writes each program's id into the user value (``uvalue``) slot of the member and
    keeps the programs' links in ``links[]``; both are read, so a callback gets its program id
    even when a link is unreadable. Returns (callbacks, errors)."""
    errors = []
    kdata = Record(reader, layout, ops_struct, struct_ops_kdata(layout, st_map, value_struct))
    udata = None
    try:
        uvalue = reader.ptr(st_map + layout.offset("bpf_struct_ops_map", "uvalue"))
        if uvalue:
            udata = Record(reader, layout, ops_struct, uvalue + struct_ops_value_data(layout, value_struct))
    except ReadError as e:
        errors.append(f"struct_ops uvalue unreadable: {e.reason}")
    progs = {}
    try:
        links = reader.ptr(st_map + layout.offset("bpf_struct_ops_map", "links"))
        if layout.has("bpf_struct_ops_map", "funcs_cnt"):
            n = Record(reader, layout, "bpf_struct_ops_map", st_map, ["funcs_cnt"]).int("funcs_cnt")
        else:  # older kernels size links[] by the member count
            n = len(callback_names)
        n = min(n, MAX_CALLBACK_LINKS)
        word = reader.pointer_size
        raw = reader.read(links, word * n) if links and n else b""
        off_prog = layout.offset("bpf_link", "prog")
        for i in range(n):
            link = int.from_bytes(raw[word * i:word * i + word], "little")
            if not link:
                continue
            try:
                prog = reader.ptr(link + off_prog)
            except ReadError as e:
                errors.append(f"struct_ops link {i} at {link:#x} unreadable: {e.reason}")
                continue
            p = bpfprogs.read_prog(reader, layout, prog)
            if p.id is None or p.id < 0 or (p.error and not p.name):
                errors.append(f"struct_ops link {i}: program at {prog:#x}: {p.error}")
                continue
            progs[p.id] = (p.name, prog)
    except (ReadError, LayoutError) as e:
        errors.append(f"struct_ops links unreadable: {e}")
    out = []
    for name in callback_names:
        kfunc = kdata.int(name)
        if not kfunc:
            continue
        cb = StructOpsCallback(member=name, kfunc=kfunc)
        if udata is not None:
            cb.prog_id = udata.int(name) or None
            if cb.prog_id in progs:
                cb.prog_name, cb.prog = progs[cb.prog_id]
        out.append(cb)
    return out, errors
