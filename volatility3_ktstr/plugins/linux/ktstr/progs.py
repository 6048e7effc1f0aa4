"""linux.ktstr.progs: every BPF program in the dump, like `bpftool prog list`.

Rows: id, type, name, tag, load time (CLOCK_BOOTTIME ns, and wall-clock when the kernel's
timekeeper is readable), JIT/xlated sizes, used map ids, BTF id, attach point (for struct_ops
programs the ops member they implement, e.g. ``sched_ext_ops.select_cpu``), addresses; then uid,
GPL flag, run statistics (summed over CPUs), the helpers and kfuncs the program calls and its
tail-call targets (from its xlated instructions), and the processes holding an fd on it.
Rows for skipped prog_idr nodes or unreadable programs say why.

``--disasm ID``: the program's JIT image disassembled with capstone (x86-64 or arm64), call
and branch targets named by kernel symbol (or BPF program) where known, then its xlated
instructions (``Image`` = ``xlated``) with helpers, kfuncs and maps named.
"""

from volatility3.framework import interfaces
from volatility3.framework.configuration import requirements

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import progs as view


class Progs(interfaces.plugins.PluginInterface):
    """Lists BPF programs (prog_idr): id, type, name, tag, load time, sizes, maps, attach point,
    uid, GPL, run stats, helpers/kfuncs, tail calls, holders."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 1, 0)

    @classmethod
    def get_requirements(cls):
        return [
            ps.kernel_requirement(),
            requirements.IntRequirement(name="disasm", optional=True, default=None,
                                        description="Disassemble the JIT image and xlated "
                                                    "instructions of this program id"),
            requirements.IntRequirement(name="max_insns", optional=True, default=20000,
                                        description="At most this many instructions with --disasm"),
        ]

    def run(self):
        kctx = KernelContext.from_plugin(self)
        prog_id = self.config.get("disasm")
        if prog_id is not None:
            return ps.tree_grid("linux.ktstr.progs", view.DISASM_GRID, view.disasm_rows(
                kctx, prog_id, self.config.get("max_insns") or 20000))
        return ps.tree_grid("linux.ktstr.progs", view.GRID, view.rows(kctx))
