"""Why a sched_ext scheduler exited, from every place the answer survives in memory.

1. The kernel's ``struct scx_exit_info`` (``scx_sched.exit_info``; 6.12: the global
   ``scx_exit_info``), read by :func:`walkers.scx.read_exit_info` while the scheduler struct is
   alive (it is freed once the BPF link is detached).
2. The scheduler's own copy. BPF schedulers built with the kernel's ``user_exit_info`` helpers
   (``tools/sched_ext/include/scx/user_exit_info*.h``: ``UEI_DEFINE(uei)`` / ``UEI_RECORD(uei,
   ei)`` in ``ops.exit``) keep ``struct user_exit_info {kind, exit_code, reason[], msg[]}`` in
   their ``.data`` map and the debug dump text in the variable ``<uei>_dump`` of a section
   ``.data.<uei>_dump`` (its own map). Both outlive the kernel's copy when the loader was stopped
   or killed before it read them. The layout comes from the program's BTF (the map's
   ``btf_value_type_id`` is the DATASEC; the variable's type is ``struct user_exit_info``);
   older helpers have no ``exit_code``.
3. The kernel log: ``sched_ext: BPF scheduler "<name>" disabled (<reason>)`` (errors add
   ``sched_ext: <name>: <msg>`` and the backtrace lines), from the printk ring buffer
   (:mod:`walkers.printk`). Kernels before 6.12 printed ``... errored, disabling`` then
   ``sched_ext: <reason> (<msg>)``.

Kinds are decoded with the kernel's own ``enum scx_exit_kind``, so kinds newer kernels add are
named too. No Volatility import.
"""

import re
from dataclasses import dataclass, field

from ..btf.types import Kind
from ..core import BtfLayout, LayoutError, ReadError, Record

UEI_STRUCT = "user_exit_info"
MAX_UEI_DUMP = 1 << 20        # bytes of a <uei>_dump variable read
MAX_LOG_FOLLOW = 160          # continuation records (backtrace lines) kept after an exit line
_MODIFIERS = (Kind.TYPEDEF, Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG)

DISABLED_RE = re.compile(r'^sched_ext: BPF scheduler "(?P<name>.*)" disabled \((?P<reason>.*)\)\s*$')
ERRORED_RE = re.compile(r'^sched_ext: BPF scheduler "(?P<name>.*)" errored, disabling\s*$')
ENABLED_RE = re.compile(r'^sched_ext: BPF scheduler "(?P<name>.*)" enabled')


def kind_text(kinds, value):
    """``ERROR_BPF (1025)`` from ``enum scx_exit_kind`` constants; the number alone when unnamed."""
    if value is None:
        return None
    for name, v in kinds or ():
        if v == value and not name.startswith("__"):
            return f"{name[9:] if name.startswith('SCX_EXIT_') else name} ({value})"
    return f"unknown kind {value}"


def is_error_kind(kinds, value):
    """Kinds at or above ``SCX_EXIT_ERROR`` are errors (the kernel's own test)."""
    err = dict(kinds or ()).get("SCX_EXIT_ERROR", 1024)
    return value is not None and value >= err


# --- the scheduler's own copy (user_exit_info) -------------------------------------------------


@dataclass
class UserExitInfo:
    """One ``UEI_DEFINE``'d variable of a BPF scheduler program."""

    map_id: int
    map_name: str
    map_kva: int
    btf_kva: int
    var: str                         # the variable's name (``uei``)
    addr: int                        # guest address of the variable
    kind: int = None
    exit_code: int = None            # None: helpers without exit_code
    reason: str = None
    msg: str = None
    dump: str = None                 # the <var>_dump text, None when no such map
    dump_map: str = None
    dump_size: int = None
    errors: list = field(default_factory=list)


def _resolve(btf, type_id, depth=20):
    t = btf.type(type_id)
    for _ in range(depth):
        if t is None or t.kind not in _MODIFIERS:
            return t
        t = btf.type(t.type)
    return None


def datasec_vars(btf, datasec_id):
    """[(var name, resolved type, offset, size)] of a DATASEC (empty for any other type)."""
    return [(name, _resolve(btf, tid), offset, size)
            for name, tid, offset, size in btf.datasec_vars(datasec_id)]


def _section_maps(maps, btf_at, errors):
    """[(map, btf, vars)] of the ARRAY maps whose BTF value type is a DATASEC."""
    out = []
    for m in maps:
        if m.type_name != "array" or not m.btf_kva or not m.btf_value_type_id or m.error:
            continue
        try:
            btf = btf_at(m.btf_kva)
        except Exception as e:   # noqa: BLE001 - a broken program BTF hides only this map
            errors.append(f"map {m.id} {m.name}: program BTF: {e}")
            continue
        vs = datasec_vars(btf, m.btf_value_type_id)
        if vs:
            out.append((m, btf, vs))
    return out


def find_user_exit_infos(reader, layout, maps, btf_at, errors=None):
    """Every ``struct user_exit_info`` variable in the section maps of BPF programs, with its
    dump text (``<var>_dump`` in a section map of the same program BTF).

    ``layout``: the kernel's (``bpf_array.map``/``value``); ``maps``: BpfMap records; ``btf_at(kva)``
    parses a program BTF (raising on failure). ``errors`` collects maps that could not be
    examined."""
    errors = errors if errors is not None else []
    sections = _section_maps(maps, btf_at, errors)
    # A map's kva is its embedded struct bpf_map; index 0 of an ARRAY is at bpf_array.value.
    value_off = layout.offset("bpf_array", "value") - layout.offset("bpf_array", "map")
    out = []
    for m, btf, vs in sections:
        for name, t, offset, size in vs:
            if t is None or t.kind != Kind.STRUCT or t.name != UEI_STRUCT:
                continue
            u = UserExitInfo(m.id, m.name, m.kva, m.btf_kva, name, m.kva + value_off + offset)
            out.append(u)
            try:
                r = Record(reader, BtfLayout(btf), f"{UEI_STRUCT}#{t.id}", u.addr)
                u.kind = r.int("kind")
                u.exit_code = r.int("exit_code")
                u.reason = r.str("reason")
                u.msg = r.str("msg")
            except ReadError as e:
                u.errors.append(f"{m.name} value unreadable: {e.reason}")
            except LayoutError as e:
                u.errors.append(f"program BTF: {e}")
            _find_dump(reader, value_off, u, sections)
    return out


def _find_dump(reader, value_off, u, sections):
    want = u.var + "_dump"
    for m, _, vs in sections:
        if m.btf_kva != u.btf_kva:
            continue
        for name, _, offset, size in vs:
            if name != want:
                continue
            u.dump_map, u.dump_size = m.name, size
            n = min(size, MAX_UEI_DUMP)
            raw = reader.try_read(m.kva + value_off + offset, n)
            if raw is None:
                u.errors.append(f"{m.name} value unreadable")
                return
            u.dump = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            if size > n:
                u.errors.append(f"{want}: {size} bytes, first {n} read")
            return


def scheduler_maps(maps, btf_kva):
    """Maps of one BPF program object (same program BTF): its struct_ops map names."""
    return [m for m in maps if m.btf_kva == btf_kva and m.type_name == "struct_ops"]


# --- the kernel log ------------------------------------------------------------------------


@dataclass
class LogExit:
    """A scheduler exit the kernel log records."""

    name: str
    reason: str
    msg: str = None
    seq: int = None
    ts_nsec: int = None
    error: bool = False
    backtrace: list = field(default_factory=list)


def sched_ext_records(records, follow=MAX_LOG_FOLLOW):
    """The records about sched_ext: every ``sched_ext:`` line, and after each the indented
    continuation lines (backtraces) of the same caller."""
    out = []
    last_caller, budget = None, 0
    for r in records:
        if r.text.startswith("sched_ext:"):
            out.append(r)
            last_caller, budget = r.caller_id, follow
        elif budget and r.caller_id == last_caller and r.text[:1] in (" ", "\t"):
            out.append(r)
            budget -= 1
        else:
            budget = 0
    return out


def log_exits(records):
    """[LogExit] from :func:`sched_ext_records` output, oldest first."""
    exits = []
    pending = None      # pre-6.12: "errored, disabling" then "sched_ext: <reason> (<msg>)"
    for r in records:
        text = r.text.rstrip("\n")
        m = DISABLED_RE.match(text)
        if m:
            pending = None
            exits.append(LogExit(m["name"], m["reason"], seq=r.seq, ts_nsec=r.ts_nsec))
            continue
        m = ERRORED_RE.match(text)
        if m:
            pending = LogExit(m["name"], None, seq=r.seq, ts_nsec=r.ts_nsec, error=True)
            exits.append(pending)
            continue
        if not exits:
            continue
        last = exits[-1]
        if text[:1] in (" ", "\t"):
            last.backtrace.append(text.strip())
            last.error = True
        elif pending is not None and pending.reason is None and text.startswith("sched_ext: "):
            body = text[len("sched_ext: "):]
            mm = re.match(r"^(?P<reason>.*?) \((?P<msg>.*)\)$", body)
            pending.reason, pending.msg = (mm["reason"], mm["msg"]) if mm else (body, None)
        elif text.startswith(f"sched_ext: {last.name}: ") and last.msg is None:
            last.msg = text[len(f"sched_ext: {last.name}: "):]
            last.error = True
    return exits
