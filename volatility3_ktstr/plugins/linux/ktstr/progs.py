"""linux.ktstr.progs: every BPF program in the dump, like `bpftool prog list`.

Rows: id, type, name, tag, load time (CLOCK_BOOTTIME ns, and wall-clock when the kernel's
timekeeper is readable), JIT/xlated sizes, used map ids, BTF id, attach point (for struct_ops
programs the ops member they implement, e.g. ``sched_ext_ops.select_cpu``), addresses.
Rows for skipped prog_idr nodes or unreadable programs say why.

``--disasm ID``: the program's JIT image disassembled with capstone (x86-64 or arm64), call
and branch targets named by kernel symbol (or BPF program) where known.
"""

import datetime
import logging

from volatility3.framework import interfaces, renderers
from volatility3.framework.configuration import requirements
from volatility3.framework.renderers import format_hints

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kds import DamageLog
from volatility3_ktstr.bpf import disasm
from volatility3_ktstr.bpf import progs as bpfprogs
from volatility3_ktstr.core import ReadError
from volatility3_ktstr.errors import KtstrError, guarded
from volatility3_ktstr.kernel import KernelContext

vollog = logging.getLogger(__name__)


class Progs(interfaces.plugins.PluginInterface):
    """Lists BPF programs (prog_idr): id, type, name, tag, load time, sizes, maps, attach point."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [
            ps.kernel_requirement(),
            requirements.IntRequirement(name="disasm", optional=True, default=None,
                                        description="Disassemble the JIT image of this program id"),
            requirements.IntRequirement(name="max_insns", optional=True, default=20000,
                                        description="At most this many instructions with --disasm"),
        ]

    # --- listing ------------------------------------------------------------------------

    def _generator(self):
        kctx = KernelContext.from_plugin(self)
        damage = DamageLog()
        progs = kctx.progs(damage)
        try:
            ids_by_kva = {m.kva: m.id for m in kctx.maps()}
        except KtstrError:
            ids_by_kva = {}
        epoch = kctx.boot_epoch_ns()
        for p in progs:
            if p.error and not p.name and p.type < 0:
                yield (0, self._bad_row(p.id, p.kva, p.error))
                continue
            bpfprogs.resolve_map_ids(kctx.reader, kctx.layout, p, ids_by_kva)
            btf_id = kctx.btf_id_at(p.btf_kva)
            attach = bpfprogs.attach_point(p, kctx.btf_at)
            if epoch is not None and p.load_time_ns:
                when = datetime.datetime.fromtimestamp((epoch + p.load_time_ns) / 1e9, datetime.timezone.utc)
            else:
                when = renderers.NotAvailableValue()
            yield (0, (p.id, p.type_name, p.name, p.tag, p.load_time_ns,
                       round(p.load_time_ns / 1e9, 6), when, p.jited_len, p.xlated_len,
                       ",".join(map(str, p.used_map_ids)), btf_id, attach,
                       format_hints.Hex(p.kva), format_hints.Hex(p.bpf_func), p.error or ""))
        for d in damage:
            yield (0, self._bad_row(-1, d.addr, f"prog_idr node skipped: {d.reason}"))

    def _bad_row(self, pid, addr, reason):
        return (pid, "?", "", "", 0, 0.0, renderers.NotAvailableValue(), 0, 0, "", -1, "",
                format_hints.Hex(addr), format_hints.Hex(0), reason)

    # --- disassembly --------------------------------------------------------------------

    def _disasm(self, prog_id):
        kctx = KernelContext.from_plugin(self)
        progs = kctx.progs()
        prog = next((p for p in progs if p.id == prog_id), None)
        if prog is None:
            raise KtstrError(f"no BPF program with id {prog_id}")
        try:
            images = bpfprogs.read_jit_images(kctx.reader, prog)
        except ReadError as e:
            raise KtstrError(f"program {prog_id} ({prog.name}): {e}") from None
        names = disasm.SymbolNamer(kctx.sorted_symbols, progs)
        budget = self.config.get("max_insns") or 20000
        for n, (base, image) in enumerate(images):
            label = prog.name if n == 0 else f"{prog.name}/sub{n}"
            for addr, size, mnemonic, op_str, target in disasm.disassemble(kctx.arch, image, base, budget):
                budget -= 1
                where = names.name(target) if target is not None else ""
                yield (0, (format_hints.Hex(addr), f"{label}+{addr - base:#x}",
                           image[addr - base:addr - base + size].hex(),
                           f"{mnemonic} {op_str}".strip(), where))
            if budget <= 0:
                yield (0, (format_hints.Hex(0), "", "", "(stopped at --max-insns)", ""))
                return

    def run(self):
        disasm = self.config.get("disasm")
        if disasm is not None:
            return renderers.TreeGrid(
                [("Address", format_hints.Hex), ("Offset", str), ("Bytes", str), ("Instruction", str),
                 ("Target", str)],
                guarded("linux.ktstr.progs", self._disasm(disasm)))
        return renderers.TreeGrid(
            [("ID", int), ("Type", str), ("Name", str), ("Tag", str), ("LoadTimeNs", int),
             ("LoadTimeSec", float), ("LoadedAt", datetime.datetime), ("JitedLen", int),
             ("XlatedLen", int), ("MapIds", str), ("BtfId", int), ("Attach", str),
             ("Address", format_hints.Hex), ("BpfFunc", format_hints.Hex), ("Error", str)],
            guarded("linux.ktstr.progs", self._generator()))
