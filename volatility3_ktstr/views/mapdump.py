"""Rows of ``linux.ktstr.mapdump``: the values of BPF maps, like `bpftool map dump`.

Walks ARRAY (``.bss``/``.data``/``.rodata`` rendered variable by variable from their DATASEC),
PERCPU_ARRAY, HASH, LRU_HASH, PERCPU_HASH, LRU_PERCPU_HASH and STRUCT_OPS (the registered ops
value, rendered with the kernel's BTF; function slots name the BPF program behind them), and
(``bpf.mapkinds``) LPM_TRIE (prefixes), QUEUE/STACK (in pop order), BLOOM_FILTER (parameters
and bits), PROG_ARRAY/ARRAY_OF_MAPS/HASH_OF_MAPS/PERF_EVENT_ARRAY/CGROUP_ARRAY (what each slot
holds, by id), RINGBUF/USER_RINGBUF (the positions, then every unconsumed record),
DEVMAP/DEVMAP_HASH/CPUMAP/XSKMAP (devices, CPUs, AF_XDP sockets and their programs),
STACK_TRACE (instruction pointers with symbols), SOCKMAP/SOCKHASH (the sockets held),
REUSEPORT_SOCKARRAY (each slot's socket, its cookie as the value, addresses and the process
holding it), CGROUP_STORAGE/PERCPU_CGROUP_STORAGE (each cgroup's element keyed by cgroup id and
attach type; per CPU like the other per-CPU maps), RHASH (keys and values, as hashes),
INSN_ARRAY (each instruction's original/xlated/jitted offsets and address). By choice, local
storage and arenas are left to their own plugins: those get one row saying why. Select maps
with ``--id`` / ``--name`` (either matches; all maps when neither is given).

Rows (one per element; per-CPU maps get one child row per CPU):

- ``MapId``, ``MapName``, ``MapType``; ``Index`` (array index, or the element's position in
  the hash walk); ``Cpu`` (per-CPU child rows; N/A otherwise);
- ``Key``, ``Value``: compact one-line text of the typed values (hex bytes without BTF);
- ``Formatted``: a JSON string on element rows holding what ``bpftool -j map dump`` prints for
  the element: ``{"key": ["0x00", ...], "value": [...], "formatted": {"key": K, "value": V}}``,
  per-CPU ``{"key": [...], "values": [{"cpu": 0, "value": [...]}, ...], "formatted": {"key": K,
  "values": [{"cpu": 0, "value": V}, ...]}}``. ``formatted`` is absent when the map has no
  usable BTF (as with bpftool). Typed values follow volatility3_ktstr.render (pointers as
  "0x..." strings, enums by name, char arrays as strings, cpumasks as CPU lists);
  STRUCT_OPS function slots are ``{"prog_id": N, "prog": name, "ptr": "0x..."}``.
- ``Error``: why an element, a part of the walk, or a whole map could not be shown. A map
  that is cut at ``--max-entries`` ends with a row saying how many were left out; a map with
  no elements has one row with Value "(no elements)" and Index -1.
"""

import json
import struct
from typing import List, Optional

from .. import render as R
from ..bpf import disasm
from ..bpf import mapkinds as mk
from ..bpf import values as bv
from ..btf import Kind
from ..core import LayoutError, ReadError, read_int
from ..errors import KtstrError
from ..kds import DamageLog
from . import Grid
from . import Kernel, Rows, inventory
from .common import select_maps

GRID = Grid(("MapId", int), ("MapName", str), ("MapType", str), ("Index", int), ("Cpu", int),
            ("Key", str), ("Value", str), ("Formatted", str), ("Error", str), note="Error")

NOT_WALKED = {
    "task_storage": "local storage: elements live with their owners (see the local storage plugin)",
    "inode_storage": "local storage: elements live with their owners (see the local storage plugin)",
    "sk_storage": "local storage: elements live with their owners (see the local storage plugin)",
    "cgrp_storage": "local storage: elements live with their owners (see the local storage plugin)",
    "arena": "arena: pages, not elements (see the arena plugin)",
}
TEXT_MAX = 4096
VALUE_KINDS = ("queue", "stack", "ringbuf", "user_ringbuf", "lpm_trie")


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _hex_text(data):
    return data.hex(" ") if data is not None else "-"


# --- rendering helpers --------------------------------------------------------------

def _row(m, index, cpu, key, value, formatted, error, level=0):
    return level, GRID.row(MapId=m.id, MapName=m.name, MapType=m.type_name, Index=index, Cpu=cpu,
                           Key=key, Value=value, Formatted=formatted, Error=error or "")

def map_btf(kctx, m):
    """(btf, problem): the map's program BTF, or None with the reason."""
    if not m.btf_kva or not (m.btf_value_type_id or m.btf_key_type_id):
        return None, None
    try:
        return kctx.btf_at(m.btf_kva), None
    except KtstrError as e:
        return None, f"no typed view: {e}"

def _typed(btf, type_id, data):
    if btf is None or not type_id or data is None:
        return None
    try:
        return R.render(btf, type_id, data)
    except (ValueError, KeyError, IndexError, RecursionError, struct.error) as e:
        # A BTF the renderer trips on costs this value its typed view, not the run.
        return {"__unrendered__": f"{type(e).__name__}: {e}", "hex": R.hex_list(data)}

# --- per map type -------------------------------------------------------------------

def elements(kctx, m, limit):
    btf, problem = map_btf(kctx, m)
    info = bv.WalkInfo()
    percpu = m.type_name in bv.PERCPU_TYPES or m.type_name == "percpu_cgroup_storage"
    offsets = kctx.per_cpu_offsets() if percpu else None
    strings = btf is None and m.type_name == "array" and ".rodata.str" in m.name
    if m.type_name in mk.CGROUP_STORAGE:
        entries = mk.cgroup_storage_entries(kctx.reader, kctx.layout, m, offsets, limit, info)
    elif m.type_name == "rhash":
        entries = mk.rhash_entries(kctx.reader, kctx.layout, m, limit, info)
    else:
        entries = bv.iter_entries(kctx.reader, kctx.layout, m, offsets, limit, info)
    for e in entries:
        if btf is not None and m.btf_key_type_id:
            key_v = _typed(btf, m.btf_key_type_id, e.key)
        elif m.type_name in ("array", "percpu_array"):
            key_v = e.index
        else:
            key_v = None
        key_text = R.render_text(key_v, TEXT_MAX) if key_v is not None else _hex_text(e.key)
        shaped = {"key": R.hex_list(e.key or b"")}
        errors = [x for x in (e.error, problem) if x]
        if e.percpu is None:
            if e.value is not None:
                shaped["value"] = R.hex_list(e.value)
            val_v = _typed(btf, m.btf_value_type_id, e.value)
            if strings and e.value is not None:
                # A string-literal section without BTF: its strings (ktstr does the same).
                val_v = [s.decode("ascii", "backslashreplace") for s in e.value.split(b"\0") if s]
            if val_v is not None:
                shaped["formatted"] = {"key": key_v, "value": val_v}
                val_text = R.render_text(val_v, TEXT_MAX)
            else:
                val_text = _hex_text(e.value)
            yield _row(m, e.index, None, key_text, val_text, _dumps(shaped), "; ".join(errors))
            continue
        shaped["values"] = [{"cpu": c, "value": R.hex_list(v) if v is not None else None}
                            for c, v in e.percpu]
        typed = [{"cpu": c, "value": _typed(btf, m.btf_value_type_id, v)} for c, v in e.percpu]
        if btf is not None and m.btf_value_type_id:
            shaped["formatted"] = {"key": key_v, "values": typed}
        yield _row(m, e.index, None, key_text, f"{len(e.percpu)} CPUs", _dumps(shaped),
                        "; ".join(errors))
        for (cpu, raw), t in zip(e.percpu, typed):
            if raw is None:
                yield _row(m, e.index, cpu, key_text, "-", "", "not readable for this CPU", 1)
                continue
            text = R.render_text(t["value"], TEXT_MAX) if t["value"] is not None else _hex_text(raw)
            yield _row(m, e.index, cpu, key_text, text, "", "", 1)
    if not info.shown and not info.skipped:
        # Say so: an empty map must not look like an unsupported one.
        yield _row(m, -1, None, "", "(no elements)", "", "")
    for addr, reason in info.skipped:
        yield _row(m, -1, None, "", "", "", f"{reason} (at {addr:#x})")
    if info.truncated:
        more = f"{info.total - info.shown} more" if info.total > info.shown else "more"
        yield _row(m, -1, None, "", "", "", f"{more} elements not shown (--max-entries {limit})")

def _describer(kctx, m):
    """What a slot/entry of ``m`` holds, as (id, fields) for slots and fields for devices/CPUs."""
    from ..bpf.links import describe_perf_event, LinkDecoder
    from ..bpf.maps import read_map
    from ..bpf.progs import read_prog
    from ..walkers.owners import OwnerResolver

    bk = kctx.bpf_kernel()
    reader, layout = kctx.reader, kctx.layout

    def prog_fields(prog):
        if not prog:
            return {}
        p = read_prog(reader, layout, prog, type_names=bk.prog_type_names)
        return {"prog_id": p.id, "prog": p.name} if not p.error else {"prog": f"{prog:#x}", "error": p.error}

    def slot(ptr):
        t = m.type_name
        if t == "prog_array":
            f = prog_fields(ptr)
            return f.get("prog_id", 0), f
        if t == "array_of_maps":
            inner = read_map(reader, layout, ptr, type_names=bk.map_type_names)
            return inner.id, {"map_id": inner.id, "map": inner.name}
        if t == "perf_event_array":
            try:
                event = read_int(reader, layout, "bpf_event_entry", ptr, "event")
                _info, hook = describe_perf_event(LinkDecoder(bk), event, "perf_event")
                return 0, {"event": f"{hook.kind}:{hook.target}"}
            except (ReadError, LayoutError) as e:
                return 0, {"error": f"event unreadable ({e})"}
        if t == "cgroup_array":
            owner = OwnerResolver(reader, layout).resolve("cgroup", ptr)
            return getattr(owner, "ident", 0) or 0, {"cgroup": owner.name or f"{ptr:#x}"}
        return 0, {}

    def device(kind, what, prog):
        out = {}
        if kind == "dev" and what:
            try:
                d = LinkDecoder(bk).device(what)
                out.update(ifindex=d.ifindex, dev=d.name)
            except ReadError as e:
                out["error"] = f"net_device unreadable: {e.reason}"
        elif kind == "cpu":
            out["cpu"] = what
        out.update(prog_fields(prog))
        return out

    if m.type_name == "reuseport_sockarray":
        return _sock_describer(kctx)
    return slot if m.type_name in ("prog_array", "array_of_maps", "perf_event_array", "cgroup_array") \
        else device


def _sock_describer(kctx):
    """describe(sock) -> family/addresses and the process holding it (a socket fd of any task
    any list knows; "no process" when none does)."""
    from ..bpf import sockets as bsk
    from . import bpfobjects as objs

    owners = {}
    for f in objs.socket_scan(kctx)[0]:
        try:
            sk = read_int(kctx.reader, kctx.layout, "socket", f.obj, "sk") if f.obj else 0
        except ReadError:
            continue
        if sk:
            owners.setdefault(sk, f"pid {f.pid} {f.comm} fd {f.fd}")

    def describe(sk):
        s = bsk.describe_sock(kctx.reader, kctx.layout, sk)
        owner = owners.get(sk, "no process")
        out = {"socket": s.endpoint(), "owner": owner, "text": f"{s.endpoint()} ({owner})"}
        if s.error:
            out["error"] = s.error
        return out

    return describe


def other_kinds(kctx, m, limit):
    """Rows of the map types bpf.mapkinds walks (and hash_of_maps: inner maps by id)."""
    info = bv.WalkInfo()
    btf, problem = map_btf(kctx, m)
    if m.type_name == "hash_of_maps":
        entries = _hash_of_maps(kctx, m, limit, info)
    elif m.type_name in ("sockmap", "sockhash"):
        entries = _sock_members(kctx, m, limit, info)
    elif m.type_name in mk.DESCRIBED:
        entries = mk.DESCRIBED[m.type_name](kctx.reader, kctx.layout, m, limit, info,
                                            describe=_describer(kctx, m))
    else:
        entries = mk.WALKERS[m.type_name](kctx.reader, kctx.layout, m, limit, info)
    for e in entries:
        fmt = dict(e.formatted or {})
        if m.type_name == "stack_trace":
            fmt["symbols"] = [kctx.symbol_near(ip) for ip in fmt.get("ips", ())]
            fmt["ips"] = [f"{ip:#x}" for ip in fmt.get("ips", ())]
        key_v = _typed(btf, m.btf_key_type_id, e.key) if e.key else None
        val_v = _typed(btf, m.btf_value_type_id, e.value)
        if val_v is not None:
            fmt["value"] = val_v
        shaped = {"key": R.hex_list(e.key or b"")}
        if e.value is not None and m.type_name != "bloom_filter":
            shaped["value"] = R.hex_list(e.value)
        shaped["formatted"] = {"key": key_v if key_v is not None else fmt.pop("key", None), "value": fmt}
        key_text = (R.render_text(key_v, TEXT_MAX) if key_v is not None
                    else fmt.get("prefix") or (str(shaped["formatted"]["key"])
                                               if shaped["formatted"]["key"] is not None else _hex_text(e.key)))
        if e.text:
            text = e.text
        elif m.type_name in VALUE_KINDS:
            text = R.render_text(val_v, TEXT_MAX) if val_v is not None else _hex_text(e.value)
        else:
            text = R.render_text(fmt, TEXT_MAX)
        yield _row(m, e.index, None, key_text, text, _dumps(shaped),
                   "; ".join(x for x in (e.error, problem) if x))
    if not info.shown and not info.skipped and m.type_name not in ("ringbuf", "user_ringbuf"):
        yield _row(m, -1, None, "", "(no elements)", "", "")
    for addr, reason in info.skipped:
        yield _row(m, -1, None, "", "", "", f"{reason} (at {addr:#x})")
    if info.truncated:
        more = f"{info.total - info.shown} more" if info.total > info.shown else "more"
        yield _row(m, -1, None, "", "", "", f"{more} elements not shown (--max-entries {limit})")


def _sock_members(kctx, m, limit, info):
    """The sockets a sockmap/sockhash holds (slot or key, family, addresses)."""
    from ..bpf import sockets as bsk

    damage = DamageLog()
    n = 0
    for key, sk in bsk.sockmap_socks(kctx.reader, kctx.layout, m, damage):
        if n >= limit:
            info.truncated = True
            break
        s = bsk.describe_sock(kctx.reader, kctx.layout, sk)
        keyb = bytes.fromhex(key) if m.type_name == "sockhash" else int(key).to_bytes(4, "little")
        yield bv.Entry(index=n, key=keyb, value=None, kva=sk, text=s.endpoint(),
                       formatted={"sock": f"{sk:#x}", "socket": s.endpoint()}, error=s.error or None)
        n += 1
    info.total = info.shown = n
    info.skipped += [(d.addr, d.reason) for d in damage]


def _hash_of_maps(kctx, m, limit, info):
    """A hash_of_maps stores the inner map's address where its 4-byte value would be."""
    import copy

    from ..bpf.maps import read_map

    c = copy.copy(m)
    c.value_size = kctx.reader.pointer_size
    bk = kctx.bpf_kernel()
    for e in bv.htab_entries(kctx.reader, kctx.layout, c, None, limit, info):
        inner = int.from_bytes((e.value or b"")[:c.value_size], "little")
        im = read_map(kctx.reader, kctx.layout, inner, type_names=bk.map_type_names) if inner else None
        e.formatted = {"map_id": im.id if im else 0, "map": im.name if im else ""}
        e.value = (im.id if im else 0).to_bytes(4, "little")
        yield e


def struct_ops(kctx, m, namer, progs_by_id):
    kval, uval, kaddr = bv.struct_ops_value(kctx.reader, kctx.layout, m)
    shaped = {"key": R.hex_list(b"\0\0\0\0"), "value": R.hex_list(kval)}
    kbtf = kctx.kernel_btf()
    tid = m.btf_vmlinux_value_type_id
    if not tid:
        raise bv.ValueError_("struct_ops map without btf_vmlinux_value_type_id")
    value = R.render(kbtf, tid, kval)
    try:
        name_ops(kbtf, tid, kval, uval, value, namer, progs_by_id)
    except KeyError:   # the kernel BTF read from the dump lacks the type (damaged btf_vmlinux)
        pass
    shaped["formatted"] = {"key": 0, "value": value}
    yield _row(m, 0, None, "0", R.render_text(value, TEXT_MAX), _dumps(shaped),
                    "" if uval is not None else "uvalue unreadable: program ids from addresses only")

def name_ops(kbtf, tid, kval, uval, value, namer, progs_by_id):
    """Replace function pointers of the ops struct (``data``) by the program behind them:
    ``uvalue`` holds the program id in each function slot (what bpftool shows)."""
    wrapper = kbtf.resolve(tid)
    if wrapper is None or not isinstance(value, dict) or not isinstance(value.get("data"), dict):
        return
    dm = wrapper.member("data")
    ops = kbtf.resolve(dm.type) if dm is not None else None
    if ops is None or ops.kind != Kind.STRUCT:
        return
    base = dm.bit_offset // 8
    for mem in ops.members:
        t = kbtf.resolve(mem.type)
        if t is None or t.kind != Kind.PTR:
            continue
        target = kbtf.resolve(t.type)
        if target is None or target.kind != Kind.FUNC_PROTO:
            continue
        off = base + mem.bit_offset // 8
        ptr = int.from_bytes(kval[off:off + 8], "little")
        pid = int.from_bytes(uval[off:off + 8], "little") if uval is not None and len(uval) >= off + 8 else 0
        if not ptr and not pid:
            continue
        prog = progs_by_id.get(pid)
        entry = {"prog_id": pid, "prog": prog.name if prog else "", "ptr": R.Hex(f"{ptr:#x}")}
        if prog is None:
            entry["prog"] = namer.name(ptr) if ptr else ""
            if not pid:
                del entry["prog_id"]
        value["data"][mem.name] = entry

# --- main ---------------------------------------------------------------------------

def rows(kctx: Kernel, ids: Optional[List[int]] = None, names: Optional[List[str]] = None,
         limit: int = 4096) -> Rows:
    maps, missing = select_maps(inventory.maps(kctx), ids, names)
    for what in missing:
        yield 0, GRID.row(MapId=-1, MapName="", MapType="", Index=-1, Key="", Value="",
                          Formatted="", Error=f"no BPF map with {what}")
    namer = progs_by_id = None
    for m in maps:
        if m.error and m.type < 0:
            yield _row(m, -1, None, "", "", "", m.error)
            continue
        try:
            if m.type_name == "struct_ops":
                if namer is None:
                    progs = _progs(kctx)
                    namer = disasm.SymbolNamer(kctx.symbol_index(), progs)
                    progs_by_id = {p.id: p for p in progs}
                yield from struct_ops(kctx, m, namer, progs_by_id)
            elif m.type_name in bv.WALKABLE or m.type_name in mk.ELEMENT_KINDS:
                yield from elements(kctx, m, limit)
            elif m.type_name in mk.WALKERS or m.type_name in mk.DESCRIBED or m.type_name in (
                    "hash_of_maps", "sockmap", "sockhash"):
                yield from other_kinds(kctx, m, limit)
            else:
                why = NOT_WALKED.get(m.type_name, f"map type {m.type_name} has no value walker")
                yield _row(m, -1, None, "", "", "", f"not dumped: {why}")
        except (bv.ValueError_, LayoutError, ReadError, KtstrError) as e:
            yield _row(m, -1, None, "", "", "", f"cannot walk: {e}")
        found = inventory.off_registry_note(kctx, "map", m.kva)
        if found:
            yield _row(m, -1, None, "", "", "", found)
    if not maps:
        yield 0, GRID.row(MapId=-1, MapName="", MapType="", Index=-1, Key="", Value="",
                          Formatted="", Error=f"no BPF map to dump; {inventory.summary_of(kctx)}")
    for text in inventory.damage_texts(kctx):
        yield 0, GRID.row(MapId=-1, MapName="", MapType="", Index=-1, Key="", Value="",
                          Formatted="", Error=text)

def _progs(kctx):
    if kctx.symbol("prog_idr") is None:
        return []
    return inventory.progs(kctx)

