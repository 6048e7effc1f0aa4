"""Why a sched_ext scheduler exited, from the kernel's and the scheduler's own records.

1. The kernel's ``struct scx_exit_info`` (``scx_sched.exit_info``; 6.12: the global
   ``scx_exit_info``), read by :func:`read_exit_info` while the scheduler struct is alive (it
   is freed once the BPF link is detached).
2. The scheduler's own copy. BPF schedulers built with the kernel's ``user_exit_info`` helpers
   (``tools/sched_ext/include/scx/user_exit_info*.h``: ``UEI_DEFINE(uei)`` / ``UEI_RECORD(uei,
   ei)`` in ``ops.exit``) keep ``struct user_exit_info {kind, exit_code, reason[], msg[]}`` in
   their ``.data`` map and the debug dump text in the variable ``<uei>_dump`` of a section
   ``.data.<uei>_dump`` (its own map). Both outlive the kernel's copy when the loader was stopped
   or killed before it read them. The layout comes from the program's BTF (the map's
   ``btf_value_type_id`` is the DATASEC; the variable's type is ``struct user_exit_info``);
   older helpers have no ``exit_code``.

The third place, the kernel log, is :mod:`.exitlog`. Kinds are decoded with the kernel's own
``enum scx_exit_kind``, so kinds newer kernels add are named too. What cannot be read is a
:class:`kds.Damage` in the record's ``damage``. No Volatility import.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from ..btf.types import Kind
from ..core import BtfLayout, Layout, LayoutError, Reader, ReadError, Record
from ..kds import DamageLog
from ..walkers.sections import section_maps

EXIT_MSG_MAX = 1024          # longest exit reason/message read (SCX_EXIT_MSG_LEN)
EXIT_DUMP_DFL = 32768        # SCX_EXIT_DUMP_DFL_LEN: dump buffer size when ops.exit_dump_len is 0
EXIT_DUMP_MAX = 1 << 20      # longest debug dump read
EXIT_BT_MAX = 1024           # backtrace entries read (SCX_EXIT_BT_LEN is 64)
UEI_STRUCT = "user_exit_info"
MAX_UEI_DUMP = 1 << 20        # bytes of a <uei>_dump variable read
_MODIFIERS = (Kind.TYPEDEF, Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG)


def kind_text(kinds, value: int | None) -> str | None:
    """``ERROR_BPF (1025)`` from ``enum scx_exit_kind`` constants; the number alone when unnamed."""
    if value is None:
        return None
    for name, v in kinds or ():
        if v == value and not name.startswith("__"):
            return f"{name[9:] if name.startswith('SCX_EXIT_') else name} ({value})"
    return f"unknown kind {value}"


def is_error_kind(kinds, value: int | None) -> bool:
    """Kinds at or above ``SCX_EXIT_ERROR`` are errors (the kernel's own test)."""
    err = dict(kinds or ()).get("SCX_EXIT_ERROR", 1024)
    return value is not None and value >= err


def damage_text(damage: DamageLog) -> str | None:
    """The records of a DamageLog on one line ("a: x; b: y; 2 more"), or None when empty."""
    if not damage:
        return None
    return "; ".join(str(d) for d in damage) + (f"; {damage.dropped} more" if damage.dropped else "")


# --- the kernel's copy (scx_exit_info) --------------------------------------------------------


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
    damage: DamageLog = field(default_factory=DamageLog)

    @property
    def error(self):
        return damage_text(self.damage)


def read_text(reader: Reader, addr: int, max_len: int) -> tuple[str, int | None]:
    """(text up to its NUL or ``max_len`` bytes, address of the first unreadable byte or None):
    page by page, so a text whose tail is unreadable still gives its head."""
    out = bytearray()
    while len(out) < max_len:
        chunk = min(max_len - len(out), 4096 - ((addr + len(out)) & 0xFFF))
        data = reader.try_read(addr + len(out), chunk)
        if data is None:
            return out.decode("utf-8", "replace"), addr + len(out)
        end = data.find(b"\0")
        if end >= 0:
            out += data[:end]
            return out.decode("utf-8", "replace"), None
        out += data
    return out.decode("utf-8", "replace"), None


def read_exit_info(reader: Reader, layout: Layout, addr: int, dump_len: int | None = None) -> ExitInfo:
    """``struct scx_exit_info`` at ``addr``. ``dump_len``: size of the dump buffer
    (``ops.exit_dump_len``, 0 for the kernel default)."""
    ei = ExitInfo(addr=addr)
    if not addr:
        ei.damage.add("scx_exit_info", 0, "no exit info (NULL)", "null")
        return ei
    try:
        r = Record(reader, layout, "scx_exit_info", addr)
    except ReadError as e:
        ei.damage.add("scx_exit_info", addr, f"unreadable ({e.reason})")
        return ei
    ei.kind = r.int("kind")
    ei.exit_code = r.int("exit_code")
    ei.exit_cpu = r.int("exit_cpu")
    ei.flags = r.int("flags")
    for attr, limit in (("reason", EXIT_MSG_MAX), ("msg", EXIT_MSG_MAX)):
        ptr = r.int(attr)
        if ptr:
            text, bad = read_text(reader, ptr, limit)
            setattr(ei, attr, text)
            if bad is not None:
                ei.damage.add(f"exit_info.{attr}", bad, "unreadable")
        elif ptr == 0:
            setattr(ei, attr, "")
    bt, n = r.int("bt"), r.int("bt_len")
    ei.bt_len = n
    if bt and n:
        word = reader.pointer_size
        count = min(n, EXIT_BT_MAX)
        raw = reader.try_read(bt, word * count)
        if raw is None:
            ei.damage.add("exit_info.bt", bt, "unreadable")
        else:
            ei.bt = [int.from_bytes(raw[i:i + word], "little") for i in range(0, len(raw), word)]
        if n > EXIT_BT_MAX:
            ei.damage.add("exit_info.bt_len", 0, f"{n}: only {EXIT_BT_MAX} entries read", "bound")
    dump = r.int("dump")
    if dump:
        text, bad = read_text(reader, dump, min(dump_len or EXIT_DUMP_DFL, EXIT_DUMP_MAX))
        ei.dump = text
        if bad is not None:
            ei.damage.add("exit_info.dump", bad, "unreadable")
    return ei


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
    damage: DamageLog = field(default_factory=DamageLog)


def _resolve(btf, type_id, depth=20):
    t = btf.type(type_id)
    for _ in range(depth):
        if t is None or t.kind not in _MODIFIERS:
            return t
        t = btf.type(t.type)
    return None


def datasec_vars(btf, datasec_id: int) -> list[tuple]:
    """[(var name, resolved type, offset, size)] of a DATASEC (empty for any other type)."""
    return [(name, _resolve(btf, tid), offset, size)
            for name, tid, offset, size in btf.datasec_vars(datasec_id)]


def _section_maps(maps, btf_at, damage):
    """[(map, btf, vars)] of the section maps (a broken program BTF is a damage entry)."""
    out = []
    for m, btf, error in section_maps(maps, btf_at):
        if error is not None:
            damage.add(f"map {m.id} {m.name}", 0, f"program BTF: {error}", "corrupt")
            continue
        vs = datasec_vars(btf, m.btf_value_type_id)
        if vs:
            out.append((m, btf, vs))
    return out


def find_user_exit_infos(reader: Reader, layout: Layout, maps: list, btf_at: Callable,
                         damage: DamageLog | None = None) -> list[UserExitInfo]:
    """Every ``struct user_exit_info`` variable in the section maps of BPF programs, with its
    dump text (``<var>_dump`` in a section map of the same program BTF).

    ``layout``: the kernel's (``bpf_array.map``/``value``); ``maps``: BpfMap records; ``btf_at(kva)``
    parses a program BTF (raising on failure). Maps that could not be examined go to ``damage``."""
    damage = damage if damage is not None else DamageLog()
    sections = _section_maps(maps, btf_at, damage)
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
                u.damage.add(f"{m.name} value", e.addr, f"unreadable ({e.reason})")
            except LayoutError as e:
                u.damage.add(f"{m.name} program BTF", 0, str(e), "corrupt")
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
                u.damage.add(f"{m.name} value", m.kva + value_off + offset, "unreadable")
                return
            u.dump = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            if size > n:
                u.damage.add(want, 0, f"{size} bytes, first {n} read", "bound")
            return


def scheduler_maps(maps: list, btf_kva: int) -> list:
    """Maps of one BPF program object (same program BTF): its struct_ops map names."""
    return [m for m in maps if m.btf_kva == btf_kva and m.type_name == "struct_ops"]
