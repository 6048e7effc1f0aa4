"""linux.ktstr.sdtalloc: every live allocation of every sched_ext scheduler's scx_allocator."""

from volatility3.framework import interfaces, renderers
from volatility3.framework.configuration import requirements
from volatility3.framework.renderers import format_hints

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.btf import Kind
from volatility3_ktstr.core import LayoutError, ReadError
from volatility3_ktstr.errors import KtstrError, guarded
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.walkers import arena as arenaw
from volatility3_ktstr.walkers import sdtalloc

NAME = "linux.ktstr.sdtalloc"


class SdtAlloc(interfaces.plugins.PluginInterface):
    """Lists live sdt_alloc (scx_allocator) slots: scheduler, allocator, idx, genn, address,
    owning task and the payload rendered with the scheduler's BTF.

    The payload type is --type NAME, else the one struct of the payload's size that the program
    itself defines (see the Type column for why a payload is shown as hex). The PID/Comm of a
    slot come from the task whose BPF task storage points at it, else from a pid/task pointer
    field of the payload."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [
            ps.kernel_requirement(),
            requirements.StringRequirement(name="type", optional=True, default=None,
                                           description="payload BTF type name (struct NAME)"),
            requirements.IntRequirement(name="max_entries", optional=True, default=None,
                                        description="stop each allocator after N live slots"),
            requirements.IntRequirement(name="header_size", optional=True, default=None,
                                        description="bytes of struct sdt_data before the payload "
                                                    "(default: from BTF)"),
        ]

    # --- discovery ----------------------------------------------------------------------

    def _programs(self, kctx):
        maps = ps.list_maps(kctx)
        arenas = arenaw.arena_infos(kctx.reader, kctx.layout, maps, kctx.page_size)
        progs, prog_arenas = _programs_and_arenas(kctx)
        max_entries = self.config.get("max_entries")
        if max_entries is not None and max_entries < 0:
            raise KtstrError("--max-entries must be >= 0")
        header = self.config.get("header_size")
        if header is not None and not 0 <= header < sdtalloc.MIN_ELEM_SIZE:
            raise KtstrError(f"--header-size must be 0..{sdtalloc.MIN_ELEM_SIZE - 1}")
        programs = sdtalloc.find_programs(
            kctx.reader, kctx.layout, maps, kctx.btf_at, arenas, progs, prog_arenas=prog_arenas,
            is_foreign=self._kernel_struct_test(kctx), type_name=self.config.get("type"),
            header_override=header, max_entries=max_entries)
        return maps, programs

    @staticmethod
    def _kernel_struct_test(kctx):
        # Program BTFs carry copies of the kernel structs they touch (vmlinux.h): a payload is
        # a struct the program defines, so names the kernel also defines are not candidates.
        return lambda name: kctx.layout.has(name)

    # --- owners through task storage -------------------------------------------------------

    def _owners(self, kctx, maps, prog):
        """{slot user address: Owner} from the program's TASK_STORAGE maps whose values hold
        pointers to live slots."""
        from volatility3_ktstr.walkers import localstorage, owners

        out = {}
        if prog.slots is None or not len(prog.slots):
            return out
        resolver = owners.OwnerResolver(kctx.reader, kctx.layout)
        for m in maps:
            if m.type_name != "task_storage" or m.btf_kva != prog.data_map.btf_kva or m.error:
                continue
            ptr_offs = _pointer_members(prog.btf, m.btf_value_type_id, m.value_size)
            if not ptr_offs:
                continue
            try:
                elems, _ = localstorage.walk_map(kctx.reader, kctx.layout, m.kva, m.value_size)
            except (ReadError, LayoutError):
                continue
            for el in elems:
                if not el.owner:
                    continue
                for off in ptr_offs:
                    ptr = int.from_bytes(el.value[off:off + 8], "little")
                    hit = prog.slots.lookup(ptr) if ptr else None
                    if hit is not None:
                        out[hit.entry.user_addr] = resolver.resolve("task", el.owner, el.storage)
        return out

    # --- rows ---------------------------------------------------------------------------

    def _generator(self):
        kctx = KernelContext.from_plugin(self)
        maps, programs = self._programs(kctx)
        if not programs:
            raise KtstrError("no BPF program in the dump declares a struct scx_allocator variable "
                             "(no sched_ext scheduler using sdt_alloc is loaded)")
        task_pid = None
        if kctx.layout.has("task_struct", "pid"):
            task_pid = kctx.layout.offset("task_struct", "pid")
        for prog in programs:
            if prog.error or prog.slots is None:
                for var in prog.allocators or [None]:
                    yield (0, _problem_row(prog, var.name if var else "?", 0, 0,
                                           prog.error or "not walked"))
                continue
            owner_of = self._owners(kctx, maps, prog)
            for walk, type_id, reason in prog.slots.walks:
                if walk.error:
                    yield (0, _problem_row(prog, walk.name, 0, walk.root, walk.error))
                    continue
                type_label = _type_label(prog.btf, type_id, reason)
                ident = sdtalloc.payload_identity(prog.btf, type_id) if type_id else None
                for e in walk.entries:
                    pid, comm, note = self._who(kctx, ident, e, owner_of.get(e.user_addr), task_pid)
                    if e.hdr_idx != e.idx:
                        note = _join(note, f"header idx {e.hdr_idx} != {e.idx} (allocation in flight)")
                    yield (0, (prog.scheduler, walk.name, e.idx, e.genn,
                               format_hints.Hex(e.user_addr),
                               pid if pid is not None else renderers.NotAvailableValue(),
                               comm, type_label, _payload_text(prog.btf, type_id, e.payload), note))
                for s in walk.skipped:
                    yield (0, _problem_row(prog, walk.name, s.idx_prefix, s.addr,
                                           f"skipped {_LEVEL_NAMES.get(s.level, s.level)}: {s.reason}"))
                lost = walk.nr_skipped - len(walk.skipped)
                if lost:
                    yield (0, _problem_row(prog, walk.name, 0, 0, f"{lost} more subtrees skipped"))
                if walk.truncated:
                    yield (0, _problem_row(prog, walk.name, 0, 0,
                                           f"stopped at --max-entries {len(walk.entries)}"))

    @staticmethod
    def _who(kctx, ident, entry, owner, task_pid_off):
        """(pid, comm, note) of a slot: the owning task from task storage, else the payload's
        own pid field or task pointer."""
        pid = comm = None
        note = ""
        if owner is not None and owner.pid is not None:
            pid, comm = owner.pid, owner.comm
        claimed = sdtalloc.identity_value(ident, entry.payload) if ident else None
        if claimed is not None and ident.kind == "task":
            task = claimed
            claimed = None
            if task and task_pid_off is not None:
                try:
                    claimed = kctx.reader.s32(task + task_pid_off)
                except ReadError:
                    note = f"payload {ident.member} {task:#x} unreadable"
        if pid is None:
            pid = claimed
        elif claimed is not None and claimed != pid:
            note = f"payload {ident.member} {claimed} but owned by pid {pid}"
        return pid, comm or "", note

    def run(self):
        return renderers.TreeGrid(
            [("Scheduler", str), ("Allocator", str), ("Idx", int), ("Genn", int),
             ("Address", format_hints.Hex), ("PID", int), ("Comm", str), ("Type", str),
             ("Payload", str), ("Note", str)],
            guarded(NAME, self._generator()))


def _programs_and_arenas(kctx):
    """BPF programs and {prog kva: aux->arena}; empty when prog_idr is unavailable (arena
    attribution then falls back to pointer ranges)."""
    from volatility3_ktstr.bpf import progs as bpfprogs

    prog_idr = kctx.symbol("prog_idr")
    if prog_idr is None:
        return [], {}
    try:
        progs = list(bpfprogs.iter_progs(kctx.reader, kctx.layout, prog_idr))
    except (ReadError, LayoutError):
        return [], {}
    arenas = {p.kva: arenaw.prog_arena_kva(kctx.reader, kctx.layout, p.aux_kva) for p in progs}
    return progs, arenas


_LEVEL_NAMES = {0: "root descriptor", 1: "level-1 subtree", 2: "leaf chunk", 3: "slot"}


def _join(a, b):
    return f"{a}; {b}" if a else b


def _problem_row(prog, allocator, idx, addr, note):
    return (prog.scheduler, allocator, idx, renderers.NotApplicableValue(), format_hints.Hex(addr),
            renderers.NotApplicableValue(), "", "", "", note)


def _type_label(btf, type_id, reason):
    if type_id:
        return btf.type_name(type_id)
    return f"hex ({reason})"


def _payload_text(btf, type_id, payload):
    if not type_id:
        return payload.hex()
    from volatility3_ktstr.render import render, render_text

    return render_text(render(btf, type_id, payload))


def _pointer_members(btf, type_id, value_size):
    """Byte offsets of the 8-byte pointer members of a map value type (top level), where an
    arena slot pointer could be stored."""
    t = btf.resolve(type_id) if type_id else None
    if t is None or t.kind not in (Kind.STRUCT, Kind.UNION):
        return ()
    out = []
    for m in t.members:
        mt = btf.resolve(m.type)
        if mt is not None and mt.kind == Kind.PTR and not m.bit_size and m.bit_offset % 64 == 0:
            off = m.bit_offset // 8
            if off + 8 <= value_size:
                out.append(off)
    return tuple(out)
