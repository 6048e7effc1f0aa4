"""Cross-view of BPF objects: reachable from the kernel's hooks, links, fds, pins, map slots or
the BPF kallsyms list, but absent from their ID registry.

``bpftool`` and most tools list BPF objects from ``prog_idr``/``map_idr``/``link_idr``; an object
unlinked from its IDR keeps running wherever it is attached. This module gathers every object
reference it can reach another way (:func:`references`) and reports those whose address is not
in the registry (:func:`hidden`), each with the paths by which it was found:

- links (``link_idr``): ``link->prog``, the maps a link holds (struct_ops, sockmap, iter);
- hooks (``bpf.hooks``: cgroups, devices, netns, trampolines, trace/perf events, struct_ops,
  sockmap, prog_array slots), their programs and links;
- fds of every process (``bpf.fds``) and bpffs pins (``bpf.bpffs``); a link held that way
  brings its program;
- map slots: ``prog_array`` programs, ``array_of_maps``/``hash_of_maps`` inner maps; programs'
  ``aux->used_maps``;
- ``bpf_kallsyms``: every ``struct bpf_ksym`` of a program (``ksym.prog``) is embedded in a
  ``bpf_prog_aux``; a subprogram's leads to its main program (``aux->main_prog_aux``).

Objects found only through other hidden objects are followed too (bounded rounds). An address
that does not hold a plausible object (``aux->prog`` not pointing back, unreadable) is reported
with that reason rather than dropped. No Volatility import.
"""

from dataclasses import dataclass, field

from ..core import ReadError, Record
from ..kds import DamageLog, list_entries
from . import progs as bpfprogs
from .hooks import map_slots
from .links import LinkDecoder

MAX_ROUNDS = 4
MAX_KSYMS = 1 << 17
MAX_VIA = 8                 # paths kept per object


@dataclass
class Found:
    kind: str               # prog, map, link
    kva: int
    via: list = field(default_factory=list)
    id: int = -1
    name: str = ""
    type_name: str = ""
    error: str = ""


class References:
    """(kind, address) -> paths by which it was reached."""

    def __init__(self):
        self.refs = {}
        self.count = 0

    def add(self, kind, kva, via):
        if not kva:
            return
        self.count += 1
        paths = self.refs.setdefault((kind, kva), [])
        if len(paths) < MAX_VIA and via not in paths:
            paths.append(via)

    def __iter__(self):
        return iter(self.refs.items())


def kallsyms_progs(kernel, damage=None):
    """(program address, ksym name) of every program ksym on ``bpf_kallsyms``."""
    damage = damage if damage is not None else DamageLog()
    reader, layout = kernel.reader, kernel.layout
    head = kernel.symbol("bpf_kallsyms")
    if not head or not layout.has("bpf_ksym", "lnode") or not layout.has("bpf_prog_aux", "ksym"):
        return
    aux_off = layout.offset("bpf_prog_aux", "ksym")
    has_main = layout.has("bpf_prog_aux", "main_prog_aux")
    for ksym in list_entries(reader, layout, head, "bpf_ksym", "lnode", limit=MAX_KSYMS,
                             damage=damage, what="bpf_ksym (bpf_kallsyms)"):
        try:
            k = Record(reader, layout, "bpf_ksym", ksym, ("prog", "name"))
            if not k.int("prog", 1):
                continue            # trampolines, dispatchers, struct_ops stubs
            aux = ksym - aux_off
            a = Record(reader, layout, "bpf_prog_aux", aux, ("prog", "main_prog_aux", "func_idx"))
            prog = a.int("prog")
            main = a.int("main_prog_aux", 0) if has_main else 0
            if main and main != aux:
                prog = reader.ptr(main + layout.offset("bpf_prog_aux", "prog"))
            elif not has_main and a.int("func_idx", 0):
                continue            # a subprogram, and no way to its main program
        except ReadError as e:
            damage.add("bpf_ksym", ksym, f"unreadable ({e.reason})")
            continue
        yield prog, k.str("name")


def references(kernel, links=(), attachments=(), fds=(), pins=(), damage=None, kallsyms=True):
    """Every program, map and link reference reachable from the given views and the kernel's
    map slots, used-map lists and BPF kallsyms."""
    damage = damage if damage is not None else DamageLog()
    refs = References()
    for link in links:
        refs.add("prog", link.prog_kva, f"link {link.id} ({link.type_name})")
        for m in link.maps:
            refs.add("map", m, f"link {link.id} ({link.type_name})")
    for a in attachments:
        where = f"{a.hook} {a.target} via {a.via}".strip()
        refs.add("prog", a.prog_kva, where)
        if a.link_kva > 0:
            refs.add("link", a.link_kva, where)
    for f in fds:
        if f.kind in ("prog", "map", "link"):
            refs.add(f.kind, f.obj, f"fd {f.fd} of pid {f.pid} ({f.comm})")
    for p in pins:
        refs.add(p.kind, p.obj, f"pin {p.path}")
    if kallsyms:
        for prog, name in kallsyms_progs(kernel, damage):
            refs.add("prog", prog, f"bpf_kallsyms {name}")
    for p in kernel.progs:
        for m in p.used_map_kvas:
            refs.add("map", m, f"used by prog {p.id} ({p.name})")
    for m in kernel.maps:
        _map_refs(kernel, m, f"map {m.id} ({m.name})", refs, damage)
    return refs


def _map_refs(kernel, m, where, refs, damage):
    if m.type_name == "prog_array":
        for i, p in map_slots(kernel.reader, kernel.layout, m, damage):
            refs.add("prog", p, f"{where} slot {i}")
    elif m.type_name == "array_of_maps":
        for i, inner in map_slots(kernel.reader, kernel.layout, m, damage):
            refs.add("map", inner, f"{where} slot {i}")
    elif m.type_name == "hash_of_maps":
        from .values import ValueError_, htab_entries

        try:
            for e in htab_entries(kernel.reader, kernel.layout, _as_pointer_values(m)):
                inner = int.from_bytes((e.value or b"")[:8], "little")
                refs.add("map", inner, f"{where} key {e.key.hex()}")
        except (ValueError_, ReadError) as e:
            damage.add("hash_of_maps", m.kva, str(e))


def _as_pointer_values(m):
    """A hash_of_maps stores the inner map's address where its 4-byte value would be."""
    import copy

    c = copy.copy(m)
    c.value_size = 8
    return c


def hidden(kernel, refs, links=(), damage=None):
    """:class:`Found` objects of ``refs`` whose address is in no registry (and what they lead
    to, up to MAX_ROUNDS rounds). ``links`` None: the link registry could not be read, links
    are not judged (their programs and maps still are)."""
    damage = damage if damage is not None else DamageLog()
    known = {"prog": set(kernel.prog_by_kva), "map": set(kernel.map_by_kva),
             "link": {link.kva for link in links or ()}}
    if links is None:
        known["link"] = _Everything()
    dec = LinkDecoder(kernel)
    out = {}
    pending = [(k, v) for k, v in refs if k[1] not in known[k[0]]]
    for _ in range(MAX_ROUNDS):
        if not pending:
            break
        more = References()
        for (kind, kva), via in pending:
            if (kind, kva) in out:
                continue
            f = out[(kind, kva)] = _describe(kernel, dec, kind, kva, via)
            _follow(kernel, dec, f, more, damage)
        pending = [(k, v) for k, v in more if k[1] not in known[k[0]] and k not in out]
    return sorted(out.values(), key=lambda f: (f.kind, f.id, f.kva))


class _Everything:
    """A registry that holds every address (one that could not be read is not judged)."""

    def __contains__(self, _item):
        return True


def _describe(kernel, dec, kind, kva, via):
    f = Found(kind, kva, list(via))
    reader, layout = kernel.reader, kernel.layout
    if kind == "prog":
        p = bpfprogs.read_prog(reader, layout, kva, type_names=kernel.prog_type_names)
        f.id, f.name, f.type_name, f.error = p.id, p.name, p.type_name, p.error or ""
        if not p.error:
            try:
                back = reader.ptr(p.aux_kva + layout.offset("bpf_prog_aux", "prog"))
                if back != kva:
                    f.error = f"aux->prog is {back:#x}: not a live bpf_prog (or a subprogram)"
            except ReadError as e:
                f.error = f"aux unreadable: {e.reason}"
    elif kind == "map":
        from .maps import read_map

        m = read_map(reader, layout, kva, type_names=kernel.map_type_names)
        f.id, f.name, f.type_name, f.error = m.id, m.name, m.type_name, m.error or ""
    else:
        link = dec.read(kva)
        f.id, f.type_name, f.error = link.id, link.type_name, link.error or ""
        f.name = link.target
    return f


def _follow(kernel, dec, f, more, damage):
    """What a hidden object leads to: a link's program and maps, a program's maps, a map's
    slots."""
    where = f"hidden {f.kind} at {f.kva:#x}"
    if f.kind == "link":
        link = dec.read(f.kva)
        more.add("prog", link.prog_kva, where)
        for m in link.maps:
            more.add("map", m, where)
    elif f.kind == "prog":
        p = bpfprogs.read_prog(kernel.reader, kernel.layout, f.kva)
        for m in p.used_map_kvas:
            more.add("map", m, where)
    elif f.kind == "map" and not f.error:
        from .maps import read_map

        _map_refs(kernel, read_map(kernel.reader, kernel.layout, f.kva,
                                   type_names=kernel.map_type_names), where, more, damage)
