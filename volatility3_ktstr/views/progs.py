"""Rows of ``linux.ktstr.progs``: one per BPF program, like ``bpftool prog show``, and the
``--disasm`` rows (JIT image, then the xlated instructions).

Listing columns, in bpftool's terms: id, type, name, tag, ``loaded_at`` (boot-relative ns,
seconds, wall clock), ``bytes_jited``/``bytes_xlated``, ``map_ids``, ``btf_id``, the attach
point, addresses; then ``uid``, ``gpl_compatible``, ``run_cnt``/``run_time_ns``/
``recursion_misses`` (``bpf_prog_stats`` summed over CPUs: zero unless the kernel counted,
``kernel.bpf_stats_enabled``), the helpers and kfuncs the program calls and its tail-call
targets (decoded from ``bpf_prog.insnsi``), and ``pids`` (processes holding an fd on it).
No Volatility import.
"""

import bisect
import datetime
from typing import Any, Optional, Tuple

from ..bpf import disasm
from ..bpf import insns as bpfinsns
from ..bpf import progs as bpfprogs
from ..bpf.hooks import map_slots
from ..core import Layout, ReadError, Reader, Record, read_int
from ..errors import KtstrError
from ..kds import DamageLog
from . import HEX, UNREADABLE, Grid
from . import Kernel, Rows
from . import bpfobjects as objs
from . import inventory

GRID = Grid(
    ("ID", int), ("Type", str), ("Name", str), ("Tag", str), ("LoadTimeNs", int),
    ("LoadTimeSec", float), ("LoadedAt", datetime.datetime), ("JitedLen", int), ("XlatedLen", int),
    ("MapIds", str), ("BtfId", int), ("Attach", str), ("Address", HEX), ("BpfFunc", HEX),
    ("Error", str), ("Uid", int), ("Gpl", int), ("RunCnt", int), ("RunTimeNs", int),
    ("Misses", int), ("Helpers", str), ("Kfuncs", str), ("TailCalls", str), ("Pids", str),
    note="Error")

DISASM_GRID = Grid(
    ("Address", HEX), ("Offset", str), ("Bytes", str), ("Instruction", str), ("Target", str),
    ("Image", str))

_BAD = dict(Type="?", Name="", Tag="", LoadTimeNs=0, LoadTimeSec=0.0, LoadedAt=UNREADABLE,
            JitedLen=0, XlatedLen=0, MapIds="", BtfId=-1, Attach="", BpfFunc=0)


def uid_and_gpl(reader: Reader, layout: Layout, p: Any) -> Tuple[Optional[int], Optional[int]]:
    """(uid of ``aux->user``, ``gpl_compatible``) of program ``p`` (None when unknown)."""
    uid = gpl = None
    try:
        if layout.has("bpf_prog", "gpl_compatible"):
            gpl = Record(reader, layout, "bpf_prog", p.kva, ("gpl_compatible",)).int("gpl_compatible")
        if layout.has("bpf_prog_aux", "user") and p.aux_kva:
            user = reader.ptr(p.aux_kva + layout.offset("bpf_prog_aux", "user"))
            if user:
                uid = read_int(reader, layout, "user_struct", user,
                               "uid.val" if layout.has("user_struct", "uid.val") else "uid")
    except ReadError:
        pass
    return uid, gpl


def map_namer(bk):
    """ld_imm64 constant -> ``map[id:N]`` (a map) / ``map[id:N][0]+off`` (into an array map's
    values, e.g. ``.bss``), or None."""
    arrays = sorted((m.kva, m) for m in bk.maps if m.type_name == "array")
    starts = [kva for kva, _ in arrays]
    value_off = bk.layout.first("bpf_array", "value", "ptrs") if bk.layout.has("bpf_array") else None
    map_off = bk.layout.offset("bpf_array", "map") if value_off is not None else 0

    def name(v):
        m = bk.map_by_kva.get(v)
        if m is not None:
            return f"map[id:{m.id}]"
        i = bisect.bisect_right(starts, v) - 1
        if value_off is None or i < 0:
            return None
        kva, m = arrays[i]
        start = kva - map_off + value_off
        if start <= v < start + _round8(m.value_size) * m.max_entries:
            return f"map[id:{m.id}][0]+{v - start}"
        return None

    return name


def _round8(n):
    return (n + 7) & ~7


def _calls(bk, namer, p):
    """(helpers, kfuncs, tail-call targets) texts of program ``p`` ('' each when unknown)."""
    try:
        code = bpfinsns.read_insns(bk.reader, bk.layout, p)
    except ReadError:
        return "", "", ""
    c = bpfinsns.calls(code, namer)
    helpers = [f"{h[0]}#{h[1]}" if h[1] is not None else h[0] for h in c.helpers]
    if c.tail_calls and not any(h[0] == "tail_call" for h in c.helpers):
        tid = namer.helper_ids.get("tail_call")
        helpers.append(f"tail_call#{tid}" if tid else "tail_call")
    kfuncs = [f"{n}#{i}" if i is not None else n for n, i in c.kfuncs]
    targets = []
    if c.tail_calls:
        for kva in p.used_map_kvas:
            m = bk.map_by_kva.get(kva)
            if m is None or m.type_name != "prog_array":
                continue
            for i, prog in map_slots(bk.reader, bk.layout, m):
                q = bk.prog_by_kva.get(prog)
                targets.append(f"{m.name}[{i}]->{q.name}#{q.id}" if q else f"{m.name}[{i}]->{prog:#x}")
    return ",".join(helpers), ",".join(kfuncs), ",".join(targets)


def rows(kctx: Kernel) -> Rows:
    damage = DamageLog()
    progs = inventory.progs(kctx, damage)
    ids_by_kva = {m.kva: m.id for m in inventory.maps(kctx, require=False)}
    epoch = kctx.boot_epoch_ns()
    bk = kctx.bpf_kernel()
    namer = bpfinsns.Namer(bk)
    try:
        offsets = kctx.per_cpu_offsets()
    except KtstrError:
        offsets = []
    for p in progs:
        found = inventory.off_registry_note(kctx, "prog", p.kva)
        if p.error and not p.name and p.type < 0:
            yield 0, GRID.row(ID=p.id, Address=p.kva, Error="; ".join(filter(None, [p.error, found])),
                              **_BAD)
            continue
        bpfprogs.resolve_map_ids(kctx.reader, kctx.layout, p, ids_by_kva)
        btf_id = kctx.btf_id_at(p.btf_kva)
        attach = bpfprogs.attach_point(p, kctx.btf_at)
        if epoch is not None and p.load_time_ns:
            when = datetime.datetime.fromtimestamp((epoch + p.load_time_ns) / 1e9, datetime.timezone.utc)
        else:
            when = UNREADABLE
        uid, gpl = uid_and_gpl(kctx.reader, kctx.layout, p)
        stats = bpfinsns.run_stats(kctx.reader, kctx.layout, p.kva, offsets)
        helpers, kfuncs, tails = _calls(bk, namer, p)
        yield 0, GRID.row(
            ID=p.id, Type=p.type_name, Name=p.name, Tag=p.tag, LoadTimeNs=p.load_time_ns,
            LoadTimeSec=round(p.load_time_ns / 1e9, 6), LoadedAt=when, JitedLen=p.jited_len,
            XlatedLen=p.xlated_len, MapIds=",".join(map(str, p.used_map_ids)), BtfId=btf_id,
            Attach=attach, Address=p.kva, BpfFunc=p.bpf_func,
            Error="; ".join(filter(None, [p.error, found])), Uid=uid,
            Gpl=gpl, RunCnt=stats[0] if stats else None, RunTimeNs=stats[1] if stats else None,
            Misses=stats[2] if stats else None, Helpers=helpers, Kfuncs=kfuncs, TailCalls=tails,
            Pids=objs.pids_text(objs.pids_of(kctx, "prog", p.kva)))
    for d in damage:
        yield 0, GRID.row(ID=-1, Address=d.addr, Error=f"prog_idr node skipped: {d.reason}", **_BAD)
    for text in inventory.coverage_rows(kctx, "prog"):
        yield 0, GRID.row(ID=-1, Address=0, Error=text, **_BAD)
    if not progs and not damage:
        yield 0, GRID.row(ID=-1, Address=0, Error="no BPF program in the dump (prog_idr read whole "
                          "and empty)", **_BAD)


def disasm_rows(kctx: Kernel, prog_id: int, max_insns: int = 20000) -> Rows:
    """The JIT image of program ``prog_id`` (capstone), then its xlated instructions."""
    progs = inventory.progs(kctx)
    prog = next((p for p in progs if p.id == prog_id), None)
    if prog is None:
        raise KtstrError(f"no BPF program with id {prog_id}")
    try:
        images = bpfprogs.read_jit_images(kctx.reader, prog)
    except ReadError as e:
        raise KtstrError(f"program {prog_id} ({prog.name}): {e}") from None
    names = disasm.SymbolNamer(kctx.symbol_index(), progs)
    budget = max_insns
    for n, (base, image) in enumerate(images):
        label = prog.name if n == 0 else f"{prog.name}/sub{n}"
        for addr, size, mnemonic, op_str, target in disasm.disassemble(kctx.arch, image, base, budget):
            budget -= 1
            where = names.name(target) if target is not None else ""
            yield 0, DISASM_GRID.row(Address=addr, Offset=f"{label}+{addr - base:#x}",
                                     Bytes=image[addr - base:addr - base + size].hex(),
                                     Instruction=f"{mnemonic} {op_str}".strip(), Target=where,
                                     Image="jit")
        if budget <= 0:
            yield 0, DISASM_GRID.row(Address=0, Offset="", Bytes="", Instruction="(stopped at --max-insns)",
                                     Target="", Image="jit")
            return
    yield from xlated_rows(kctx, prog, max_insns)


def xlated_rows(kctx: Kernel, prog: Any, max_insns: int = 20000) -> Rows:
    bk = kctx.bpf_kernel()
    base = prog.kva + kctx.layout.offset("bpf_prog", "insnsi")
    try:
        code = bpfinsns.read_insns(kctx.reader, kctx.layout, prog)
        raw = kctx.reader.read(base, prog.xlated_len) if code else b""
    except ReadError as e:
        yield 0, DISASM_GRID.row(Address=base, Offset="", Bytes="", Target="", Image="xlated",
                                 Instruction=f"(xlated instructions unreadable: {e.reason})")
        return
    namer = bpfinsns.Namer(bk)
    for k, (index, text, target) in enumerate(bpfinsns.disassemble(code, namer, map_namer(bk))):
        if k >= max_insns:
            yield 0, DISASM_GRID.row(Address=0, Offset="", Bytes="", Target="", Image="xlated",
                                     Instruction="(stopped at --max-insns)")
            return
        width = 16 if raw[8 * index] == 0x18 else 8
        yield 0, DISASM_GRID.row(Address=base + 8 * index, Offset=f"{prog.name}:{index}",
                                 Bytes=raw[8 * index:8 * index + width].hex(), Instruction=text,
                                 Target=target, Image="xlated")
