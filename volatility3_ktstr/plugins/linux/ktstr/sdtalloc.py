"""linux.ktstr.sdtalloc: every live allocation of every sched_ext scheduler's scx_allocator."""

from volatility3.framework import interfaces, renderers
from volatility3.framework.configuration import requirements
from volatility3.framework.renderers import format_hints

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.errors import KtstrError, guarded
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.walkers import owners, sdtalloc

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
        maps = kctx.maps()
        max_entries = self.config.get("max_entries")
        if max_entries is not None and max_entries < 0:
            raise KtstrError("--max-entries must be >= 0")
        header = self.config.get("header_size")
        if header is not None and not 0 <= header < sdtalloc.MIN_ELEM_SIZE:
            raise KtstrError(f"--header-size must be 0..{sdtalloc.MIN_ELEM_SIZE - 1}")
        # Program BTFs carry copies of the kernel structs they touch (vmlinux.h); a payload is a
        # struct the program defines, so kernel_programs drops names the kernel ISF also has.
        programs = sdtalloc.kernel_programs(kctx, maps, type_name=self.config.get("type"),
                                            header_override=header, max_entries=max_entries)
        return maps, programs

    # --- rows ---------------------------------------------------------------------------

    def _generator(self):
        kctx = KernelContext.from_plugin(self)
        maps, programs = self._programs(kctx)
        if not programs:
            raise KtstrError("no BPF program in the dump declares a struct scx_allocator variable "
                             "(no sched_ext scheduler using sdt_alloc is loaded)")
        resolver = owners.OwnerResolver(kctx.reader, kctx.layout)
        task_pid = None
        if kctx.layout.has("task_struct", "pid"):
            task_pid = kctx.layout.offset("task_struct", "pid")
        for prog in programs:
            if prog.error or prog.slots is None:
                for var in prog.allocators or [None]:
                    yield (0, _problem_row(prog, var.name if var else "?", 0, 0,
                                           prog.error or "not walked"))
                continue
            owner_of = sdtalloc.task_storage_owners(kctx.reader, kctx.layout, maps, prog, resolver)
            for walk, type_id, reason in prog.slots.walks:
                if walk.error:
                    yield (0, _problem_row(prog, walk.name, 0, walk.root, walk.error))
                    continue
                if not walk.entries and not walk.nr_skipped:
                    yield (0, _problem_row(prog, walk.name, 0, walk.root,
                                           f"no live allocations (elem_size {walk.elem_size})"))
                    continue
                label = sdtalloc.type_label(prog.btf, type_id, reason)
                ident = sdtalloc.payload_identity(prog.btf, type_id) if type_id else None
                for e in walk.entries:
                    pid, comm, note = sdtalloc.slot_task(kctx.reader, ident, e,
                                                         owner_of.get(e.user_addr), task_pid)
                    if e.hdr_idx != e.idx:
                        note = _join(note, f"header idx {e.hdr_idx} != {e.idx} (allocation in flight)")
                    yield (0, (prog.scheduler, walk.name, e.idx, e.genn,
                               format_hints.Hex(e.user_addr),
                               pid if pid is not None else renderers.NotAvailableValue(),
                               comm, label, sdtalloc.payload_text(prog.btf, type_id, e.payload),
                               note))
                for s in walk.skipped:
                    yield (0, _problem_row(prog, walk.name, s.idx_prefix, s.addr,
                                           f"skipped {_LEVEL_NAMES.get(s.level, s.level)}: {s.reason}"))
                lost = walk.nr_skipped - len(walk.skipped)
                if lost:
                    yield (0, _problem_row(prog, walk.name, 0, 0, f"{lost} more subtrees skipped"))
                if walk.truncated:
                    yield (0, _problem_row(prog, walk.name, 0, 0,
                                           f"stopped at --max-entries {len(walk.entries)}"))

    def run(self):
        return renderers.TreeGrid(
            [("Scheduler", str), ("Allocator", str), ("Idx", int), ("Genn", int),
             ("Address", format_hints.Hex), ("PID", int), ("Comm", str), ("Type", str),
             ("Payload", str), ("Note", str)],
            guarded(NAME, self._generator()))


_LEVEL_NAMES = {0: "root", 1: "level-1 subtree", 2: "leaf subtree", 3: "slot"}


def _join(a, b):
    return f"{a}; {b}" if a else b


def _problem_row(prog, allocator, idx, addr, note):
    return (prog.scheduler, allocator, idx, renderers.NotApplicableValue(), format_hints.Hex(addr),
            renderers.NotApplicableValue(), "", "", "", note)
