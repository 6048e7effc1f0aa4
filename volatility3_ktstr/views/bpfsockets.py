"""Rows of ``linux.ktstr.bpfsockets``: BPF on sockets (``bpf.sockets``).

One row per (socket, BPF attachment): a socket filter (``sk_filter``: classic BPF, decoded and
disassembled into child rows, or an eBPF program), a reuseport program (``sk_reuseport_cb``),
membership of a sockmap/sockhash (with the map's verdict and parser programs). Each row names
the socket's owner (pid, comm, fd; every process any task list knows), family, type, protocol
and addresses. No Volatility import.
"""

from ..bpf import progs as bpfprogs
from ..bpf import sockets as bsk
from ..core import LayoutError, ReadError, Record, read_int
from ..kds import DamageLog
from . import HEX, Grid, Kernel, Rows, inventory
from . import bpfobjects as objs

GRID = Grid(
    ("PID", int), ("Comm", str), ("FD", int), ("Socket", str), ("Kind", str), ("ProgId", int),
    ("ProgName", str), ("ProgType", str), ("Detail", str), ("Sock", HEX), ("Prog", HEX),
    ("Error", str),
    note="Error")

PSOCK_SLOTS = ("msg_parser", "stream_parser", "stream_verdict", "skb_verdict")


def _prog(kctx, bk, kva):
    p = bk.prog_by_kva.get(kva)
    if p is None:
        p = bpfprogs.read_prog(kctx.reader, kctx.layout, kva, type_names=bk.prog_type_names)
    return p


def rows(kctx: Kernel) -> Rows:
    damage = DamageLog()
    reader, layout = kctx.reader, kctx.layout
    bk = kctx.bpf_kernel()
    fds, fd_damage = objs.socket_scan(kctx)
    owners = {}         # sock -> (pid, comm, fd, via)
    for f in fds:
        try:
            sk = read_int(reader, layout, "socket", f.obj, "sk") if f.obj else 0
        except ReadError as e:
            damage.add("struct socket", f.obj, f"fd {f.fd} of pid {f.pid} unreadable ({e.reason})")
            continue
        if sk:
            owners.setdefault(sk, (f.pid, f.comm, f.fd, f.via))
    in_maps = {}        # sock -> [(map, key)]
    for m in inventory.maps(kctx, require=False):
        if m.type_name in ("sockmap", "sockhash") and not m.error:
            try:
                for key, sk in bsk.sockmap_socks(reader, layout, m, damage):
                    in_maps.setdefault(sk, []).append((m, key))
                    owners.setdefault(sk, (-1, "", -1, ""))
            except (ReadError, LayoutError) as e:
                damage.add(m.type_name, m.kva, f"map {m.id} sockets unreadable ({e})")
    out = []
    for sk, (pid, comm, fd, via) in owners.items():
        info = bsk.describe_sock(reader, layout, sk)
        base = dict(PID=pid, Comm=comm, FD=fd, Socket=info.endpoint(), Sock=sk)
        err = "; ".join(filter(None, [info.error, via]))
        if info.filter_prog:
            out.append(_filter_rows(kctx, bk, base, info.filter_prog, "sk_filter", err))
        if info.reuseport_prog:
            out.append(_filter_rows(kctx, bk, base, info.reuseport_prog, "reuseport", err,
                                    f"reuseport group of {info.reuseport_socks} sockets"))
        for m, key in in_maps.get(sk, ()):
            out.append([(0, dict(base, Kind=m.type_name, ProgId=0, ProgName="", ProgType="",
                                 Detail=f"map {m.id} ({m.name}) key {key}{_psock_progs(kctx, bk, m)}",
                                 Prog=0, Error=err))])
    out.sort(key=lambda rs: (rs[0][1]["PID"], rs[0][1]["FD"], rs[0][1]["Kind"]))
    for rs in out:
        for level, r in rs:
            yield level, GRID.row(**r)
    for what, log in (("socket scan", fd_damage), ("socket walk", damage)):
        for d in log:
            yield 0, GRID.damage(f"{what} skipped: {d}", PID=-1, FD=-1, Sock=d.addr)


def _filter_rows(kctx, bk, base, prog, kind, err, detail=""):
    p = _prog(kctx, bk, prog)
    cls = bsk.classic_insns(kctx.reader, kctx.layout, prog)
    ptype = f"cbpf ({len(cls.insns)} insns)" if cls.insns else p.type_name
    rows = [(0, dict(base, Kind=kind, ProgId=p.id, ProgName=p.name, ProgType=ptype,
                     Detail=detail or ("classic BPF: disassembly below" if cls.insns else ""),
                     Prog=prog, Error="; ".join(filter(None, [err, p.error or "", cls.error]))))]
    for line in bsk.disasm_classic(cls.insns):
        rows.append((1, dict(base, Kind=kind, ProgId=p.id, ProgName=p.name, ProgType="cbpf",
                             Detail=line, Prog=prog, Error="")))
    return rows


def _psock_progs(kctx, bk, m):
    struct = "bpf_stab" if m.type_name == "sockmap" else "bpf_shtab"
    try:
        r = Record(kctx.reader, kctx.layout, "sk_psock_progs",
                   m.kva - kctx.layout.offset(struct, "map") + kctx.layout.offset(struct, "progs"))
    except (ReadError, LayoutError):
        return ""
    names = []
    for slot in PSOCK_SLOTS:
        kva = r.int(slot, 0)
        if kva:
            p = _prog(kctx, bk, kva)
            names.append(f"{slot}={p.name}#{p.id}")
    return f"; programs: {', '.join(names)}" if names else ""
