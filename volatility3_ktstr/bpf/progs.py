"""BPF programs from the kernel's ``prog_idr``: ``struct bpf_prog`` + ``bpf_prog_aux``.

One bulk read per struct. The facts are those of ``bpftool prog list``: id, type, name, tag
(first 8 bytes of ``bpf_prog.digest``/``tag``), load time (``aux->load_time``, ns of
CLOCK_BOOTTIME), JIT and xlated sizes, used map ids, BTF object, and the attach point
(``aux->attach_func_name`` of the ``aux->attach_btf_id`` type: for a struct_ops program the
``sched_ext_ops`` member it implements).
"""

from dataclasses import dataclass, field

from ..core import ReadError, Record, read_int
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
    aux_read: bool = False      # bpf_prog_aux was read: its fields (btf, name...) are facts
    error: str = None


def read_prog(reader, layout, kva, prog_id=None, type_names=None) -> BpfProg:
    """The program at ``kva``; unreadable parts set ``error`` (the rest stays usable)."""
    p = BpfProg(kva=kva, id=prog_id if prog_id is not None else -1)
    try:
        r = Record(reader, layout, "bpf_prog", kva)
    except ReadError as e:
        p.error = f"struct bpf_prog unreadable: {e.reason}"
        return p
    p.type = r.int("type")
    names = type_names or prog_type_names()
    p.type_name = names.get(p.type, f"type {p.type}")
    p.expected_attach_type = r.int("expected_attach_type")
    p.jited_len = r.int("jited_len")
    insn = layout.size("bpf_insn") if layout.has("bpf_insn") else 8
    p.xlated_len = r.int("len") * insn
    # the tag is the first BPF_TAG_SIZE (8) bytes of the digest
    p.tag = r.bytes("tag" if r.has("tag") else "digest")[:8].hex()
    p.bpf_func = r.int("bpf_func")
    p.aux_kva = r.int("aux")
    try:
        aux = Record(reader, layout, "bpf_prog_aux", p.aux_kva)
    except ReadError as e:
        p.error = f"struct bpf_prog_aux unreadable: {e.reason}"
        return p
    p.aux_read = True
    real_id = aux.int("id")
    if prog_id is not None and real_id != prog_id:
        p.error = f"prog_idr says id {prog_id} but the program says {real_id} (stale or corrupt)"
    p.id = prog_id if prog_id is not None else real_id
    p.name = aux.str("name")
    p.load_time_ns = aux.int("load_time", 0)
    p.verified_insns = aux.int("verified_insns", 0)
    p.btf_kva = aux.int("btf", 0)
    p.attach_btf_kva = aux.int("attach_btf", 0)
    p.attach_btf_id = aux.int("attach_btf_id", 0)
    name_ptr = aux.int("attach_func_name", 0)
    if name_ptr:
        try:
            p.attach_func_name = reader.cstring(name_ptr, 128)
        except ReadError:
            p.attach_func_name = f"<unreadable name at {name_ptr:#x}>"
    _read_subprogs(reader, layout, p, aux)
    cnt = aux.int("used_map_cnt")
    ptr = aux.int("used_maps")
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
    p.subprogs = [(p.bpf_func, p.jited_len)]
    if not aux.has("func_cnt") or not aux.has("func"):
        return
    cnt = aux.int("func_cnt")
    ptr = aux.int("func")
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
    for i in range(cnt):
        sub = int.from_bytes(raw[8 * i:8 * i + 8], "little")
        try:
            subs.append((read_int(reader, layout, "bpf_prog", sub, "bpf_func"),
                         read_int(reader, layout, "bpf_prog", sub, "jited_len")))
        except ReadError:
            p.error = p.error or f"subprogram {i} at {sub:#x} unreadable"
            return
    p.subprogs = subs
    p.jited_len = sum(n for _, n in subs)


def resolve_map_ids(reader, layout, prog, ids_by_kva):
    """Fill ``used_map_ids`` from a {map kva: id} table (reading ``bpf_map.id`` otherwise)."""
    out = []
    for kva in prog.used_map_kvas:
        mid = ids_by_kva.get(kva)
        if mid is None:
            try:
                mid = read_int(reader, layout, "bpf_map", kva, "id")
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
        tk = Record(reader, layout, "timekeeper", tk_addr)
    except ReadError:
        return None
    epoch = tk.int("offs_real") - tk.int("offs_boot")
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
