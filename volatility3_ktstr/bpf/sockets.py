"""Socket-level BPF: the filters and programs sockets carry, and the sockets BPF maps hold.

- ``sk->sk_filter`` (``struct sk_filter {prog}``): ``SO_ATTACH_FILTER`` (classic BPF: the
  program keeps the original instructions in ``prog->orig_prog``, a ``struct sock_fprog_kern
  {len, filter}`` of ``struct sock_filter {code, jt, jf, k}``, decoded and disassembled here) and
  ``SO_ATTACH_BPF`` (an eBPF socket filter program) -- the BPFDoor pattern;
- ``sk->sk_reuseport_cb`` (``struct sock_reuseport {prog, num_socks}``):
  ``SO_ATTACH_REUSEPORT_CBPF/EBPF``;
- sockmap (``bpf_stab.sks[]``) and sockhash (``bpf_shtab.buckets[]``) members.

Per socket: family, type, protocol, local and remote address (``sock_common``). No Volatility
import.
"""

import ipaddress
import struct as _struct
from dataclasses import dataclass, field
from typing import List

from ..core import ReadError, Record, read_int
from ..kds import DamageLog, hash_table_nodes

MAX_CBPF = 4096                 # BPF_MAXINSNS
MAX_SOCKS = 1 << 16

AF = {1: "unix", 2: "inet", 10: "inet6", 16: "netlink", 17: "packet", 44: "xdp"}   # uapi socket.h
SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw", 4: "rdm", 5: "seqpacket", 10: "packet"}
PROTOCOLS = {0: "", 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 255: "raw", 768: "eth_p_all"}


@dataclass
class SockInfo:
    sk: int
    family: str = ""
    type: str = ""
    protocol: str = ""
    local: str = ""
    remote: str = ""
    state: int = 0
    filter_prog: int = 0              # sk_filter->prog
    reuseport_prog: int = 0           # sk_reuseport_cb->prog
    reuseport_socks: int = 0
    error: str = ""

    def endpoint(self) -> str:
        text = f"{self.family}/{self.type}" + (f"/{self.protocol}" if self.protocol else "")
        if self.local or self.remote:
            text += f" {self.local or '*'} -> {self.remote or '*'}"
        return text


def describe_sock(reader, layout, sk) -> SockInfo:
    """Family, type, protocol, addresses and BPF of the ``struct sock`` at ``sk``."""
    info = SockInfo(sk)
    common = ("__sk_common.skc_family", "__sk_common.skc_state", "__sk_common.skc_num",
              "__sk_common.skc_dport", "__sk_common.skc_rcv_saddr", "__sk_common.skc_daddr",
              "__sk_common.skc_v6_rcv_saddr", "__sk_common.skc_v6_daddr",
              "sk_type", "sk_protocol", "sk_filter", "sk_reuseport_cb")
    paths = tuple(p for p in common if layout.has("sock", p))
    try:
        r = Record(reader, layout, "sock", sk, paths)
    except ReadError as e:
        info.error = f"struct sock unreadable: {e.reason}"
        return info
    fam = r.int("__sk_common.skc_family", 0)
    info.family = AF.get(fam, f"af{fam}")
    info.type = SOCK_TYPES.get(r.int("sk_type", 0), str(r.int("sk_type", 0)))
    proto = r.int("sk_protocol", 0)
    info.protocol = PROTOCOLS.get(proto, str(proto)) if fam in (2, 10) or proto == 768 else \
        ("" if not proto else str(proto))
    info.state = r.int("__sk_common.skc_state", 0)
    lport = r.int("__sk_common.skc_num", 0)
    rport = _be16(r.int("__sk_common.skc_dport", 0))
    if fam == 2:
        la = ipaddress.IPv4Address(_struct.pack("<I", r.int("__sk_common.skc_rcv_saddr", 0)))
        ra = ipaddress.IPv4Address(_struct.pack("<I", r.int("__sk_common.skc_daddr", 0)))
        info.local, info.remote = f"{la}:{lport}", (f"{ra}:{rport}" if rport else "")
    elif fam == 10 and r.has("__sk_common.skc_v6_rcv_saddr"):
        la = ipaddress.IPv6Address(r.bytes("__sk_common.skc_v6_rcv_saddr"))
        ra = ipaddress.IPv6Address(r.bytes("__sk_common.skc_v6_daddr"))
        info.local, info.remote = f"[{la}]:{lport}", (f"[{ra}]:{rport}" if rport else "")
    elif lport:
        info.local = f"proto {lport:#x}" if fam == 17 else str(lport)
    filt = r.int("sk_filter", 0)
    if filt:
        try:
            info.filter_prog = read_int(reader, layout, "sk_filter", filt, "prog")
        except ReadError as e:
            info.error = f"sk_filter unreadable: {e.reason}"
    reuse = r.int("sk_reuseport_cb", 0)
    if reuse:
        try:
            rr = Record(reader, layout, "sock_reuseport", reuse, ("prog", "num_socks"))
            info.reuseport_prog, info.reuseport_socks = rr.int("prog"), rr.int("num_socks")
        except ReadError as e:
            info.error = f"sock_reuseport unreadable: {e.reason}"
    return info


def _be16(v):
    return ((v & 0xFF) << 8) | (v >> 8)


# --- classic BPF ----------------------------------------------------------------------------

@dataclass
class ClassicProgram:
    insns: List[tuple] = field(default_factory=list)     # (code, jt, jf, k)
    error: str = ""


def classic_insns(reader, layout, prog) -> ClassicProgram:
    """The original classic BPF instructions of a program made from one (``orig_prog``);
    empty when the program was loaded as eBPF."""
    out = ClassicProgram()
    if not layout.has("bpf_prog", "orig_prog"):
        return out
    try:
        orig = read_int(reader, layout, "bpf_prog", prog, "orig_prog")
        if not orig:
            return out
        r = Record(reader, layout, "sock_fprog_kern", orig, ("len", "filter"))
        n = r.int("len")
        if not 0 < n <= MAX_CBPF:
            out.error = f"implausible classic program length {n}"
            return out
        size = layout.size("sock_filter")
        raw = reader.read(r.int("filter"), n * size)
    except ReadError as e:
        out.error = f"classic program unreadable: {e.reason}"
        return out
    fields = [layout.field("sock_filter", m) for m in ("code", "jt", "jf", "k")]
    for i in range(n):
        out.insns.append(tuple(f.decode(raw, -i * size) for f in fields))
    return out


# classic BPF opcodes (uapi linux/filter.h, bpf_common.h)
_CLS = {0: "ld", 1: "ldx", 2: "st", 3: "stx", 4: "alu", 5: "jmp", 6: "ret", 7: "misc"}
_SIZE = {0x00: "", 0x08: "h", 0x10: "b"}
_MODE = {0x00: "imm", 0x20: "abs", 0x40: "ind", 0x60: "mem", 0x80: "len", 0xA0: "msh"}
_ALU = {0x00: "add", 0x10: "sub", 0x20: "mul", 0x30: "div", 0x40: "or", 0x50: "and", 0x60: "lsh",
        0x70: "rsh", 0x80: "neg", 0x90: "mod", 0xA0: "xor"}
_JMP = {0x00: "ja", 0x10: "jeq", 0x20: "jgt", 0x30: "jge", 0x40: "jset"}
SKF_AD_OFF = -0x1000


def disasm_classic(insns) -> List[str]:
    """tcpdump -d style text of classic BPF instructions."""
    out = []
    for pc, (code, jt, jf, k) in enumerate(insns):
        cls, src = code & 7, code & 0x08
        ks = k - (1 << 32) if k & 0x80000000 else k
        if cls in (0, 1):
            op = _CLS[cls] + _SIZE.get(code & 0x18, "?")
            mode = code & 0xE0
            if mode == 0x00:
                arg = f"#{k:#x}"
            elif mode == 0x20:
                arg = f"[{k}]" if ks >= 0 or ks < SKF_AD_OFF else f"#ancillary{ks - SKF_AD_OFF}"
            elif mode == 0x40:
                arg = f"[x + {k}]"
            elif mode == 0x60:
                arg = f"M[{k}]"
            elif mode == 0x80:
                arg = "#pktlen" if cls == 0 else "#len"
            else:
                arg = f"4*([{k}]&0xf)"
            out.append(f"({pc:03d}) {op:<8} {arg}")
        elif cls in (2, 3):
            out.append(f"({pc:03d}) {_CLS[cls]:<8} M[{k}]")
        elif cls == 4:
            op = _ALU.get(code & 0xF0, "alu?")
            out.append(f"({pc:03d}) {op:<8} {'x' if src else f'#{k:#x}'}" if op != "neg" else f"({pc:03d}) neg")
        elif cls == 5:
            op = _JMP.get(code & 0xF0, "j?")
            if op == "ja":
                out.append(f"({pc:03d}) ja       {pc + 1 + k}")
            else:
                arg = "x" if src else f"#{k:#x}"
                out.append(f"({pc:03d}) {op:<8} {arg:<10} jt {pc + 1 + jt}  jf {pc + 1 + jf}")
        elif cls == 6:
            rv = code & 0x18
            out.append(f"({pc:03d}) ret      " + ("a" if rv == 0x10 else "x" if rv == 0x08 else f"#{k:#x}"))
        else:
            out.append(f"({pc:03d}) {'tax' if not code & 0x80 else 'txa'}")
    return out


# --- sockets held by maps -------------------------------------------------------------------

def sockmap_socks(reader, layout, m, damage=None):
    """(slot or key hex, sock) of a sockmap (``bpf_stab.sks[]``) or sockhash (buckets)."""
    damage = damage if damage is not None else DamageLog()
    ps = reader.pointer_size
    if m.type_name == "sockmap":
        base = m.kva - layout.offset("bpf_stab", "map")
        arr = read_int(reader, layout, "bpf_stab", base, "sks")
        n = min(m.max_entries, MAX_SOCKS)
        raw = reader.read(arr, n * ps) if arr and n else b""
        for i in range(n):
            sk = int.from_bytes(raw[i * ps:(i + 1) * ps], "little")
            if sk:
                yield str(i), sk
        return
    base = m.kva - layout.offset("bpf_shtab", "map")
    r = Record(reader, layout, "bpf_shtab", base, ("buckets", "buckets_num"))
    buckets, nb = r.int("buckets"), min(r.int("buckets_num"), MAX_SOCKS)
    bsize = layout.size("bpf_shtab_bucket")
    node_off = layout.offset("bpf_shtab_elem", "node")
    key_off = layout.offset("bpf_shtab_elem", "key")
    for node in hash_table_nodes(reader, layout, buckets, nb if buckets else 0, stride=bsize,
                                 head_offset=layout.offset("bpf_shtab_bucket", "head"),
                                 limit=MAX_SOCKS, damage=damage, what="bpf_shtab_elem",
                                 table_name="bpf_shtab buckets"):
        elem = node - node_off
        try:
            sk = read_int(reader, layout, "bpf_shtab_elem", elem, "sk")
            key = reader.read(elem + key_off, m.key_size)
        except ReadError as e:
            damage.add("bpf_shtab_elem", elem, f"unreadable ({e.reason})")
            continue
        yield key.hex(), sk
