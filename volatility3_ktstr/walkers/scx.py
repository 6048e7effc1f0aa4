"""sched_ext state from kernel memory: the scheduler, per-CPU run queues, dispatch queues, tasks.

Kernel layout (kernel/sched/ext*.c). New kernels keep the scheduler in ``struct scx_sched``
(``scx_root`` points at it): the ops copy (``ops``), ``exit_kind``/``exit_info``, the user DSQ
hash (``dsq_hash``), global DSQs per NUMA node (``pnode[n]->global_dsq`` or ``global_dsqs[n]``),
per-CPU data (``pcpu``), ``bypass_depth`` and ``watchdog_timeout``. Older kernels keep the same
things in globals (``scx_ops``, ``scx_exit_kind``, ``scx_exit_info``, ``dsq_hash``,
``global_dsqs``/``scx_dsq_global``, ``scx_ops_bypass_depth``, ``scx_watchdog_timeout``); which
one a kernel has is decided by the symbols and types present, never by version numbers.

A DSQ (``struct scx_dispatch_q``) queues tasks on ``list`` through
``task_struct.scx.dsq_list.node`` (vtime DSQs keep that list in vtime order and also an rbtree in
``priq``); BPF DSQ iterators insert cursor nodes flagged ``SCX_DSQ_LNODE_ITER_CURSOR``, which are
skipped. Every task known to sched_ext is on ``scx_tasks`` through ``scx.tasks_node`` (the
``scx_task_iter`` cursor, flagged ``SCX_TASK_CURSOR``, is skipped).

Everything here takes a :class:`Reader`, a :class:`Layout` and plain values (addresses, enum
constants); nothing imports Volatility. Every walk is bounded and cycle-safe; what cannot be read
is reported in the result (``errors``), never raised past the caller.
"""

from dataclasses import dataclass, field

from ..bpf import progs as bpfprogs
from ..core import LayoutError, ReadError

MAX_DSQ_TASKS = 1 << 16      # per DSQ list walk
MAX_TASKS = 1 << 20          # scx_tasks walk
MAX_BUCKETS = 1 << 20        # rhashtable bucket array
MAX_CHAIN = 1 << 16          # entries per rhashtable walk
MAX_TABLES = 4               # bucket_table -> future_tbl chain (rehash in flight)
MAX_NODES = 1024             # NUMA nodes
MAX_CALLBACK_LINKS = 256     # struct_ops links[] entries
EXIT_MSG_MAX = 1024          # longest exit reason/message read

SLICE_INF = (1 << 64) - 1

# Symbol names, newest first: the first one the symbol table has is used.
SYMBOLS = {
    "root": ("scx_root",),
    "ops": ("scx_ops",),
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
    "slice_dfl": ("scx_slice_dfl",),
    "dsq_hash": ("dsq_hash",),
    "global_dsqs": ("global_dsqs",),
    "dsq_global": ("scx_dsq_global",),
    "tasks": ("scx_tasks",),
    "runqueues": ("runqueues",),
    "jiffies": ("jiffies_64", "jiffies"),
    "nr_node_ids": ("nr_node_ids",),
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


# --- small helpers -------------------------------------------------------------------------


def _int(data, off, size, signed=False):
    return int.from_bytes(data[off:off + size], "little", signed=signed)


def _cstr(data, off, size):
    return data[off:off + size].split(b"\0", 1)[0].decode("utf-8", "replace")


class Region:
    """One bulk read of a struct (or the part of it that holds ``paths``), read by member path."""

    def __init__(self, reader, layout, struct, addr, paths=None, extra=16):
        self.layout = layout
        self.struct = struct
        self.addr = addr
        if paths is None:
            self.lo, hi = 0, layout.size(struct)
        else:
            offs = [layout.offset(struct, p) for p in paths if layout.has(struct, p)]
            self.lo = min(offs) if offs else 0
            # extra: the widest field read at the last offset (comm is 16 bytes).
            hi = (max(offs) if offs else 0) + extra
        self.data = reader.read(addr + self.lo, hi - self.lo)

    def has(self, path):
        return self.layout.has(self.struct, path)

    def off(self, path):
        return self.layout.offset(self.struct, path) - self.lo

    def _at(self, path, size):
        off = self.off(path)
        if off < 0 or off + size > len(self.data):
            raise LayoutError(f"struct {self.struct}.{path} is outside the bytes read")
        return off

    def get(self, path, size, signed=False, default=None):
        """The integer at ``path``, or ``default`` when this kernel lacks the member."""
        if not self.layout.has(self.struct, path):
            return default
        return _int(self.data, self._at(path, size), size, signed)

    def str(self, path, size):
        size = min(size, len(self.data) - self.off(path))
        return _cstr(self.data, self._at(path, size), size)


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


# --- the scheduler ---------------------------------------------------------------------------


@dataclass
class ExitInfo:
    kind: int = None
    exit_code: int = None
    reason: str = None
    msg: str = None
    error: str = None


@dataclass
class SchedState:
    """Scheduler-wide state. ``None`` means the kernel has no such thing (shown as N/A)."""

    sch: int = None              # struct scx_sched address (new kernels), else None
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
    slice_dfl: int = None
    jiffies: int = None
    level: int = None
    cgroup_path: str = None       # sub-schedulers: the cgroup they are attached to
    errors: list = field(default_factory=list)


def _global(reader, addr, size, signed=False):
    if addr is None:
        return None
    return int.from_bytes(reader.read(addr, size), "little", signed=signed)


def _static_key(reader, layout, addr):
    """True when the static key (``struct static_key_false``/``_true``) at ``addr`` is on."""
    if addr is None:
        return None
    off = layout.offset("static_key", "enabled")
    if layout.has("static_key_false", "key"):
        off += layout.offset("static_key_false", "key")
    return int.from_bytes(reader.read(addr + off, 4), "little", signed=True) > 0


def read_exit_info(reader, layout, addr):
    """``struct scx_exit_info`` at ``addr``: kind, exit code, reason and message strings."""
    ei = ExitInfo()
    if not addr:
        ei.error = "no exit info (NULL)"
        return ei
    try:
        r = Region(reader, layout, "scx_exit_info", addr)
        ei.kind = r.get("kind", 4)
        ei.exit_code = r.get("exit_code", 8, signed=True)
        for attr in ("reason", "msg"):
            ptr = r.get(attr, 8)
            if ptr:
                try:
                    setattr(ei, attr, reader.cstring(ptr, EXIT_MSG_MAX))
                except ReadError as e:
                    ei.error = f"exit_info.{attr} unreadable: {e.reason}"
            elif ptr == 0:
                setattr(ei, attr, "")
    except ReadError as e:
        ei.error = f"scx_exit_info unreadable: {e.reason}"
    return ei


def ops_callbacks(reader, layout, ops_addr, callback_names):
    """(member, pointer) for each callback of the ``sched_ext_ops`` at ``ops_addr`` that is set."""
    raw = reader.read(ops_addr, layout.size("sched_ext_ops"))
    out = []
    for name in callback_names:
        off = layout.offset("sched_ext_ops", name)
        ptr = _int(raw, off, 8)
        if ptr:
            out.append((name, ptr))
    return out


def read_sched_state(reader, layout, syms, callback_names=(), enable_state_names=None, sch=None):
    """The loaded scheduler and the global sched_ext state.

    ``syms``: :func:`resolve_symbols` output. ``callback_names``: the function-pointer members
    of ``struct sched_ext_ops`` (from the kernel's types). ``sch``: read this ``scx_sched``
    (a sub-scheduler) instead of ``*scx_root``. Unreadable parts leave their fields None and
    add a line to ``errors``."""
    st = SchedState()

    def guard(what, fn):
        try:
            return fn()
        except (ReadError, LayoutError) as e:
            st.errors.append(f"{what}: {e}")
            return None

    sch_region = None
    if sch is not None and layout.has("scx_sched"):
        st.sch = sch
        sch_region = guard("struct scx_sched", lambda: Region(reader, layout, "scx_sched", sch))
        if sch_region is not None:
            st.ops_addr = sch + layout.offset("scx_sched", "ops")
    elif syms.get("root") is not None and layout.has("scx_sched"):
        st.sch = guard("scx_root", lambda: reader.ptr(syms["root"]))
        if st.sch:
            sch_region = guard("struct scx_sched", lambda: Region(reader, layout, "scx_sched", st.sch))
            if sch_region is not None:
                st.ops_addr = st.sch + layout.offset("scx_sched", "ops")
        else:
            st.sch = 0 if st.sch == 0 else None
    elif syms.get("ops") is not None:
        st.ops_addr = syms["ops"]

    if st.ops_addr:
        def ops():
            r = Region(reader, layout, "sched_ext_ops", st.ops_addr)
            # name is a NUL-terminated char array; reading to the struct's end is bounded.
            st.name = r.str("name", layout.size("sched_ext_ops") - r.off("name"))
            st.ops_flags = r.get("flags", 8)
            st.timeout_ms = r.get("timeout_ms", 4)
            st.dispatch_max_batch = r.get("dispatch_max_batch", 4)
            st.exit_dump_len = r.get("exit_dump_len", 4)
            st.ops_hotplug_seq = r.get("hotplug_seq", 8)
            st.callbacks = ops_callbacks(reader, layout, st.ops_addr, callback_names)
        guard("struct sched_ext_ops", ops)

    if sch_region is not None:
        r = sch_region
        st.exit_kind = r.get("exit_kind", 4)
        st.bypass_depth = r.get("bypass_depth", 4, signed=True)
        st.watchdog_timeout = r.get("watchdog_timeout", 8)
        st.slice_dfl = r.get("slice_dfl", 8)
        st.level = r.get("level", 4, signed=True)
        cg = r.get("cgrp_path", 8)
        if cg:
            st.cgroup_path = guard("scx_sched.cgrp_path", lambda: reader.cstring(cg, 4096))
        aborting = r.get("aborting", 1)
        st.aborting = None if aborting is None else bool(aborting)
        ei = r.get("exit_info", 8)
        if ei is not None:
            st.exit = read_exit_info(reader, layout, ei)
    # Globals: older kernels keep these outside scx_sched (only used when scx_sched lacks them).
    g = syms
    if st.exit_kind is None:
        st.exit_kind = guard("scx_exit_kind", lambda: _global(reader, g.get("exit_kind"), 4))
    if st.exit is None and g.get("exit_info") is not None:
        ptr = guard("scx_exit_info", lambda: reader.ptr(g["exit_info"]))
        if ptr is not None:
            st.exit = read_exit_info(reader, layout, ptr)
    if st.bypass_depth is None:
        st.bypass_depth = guard("bypass depth", lambda: _global(reader, g.get("bypass_depth"), 4, True))
    if st.watchdog_timeout is None:
        st.watchdog_timeout = guard("scx_watchdog_timeout",
                                    lambda: _global(reader, g.get("watchdog_timeout"), 8))
    if st.slice_dfl is None:
        st.slice_dfl = guard("scx_slice_dfl", lambda: _global(reader, g.get("slice_dfl"), 8))
    if st.aborting is None and g.get("aborting") is not None:
        st.aborting = guard("scx_aborting", lambda: bool(_global(reader, g["aborting"], 1)))

    st.enable_state = guard("enable state", lambda: _global(reader, g.get("enable_state"), 4, True))
    if st.enable_state is not None:
        st.enable_state_str = guard("enable state string", lambda: _state_string(
            reader, g.get("enable_state_str"), st.enable_state, enable_state_names))
    st.enabled = guard("__scx_enabled", lambda: _static_key(reader, layout, g.get("enabled_key")))
    st.switched_all = guard("__scx_switched_all",
                            lambda: _static_key(reader, layout, g.get("switched_all_key")))
    if g.get("switching_all") is not None:
        st.switching_all = guard("scx_switching_all", lambda: bool(_global(reader, g["switching_all"], 1)))
    if g.get("in_softlockup") is not None:
        st.in_softlockup = guard("scx_in_softlockup", lambda: bool(_global(reader, g["in_softlockup"], 4)))
    st.breather_depth = guard("scx_breather_depth",
                              lambda: _global(reader, g.get("breather_depth"), 4, True))
    st.nr_rejected = guard("scx_nr_rejected", lambda: _global(reader, g.get("nr_rejected"), 8, True))
    st.enable_seq = guard("scx_enable_seq", lambda: _global(reader, g.get("enable_seq"), 8, True))
    st.hotplug_seq = guard("scx_hotplug_seq", lambda: _global(reader, g.get("hotplug_seq"), 8, True))
    st.jiffies = guard("jiffies", lambda: _global(reader, g.get("jiffies"), 8))
    return st


def _state_string(reader, str_array, state, names):
    """What sysfs ``state`` prints: ``scx_enable_state_str[state]`` read from memory; else the
    enum constant's name (``SCX_ENABLED`` -> ``enabled``)."""
    if str_array is not None and 0 <= state < 64:
        ptr = reader.ptr(str_array + 8 * state)
        if ptr:
            return reader.cstring(ptr, 64)
    name = enum_name(names, state)
    if name is None:
        return None
    for p in ("SCX_OPS_", "SCX_"):
        if name.startswith(p):
            return name[len(p):].lower()
    return name.lower()


def sub_scheds(reader, layout, root, max_depth=8, max_total=1024):
    """Sub-schedulers under ``root`` (``scx_sched.children``, linked by ``sibling``), depth
    first: [(scx_sched address, depth, parent)], and errors. Kernels without sub-schedulers
    give ([], [])."""
    if not root or not (layout.has("scx_sched", "children") and layout.has("scx_sched", "sibling")):
        return [], []
    off_children = layout.offset("scx_sched", "children")
    off_sibling = layout.offset("scx_sched", "sibling")
    out, errors, seen = [], [], {root}
    stack = [(root, 0, None)]
    while stack:
        sch, depth, parent = stack.pop()
        if depth:
            out.append((sch, depth, parent))
        if depth >= max_depth:
            errors.append(f"sub-schedulers under {sch:#x} deeper than {max_depth}: not walked")
            continue
        head = sch + off_children
        found = []
        try:
            cur = reader.ptr(head)
            while cur != head:
                child = cur - off_sibling
                if not cur or child in seen or len(seen) > max_total:
                    errors.append(f"children list of {sch:#x}: "
                                  + ("NULL link" if not cur else "cycle" if child in seen else "too many"))
                    break
                seen.add(child)
                found.append(child)
                cur = reader.ptr(cur)
        except ReadError as e:
            errors.append(f"children list of {sch:#x} unreadable: {e.reason}")
        stack.extend((c, depth + 1, sch) for c in reversed(found))
    return out, errors


# --- dispatch queues ---------------------------------------------------------------------------


@dataclass
class DsqOffsets:
    """Offsets of the DSQ list walk, from the layout once."""

    dsq_list: int         # scx_dispatch_q.list (list_head)
    dsq_size: int
    lnode_node: int       # task_struct offset of the list_head linking a task into a DSQ
    lnode_flags: int      # task_struct offset of scx_dsq_list_node.flags, or None
    cursor_flag: int      # SCX_DSQ_LNODE_ITER_CURSOR (0 when the kernel has no cursors)

    @classmethod
    def from_layout(cls, layout, cursor_flag=1):
        scx = layout.offset("task_struct", "scx")
        if layout.has("sched_ext_entity", "dsq_list.node"):
            node = scx + layout.offset("sched_ext_entity", "dsq_list.node")
            flags = scx + layout.offset("sched_ext_entity", "dsq_list.flags") \
                if layout.has("sched_ext_entity", "dsq_list.flags") else None
        else:  # older: a plain list_head (dsq_node or dsq_list)
            node = scx + layout.first("sched_ext_entity", "dsq_list", "dsq_node")
            flags, cursor_flag = None, 0
        return cls(dsq_list=layout.offset("scx_dispatch_q", "list"),
                   dsq_size=layout.size("scx_dispatch_q"),
                   lnode_node=node, lnode_flags=flags, cursor_flag=cursor_flag)


@dataclass
class DsqWalk:
    tasks: list = field(default_factory=list)   # task_struct addresses, queue order
    cursors: int = 0                            # iterator cursors skipped
    error: str = None                           # why the walk stopped early, if it did
    truncated: bool = False


def walk_dsq_list(reader, offs: DsqOffsets, dsq_addr, max_tasks=MAX_DSQ_TASKS) -> DsqWalk:
    """Tasks queued on the DSQ at ``dsq_addr`` in list order (bounded, cycle-safe)."""
    w = DsqWalk()
    head = dsq_addr + offs.dsq_list
    try:
        cur = reader.ptr(head)
    except ReadError as e:
        w.error = f"DSQ list head unreadable: {e.reason}"
        return w
    seen = set()
    span = 16 if offs.lnode_flags is None else max(16, offs.lnode_flags - offs.lnode_node + 4)
    while cur != head:
        if len(w.tasks) + w.cursors >= max_tasks:
            w.truncated = True
            w.error = f"stopped after {max_tasks} entries"
            break
        if cur in seen:
            w.error = f"list cycle at {cur:#x}"
            break
        if not cur:
            w.error = "NULL list link"
            break
        seen.add(cur)
        try:
            raw = reader.read(cur, span)
        except ReadError as e:
            w.error = f"list node at {cur:#x} unreadable: {e.reason}"
            break
        if offs.lnode_flags is not None and offs.cursor_flag and \
                _int(raw, offs.lnode_flags - offs.lnode_node, 4) & offs.cursor_flag:
            w.cursors += 1
        else:
            w.tasks.append(cur - offs.lnode_node)
        cur = _int(raw, 0, 8)
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
        r = Region(reader, layout, "scx_dispatch_q", addr)
    except ReadError as e:
        d.error = f"struct scx_dispatch_q unreadable: {e.reason}"
        return d
    d.id = r.get("id", 8)
    d.nr = r.get("nr", 4)
    d.seq = r.get("seq", 4)
    if r.has("priq"):
        d.vtime = bool(r.get("priq.rb_node", 8) if layout.has("rb_root", "rb_node") else 0)
    if walk:
        d.walk = walk_dsq_list(reader, offs, addr)
    return d


def walk_rhashtable(reader, layout, ht_addr, node_offset, max_entries=MAX_CHAIN):
    """Objects hashed in the ``struct rhashtable`` at ``ht_addr`` (``node_offset``: where their
    ``rhash_head`` sits). Returns (object addresses, errors). Follows ``future_tbl`` while a
    rehash is in flight; nested (huge) tables are reported, not walked."""
    objs, errors, seen = [], [], set()
    try:
        tbl = reader.ptr(ht_addr + layout.offset("rhashtable", "tbl"))
    except ReadError as e:
        return objs, [f"rhashtable unreadable: {e.reason}"]
    off_size = layout.offset("bucket_table", "size")
    off_nest = layout.offset("bucket_table", "nest") if layout.has("bucket_table", "nest") else None
    off_future = layout.offset("bucket_table", "future_tbl")
    off_buckets = layout.offset("bucket_table", "buckets")
    off_next = layout.offset("rhash_head", "next")
    tables = 0
    while tbl and tables < MAX_TABLES:
        tables += 1
        try:
            hdr = reader.read(tbl, off_buckets)
        except ReadError as e:
            errors.append(f"bucket_table at {tbl:#x} unreadable: {e.reason}")
            break
        size = _int(hdr, off_size, 4)
        if off_nest is not None and _int(hdr, off_nest, 4):
            errors.append(f"bucket_table at {tbl:#x} is nested ({size} buckets); not walked")
            tbl = _int(hdr, off_future, 8)
            continue
        if not 0 < size <= MAX_BUCKETS or size & (size - 1):
            errors.append(f"bucket_table at {tbl:#x}: implausible size {size}")
            break
        try:
            buckets = reader.read(tbl + off_buckets, 8 * size)
        except ReadError as e:
            errors.append(f"buckets of table {tbl:#x} unreadable: {e.reason}")
            break
        for i in range(size):
            # Bit 0 of a bucket head is its lock bit; an odd link is the chain's end (nulls).
            p = _int(buckets, 8 * i, 8) & ~1
            steps = 0
            while p and not p & 1:
                if p in seen or steps > max_entries or len(objs) >= max_entries:
                    if len(objs) >= max_entries:
                        errors.append(f"stopped after {max_entries} entries")
                        return objs, errors
                    break  # already visited (rehash duplicates) or a cycle
                seen.add(p)
                steps += 1
                objs.append(p - node_offset)
                try:
                    p = reader.ptr(p + off_next)
                except ReadError as e:
                    errors.append(f"rhash chain node at {p:#x} unreadable: {e.reason}")
                    break
        tbl = _int(hdr, off_future, 8)
    return objs, errors


def global_dsq_addrs(reader, layout, sch, syms, nr_nodes):
    """[(node, DSQ address)] of the global DSQs; errors as strings."""
    out, errors = [], []
    nr_nodes = max(1, min(nr_nodes or 1, MAX_NODES))
    try:
        if sch and layout.has("scx_sched", "pnode") and layout.has("scx_sched_pnode", "global_dsq"):
            arr = reader.ptr(sch + layout.offset("scx_sched", "pnode"))
            ptrs = reader.read(arr, 8 * nr_nodes) if arr else b""
            inner = layout.offset("scx_sched_pnode", "global_dsq")
            out = [(n, _int(ptrs, 8 * n, 8) + inner) for n in range(len(ptrs) // 8) if _int(ptrs, 8 * n, 8)]
        elif sch and layout.has("scx_sched", "global_dsqs"):
            arr = reader.ptr(sch + layout.offset("scx_sched", "global_dsqs"))
            ptrs = reader.read(arr, 8 * nr_nodes) if arr else b""
            out = [(n, _int(ptrs, 8 * n, 8)) for n in range(len(ptrs) // 8) if _int(ptrs, 8 * n, 8)]
        elif syms.get("global_dsqs") is not None:
            arr = reader.ptr(syms["global_dsqs"])
            ptrs = reader.read(arr, 8 * nr_nodes) if arr else b""
            out = [(n, _int(ptrs, 8 * n, 8)) for n in range(len(ptrs) // 8) if _int(ptrs, 8 * n, 8)]
        elif syms.get("dsq_global") is not None:
            out = [(0, syms["dsq_global"])]
    except ReadError as e:
        errors.append(f"global DSQ array unreadable: {e.reason}")
    return out, errors


def user_dsq_addrs(reader, layout, sch, syms):
    """Addresses of every user DSQ (the scheduler's DSQ hash table); errors as strings."""
    if sch and layout.has("scx_sched", "dsq_hash"):
        ht = sch + layout.offset("scx_sched", "dsq_hash")
    elif syms.get("dsq_hash") is not None:
        ht = syms["dsq_hash"]
    else:
        return [], ["no DSQ hash table in this kernel"]
    return walk_rhashtable(reader, layout, ht, layout.offset("scx_dispatch_q", "hash_node"))


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


def read_cpus(reader, layout, runqueues, percpu_offsets, offs: DsqOffsets, sch=None, walk=True):
    """One :class:`CpuState` per possible CPU (``rq`` = ``runqueues`` + per-CPU offset)."""
    out = []
    bypass_off = None
    pcpu = None
    if sch and layout.has("scx_sched", "pcpu") and layout.has("scx_sched_pcpu", "bypass_dsq"):
        try:
            pcpu = reader.ptr(sch + layout.offset("scx_sched", "pcpu"))
            bypass_off = layout.offset("scx_sched_pcpu", "bypass_dsq")
        except ReadError:
            pcpu = None
    local_off = layout.offset("rq", "scx.local_dsq")
    for cpu, pco in enumerate(percpu_offsets):
        rq = (runqueues + pco) & ((1 << 64) - 1)
        c = CpuState(cpu=cpu, rq=rq)
        out.append(c)
        try:
            r = Region(reader, layout, "rq", rq, ["nr_running", "curr", "scx.nr_running", "scx.flags"],
                       extra=8)
        except ReadError as e:
            c.error = f"struct rq unreadable: {e.reason}"
            continue
        c.nr_running = r.get("nr_running", 4)
        c.scx_nr_running = r.get("scx.nr_running", 4)
        c.flags = r.get("scx.flags", 4)
        c.curr = r.get("curr", 8)
        c.local_dsq = read_dsq(reader, layout, offs, rq + local_off, "local", walk=walk, cpu=cpu)
        if pcpu:
            c.bypass_dsq = read_dsq(reader, layout, offs, (pcpu + pco + bypass_off) & ((1 << 64) - 1),
                                    "bypass", walk=walk, cpu=cpu)
    return out


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
        r = Region(reader, layout, "task_struct", addr, _task_paths(layout))
    except ReadError as e:
        t.error = f"task_struct unreadable: {e.reason}"
        return t
    t.pid = r.get("pid", 4, signed=True)
    t.tgid = r.get("tgid", 4, signed=True)
    t.comm = r.str("comm", 16)
    t.sched_class = r.get("sched_class", 8)
    cpu_path = "thread_info.cpu" if r.has("thread_info.cpu") else "cpu"
    t.cpu = r.get(cpu_path, 4)
    # int in older kernels, u8 in newer ones: the low byte (little-endian) holds the value either way.
    t.on_rq = r.get("on_rq", 1)
    t.on_cpu = r.get("on_cpu", 1)
    t.policy = r.get("policy", 4)
    t.sched = r.get("scx.sched", 8)
    t.dsq = r.get("scx.dsq", 8)
    t.ops_state = r.get("scx.ops_state", 8)
    t.flags = r.get("scx.flags", 4)
    t.dsq_flags = r.get("scx.dsq_flags", 4)
    t.weight = r.get("scx.weight", 4)
    t.sticky_cpu = r.get("scx.sticky_cpu", 4, signed=True)
    t.holding_cpu = r.get("scx.holding_cpu", 4, signed=True)
    t.runnable_at = r.get("scx.runnable_at", 8)
    t.slice = r.get("scx.slice", 8)
    t.dsq_vtime = r.get("scx.dsq_vtime", 8)
    if r.has("scx.runnable_node"):
        nxt = r.get("scx.runnable_node", 8)
        own = addr + layout.offset("task_struct", "scx.runnable_node")
        # list_del_init leaves the node pointing at itself; a never-added node is zeroed.
        t.runnable_linked = bool(nxt) and nxt != own and nxt < (1 << 64) - 4096 and nxt >> 48 != 0xdead
    return t


@dataclass
class TaskWalk:
    tasks: list = field(default_factory=list)   # task_struct addresses
    cursors: int = 0
    error: str = None
    truncated: bool = False


def walk_scx_tasks(reader, layout, head, cursor_flag=0, max_tasks=MAX_TASKS) -> TaskWalk:
    """Tasks on the ``scx_tasks`` list at ``head`` (``task_struct.scx.tasks_node``), in order.

    Cursor entries (``scx.flags & cursor_flag``, the ``scx_task_iter`` cursor) are skipped."""
    w = TaskWalk()
    node_off = layout.offset("task_struct", "scx") + layout.offset("sched_ext_entity", "tasks_node")
    flags_rel = (layout.offset("sched_ext_entity", "flags")
                 - layout.offset("sched_ext_entity", "tasks_node")) if cursor_flag else None
    try:
        cur = reader.ptr(head)
    except ReadError as e:
        w.error = f"scx_tasks unreadable: {e.reason}"
        return w
    seen = set()
    while cur != head:
        if len(w.tasks) + w.cursors >= max_tasks:
            w.truncated, w.error = True, f"stopped after {max_tasks} entries"
            break
        if not cur or cur in seen:
            w.error = "NULL list link" if not cur else f"list cycle at {cur:#x}"
            break
        seen.add(cur)
        try:
            nxt = reader.ptr(cur)
            if flags_rel is not None and reader.u32(cur + flags_rel) & cursor_flag:
                w.cursors += 1
            else:
                w.tasks.append(cur - node_off)
        except ReadError as e:
            w.error = f"scx_tasks node at {cur:#x} unreadable: {e.reason}"
            break
        cur = nxt
    return w


def runnable_for(task: ScxTask, jiffies):
    """Jiffies the task has waited runnable (``jiffies - scx.runnable_at``), or None when it is
    not on a runnable list (asleep or running: ``runnable_at`` is stale then) or the value is
    in the future (not meaningful)."""
    if not task.runnable_linked or jiffies is None or task.runnable_at is None:
        return None
    age = (jiffies - task.runnable_at) & ((1 << 64) - 1)
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


def struct_ops_callbacks(reader, layout, st_map, ops_struct, callback_names, value_struct=None):
    """Callbacks implemented by the struct_ops map at ``st_map`` and their programs.

    The kernel writes each program's id into the user value (``uvalue``) slot of the member and
    keeps the programs' links in ``links[]``; both are read, so a callback gets its program id
    even when a link is unreadable. Returns (callbacks, errors)."""
    errors = []
    size = layout.size(ops_struct)
    kdata = reader.read(struct_ops_kdata(layout, st_map, value_struct), size)
    udata = None
    try:
        uvalue = reader.ptr(st_map + layout.offset("bpf_struct_ops_map", "uvalue"))
        if uvalue:
            udata = reader.read(uvalue + struct_ops_value_data(layout, value_struct), size)
    except ReadError as e:
        errors.append(f"struct_ops uvalue unreadable: {e.reason}")
    progs = {}
    try:
        links = reader.ptr(st_map + layout.offset("bpf_struct_ops_map", "links"))
        if layout.has("bpf_struct_ops_map", "funcs_cnt"):
            n = reader.u32(st_map + layout.offset("bpf_struct_ops_map", "funcs_cnt"))
        else:  # older kernels size links[] by the member count
            n = len(callback_names)
        n = min(n, MAX_CALLBACK_LINKS)
        raw = reader.read(links, 8 * n) if links and n else b""
        off_prog = layout.offset("bpf_link", "prog")
        for i in range(n):
            link = _int(raw, 8 * i, 8)
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
        off = layout.offset(ops_struct, name)
        kfunc = _int(kdata, off, 8)
        if not kfunc:
            continue
        cb = StructOpsCallback(member=name, kfunc=kfunc)
        if udata is not None:
            cb.prog_id = _int(udata, off, 8) or None
            if cb.prog_id in progs:
                cb.prog_name, cb.prog = progs[cb.prog_id]
        out.append(cb)
    return out, errors
