"""The payload of an sdt_alloc slot: which struct of the scheduler's BTF it is, which task it
belongs to, and how to show it (the allocator walk itself is :mod:`.sdtalloc`).

A payload's type is found among the program's own structs of the payload's size (allocator
name stems, then ``*_ctx`` conventions); its owner is the task whose task-storage value points
at the slot, else what the payload says (a ``pid`` member, a ``struct task_struct *``).
"""

import re
from dataclasses import dataclass

from ..btf import Kind
from ..core import ReadError

# Types of the allocator library itself: never a payload candidate.
LIBRARY_TYPES = frozenset({
    "scx_allocator", "sdt_pool", "sdt_desc", "sdt_chunk", "sdt_data", "sdt_id",
    "scx_alloc_stats", "sdt_task_ctx", "scx_static",
})


def _stems(allocator_name):
    stem = re.sub(r"_?alloc(ator)?$", "", allocator_name)
    out = [stem] if stem else []
    if stem.startswith("scx_") and len(stem) > 4:
        out.append(stem[4:])
    return out


def payload_candidates(btf, payload_size, is_foreign=None):
    """Named structs of exactly ``payload_size`` bytes defined by the program (its own ids, minus
    the allocator library's types and, via ``is_foreign(name)``, types the kernel defines)."""
    cands = {}
    for t in btf.own_types:
        if t.kind != Kind.STRUCT or not t.name or t.size != payload_size:
            continue
        if t.name in LIBRARY_TYPES or t.name in cands:
            continue
        if is_foreign is not None and is_foreign(t.name):
            continue
        cands[t.name] = t.id
    return cands


def discover_payload_type(btf, payload_size, allocator_name, is_foreign=None):
    """(type id, reason); type id 0 means "render as hex" and the reason says why.

    Candidates are :func:`payload_candidates`; one is taken as is; among several, the first
    rule with exactly one hit wins: the allocator's stem name (``scx_task_allocator`` ->
    ``scx_task``, ``task``), ``task_ctx``, ``*_arena_ctx``, ``*_task_ctx``, ``*_ctx``."""
    if payload_size <= 0:
        return 0, "payload size is 0"
    cands = payload_candidates(btf, payload_size, is_foreign)
    if not cands:
        return 0, f"no struct of {payload_size} bytes among the program's own types"
    if len(cands) == 1:
        name, tid = next(iter(cands.items()))
        return tid, f"only struct of {payload_size} bytes: {name}"
    rules = [(f"stem {s!r}", lambda n, s=s: n == s) for s in _stems(allocator_name)]
    rules += [("task_ctx", lambda n: n == "task_ctx"),
              ("*_arena_ctx", lambda n: n.endswith("_arena_ctx")),
              ("*_task_ctx", lambda n: n.endswith("_task_ctx")),
              ("*_ctx", lambda n: n.endswith("_ctx"))]
    for label, match in rules:
        hits = [n for n in cands if match(n)]
        if len(hits) == 1:
            return cands[hits[0]], f"{hits[0]} ({label} among {len(cands)} structs of {payload_size} bytes)"
    names = ", ".join(sorted(cands)[:6]) + (", ..." if len(cands) > 6 else "")
    return 0, f"ambiguous: {len(cands)} structs of {payload_size} bytes ({names})"


def type_by_name(btf, name):
    """Id of the struct/union/typedef ``name`` (a leading 'struct '/'union ' is allowed);
    the program's own definitions first. None when absent."""
    bare = re.sub(r"^(struct|union)\s+", "", name.strip())
    found = [t for t in btf.find(bare) if t.kind in (Kind.STRUCT, Kind.UNION, Kind.TYPEDEF)]
    found.sort(key=lambda t: (t.id < btf.start_id, t.kind == Kind.TYPEDEF))
    return found[0].id if found else None


@dataclass(frozen=True)
class Identity:
    """Where a payload says which task it belongs to: a pid-like int or a task pointer."""

    kind: str           # "pid" or "task"
    offset: int
    size: int
    signed: bool
    member: str


def payload_identity(btf, type_id):
    """An :class:`Identity` for payload type ``type_id`` (top-level members only), or None.

    Prefers an int member named pid/tid, then a pointer to ``struct task_struct``."""
    t = btf.resolve(type_id) if type_id else None
    if t is None or t.kind not in (Kind.STRUCT, Kind.UNION):
        return None
    ptr_hit = None
    for m in t.members:
        if m.bit_size or m.bit_offset % 8:
            continue
        mt = btf.resolve(m.type)
        if mt is None:
            continue
        if m.name in ("pid", "tid") and mt.kind == Kind.INT and mt.size in (4, 8):
            return Identity("pid", m.bit_offset // 8, mt.size, mt.is_signed, m.name)
        if ptr_hit is None and mt.kind == Kind.PTR and _struct_or_fwd_named(btf, mt.type, "task_struct"):
            ptr_hit = Identity("task", m.bit_offset // 8, 8, False, m.name)
    return ptr_hit


def _struct_or_fwd_named(btf, type_id, name):
    t = btf.type(type_id)
    for _ in range(20):
        if t is None:
            return False
        if t.kind in (Kind.TYPEDEF, Kind.CONST, Kind.VOLATILE, Kind.RESTRICT, Kind.TYPE_TAG):
            t = btf.type(t.type)
            continue
        return t.kind in (Kind.STRUCT, Kind.FWD) and t.name == name
    return False


def identity_value(ident: Identity, payload: bytes):
    """The pid (``kind == 'pid'``) or task pointer read from a payload; None if it is short."""
    end = ident.offset + ident.size
    if len(payload) < end:
        return None
    return int.from_bytes(payload[ident.offset:end], "little", signed=ident.signed)



def resolve_payload_type(btf, payload_size, allocator_name, type_name=None, is_foreign=None):
    """(type id, reason) from an explicit ``type_name`` or :func:`discover_payload_type`."""
    if type_name:
        tid = type_by_name(btf, type_name)
        if tid is None:
            return 0, f"--type {type_name}: not in the program BTF"
        size = btf.size_of(tid)
        note = "" if size == payload_size else f" (type is {size} bytes, payload {payload_size})"
        return tid, f"--type {type_name}{note}"
    return discover_payload_type(btf, payload_size, allocator_name, is_foreign)


def render_payload(btf, type_id, payload, reason="", chase=None):
    from ..render import hex_list, render

    if type_id:
        return render(btf, type_id, payload, chase=chase)
    return {"hex": hex_list(payload), "reason": reason}


# --- who a slot belongs to, and how to show it -------------------------------------------------

def pointer_members(btf, type_id, value_size):
    """(name, byte offset) of the named, 8-byte aligned pointer members (top level) of a map
    value type that fit in ``value_size``: where a ``struct sdt_data __arena *`` can be stored."""
    try:
        t = btf.resolve(type_id) if btf is not None and type_id else None
    except Exception:   # noqa: BLE001 - corrupt BTF: rendering reports it
        return ()
    if t is None or t.kind not in (Kind.STRUCT, Kind.UNION):
        return ()
    out = []
    for m in t.members:
        mt = btf.resolve(m.type)
        if (m.name and mt is not None and mt.kind == Kind.PTR and not m.bit_size
                and m.bit_offset % 64 == 0 and m.bit_offset // 8 + 8 <= value_size):
            out.append((m.name, m.bit_offset // 8))
    return tuple(out)


def task_storage_owners(reader, layout, maps, prog, resolver):
    """{slot user address: Owner} from the program's TASK_STORAGE maps (same BTF object) whose
    values point at live slots. ``prog`` is a ``sdtalloc.ProgramSdt``, ``resolver`` an
    ``owners.OwnerResolver``."""
    from . import localstorage

    out = {}
    if prog.slots is None or not len(prog.slots):
        return out
    for m in maps:
        if m.type_name != "task_storage" or m.btf_kva != prog.data_map.btf_kva or m.error:
            continue
        offs = pointer_members(prog.btf, m.btf_value_type_id, m.value_size)
        if not offs:
            continue
        try:
            elems, _ = localstorage.walk_map(reader, layout, m.kva, m.value_size)
        except Exception:     # noqa: BLE001 - a map we cannot walk only loses the PID join
            continue
        for el in elems:
            if not el.owner:
                continue
            for _name, off in offs:
                ptr = int.from_bytes(el.value[off:off + 8], "little")
                hit = prog.slots.lookup(ptr) if ptr else None
                if hit is not None:
                    out[hit.entry.user_addr] = resolver.resolve("task", el.owner, el.storage)
    return out


def slot_task(reader, ident, entry, owner, task_pid):
    """(pid, comm, note) of a slot: the owning task (task storage), else what the payload says
    (a pid field, or a task pointer read through ``task_pid``, the Field of ``task_struct.pid``)."""
    pid = comm = None
    note = ""
    if owner is not None and owner.pid is not None:
        pid, comm = owner.pid, owner.comm
    claimed = identity_value(ident, entry.payload) if ident else None
    if claimed is not None and ident.kind == "task":
        task, claimed = claimed, None
        if task and task_pid is not None:
            try:
                claimed = task_pid.decode(reader.read(task + task_pid.offset, task_pid.size),
                                          task_pid.offset)
            except ReadError:
                note = f"payload {ident.member} {task:#x} unreadable"
    if pid is None:
        pid = claimed
    elif claimed is not None and claimed != pid:
        note = f"payload {ident.member} {claimed} but owned by pid {pid}"
    return pid, comm or "", note


def type_label(btf, type_id, reason):
    """Type column text: the C type, or ``hex (why)``."""
    return btf.type_name(type_id) if type_id else f"hex ({reason})"


def payload_text(btf, type_id, payload):
    """One-line payload: rendered with its BTF type, else plain hex."""
    if not type_id:
        return payload.hex()
    from ..render import render, render_text

    return render_text(render(btf, type_id, payload))
