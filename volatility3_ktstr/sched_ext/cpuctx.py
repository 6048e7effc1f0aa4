"""The scheduler's own per-CPU context: what a BPF scheduler keeps for each CPU, found by the
shape of its maps and globals in its program BTF (never by a variable's name), read from
kernel memory, one raw value per CPU (the views type and render it with that BTF).

The scheduler's BPF objects are the program BTFs of the struct_ops maps holding a
``sched_ext_ops`` (``SchedExt.ops_maps``: loaded, or kept by a loader after the exit). In each,
these are taken as per-CPU context:

- **per-CPU maps**: ``BPF_MAP_TYPE_PERCPU_ARRAY`` / ``PERCPU_HASH`` / ``LRU_PERCPU_HASH`` with a
  BTF value type: the kernel keeps one copy of every value per possible CPU (bpf/values.py reads
  them); at most :data:`MAX_MAP_KEYS` elements of a map.
- **CPU-indexed arrays**: an array of structs (or unions) whose element count is a power of two,
  at least :data:`MIN_CPU_CAP` and at least the possible CPUs: schedulers size such arrays by a
  compile-time CPU maximum (``MAX_CPUS``, ``NR_CPUS``), never by the running machine. Looked for
  in ARRAY maps whose value is such a struct (the map's index is the CPU), in the global
  variables of the section maps (``.bss``, ``.data``, ...; a struct variable's members are
  searched :data:`MAX_MEMBER_DEPTH` deep, ``qa.cpu_ctxs``), and in the arena globals (the
  ``__arena`` variables: the ``.addr_space.1`` DATASEC libbpf places at the end of the arena,
  ``walkers.arena.globals_address``). The shape is then checked against the values: the
  elements past the possible CPUs must all be equal (nothing writes the slots of CPUs that do
  not exist), else the array is rejected as indexed by something else; arrays of arrays and of
  scalars (bitmaps, lookup tables) are not context and are not looked at.

Every read is bounded (:data:`MAX_SOURCES`, :data:`MAX_CHECK_BYTES`); what cannot be read is a
value with an ``error`` or a Damage, never an exception. No Volatility import.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from ..bpf import values as bv
from ..btf import Kind
from ..core import Layout, LayoutError, Reader
from ..kds import DamageLog
from ..walkers import arena as arenaw
from ..walkers.sections import section_maps

MIN_CPU_CAP = 64              # the smallest array count taken as a CPU maximum
MAX_SOURCES = 32              # per-CPU context sources kept over all the scheduler's objects
MAX_MAP_KEYS = 8              # elements of one per-CPU map read (each has a value per CPU)
MAX_MEMBER_DEPTH = 2          # struct globals: members searched this deep for arrays
MAX_CHECK_BYTES = 4 << 20     # of an array's elements past the possible CPUs, compared
MAX_VARS = 4096               # variables of one object looked at
CHUNK = 1 << 20               # bytes per read of an array's tail

PER_CPU_MAP_TYPES = bv.PERCPU_TYPES
_MAP_TYPE_TEXT = {"percpu_array": "BPF_MAP_TYPE_PERCPU_ARRAY", "percpu_hash": "BPF_MAP_TYPE_PERCPU_HASH",
                  "lru_percpu_hash": "BPF_MAP_TYPE_LRU_PERCPU_HASH"}


@dataclass
class CtxValue:
    """One CPU's value of a source: ``raw`` bytes of the source's type, or ``error``."""

    cpu: int
    label: str                    # "qa.cpu_ctxs[1]", "cpu_ctx_stor[0]"
    raw: bytes | None
    addr: int = 0                 # kernel address of the value (0: unknown)
    error: str | None = None


@dataclass
class CtxSource:
    """A map or variable taken as the scheduler's per-CPU context."""

    name: str                     # "qa.cpu_ctxs", "map cpu_ctx_stor"
    kind: str                     # "per-CPU map", "array map", "global", "arena global"
    owner: str                    # the BPF object, by its struct_ops map(s)
    btf: Any                      # the program BTF typing the values
    type_id: int                  # the type of one CPU's value
    why: str                      # the shape (and the value check) that made it per-CPU context
    addr: int = 0                 # kernel address of the map or of element 0
    map_id: int | None = None
    values: list[CtxValue] = field(default_factory=list)


@dataclass
class CpuContexts:
    sources: list[CtxSource] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)       # the scheduler objects looked at
    maps_seen: int = 0                                     # the objects' maps looked at
    vars_seen: int = 0                                     # ... and their global variables
    rejected: list[tuple[str, str]] = field(default_factory=list)   # (candidate, why not)
    damage: DamageLog = field(default_factory=DamageLog)

    def for_cpu(self, cpu: int) -> Iterator[tuple[CtxSource, CtxValue]]:
        for s in self.sources:
            for v in s.values:
                if v.cpu == cpu:
                    yield s, v


def is_cpu_cap(count: int, nr_cpus: int) -> bool:
    """An array count that is a CPU maximum: a power of two, >= MIN_CPU_CAP, >= the CPUs."""
    return count >= max(nr_cpus, MIN_CPU_CAP) and count & (count - 1) == 0


def _struct_elem(btf, tid):
    """(element type id, count) when ``tid`` is an array of structs/unions, else None."""
    t = btf.resolve(tid)
    if t is None or t.kind != Kind.ARRAY or not t.nelems:
        return None
    elem = btf.resolve(t.type)
    if elem is None or elem.kind not in (Kind.STRUCT, Kind.UNION) or not elem.size:
        return None
    return t.type, t.nelems


def array_candidates(btf, tid: int, name: str, depth: int = MAX_MEMBER_DEPTH
                     ) -> Iterator[tuple[str, int, int, int]]:
    """(path, byte offset, element type id, count) of every array of structs at ``tid`` or among
    its members (bitfield-free, ``depth`` levels of structs), ``path`` from ``name``."""
    found = _struct_elem(btf, tid)
    if found is not None:
        yield name, 0, found[0], found[1]
        return
    t = btf.resolve(tid)
    if depth <= 0 or t is None or t.kind not in (Kind.STRUCT, Kind.UNION):
        return
    for m in t.members:
        if m.bit_offset % 8 or m.bit_size:
            continue
        sub = f"{name}.{m.name}" if m.name else name
        for path, off, elem, count in array_candidates(btf, m.type, sub, depth - 1):
            yield path, m.bit_offset // 8 + off, elem, count


def _uniform(reader: Reader, addr: int, size: int, count: int) -> tuple[bool | None, str]:
    """Whether the ``count`` elements of ``size`` bytes at ``addr`` are all equal: (True, text of
    the common value), (False, the index of the first that differs), (None, why unchecked). At
    most MAX_CHECK_BYTES are compared."""
    if count <= 0:
        return True, "none"
    n = min(count, max(1, MAX_CHECK_BYTES // size))
    first = reader.try_read(addr, size)
    if first is None:
        return None, f"unreadable at {addr:#x}"
    per = max(1, CHUNK // size)
    i = 0
    while i < n:
        k = min(per, n - i)
        raw = reader.try_read(addr + i * size, k * size)
        if raw is None:
            return None, f"unreadable at {addr + i * size:#x}"
        if raw != first * k:
            j = next(j for j in range(k) if raw[j * size:(j + 1) * size] != first)
            return False, str(i + j)
        i += k
    what = "zero" if not any(first) else "equal"
    return True, what + ("" if n == count else f" (first {n} of {count} compared)")


def _head_values(reader: Reader, addr: int, size: int, nr_cpus: int, name: str,
                 to_kernel: Callable[[int], int] = lambda a: a) -> list[CtxValue]:
    """The first ``nr_cpus`` elements, one read (element by element when that fails)."""
    kva = to_kernel(addr)
    raw = reader.try_read(kva, size * nr_cpus)
    out = []
    for c in range(nr_cpus):
        a = kva + c * size
        value = raw[c * size:(c + 1) * size] if raw is not None else reader.try_read(a, size)
        out.append(CtxValue(c, f"{name}[{c}]", value, a,
                            None if value is not None else f"unreadable at {a:#x}"))
    return out


class _Finder:
    def __init__(self, reader: Reader, layout: Layout, nr_cpus: int, offsets: list[int],
                 out: CpuContexts):
        self.reader, self.layout, self.nr_cpus, self.offsets, self.out = reader, layout, nr_cpus, offsets, out

    def full(self) -> bool:
        return len(self.out.sources) >= MAX_SOURCES

    def array(self, owner, btf, kind, path, base, elem, count, to_kernel=lambda a: a,
              where="", map_id=None):
        """A CPU-indexed array candidate at ``base`` (addresses through ``to_kernel``)."""
        if not is_cpu_cap(count, self.nr_cpus) or self.full():
            return
        size = btf.size_of(elem)
        tname = btf.type_name(elem)
        ok, how = _uniform(self.reader, to_kernel(base + self.nr_cpus * size), size, count - self.nr_cpus)
        if ok is False:
            self.out.rejected.append((path, f"{kind} {tname}[{count}]: element "
                                            f"{self.nr_cpus + int(how)} differs past the "
                                            f"{self.nr_cpus} possible CPUs, so not indexed by CPU"))
            return
        check = (f"elements {self.nr_cpus}..{count - 1} all {how}" if ok else f"elements past the "
                 f"possible CPUs not checked ({how})") if count > self.nr_cpus else \
            "no element past the possible CPUs"
        why = (f"{kind} of {owner}{where}, {tname}[{count}]: an array of structs sized by a CPU "
               f"maximum (a power of two >= {MIN_CPU_CAP}, >= {self.nr_cpus} possible CPUs); {check}")
        src = CtxSource(path, kind, owner, btf, elem, why, to_kernel(base), map_id)
        src.values = _head_values(self.reader, base, size, self.nr_cpus, path, to_kernel)
        self.out.sources.append(src)

    def percpu_map(self, owner, btf, m):
        if self.full():
            return
        info = bv.WalkInfo()
        src = CtxSource(f"map {m.name}", "per-CPU map", owner, btf, m.btf_value_type_id, "",
                        m.kva, m.id)
        try:
            entries = list(bv.iter_entries(self.reader, self.layout, m, self.offsets, MAX_MAP_KEYS, info))
        except (bv.ValueError_, LayoutError) as e:
            self.out.damage.add(f"map {m.id} {m.name}", m.kva, f"per-CPU values: {e}")
            return
        shown = (f"the first {len(entries)} of {info.total} elements" if info.truncated
                 else f"{len(entries)} element(s)")
        src.why = (f"{_MAP_TYPE_TEXT.get(m.type_name, m.type_name)} of {owner}: the kernel keeps "
                   f"one value per possible CPU; {shown}")
        for entry in entries:
            label = f"{m.name}[{_key_text(m, entry)}]"
            if entry.percpu is None:
                src.values.extend(CtxValue(c, label, None, 0, entry.error or "no value")
                                  for c in range(self.nr_cpus))
                continue
            for cpu, raw in entry.percpu:
                src.values.append(CtxValue(cpu, label, raw, 0, None if raw is not None
                                           else "not readable for this CPU"))
        self.out.sources.append(src)

    def array_map(self, owner, btf, m):
        """An ARRAY map (not a section map) whose value is a struct: the index is the CPU when
        max_entries is a CPU maximum."""
        t = btf.resolve(m.btf_value_type_id)
        if t is None or t.kind not in (Kind.STRUCT, Kind.UNION):
            return
        if not is_cpu_cap(m.max_entries, self.nr_cpus) or self.full():
            return
        try:
            entries = list(bv.array_entries(self.reader, self.layout, m,
                                            limit=max(self.nr_cpus, min(m.max_entries, MAX_CHECK_BYTES
                                                                        // max(1, m.value_size)))))
        except (bv.ValueError_, LayoutError) as e:
            self.out.damage.add(f"map {m.id} {m.name}", m.kva, f"values: {e}")
            return
        tail = [e.value for e in entries[self.nr_cpus:]]
        tname = btf.type_name(m.btf_value_type_id)
        if any(v is None for v in tail):
            check = "elements past the possible CPUs not checked (unreadable)"
        elif any(v != tail[0] for v in tail):
            i = next(i for i, v in enumerate(tail) if v != tail[0])
            self.out.rejected.append((f"map {m.name}", f"ARRAY of {tname}[{m.max_entries}]: element "
                                      f"{self.nr_cpus + i} differs past the {self.nr_cpus} possible "
                                      "CPUs, so not indexed by CPU"))
            return
        else:
            check = (f"elements {self.nr_cpus}..{m.max_entries - 1} all "
                     f"{'zero' if tail and not any(tail[0]) else 'equal'}") if tail else \
                "no element past the possible CPUs"
        why = (f"ARRAY map of {owner} with {tname} values and {m.max_entries} entries (a power of "
               f"two >= {MIN_CPU_CAP}, >= {self.nr_cpus} possible CPUs): indexed by CPU; {check}")
        src = CtxSource(f"map {m.name}", "array map", owner, btf, m.btf_value_type_id, why, m.kva, m.id)
        src.values = [CtxValue(e.index, f"{m.name}[{e.index}]", e.value, e.kva, e.error)
                      for e in entries[:self.nr_cpus]]
        self.out.sources.append(src)


def _key_text(m, e) -> str:
    if m.type_name == "percpu_array":
        return str(e.index)
    if e.key is not None and len(e.key) <= 8:
        return str(int.from_bytes(e.key, "little"))
    return e.key.hex() if e.key is not None else "?"


def _owner_name(maps, ops_names) -> str:
    """The BPF object's name as libbpf prefixes its section maps (``scx_qmap.bss``), with its
    struct_ops map(s)."""
    prefix = next((m.name.rsplit(".", 1)[0] for m in maps
                   if not m.name.startswith(".") and "." in m.name), None)
    ops = f"struct_ops {', '.join(ops_names)}"
    return f"{prefix} ({ops})" if prefix else ops


def find_cpu_contexts(reader: Reader, layout: Layout, maps: list, btf_at: Callable[[int], Any],
                      ops_maps: Iterable[Any], offsets: list[int],
                      arena_of: Callable[[int, list], tuple[Any, str]] | None = None) -> CpuContexts:
    """The per-CPU context of the schedulers whose struct_ops maps are ``ops_maps`` (BpfMap
    records), among ``maps`` (every BPF map). ``offsets``: ``__per_cpu_offset`` of each
    possible CPU; ``btf_at(kva)`` parses a program BTF; ``arena_of(btf kva, the object's
    maps)`` gives (ArenaInfo or None, how it was attributed) for arena globals."""
    out = CpuContexts()
    nr_cpus = len(offsets)
    if not nr_cpus:
        out.damage.add("per-CPU offsets", 0, "no possible CPU: __per_cpu_offset unreadable")
        return out
    f = _Finder(reader, layout, nr_cpus, offsets, out)
    by_btf: dict[int, list[str]] = {}
    for om in ops_maps:
        if om.btf_kva:
            by_btf.setdefault(om.btf_kva, []).append(om.name)
    value_off = None
    if layout.has("bpf_array", "value"):
        value_off = layout.offset("bpf_array", "value") - layout.offset("bpf_array", "map")
    for btf_kva, ops_names in by_btf.items():
        mine = [m for m in maps if m.btf_kva == btf_kva]
        owner = _owner_name(mine, ops_names)
        out.objects.append(owner)
        try:
            btf = btf_at(btf_kva)
        except Exception as e:   # noqa: BLE001 - a program BTF that does not parse: this object only
            out.damage.add(f"program BTF of {owner}", btf_kva, f"unreadable: {e}")
            continue
        sections = {m.kva for m, _b, _e in section_maps(mine, lambda _k: btf)}
        out.maps_seen += len(mine)
        for m in mine:
            if m.error or not m.btf_value_type_id:
                continue
            if m.type_name in PER_CPU_MAP_TYPES:
                f.percpu_map(owner, btf, m)
            elif m.type_name == "array" and m.kva not in sections:
                f.array_map(owner, btf, m)
        if value_off is not None:
            for m in mine:
                if m.kva not in sections:
                    continue
                base = m.kva + value_off
                variables = btf.datasec_vars(m.btf_value_type_id)[:MAX_VARS]
                out.vars_seen += len(variables)
                for name, tid, off, _size in variables:
                    for path, moff, elem, count in array_candidates(btf, tid, name):
                        f.array(owner, btf, "global", path, base + off + moff, elem, count,
                                where=f" in map {m.name}", map_id=m.id)
        arena_secs = [t for t in btf.own_types if t.kind == Kind.DATASEC
                       and t.name.startswith(".addr_space") and t.size]
        if not arena_secs:
            continue
        info, how = arena_of(btf_kva, mine) if arena_of is not None else (None, "no arena given")
        if info is None or not info.usable:
            out.damage.add(f"arena globals of {owner}", 0,
                           how if info is None else f"arena map {info.map_id}: {info.error}")
            continue
        for sec in arena_secs:
            start = arenaw.globals_address(info, sec.size)
            variables = btf.datasec_vars(sec.id)[:MAX_VARS]
            out.vars_seen += len(variables)
            for name, tid, off, _size in variables:
                for path, moff, elem, count in array_candidates(btf, tid, name):
                    f.array(owner, btf, "arena global", path, start + off + moff, elem, count,
                            to_kernel=info.to_kernel,
                            where=f" in arena map {info.map_id} at {start + off + moff:#x} ({how})",
                            map_id=info.map_id)
    return out
