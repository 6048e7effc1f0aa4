"""BPF programs from the kernel's ``prog_idr``: ``struct bpf_prog`` + ``bpf_prog_aux``.

One bulk read per struct. The facts are those of ``bpftool prog list``: id, type, name, tag
(first 8 bytes of ``bpf_prog.digest``/``tag``), load time (``aux->load_time``, ns of
CLOCK_BOOTTIME), JIT and xlated sizes, used map ids, BTF object, and the attach point
(``aux->attach_func_name`` of the ``aux->attach_btf_id`` type: for a struct_ops program the
``sched_ext_ops`` member it implements).
"""

from dataclasses import dataclass, field

from ..core import ReadError
from ..kds import idr_entries
from .maps import type_names_from_enum

# enum bpf_prog_type is uapi (stable): names when the ISF lacks the enum.
UAPI_PROG_TYPES = (
    "unspec socket_filter kprobe sched_cls sched_act tracepoint xdp perf_event cgroup_skb "
    "cgroup_sock lwt_in lwt_out lwt_xmit sock_ops sk_skb cgroup_device sk_msg raw_tracepoint "
    "cgroup_sock_addr lwt_seg6local lirc_mode2 sk_reuseport flow_dissector cgroup_sysctl "
    "raw_tracepoint_writable cgroup_sockopt tracing struct_ops ext lsm sk_lookup syscall netfilter"
).split()

MAX_USED_MAPS = 1024        # the kernel allows 64 (MAX_USED_MAPS); allow growth, stay bounded
MAX_JIT_BYTES = 16 << 20
MAX_SUBPROGS = 4096         # BPF_MAX_SUBPROGS is 256


def prog_type_names(constants=None):
    return type_names_from_enum(constants, "BPF_PROG_TYPE_", UAPI_PROG_TYPES)


@dataclass
class BpfProg:
    kva: int
    id: int
    type: int = -1
    type_name: str = "?"
    name: str = ""
    tag: str = ""
    load_time_ns: int = 0
    jited_len: int = 0
    xlated_len: int = 0
    bpf_func: int = 0
    aux_kva: int = 0
    btf_kva: int = 0
    attach_btf_kva: int = 0
    attach_btf_id: int = 0
    attach_func_name: str = ""
    expected_attach_type: int = 0
    subprogs: list = field(default_factory=list)   # [(bpf_func, jited_len)] incl. the main one
    used_map_kvas: list = field(default_factory=list)
    used_map_ids: list = field(default_factory=list)
    verified_insns: int = 0
    error: str = None


def _field(raw, layout, struct, member, width):
    off = layout.offset(struct, member)
    return int.from_bytes(raw[off:off + width], "little")


def read_prog(reader, layout, kva, prog_id=None, type_names=None) -> BpfProg:
    """The program at ``kva``; unreadable parts set ``error`` (the rest stays usable)."""
    p = BpfProg(kva=kva, id=prog_id if prog_id is not None else -1)
    try:
        raw = reader.read(kva, layout.size("bpf_prog"))
    except ReadError as e:
        p.error = f"struct bpf_prog unreadable: {e.reason}"
        return p
    p.type = _field(raw, layout, "bpf_prog", "type", 4)
    names = type_names or prog_type_names()
    p.type_name = names.get(p.type, f"type {p.type}")
    p.expected_attach_type = _field(raw, layout, "bpf_prog", "expected_attach_type", 4)
    p.jited_len = _field(raw, layout, "bpf_prog", "jited_len", 4)
    insn = layout.size("bpf_insn") if layout.has("bpf_insn") else 8
    p.xlated_len = _field(raw, layout, "bpf_prog", "len", 4) * insn
    off = layout.first("bpf_prog", "tag", "digest")
    p.tag = raw[off:off + 8].hex()
    p.bpf_func = _field(raw, layout, "bpf_prog", "bpf_func", 8)
    p.aux_kva = _field(raw, layout, "bpf_prog", "aux", 8)
    try:
        aux = reader.read(p.aux_kva, layout.size("bpf_prog_aux"))
    except ReadError as e:
        p.error = f"struct bpf_prog_aux unreadable: {e.reason}"
        return p
    A = "bpf_prog_aux"
    real_id = _field(aux, layout, A, "id", 4)
    if prog_id is not None and real_id != prog_id:
        p.error = f"prog_idr says id {prog_id} but the program says {real_id} (stale or corrupt)"
    p.id = prog_id if prog_id is not None else real_id
    off = layout.offset(A, "name")
    p.name = aux[off:off + 16].split(b"\0", 1)[0].decode("utf-8", "replace")
    if layout.has(A, "load_time"):
        p.load_time_ns = _field(aux, layout, A, "load_time", 8)
    if layout.has(A, "verified_insns"):
        p.verified_insns = _field(aux, layout, A, "verified_insns", 4)
    p.btf_kva = _field(aux, layout, A, "btf", 8) if layout.has(A, "btf") else 0
    if layout.has(A, "attach_btf"):
        p.attach_btf_kva = _field(aux, layout, A, "attach_btf", 8)
    p.attach_btf_id = _field(aux, layout, A, "attach_btf_id", 4) if layout.has(A, "attach_btf_id") else 0
    if layout.has(A, "attach_func_name"):
        name_ptr = _field(aux, layout, A, "attach_func_name", 8)
        if name_ptr:
            try:
                p.attach_func_name = reader.cstring(name_ptr, 128)
            except ReadError:
                p.attach_func_name = f"<unreadable name at {name_ptr:#x}>"
    _read_subprogs(reader, layout, p, aux)
    cnt = _field(aux, layout, A, "used_map_cnt", 4)
    ptr = _field(aux, layout, A, "used_maps", 8)
    if cnt > MAX_USED_MAPS:
        p.error = p.error or f"implausible used_map_cnt {cnt}"
    elif cnt and ptr:
        raw_maps = reader.try_read(ptr, 8 * cnt)
        if raw_maps is None:
            p.error = p.error or f"used_maps array at {ptr:#x} unreadable"
        else:
            p.used_map_kvas = [int.from_bytes(raw_maps[i:i + 8], "little") for i in range(0, 8 * cnt, 8)]
    return p


def _read_subprogs(reader, layout, p, aux):
    """With subprograms (``aux->func_cnt``), bpftool's JIT size is the sum over ``aux->func[]``
    (func[0] is the main program); each has its own image."""
    A = "bpf_prog_aux"
    p.subprogs = [(p.bpf_func, p.jited_len)]
    if not layout.has(A, "func_cnt") or not layout.has(A, "func"):
        return
    cnt = _field(aux, layout, A, "func_cnt", 4)
    ptr = _field(aux, layout, A, "func", 8)
    if not cnt or not ptr:
        return
    if cnt > MAX_SUBPROGS:
        p.error = p.error or f"implausible func_cnt {cnt}"
        return
    raw = reader.try_read(ptr, 8 * cnt)
    if raw is None:
        p.error = p.error or f"subprogram array at {ptr:#x} unreadable"
        return
    subs = []
    off_func = layout.offset("bpf_prog", "bpf_func")
    off_len = layout.offset("bpf_prog", "jited_len")
    for i in range(cnt):
        sub = int.from_bytes(raw[8 * i:8 * i + 8], "little")
        try:
            subs.append((reader.u64(sub + off_func), reader.u32(sub + off_len)))
        except ReadError:
            p.error = p.error or f"subprogram {i} at {sub:#x} unreadable"
            return
    p.subprogs = subs
    p.jited_len = sum(n for _, n in subs)


def resolve_map_ids(reader, layout, prog, ids_by_kva):
    """Fill ``used_map_ids`` from a {map kva: id} table (reading ``bpf_map.id`` otherwise)."""
    out = []
    off = layout.offset("bpf_map", "id")
    for kva in prog.used_map_kvas:
        mid = ids_by_kva.get(kva)
        if mid is None:
            try:
                mid = reader.u32(kva + off)
            except ReadError:
                mid = -1
        out.append(mid)
    prog.used_map_ids = out
    return out


def iter_progs(reader, layout, prog_idr_addr, type_names=None, damage=None, max_progs=1 << 16):
    """Every program in ``prog_idr`` in id order; skipped registry nodes go to ``damage``."""
    for prog_id, kva in idr_entries(reader, layout, prog_idr_addr, limit=max_progs, damage=damage):
        yield read_prog(reader, layout, kva, prog_id, type_names)


def read_jit_images(reader, prog):
    """[(address, bytes)] of the program's JIT images (one per subprogram), page by page so
    one hole does not lose the rest (unreadable pages are zero-filled; ReadError only when
    nothing at all is readable)."""
    out = []
    good = False
    for func, length in prog.subprogs or [(prog.bpf_func, prog.jited_len)]:
        if not func or not 0 < length <= MAX_JIT_BYTES:
            continue
        raw = reader.try_read(func, length)
        if raw is None:
            parts = []
            addr, end = func, func + length
            while addr < end:
                n = min(end - addr, 4096 - (addr & 0xFFF))
                chunk = reader.try_read(addr, n)
                good = good or chunk is not None
                parts.append(chunk if chunk is not None else bytes(n))
                addr += n
            raw = b"".join(parts)
        else:
            good = True
        out.append((func, raw))
    if not good:
        raise ReadError(prog.bpf_func, prog.jited_len, "no readable JIT image")
    return out


def boot_epoch_ns(reader, layout, tk_addr):
    """Wall-clock time of boot (ns since the epoch) from the core ``struct timekeeper`` at
    ``tk_addr``: realtime - boottime = offs_real - offs_boot. None when implausible."""
    try:
        raw = reader.read(tk_addr, layout.size("timekeeper"))
    except ReadError:
        return None
    real = int.from_bytes(raw[layout.offset("timekeeper", "offs_real"):][:8], "little", signed=True)
    boot = int.from_bytes(raw[layout.offset("timekeeper", "offs_boot"):][:8], "little", signed=True)
    epoch = real - boot
    return epoch if 0 < epoch < (1 << 62) else None


def attach_point(prog, btf_at):
    """``<type>.<member>`` for struct_ops programs (the ops callback), else the attach function.

    ``btf_at(kva)`` parses the ``struct btf`` the program attaches to (KernelContext.btf_at);
    it may raise (unreadable BTF): the type id is shown instead."""
    func = prog.attach_func_name
    if not prog.attach_btf_kva or not prog.attach_btf_id:
        return func
    try:
        t = btf_at(prog.attach_btf_kva).type(prog.attach_btf_id)
        tname = t.name if t is not None else ""
    except Exception:   # KtstrError (unreadable/corrupt BTF) or KeyError (id out of range)
        tname = f"btf type {prog.attach_btf_id}"
    if prog.type_name == "struct_ops" and tname:
        return f"{tname}.{func}" if func else tname
    return func or tname
