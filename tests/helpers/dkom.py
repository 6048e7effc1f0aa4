"""A careful rootkit's DKOM on a real dump, as a reader: BPF programs taken out of every place a
program listing or a cross-view usually starts from, their hooks left running.

``hide_programs(kctx, prog_ids)`` gives the 8-byte words to patch so that, for each program:

- its ``prog_idr`` slot is NULL;
- every link whose ``prog`` is it has its ``link_idr`` slot NULL;
- every fd reaching it (an fd on the program, on one of those links, on a perf event whose
  ``prog`` it is) is NULL in its process's fd array;
- its ``bpf_ksym`` (and its subprograms') is unlinked from ``bpf_kallsyms`` (the neighbours'
  ``next``/``prev`` point past it, as ``list_del_rcu`` leaves them).

``PatchedReader`` shows a reader with those words replaced; nothing else of the dump changes.
"""

from volatility3_ktstr.bpf import fds as bpffds
from volatility3_ktstr.bpf import links as bpflinks
from volatility3_ktstr.core import Reader, Record
from volatility3_ktstr.kds import list_nodes


class PatchedReader(Reader):
    """Reads of ``base`` with some 8-byte words replaced ({address: value})."""

    def __init__(self, base, words):
        self.base = base
        self.words = dict(words)
        self.pointer_size = getattr(base, "pointer_size", 8)

    def read(self, addr, size):
        data = self.base.read(addr, size)
        hits = [(a, v) for a, v in self.words.items() if addr <= a and a + 8 <= addr + size]
        if not hits:
            return data
        buf = bytearray(data)
        for a, v in hits:
            buf[a - addr:a - addr + 8] = v.to_bytes(8, "little")
        return bytes(buf)


def idr_slot(reader, layout, idr, index):
    """Address of the XArray slot holding entry ``index`` of the ``struct idr`` at ``idr``."""
    base = reader.u32(idr + layout.offset("idr", "idr_base")) if layout.has("idr", "idr_base") else 0
    index -= base
    slot = idr + layout.offset("idr", "idr_rt") + layout.offset("xarray", "xa_head")
    entry = reader.u64(slot)
    while entry & 3 == 2 and entry > 4096:          # an internal node
        node = entry - 2
        shift = reader.read(node + layout.offset("xa_node", "shift"), 1)[0]
        slot = node + layout.offset("xa_node", "slots") + 8 * ((index >> shift) & 63)
        entry = reader.u64(slot)
    return slot


def fd_slot(reader, layout, task, fd):
    files = reader.ptr(task + layout.offset("task_struct", "files"))
    fdt = reader.ptr(files + layout.offset("files_struct", "fdt"))
    arr = reader.ptr(fdt + layout.offset("fdtable", "fd"))
    return arr + reader.pointer_size * fd


def hide_programs(kctx, prog_ids):
    """{address: value} hiding the programs ``prog_ids`` (see the module docstring)."""
    reader, layout = kctx.reader, kctx.layout
    bk = kctx.bpf_kernel()
    by_id = {p.id: p for p in bk.progs}
    targets = {by_id[i].kva for i in prog_ids}
    words = {}
    for i in prog_ids:
        words[idr_slot(reader, layout, kctx.symbol("prog_idr"), i)] = 0
    links = [link for link in bpflinks.iter_links(bk, kctx.symbol("link_idr")) if link.prog_kva in targets]
    for link in links:
        words[idr_slot(reader, layout, kctx.symbol("link_idr"), link.id)] = 0
    link_kvas = {link.kva for link in links}
    f_prog = layout.offset("perf_event", "prog")
    for f in bpffds.bpf_fds(bk, kctx.symbol("init_task"), perf=True):
        hit = (f.kind == "prog" and f.obj in targets) or (f.kind == "link" and f.obj in link_kvas) \
            or (f.kind == "perf" and reader.ptr(f.obj + f_prog) in targets)
        if hit:
            words[fd_slot(reader, layout, f.task, f.fd)] = 0
    # bpf_kallsyms: drop every ksym of the programs (subprograms lead to their main program)
    head = kctx.symbol("bpf_kallsyms")
    aux_off = layout.offset("bpf_prog_aux", "ksym") + layout.offset("bpf_ksym", "lnode")
    nodes = [head] + list(list_nodes(reader, layout, head))
    keep = []
    for node in nodes:
        if node == head:
            keep.append(node)
            continue
        if not Record(reader, layout, "bpf_ksym", node - layout.offset("bpf_ksym", "lnode"), ("prog",)).int("prog", 1):
            keep.append(node)
            continue
        aux = node - aux_off
        a = Record(reader, layout, "bpf_prog_aux", aux, ("prog", "main_prog_aux"))
        main = a.int("main_prog_aux", 0)
        prog = reader.ptr(main + layout.offset("bpf_prog_aux", "prog")) if main and main != aux else a.int("prog")
        if prog not in targets:
            keep.append(node)
    next_off, prev_off = layout.offset("list_head", "next"), layout.offset("list_head", "prev")
    for i, node in enumerate(keep):
        nxt = keep[(i + 1) % len(keep)]
        if reader.ptr(node + next_off) != nxt:
            words[node + next_off] = nxt
            words[nxt + prev_off] = node
    return words


def unlink_task(kctx, pid):
    """{address: value} taking process ``pid`` off ``init_task.tasks`` (its neighbours'
    ``next``/``prev`` past it, as a rootkit hiding its loader from ``ps`` does)."""
    reader, layout = kctx.reader, kctx.layout
    head = kctx.symbol("init_task") + layout.offset("task_struct", "tasks")
    off = layout.offset("task_struct", "tasks")
    f_tgid = layout.offset("task_struct", "tgid")
    for node in list_nodes(reader, layout, head):
        if reader.u32(node - off + f_tgid) == pid:
            nxt = reader.ptr(node + layout.offset("list_head", "next"))
            prv = reader.ptr(node + layout.offset("list_head", "prev"))
            return {prv + layout.offset("list_head", "next"): nxt, nxt + layout.offset("list_head", "prev"): prv}
    raise LookupError(f"pid {pid} is not on init_task.tasks")
