"""What a BPF image that is no program serves (no Volatility import).

A frame in BPF code that is no program carries only its kallsyms name: ``bpf_trampoline_<key>``
(kernel/bpf/trampoline.c: ``key`` is ``bpf_trampoline_compute_key``, an object id and a BTF
type id) or ``bpf_dispatcher_<name>``. The function a trampoline traces is its ``struct
bpf_trampoline``'s ``ip`` (``func.addr`` before it): found from the image's ``tr`` back
pointer where ``struct bpf_tramp_image`` has one, else by key in the trampoline hash table
(``trampoline_key_table``/``hlist_key``, ``trampoline_table``/``hlist`` before); its
``progs_cnt[]`` tells how many fentry/fexit/fmod_ret programs it runs. A dispatcher's ksym is
embedded in its ``struct bpf_dispatcher``, whose ``func`` is the kernel function it stands in
for (``bpf_dispatcher_xdp_func``) and ``num_progs`` the programs it dispatches to.
"""

from typing import Any, Dict, Optional

from ..core import LayoutError, ReadError, Record, read_int
from ..bpf.hooks import MAX_TABLE_HEADS, MAX_TRAMPOLINES, TRAMPOLINE_TABLES
from ..kds import DamageLog, hash_table_nodes

TRAMPOLINE_PREFIX = "bpf_trampoline_"
# enum bpf_tramp_prog_type -> the attach names users know (include/linux/bpf.h)
TRAMP_KINDS = {"BPF_TRAMP_FENTRY": "fentry", "BPF_TRAMP_FEXIT": "fexit",
               "BPF_TRAMP_MODIFY_RETURN": "fmod_ret", "BPF_TRAMP_REPLACE": "freplace"}
_TRAMP_KIND_ORDER = ("fentry", "fexit", "fmod_ret", "freplace")


def serves(kernel: Any, sym: Any) -> str:
    """``trampoline of <function>: fentry 1, fexit 1`` / ``dispatcher of <function>, N
    programs`` for a trampoline's or dispatcher's ``BpfSymbol``; "" for other images or when
    the memory behind it does not read."""

    def build() -> str:
        try:
            if sym.kind == "bpf_trampoline":
                return _trampoline_text(kernel, sym)
            if sym.kind == "bpf_dispatcher":
                return _dispatcher_text(kernel, sym)
        except (ReadError, LayoutError):
            pass
        return ""

    return kernel.memo(("unwind", "bpf_serves", sym.ksym, sym.start), build)


def trampoline_key(name: str) -> Optional[int]:
    tail = name[len(TRAMPOLINE_PREFIX):] if name.startswith(TRAMPOLINE_PREFIX) else ""
    return int(tail) if tail.isdigit() else None


def trampoline_of(kernel: Any, sym: Any) -> Optional[int]:
    """The ``struct bpf_trampoline`` a trampoline image belongs to, its key checked."""
    key = trampoline_key(sym.name)
    if key is None:
        return None
    lay, reader = kernel.layout, kernel.reader
    if sym.ksym and lay.has("bpf_tramp_image", "tr") and lay.has("bpf_tramp_image", "ksym"):
        image = sym.ksym - lay.offset("bpf_tramp_image", "ksym")
        tr = read_int(reader, lay, "bpf_tramp_image", image, "tr")
        if tr and read_int(reader, lay, "bpf_trampoline", tr, "key") == key:
            return tr
    return trampolines_by_key(kernel).get(key)


def trampolines_by_key(kernel: Any) -> Dict[int, int]:
    """{key: struct bpf_trampoline address} of the trampoline hash table."""

    def build() -> Dict[int, int]:
        lay, reader = kernel.layout, kernel.reader
        out: Dict[int, int] = {}
        for member, symbol in TRAMPOLINE_TABLES.items():
            table = kernel.symbol(symbol)
            if table is None or not lay.has("bpf_trampoline", member):
                continue
            from .cpus import variable_size

            heads = min(variable_size(kernel, symbol)[0] // lay.size("hlist_head"), MAX_TABLE_HEADS)
            off = lay.offset("bpf_trampoline", member)
            damage = DamageLog()
            for node in hash_table_nodes(reader, lay, table, heads, limit=MAX_TRAMPOLINES,
                                         damage=damage, what="bpf_trampoline", table_name=symbol):
                try:
                    out[read_int(reader, lay, "bpf_trampoline", node - off, "key")] = node - off
                except ReadError:
                    continue
            return out
        return out

    return kernel.memo(("unwind", "trampolines_by_key"), build)


def _trampoline_text(kernel: Any, sym: Any) -> str:
    tr = trampoline_of(kernel, sym)
    if not tr:
        return ""
    lay = kernel.layout
    target = "ip" if lay.has("bpf_trampoline", "ip") else "func.addr"
    paths = [target] + (["progs_cnt"] if lay.has("bpf_trampoline", "progs_cnt") else [])
    r = Record(kernel.reader, lay, "bpf_trampoline", tr, paths)
    from .naming import code_names

    addr = r.int(target)
    n = code_names(kernel).name(addr, return_address=False)
    text = f"trampoline of {n.symbol or n.text}"
    if "progs_cnt" in paths:
        f = lay.field("bpf_trampoline", "progs_cnt")
        raw = r.bytes("progs_cnt")
        values = dict(kernel.enum("bpf_tramp_prog_type") or ())
        counts = {}
        for enumerator, value in values.items():
            kind = TRAMP_KINDS.get(enumerator)
            if kind is not None and 0 <= value < f.count:
                chunk = raw[value * f.elem_size:(value + 1) * f.elem_size]
                counts[kind] = int.from_bytes(chunk, "little", signed=True)
        shown = [f"{k} {counts[k]}" for k in _TRAMP_KIND_ORDER if counts.get(k)]
        if shown:
            text += ": " + ", ".join(shown)
    return text


def _dispatcher_text(kernel: Any, sym: Any) -> str:
    lay = kernel.layout
    if not (sym.ksym and lay.has("bpf_dispatcher", "ksym") and lay.has("bpf_dispatcher", "func")):
        return ""
    d = sym.ksym - lay.offset("bpf_dispatcher", "ksym")
    paths = ["func"] + (["num_progs"] if lay.has("bpf_dispatcher", "num_progs") else [])
    r = Record(kernel.reader, lay, "bpf_dispatcher", d, paths)
    from .naming import code_names

    names = code_names(kernel)
    func = r.int("func")
    if not func or not names.is_code(func):
        return ""
    n = names.name(func, return_address=False)
    text = f"dispatcher of {n.symbol or n.text}"
    if "num_progs" in paths:
        count = r.int("num_progs")
        text += f", {count} program{'' if count == 1 else 's'}"
    return text
