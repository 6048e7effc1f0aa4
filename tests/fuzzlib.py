"""Mutation fuzzing of real dumps: every linux.ktstr plugin, in-process, on damaged memory.

A :class:`Session` opens one raw dump of $KTSTR_DUMPS with Volatility once (automagic, kernel
ISF) and constructs every ``linux.ktstr.*`` plugin on that context. The dump's FileLayer reads
go through an :class:`Overlay` (mutated pages, a truncation point), so a mutant costs only the
plugin runs, not a stacking and ISF load.

1. **Baseline.** Each plugin runs on the intact dump while reads are recorded with the walker
   that made them (``localstorage``, ``sdtalloc``, ``maps``, ``btf``, ``pagetable``, ...,
   from the call stack): the targets "where it hurts".
2. **Mutants** (:func:`make_mutant`, deterministic per seed): bit flips, a pointer swapped for
   another pointer the same walker read (valid but wrong), a pointer to its own struct
   (self-loop / cycle), a count or size made huge, a zeroed page, page-table entries pointing
   at their own table or past the end of memory, a dump truncated inside the data read.
3. **Checks** per mutant and plugin (:func:`check_mutant`): no exception but the documented
   one (a ``KtstrError``: one line, exit status 2), within a time bound, memory bounded, and
   nothing lost outside the damage: for the plugins with an entry model (:class:`EntryModel`:
   maps, progs, localstorage, sdtalloc) every baseline entry whose own bytes and access path
   (idr, map struct, bucket head, chain predecessors, tree descriptors) the mutant left intact
   is still reported.

Used by tests/test_fuzz_dumps.py (quick mode) and tools/fuzz_dumps.py (long mode, a table).
"""

import contextlib
import dataclasses
import gc
import io
import random
import resource
import signal
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

REPO = Path(__file__).resolve().parents[1]
PAGE = 4096
PLUGINS = ("arena", "localstorage", "mapdump", "maps", "progs", "scxstate", "scxtasks", "sdtalloc",
           "links", "bpffds", "bpfpins", "bpfhooks", "bpfhidden", "bpftriage", "bpfsockets",
           "stacks")
# Reads this large are scans (banner search, minimizer-style chunking), not structures.
MAX_TARGET_READ = 64 << 10
KINDS = ("bitflip", "ptr_other", "ptr_self", "huge", "zero_page", "truncate")
PT_KINDS = ("pt_zero", "pt_self", "pt_oob", "pt_bitflip")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class Hang(BaseException):
    """Raised by the alarm in a plugin run that exceeded its time bound (BaseException so that
    no ``except Exception`` in the code under test swallows it)."""


@dataclasses.dataclass
class Outcome:
    plugin: str
    status: str            # "ok", "error" (KtstrError: one line, exit 2), "crash", "hang"
    rows: list
    message: str = ""
    seconds: float = 0.0


@dataclasses.dataclass
class Mutant:
    seed: int
    kind: str
    category: str
    patches: List[Tuple[int, bytes]]       # (file offset, new bytes)
    truncate: Optional[int] = None          # file size after truncation
    where: str = ""

    def damaged(self) -> List[Tuple[int, int]]:
        """File ranges the mutant changed (a truncation: everything after the cut)."""
        out = [(off, len(data)) for off, data in self.patches]
        if self.truncate is not None:
            out.append((self.truncate, 1 << 62))
        return out

    def describe(self) -> str:
        what = f"truncated at {self.truncate:#x}" if self.truncate is not None else \
            ", ".join(f"{len(d)}B@{o:#x}" for o, d in self.patches[:4])
        return f"seed {self.seed} {self.kind} on {self.category} {self.where}: {what}"


# --- the overlay ------------------------------------------------------------------------------


class Overlay:
    """Mutated pages over a Volatility FileLayer, patched on the instance (this process only)."""

    def __init__(self, layer):
        from volatility3.framework import exceptions

        self.layer = layer
        self.pages: Dict[int, bytes] = {}
        self.truncate: Optional[int] = None
        self.recording: Optional[list] = None
        self._orig_read = layer.read
        self._orig_valid = layer.is_valid
        self._invalid = exceptions.InvalidAddressException
        layer.read = self.read
        layer.is_valid = self.is_valid

    def original(self, offset, length) -> bytes:
        return self._orig_read(offset, length, pad=True)

    def apply(self, mutant: Optional[Mutant]):
        self.pages = {}
        self.truncate = None
        if mutant is None:
            return
        for off, data in mutant.patches:
            pos = 0
            while pos < len(data):
                page = (off + pos) // PAGE
                start = (off + pos) - page * PAGE
                n = min(len(data) - pos, PAGE - start)
                buf = bytearray(self.pages.get(page) or self.original(page * PAGE, PAGE))
                buf[start:start + n] = data[pos:pos + n]
                self.pages[page] = bytes(buf)
                pos += n
        self.truncate = mutant.truncate

    def is_valid(self, offset, length=1):
        if self.truncate is not None and offset + length > self.truncate:
            return False
        return self._orig_valid(offset, length)

    def read(self, offset, length, pad=False):
        if self.recording is not None and length <= MAX_TARGET_READ:
            self.recording.append((offset, length, _category()))
        if self.truncate is not None and offset + length > self.truncate:
            if not pad:
                raise self._invalid(self.layer.name, max(offset, self.truncate),
                                    "beyond the end of the (truncated) dump")
            keep = max(0, self.truncate - offset)
            data = (self._orig_read(offset, keep, pad=True) if keep else b"") + bytes(length - keep)
        else:
            data = self._orig_read(offset, length, pad)
        if self.pages:
            first, last = offset // PAGE, (offset + max(length, 1) - 1) // PAGE
            hits = [p for p in self.pages if first <= p <= last]
            if hits:
                buf = bytearray(data)
                for p in hits:
                    a, b = max(offset, p * PAGE), min(offset + len(buf), (p + 1) * PAGE)
                    if a < b:
                        buf[a - offset:b - offset] = self.pages[p][a - p * PAGE:b - p * PAGE]
                data = bytes(buf)
        return data


_TABLE_FUNCS = frozenset({"_get_valid_table", "_table", "_translate_entry", "_walk"})
_CATEGORY_BY_FILE = {
    "kds/xarray.py": "idr", "bpf/maps.py": "maps", "bpf/progs.py": "progs", "bpf/btfobj.py": "btf",
    "bpf/values.py": "values", "bpf/disasm.py": "progs", "walkers/localstorage.py": "localstorage",
    "walkers/owners.py": "owners", "walkers/sdtalloc.py": "sdtalloc", "walkers/arena.py": "arena",
    "walkers/sdtpayload.py": "sdtalloc", "walkers/sections.py": "sdtalloc", "render/plan.py": "render",
    "walkers/printk.py": "printk", "bpf/runstats.py": "progs",
    "walkers/scxalloc.py": "heaps", "views/heaps.py": "heaps",
    "views/scxstate.py": "scx", "views/scxtasks.py": "scx",
    # the sched_ext package: every module is the scx walker
    **{f"sched_ext/{m}.py": "scx" for m in ("__init__", "symbols", "state", "exit", "exitlog",
                                             "discovery", "struct_ops", "dsq", "tasks", "events",
                                             "domain", "postmortem", "dumptext", "atexit",
                                             "invariants", "locks", "cpuctx")},
    # BPF forensics: links, fd holders, pins, hooks, the cross-view, xlated instructions
    "bpf/links.py": "links", "bpf/fds.py": "fds", "bpf/bpffs.py": "bpffs", "bpf/hooks.py": "hooks",
    "bpf/hidden.py": "hidden", "bpf/insns.py": "progs", "walkers/tasks.py": "tasks",
    "walkers/vfs.py": "vfs", "walkers/netdev.py": "netdev",
    # the one enumeration of BPF objects (registry verdicts) and the task cross-view
    "bpf/objects.py": "hidden", "walkers/alltasks.py": "tasks",
    # kernel stacks: the unwinder (saved frames, ORC tables, frame records, BPF line_info)
    **{f"unwind/{m}.py": "stacks" for m in ("__init__", "bounds", "orc", "x86_64", "arm64", "naming",
                                             "lineinfo", "modules", "cpus", "bpf_images")},
    "views/stacks.py": "stacks",
    # the probe-side hook walks and the rootkit triage
    "bpf/probes.py": "hooks", "bpf/triage.py": "triage", "bpf/mapkinds.py": "values",
    "bpf/sockets.py": "sockets", "bpf/lirc.py": "hooks",
}


def _category(depth=3, limit=60) -> str:
    """Which walker made the current read: the innermost known frame on the stack."""
    f = sys._getframe(depth)
    for _ in range(limit):
        if f is None:
            break
        code = f.f_code
        if code.co_name in _TABLE_FUNCS and "layers" in code.co_filename:
            return "pagetable"
        fn = code.co_filename.replace("\\", "/")
        i = fn.rfind("/volatility3_ktstr/")
        if i >= 0:
            rel = fn[i + len("/volatility3_ktstr/"):]
            if rel == "kernel.py" and code.co_name in ("btf_at", "kernel_btf"):
                return "btf"
            cat = _CATEGORY_BY_FILE.get(rel)
            if cat:
                return cat
        f = f.f_back
    return "other"


# --- the session ------------------------------------------------------------------------------


class Session:
    """One dump opened once; every ktstr plugin constructed on that context."""

    def __init__(self, name, symbol_dir, dump_path):
        """Opens ``dump_path`` the way `vol -f DUMP -s SYMBOL_DIR` does (volrun.open_in_process;
        ``symbol_dir`` may be None: Volatility's own symbol paths and the automatic ISF builder
        then decide, as with a plain `vol -f DUMP`). A dump Volatility cannot open raises
        volrun.OpenError with a one-line reason."""
        from volatility3.framework.layers import physical

        import volrun

        self.name = name
        self.path = Path(dump_path)
        self.context, self.plugins = volrun.open_in_process(
            self.path, PLUGINS, [symbol_dir] if symbol_dir else [])
        ctx = self.context
        files = [layer for layer in ctx.layers.values() if isinstance(layer, physical.FileLayer)]
        if len(files) != 1:
            raise volrun.OpenError(f"{name}: expected one file layer under the kernel, found {len(files)}")
        self.file_layer_name = files[0].name
        self.overlay = Overlay(files[0])
        self.file_size = self.path.stat().st_size
        from volatility3_ktstr.kernel import KernelContext

        self.kctx = KernelContext.from_plugin(self.plugins["maps"])
        self.baseline: Dict[str, Outcome] = {}
        self.reads: Dict[str, list] = {}       # plugin -> [(file off, len, category)]
        self.vreads: Dict[str, list] = {}      # plugin -> [(kernel VA, len, category)]
        self.models: Dict[str, "EntryModel"] = {}
        self.rss_base = 0

    # -- running --

    def reset_caches(self):
        """Forget everything derived from memory: translation caches and parsed BTF blobs."""
        from volatility3_ktstr.kernel import KernelContext

        for layer in self.context.layers.values():
            for cls in type(layer).__mro__:
                for attr in vars(cls).values():
                    clear = getattr(attr, "cache_clear", None)
                    if clear is not None:
                        clear()
            reset = getattr(layer, "reset_caches", None)     # kdump layers: pages, bitmaps
            if reset is not None:
                reset()
        KernelContext._caches.pop(self.context, None)

    def run(self, pname, timeout=60.0) -> Outcome:
        """One plugin run: its rows as plain values, and how it ended."""
        plugin = self.plugins[pname]
        rows: list = []
        t0 = time.perf_counter()

        def alarm(signum, frame):
            raise Hang()

        old = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        status, message = "ok", ""
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                grid = plugin.run()
                grid.populate(lambda node, acc: acc.append(tuple(_plain(v) for v in node.values))
                              or acc, rows)
        except Hang:
            status, message = "hang", f"no result after {timeout:.0f} s"
        except SystemExit as e:
            # KtstrError -> guarded() prints one line and exits 2: the documented failure.
            lines = err.getvalue().strip().splitlines()
            one_line = e.code == 2 and len(lines) == 1 and lines[0].startswith(f"linux.ktstr.{pname}: error: ")
            status = "error" if one_line else "crash"
            message = lines[-1] if one_line else f"exit status {e.code}: {err.getvalue()[-1500:]}"
        except Exception:
            status, message = "crash", traceback.format_exc(limit=12)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        return Outcome(pname, status, rows, message, time.perf_counter() - t0)

    def record_baseline(self):
        """Run every plugin on the intact dump, recording its reads and building entry models."""
        from volatility3_ktstr import kernel

        self.overlay.apply(None)
        orig = kernel.LayerReader.read
        vreads: list = []

        def vread(reader, addr, size):
            if size <= MAX_TARGET_READ:
                vreads.append((addr, size, _category(2)))
            return orig(reader, addr, size)

        kernel.LayerReader.read = vread
        try:
            for pname in PLUGINS:
                self.reset_caches()
                self.overlay.recording = []
                vreads.clear()
                self.baseline[pname] = self.run(pname, timeout=600)
                self.reads[pname] = _dedupe(self.overlay.recording)
                self.vreads[pname] = _dedupe(vreads)
        finally:
            kernel.LayerReader.read = orig
            self.overlay.recording = None
        self.reset_caches()
        for pname, model in build_models(self).items():
            self.models[pname] = model
        gc.collect()
        self.rss_base = rss_mb()

    def run_mutant(self, mutant: Mutant, timeout=60.0) -> Dict[str, Outcome]:
        """Every plugin on ``mutant``. Caches are clean on entry (reset after the baseline and
        after each mutant), and what one plugin caches under this mutant is valid for the next."""
        self.overlay.apply(mutant)
        try:
            return {pname: self.run(pname, timeout) for pname in PLUGINS}
        finally:
            self.overlay.apply(None)
            self.reset_caches()

    # -- addresses --

    def file_ranges(self, va, length, layer_name=None) -> List[Tuple[int, int]]:
        """File ranges behind ``length`` bytes at kernel VA ``va`` (unmapped parts left out)."""
        from volatility3.framework.layers import physical

        layer = self.context.layers[layer_name or self.kctx.layer_name]
        if isinstance(layer, physical.FileLayer):
            return [(va, length)]
        kd = getattr(layer, "kdump", None)
        if kd is not None:
            return kdump_file_ranges(kd, va, length)
        out = []
        try:
            parts = list(layer.mapping(va, length, ignore_errors=True))
        except Exception:
            return out
        for _o, _n, moff, mlen, sub in parts:
            out.extend(self.file_ranges(moff, mlen, sub))
        return out


def kdump_file_ranges(kd, phys, length) -> List[Tuple[int, int]]:
    """File ranges of a kdump file that physical [phys, phys+length) depends on: the headers
    and both bitmaps (a bit anywhere before a page moves its descriptor), then each page's
    descriptor and compressed data."""
    out = [(0, kd.data_offset)]
    if length <= 0:
        return out
    for pfn in range(phys >> kd.page_shift, ((phys + length - 1) >> kd.page_shift) + 1):
        if kd.page_state(pfn) != "dumped":
            continue
        desc_at = kd.data_offset + 24 * kd._rank(pfn)
        out.append((desc_at, 24))
        desc = kd._descriptors(kd._rank(pfn), 1)
        if desc:
            out.append((desc[0][0], desc[0][1]))
    return out


def _plain(v):
    """A TreeGrid cell as a comparable Python value."""
    from volatility3.framework import interfaces

    if isinstance(v, interfaces.renderers.BaseAbsentValue):
        return None
    if isinstance(v, int):
        return int(v)
    return v if isinstance(v, (str, bytes, float, type(None))) else str(v)


def _dedupe(reads):
    return list(dict.fromkeys(reads))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- entry models: what each entry depends on -------------------------------------------------


class EntryModel:
    """Entries of one plugin's baseline output and the file ranges each depends on.

    ``reach[key]``: ranges whose damage may legitimately hide (or change) that entry: its own
    record and its access path. ``shared``: ranges every entry depends on (the registry, the
    map struct). An entry is *lost* when a mutant left all of them intact and it is missing.
    """

    def __init__(self, plugin, key_of):
        self.plugin = plugin
        self.key_of = key_of            # row -> entry key, or None for summary/problem rows
        self.reach: Dict[object, List[Tuple[int, int]]] = {}
        self.shared: List[Tuple[int, int]] = []

    def keys(self, rows) -> Set[object]:
        return {k for k in map(self.key_of, rows) if k is not None}

    def lost(self, baseline_rows, rows, damaged) -> List[object]:
        if overlaps(damaged, self.shared):
            return []
        have = self.keys(rows)
        return sorted((k for k in self.keys(baseline_rows)
                       if k not in have and not overlaps(damaged, self.reach.get(k, [(0, 1 << 62)]))),
                      key=repr)


def overlaps(a, b) -> bool:
    return any(x < y + m and y < x + n for x, n in a for y, m in b)


def _pagetable_ranges(session) -> List[Tuple[int, int]]:
    pages = set()
    for reads in session.reads.values():
        pages.update(off // PAGE for off, _n, cat in reads if cat == "pagetable")
    return [(p * PAGE, PAGE) for p in sorted(pages)]


def _category_ranges(session, plugin, cats) -> List[Tuple[int, int]]:
    out = []
    for va, n, cat in session.vreads.get(plugin, ()):
        if cat in cats:
            out.extend(session.file_ranges(va, n))
    return out


def build_models(session) -> Dict[str, EntryModel]:
    """Entry models from the baseline: maps and progs (by id), localstorage (map, element),
    sdtalloc (scheduler, allocator, idx)."""
    kctx = session.kctx
    from volatility3_ktstr import plugin_support as ps

    maps = kctx.maps()
    # Every entry of every plugin is reached through the kernel's page tables and the id
    # registries; damage there may hide anything (still checked for crashes and hangs).
    common = _pagetable_ranges(session)
    for p in PLUGINS:
        common += _category_ranges(session, p, {"idr"})
    map_size = kctx.layout.size("bpf_map")
    models = {}

    m = EntryModel("maps", lambda r: r[0] if isinstance(r[0], int) else None)
    m.shared = common
    for bm in maps:
        m.reach[bm.id] = session.file_ranges(bm.kva, map_size)
    models["maps"] = m

    base = session.baseline.get("progs")
    if base is not None and base.status == "ok":
        p = EntryModel("progs", lambda r: r[0] if isinstance(r[0], int) else None)
        p.shared = common
        # A program's rows depend on its struct bpf_prog and aux; both were read by progs.py.
        prog_ranges = _category_ranges(session, "progs", {"progs", "btf"})
        for row in base.rows:
            if isinstance(row[0], int):
                p.reach[row[0]] = prog_ranges   # conservative: any program struct damage
        models["progs"] = p

    models.update(_bpf_forensics_models(session, common))
    models["localstorage"] = _localstorage_model(session, maps, common, map_size)
    sdt = _sdtalloc_model(session, common)
    if sdt is not None:
        models["sdtalloc"] = sdt
    return models


def _bpf_forensics_models(session, common):
    """links (by id), bpffds (by pid, fd), bpfpins (by path), bpfhooks (by hook and program).

    A link row depends on its registry entry only (an unreadable link keeps its row, with the
    reason); an fd row on its task (the task list up to it), fd table chunk and file; pins and
    hooks, conservatively, on any structure their walk read."""
    from volatility3_ktstr.core import Record
    from volatility3_ktstr.walkers import tasks as taskwalk

    kctx = session.kctx
    lay = kctx.layout
    out = {}
    base = session.baseline
    if base.get("links") is not None and base["links"].status == "ok":
        m = EntryModel("links", lambda r: r[0] if isinstance(r[0], int) and r[0] >= 0 else None)
        m.shared = common
        size = lay.size("bpf_link")
        for link in kctx.links():
            m.reach[link.id] = session.file_ranges(link.kva, size)
        out["links"] = m
    if base.get("bpffds") is not None and base["bpffds"].status == "ok":
        m = EntryModel("bpffds", lambda r: (r[0], r[2]) if isinstance(r[0], int) and r[0] >= 0 else None)
        m.shared = common
        init_task = kctx.symbol("init_task")
        chain = session.file_ranges(init_task + lay.offset("task_struct", "tasks"), 8)
        task_lo = min(lay.offset("task_struct", p) for p in taskwalk.TASK_PATHS if lay.has("task_struct", p))
        task_hi = max(lay.field("task_struct", p).end for p in taskwalk.TASK_PATHS if lay.has("task_struct", p))
        reader = kctx.reader
        for task in taskwalk.processes(reader, lay, init_task):
            own = session.file_ranges(task.kva + task_lo, task_hi - task_lo)
            if task.files:
                fdt = reader.u64(task.files + lay.offset("files_struct", "fdt"))
                own += session.file_ranges(task.files + lay.offset("files_struct", "fdt"), 8)
                r = Record(reader, lay, "fdtable", fdt, ("max_fds", "fd"))
                own += session.file_ranges(fdt + r.lo, len(r.data))
                per = taskwalk.FD_CHUNK // 8
                for fd, file in taskwalk.fd_files(reader, lay, task.files):
                    chunk = r.int("fd") + 8 * (fd - fd % per)
                    fr = Record(reader, lay, "file", file, ("f_op", "private_data"))
                    m.reach[(task.tgid, fd)] = chain + own + session.file_ranges(
                        chunk, 8 * min(per, r.int("max_fds") - (fd - fd % per))) + \
                        session.file_ranges(file + fr.lo, len(fr.data))
            chain = chain + session.file_ranges(task.kva + lay.offset("task_struct", "tasks"), 8)
        out["bpffds"] = m
    if base.get("bpfpins") is not None and base["bpfpins"].status == "ok":
        m = EntryModel("bpfpins", lambda r: r[0] if isinstance(r[2], int) and r[2] >= 0 and r[0] else None)
        m.shared = common
        walk = _category_ranges(session, "bpfpins", {"bpffs", "vfs"})
        for row in base["bpfpins"].rows:
            if m.key_of(row) is not None:
                m.reach[m.key_of(row)] = walk
        out["bpfpins"] = m
    if base.get("bpfhooks") is not None and base["bpfhooks"].status == "ok":
        m = EntryModel("bpfhooks", lambda r: (r[0], r[1], r[2], r[3], r[6])
                       if isinstance(r[3], int) and r[3] >= 0 and r[0] != "?" else None)
        m.shared = common
        walk = _category_ranges(session, "bpfhooks", {"hooks", "links", "netdev", "owners", "vfs",
                                                      "tasks", "fds", "progs", "maps", "btf"})
        for row in base["bpfhooks"].rows:
            if m.key_of(row) is not None:
                m.reach[m.key_of(row)] = walk
        out["bpfhooks"] = m
    return out


def _localstorage_model(session, maps, common, map_size):
    from volatility3_ktstr.walkers import localstorage as ls

    kctx = session.kctx
    model = EntryModel("localstorage", lambda r: (r[0], r[12]) if r[2] not in ("summary", "problem")
                       and isinstance(r[12], int) and r[12] else None)
    model.shared = common
    try:
        offs = ls.LocalStorageOffsets.from_layout(kctx.layout)
    except Exception:
        return model
    stride = offs.bucket_size
    for bm in maps:
        if bm.type_name not in ("task_storage", "cgrp_storage", "inode_storage", "sk_storage"):
            continue
        header = session.file_ranges(bm.kva, map_size) + \
            session.file_ranges(bm.kva + offs.smap_buckets, 8) + \
            session.file_ranges(bm.kva + offs.smap_bucket_log, 4)
        try:
            buckets, _log = ls.read_map_header(kctx.reader, offs, bm.kva)
        except Exception:
            continue
        path: Dict[int, list] = {}
        full = max(offs.header_size, offs.value + bm.value_size)
        for e in ls.walk(kctx.reader, offs, bm.kva, bm.value_size):
            chain = path.setdefault(e.bucket, list(
                session.file_ranges(buckets + e.bucket * stride + offs.bucket_first, 8)))
            own = session.file_ranges(e.kva, full)
            if e.storage:   # the owner address comes through elem.local_storage->owner
                own += session.file_ranges(e.storage + offs.ls_owner, 8)
            model.reach[(bm.id, e.kva)] = header + chain + own
            chain.extend(session.file_ranges(e.kva + offs.map_node + offs.node_next, 8))
    return model


def _sdtalloc_model(session, common):
    """Reach of each live allocation: its slot and the descriptor path root -> leaf.

    Discovery (programs, .bss, arena, program BTF) is shared by all entries of a scheduler.
    """
    base = session.baseline.get("sdtalloc")
    if base is None or base.status != "ok":
        return None
    from volatility3_ktstr.walkers import sdtalloc

    kctx = session.kctx
    model = EntryModel("sdtalloc", lambda r: (r[0], r[1], r[2]) if isinstance(r[3], int) else None)
    discovery = _category_ranges(session, "sdtalloc", {"progs", "maps", "btf", "arena", "values"})
    model.shared = common + discovery
    try:
        programs = kctx.sdt_programs()
    except Exception:
        return model
    reader = kctx.reader
    value_off = kctx.layout.offset("bpf_array", "value")
    for prog in programs:
        if prog.error or prog.slots is None:
            continue
        offs, arena = sdtalloc.SdtOffsets.from_btf(prog.btf), prog.arena
        section = {v.name: session.file_ranges(prog.data_map.kva + value_off + v.offset, v.size)
                   for v in prog.allocators}
        for walk, _type_id, _reason in prog.slots.walks:
            if walk.error or not walk.root:
                continue
            for e in walk.entries:
                own = session.file_ranges(arena.to_kernel(e.user_addr), walk.elem_size)
                model.reach[(prog.scheduler, walk.name, e.idx)] = (
                    section.get(walk.name, []) + _desc_path(session, reader, offs, arena, walk.root, e.idx)
                    + own)
    return model


def _desc_path(session, reader, offs, arena, root, idx):
    """File ranges of the descriptors (and the chunk slots followed) from ``root`` to ``idx``."""
    ranges, ptr = [], root
    for shift in (18, 9, 0):
        kva = arena.to_kernel(ptr)
        ranges += session.file_ranges(kva, offs.desc_size)
        try:
            chunk = _U64.unpack(reader.read(kva + offs.desc_chunk, 8))[0]
            slot = arena.to_kernel(chunk) + offs.chunk_union + 8 * ((idx >> shift) & 511)
            ranges += session.file_ranges(slot, 8)
            ptr = _U64.unpack(reader.read(slot, 8))[0]
        except Exception:
            break
    return ranges


# --- mutants ----------------------------------------------------------------------------------


def target_pool(session) -> Dict[str, list]:
    """category -> [(kernel VA, length)] of structure reads (page tables: file pages)."""
    pool: Dict[str, set] = {}
    for reads in session.vreads.values():
        for va, n, cat in reads:
            if cat not in ("other", "render") and n > 0:
                pool.setdefault(cat, set()).add((va, n))
    pages = {off // PAGE for reads in session.reads.values() for off, _n, cat in reads
             if cat == "pagetable"}
    if pages:
        pool["pagetable"] = {(p * PAGE, PAGE) for p in pages}
    return {k: sorted(v) for k, v in sorted(pool.items())}


def _pointer_fields(data, base_va):
    """(offset, value) of 8-aligned u64 fields that look like kernel or arena pointers."""
    out = []
    for off in range((-base_va) % 8, len(data) - 7, 8):
        v = _U64.unpack_from(data, off)[0]
        if v >> 56 == 0xFF or (v >> 32 and v >> 48 == 0 and v & 0xFFF != 0xFFF):
            out.append((off, v))
    return out


def make_mutant(session, seed, pool=None, kinds=KINDS + PT_KINDS) -> Optional[Mutant]:
    """The mutant of ``seed``: a category, a structure read of it, a kind of damage."""
    rng = random.Random(seed)
    pool = pool if pool is not None else target_pool(session)
    cats = sorted(pool)
    if not cats:
        return None
    cat = rng.choice(cats)
    if cat == "pagetable":
        return _pagetable_mutant(session, seed, rng, pool[cat], [k for k in kinds if k in PT_KINDS])
    kinds = [k for k in kinds if k in KINDS] or list(KINDS)
    va, n = rng.choice(pool[cat])
    kind = rng.choice(kinds)
    ranges = session.file_ranges(va, n)
    if not ranges:
        return None
    where = f"{n}B at {va:#x}"
    data = b"".join(session.overlay.original(o, m) for o, m in ranges)
    if kind == "truncate":
        fo, fl = rng.choice(ranges)
        cut = (fo + rng.randrange(max(fl, 1))) & ~(PAGE - 1)
        return Mutant(seed, kind, cat, [], truncate=cut, where=where)
    if kind == "zero_page":
        fo, fl = rng.choice(ranges)
        page = (fo + rng.randrange(max(fl, 1))) & ~(PAGE - 1)
        return Mutant(seed, kind, cat, [(page, bytes(PAGE))], where=where)
    buf = bytearray(data)
    ptrs = _pointer_fields(buf, va)
    if kind in ("ptr_other", "ptr_self") and ptrs:
        off, _v = rng.choice(ptrs)
        if kind == "ptr_self":
            new = va                       # the field points at its own struct: a self-loop
        else:
            others = [p for p in pool[cat] if p[0] != va]
            new = rng.choice(others)[0] if others else va ^ 0x40
        _U64.pack_into(buf, off, new)
    elif kind == "huge" and len(buf) >= 4:
        off = rng.randrange(0, len(buf) - 3) & ~3
        _U32.pack_into(buf, off, rng.choice((0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x10000, 0xFFFF)))
    else:
        kind = "bitflip"
        for _ in range(rng.randint(1, 8)):
            bit = rng.randrange(len(buf) * 8)
            buf[bit // 8] ^= 1 << (bit % 8)
    return Mutant(seed, kind, cat, _patches(ranges, data, bytes(buf)), where=where)


def _patches(ranges, old, new):
    """Per file range, the changed bytes (only ranges that changed)."""
    out, pos = [], 0
    for off, n in ranges:
        if old[pos:pos + n] != new[pos:pos + n]:
            out.append((off, new[pos:pos + n]))
        pos += n
    return out


def _pagetable_mutant(session, seed, rng, pages, kinds):
    off, _n = rng.choice(pages)
    kind = rng.choice(kinds or list(PT_KINDS))
    table = bytearray(session.overlay.original(off, PAGE))
    if kind == "pt_zero":
        return Mutant(seed, kind, "pagetable", [(off, bytes(PAGE))], where=f"table page {off:#x}")
    present = [i for i in range(0, PAGE, 8) if _U64.unpack_from(table, i)[0] & 1]
    if not present:
        return Mutant(seed, "pt_zero", "pagetable", [(off, bytes(PAGE))], where=f"table page {off:#x}")
    i = rng.choice(present)
    entry = _U64.unpack_from(table, i)[0]
    frame_mask = 0x000F_FFFF_FFFF_F000
    if kind == "pt_self":        # the entry points back at its own table
        entry = (entry & ~frame_mask) | (off & frame_mask)
    elif kind == "pt_oob":       # the entry points past the end of physical memory
        entry = (entry & ~frame_mask) | ((session.file_size * 16 + (rng.randrange(1 << 20) << 12))
                                         & frame_mask)
    else:
        kind = "pt_bitflip"
        entry ^= 1 << rng.choice(list(range(12, 40)) + [0, 1, 7])
    _U64.pack_into(table, i, entry)
    return Mutant(seed, kind, "pagetable", [(off + i, bytes(table[i:i + 8]))],
                  where=f"entry {i // 8} of table page {off:#x}")


# --- checks -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Finding:
    mutant: Mutant
    plugin: str
    what: str        # "crash", "hang", "lost", "memory"
    detail: str

    def __str__(self):
        return f"{self.plugin}: {self.what} ({self.mutant.describe()}): {self.detail}"


def check_mutant(session, mutant, outcomes, rss_limit_mb=1536.0) -> List[Finding]:
    findings = []
    damaged = mutant.damaged()
    for pname, out in outcomes.items():
        if out.status in ("crash", "hang"):
            findings.append(Finding(mutant, pname, out.status, out.message.strip()[-1500:]))
            continue
        model = session.models.get(pname)
        base = session.baseline[pname]
        if model is not None and base.status == "ok":
            rows = out.rows if out.status == "ok" else []
            lost = model.lost(base.rows, rows, damaged)
            if lost:
                why = f" ({out.message})" if out.status != "ok" else ""
                findings.append(Finding(mutant, pname, "lost",
                                        f"{len(lost)} entries outside the damage{why}: {lost[:5]}"))
    grown = rss_mb() - session.rss_base
    if grown > rss_limit_mb:
        findings.append(Finding(mutant, "*", "memory", f"peak RSS grew by {grown:.0f} MB"))
    return findings


@dataclasses.dataclass
class Tally:
    mutants: int = 0
    errors: int = 0
    crashes: int = 0
    hangs: int = 0
    lost: int = 0
    seconds: float = 0.0


def fuzz(session, seeds, timeout=60.0, on_mutant=None):
    """Run the mutants of ``seeds``; (per-plugin tallies, findings)."""
    pool = target_pool(session)
    tallies = {p: Tally() for p in PLUGINS}
    findings: List[Finding] = []
    for seed in seeds:
        mutant = make_mutant(session, seed, pool)
        if mutant is None or (not mutant.patches and mutant.truncate is None):
            continue
        outcomes = session.run_mutant(mutant, timeout)
        found = check_mutant(session, mutant, outcomes)
        findings.extend(found)
        for pname, out in outcomes.items():
            t = tallies[pname]
            t.mutants += 1
            t.seconds += out.seconds
            t.errors += out.status == "error"
            t.crashes += out.status == "crash"
            t.hangs += out.status == "hang"
            t.lost += any(f.plugin == pname and f.what == "lost" for f in found)
        if on_mutant:
            on_mutant(mutant, outcomes, found)
    return tallies, findings


def table(tallies) -> str:
    lines = [f"{'plugin':14} {'mutants':>8} {'errors':>7} {'crashes':>8} {'hangs':>6} "
             f"{'lost':>5} {'avg s':>7}"]
    for pname, t in tallies.items():
        avg = t.seconds / t.mutants if t.mutants else 0.0
        lines.append(f"{pname:14} {t.mutants:8d} {t.errors:7d} {t.crashes:8d} {t.hangs:6d} "
                     f"{t.lost:5d} {avg:7.3f}")
    return "\n".join(lines)


# --- the ISF generator on mutants ---------------------------------------------------------------


def mutated_image(path, patches, open_image=None):
    """A fromdump FileImage of raw dump ``path`` (physical = file offset) with ``patches``."""
    from volatility3_ktstr.isf import fromdump

    base = (open_image or fromdump.open_image)(str(path))

    class MutatedImage(type(base)):
        def read(self, phys, size):
            data = super().read(phys, size)
            return _patched(data, phys, patches)

        def chunks(self, start, length, chunk, overlap):
            for pos, buf, lo, hi in super().chunks(start, length, chunk, overlap):
                yield pos, _patched(buf, pos, patches), lo, hi

    base.__class__ = MutatedImage
    return base


def _patched(buf, pos, patches):
    hits = [(o, d) for o, d in patches if o < pos + len(buf) and pos < o + len(d)]
    if not hits:
        return buf
    out = bytearray(buf)
    for o, d in hits:
        a, b = max(o, pos), min(o + len(d), pos + len(out))
        out[a - pos:b - pos] = d[a - o:b - o]
    return bytes(out)


def generator_targets(path):
    """[(name, phys, length)] of what `ktstr-isf --from-dump` carves: BTF, kallsyms tables."""
    from volatility3_ktstr.isf import fromdump

    with fromdump.open_image(str(path)) as image:
        c = fromdump.carve(image, path.name)
    out = [("btf header", c.btf_phys, 24), ("btf types", c.btf_phys + 24, min(len(c.blob) - 24, 1 << 20))]
    for name, phys in sorted((c.kallsyms.phys or {}).items()):
        out.append((name, phys, 4096))
    return out


def generator_mutant(path, targets, seed):
    """Patches for mutant ``seed`` of the generator's inputs: bit flips, huge fields, a zero page."""
    rng = random.Random(seed)
    name, phys, length = rng.choice(targets)
    kind = rng.choice(("bitflip", "huge", "zero_page"))
    with open(path, "rb") as f:
        if kind == "zero_page":
            page = (phys + rng.randrange(length)) & ~(PAGE - 1)
            return f"{kind} in {name}", [(page, bytes(PAGE))]
        off = phys + (rng.randrange(max(length - 4, 1)) & ~3)
        f.seek(off)
        buf = bytearray(f.read(4))
    if kind == "huge":
        _U32.pack_into(buf, 0, rng.choice((0xFFFFFFFF, 0x7FFFFFFF, 0x10000000)))
    else:
        bit = rng.randrange(32)
        buf[bit // 8] ^= 1 << (bit % 8)
    return f"{kind} in {name} at {off:#x}", [(off, bytes(buf))]


def run_generator(path, patches, out_path, timeout=120.0):
    """`ktstr-isf --from-dump` on the mutated dump, in-process: (status, message)."""
    from volatility3_ktstr.isf import cli, fromdump

    real_open = fromdump.open_image
    err = io.StringIO()

    def alarm(signum, frame):
        raise Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    fromdump.open_image = lambda p, phys_base=0: mutated_image(p, patches, real_open)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = cli.main(["--from-dump", str(path), "-o", str(out_path)])
        lines = err.getvalue().strip().splitlines()
        if rc == 0:
            return "ok", ""
        if rc == 2 and len(lines) == 1 and lines[0].startswith("ktstr-isf: error: "):
            return "error", lines[0]
        return "crash", f"rc {rc}: {err.getvalue()[-1500:]}"
    except Hang:
        return "hang", f"no result after {timeout:.0f} s"
    except BaseException:  # noqa: B036 - SystemExit included: the CLI must return, not exit
        return "crash", traceback.format_exc(limit=12)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        fromdump.open_image = real_open
