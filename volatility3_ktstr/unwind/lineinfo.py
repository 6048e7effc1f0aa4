"""Source lines of BPF code: a program's ``line_info`` (no Volatility import).

``struct bpf_prog_aux``: ``linfo`` (``struct bpf_line_info``: insn_off, file_name_off,
line_off, line_col), ``jited_linfo`` (the JITed address of each entry), ``nr_linfo``,
``linfo_idx`` (a subprogram's first entry), ``btf`` (the program's BTF: its strings hold the
file names). The line of an address is the entry with the highest JITed address at or below it
(kernel/bpf/core.c ``bpf_prog_fill_jited_linfo``; line = line_col >> 10, column = line_col & 0x3ff,
include/linux/bpf.h ``BPF_LINE_INFO_LINE``/``_COL``).
"""

from typing import Any, Optional, Tuple

from ..core import LayoutError, ReadError, Record

MAX_LINFO = 1 << 20
LINE_SHIFT = 10


def bpf_source(kernel: Any, sym: Any, ip: int) -> Tuple[Optional[int], Optional[str]]:
    """(program id, "file:line:col" or a reason) of the BPF program address ``ip`` whose
    ``bpf_ksym`` is ``sym`` (a :class:`naming.BpfSymbol` with its aux)."""
    lay = kernel.layout
    paths = [p for p in ("id", "linfo", "jited_linfo", "nr_linfo", "linfo_idx", "btf")
             if lay.has("bpf_prog_aux", p)]
    try:
        aux = Record(kernel.reader, lay, "bpf_prog_aux", sym.aux, paths)
    except (ReadError, LayoutError) as e:
        return None, f"bpf_prog_aux unreadable ({getattr(e, 'reason', e)})"
    prog_id = aux.int("id")
    if not prog_id and lay.has("bpf_prog_aux", "main_prog_aux"):
        # a subprogram: its own aux has no id; the main program's has
        try:
            main = Record(kernel.reader, lay, "bpf_prog_aux", sym.aux, ("main_prog_aux",)).int("main_prog_aux")
            if main:
                prog_id = Record(kernel.reader, lay, "bpf_prog_aux", main, ("id",)).int("id")
        except (ReadError, LayoutError):
            pass
    try:
        return prog_id, _line(kernel, aux, sym, ip)
    except (ReadError, LayoutError) as e:
        return prog_id, f"line_info: memory absent ({getattr(e, 'reason', e)})"


def _line(kernel: Any, aux: Any, sym: Any, ip: int) -> str:
    lay = kernel.layout
    linfo, jited, nr = aux.int("linfo", 0), aux.int("jited_linfo", 0), aux.int("nr_linfo", 0)
    if not (linfo and jited and 0 < nr <= MAX_LINFO) or not lay.has("bpf_line_info"):
        return "no line_info"
    first = aux.int("linfo_idx", 0) or 0
    if not 0 <= first < nr:
        return "line_info: bad linfo_idx"
    psize = kernel.reader.pointer_size
    raw = kernel.reader.read(jited + psize * first, psize * (nr - first))
    addrs = memoryview(raw).cast("Q")
    look = ip - 1
    best = None
    for i, a in enumerate(addrs):
        if sym.start <= a <= look and (best is None or a >= addrs[best]):
            best = i
        elif a >= sym.end:
            break
    if best is None:
        if not any(addrs):
            return "line_info: memory absent (jited_linfo reads as zeros)"
        return "line_info: no entry at or below this address"
    size = lay.size("bpf_line_info")
    r = Record(kernel.reader, lay, "bpf_line_info", linfo + size * (first + best))
    btf_kva = aux.int("btf", 0)
    if not btf_kva:
        return f"line {r.int('line_col') >> LINE_SHIFT} (no program BTF)"
    btf = kernel.btf_at(btf_kva)
    col = r.int("line_col")
    return f"{btf.string(r.int('file_name_off'))}:{col >> LINE_SHIFT}:{col & ((1 << LINE_SHIFT) - 1)}"
