"""linux.ktstr.maps: every BPF map in the dump, like `bpftool map list`.

One row per ``map_idr`` entry: id, type, name, key/value size, max_entries, flags, frozen,
map_extra (arena: user_vm_start), the BTF object id (``struct btf.id``) and the key/value
type names from the map's program BTF (STRUCT_OPS values: from the kernel's BTF, with
``BtfVmlinuxId``), and the kernel address. A map whose struct or BTF cannot be read keeps
its row with the reason in ``Error``; skipped ``map_idr`` nodes get rows of their own.
"""

from volatility3.framework import interfaces, renderers
from volatility3.framework.renderers import format_hints

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.bpf import helpers as bh
from volatility3_ktstr.bpf import idr
from volatility3_ktstr.core import ReadError
from volatility3_ktstr.errors import KtstrError, guarded
from volatility3_ktstr.kernel import KernelContext


class Maps(interfaces.plugins.PluginInterface):
    """Lists BPF maps (map_idr): id, type, name, sizes, flags, BTF id and key/value types."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 1, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement()]

    @staticmethod
    def _type_names(kctx, m, errors):
        """(key type, value type, kernel BTF id) names; problems are appended to ``errors``."""
        key_t = value_t = ""
        vmlinux_id = 0
        if m.btf_kva and (m.btf_key_type_id or m.btf_value_type_id):
            try:
                btf = kctx.btf_at(m.btf_kva)
                if m.btf_key_type_id:
                    key_t = btf.type_name(m.btf_key_type_id)
                if m.btf_value_type_id:
                    value_t = btf.type_name(m.btf_value_type_id)
            except (KtstrError, KeyError) as e:
                errors.append(f"program BTF: {e}")
        if m.btf_vmlinux_value_type_id:
            try:
                kbtf = kctx.kernel_btf()
                value_t = value_t or kbtf.type_name(m.btf_vmlinux_value_type_id)
                vmlinux_id = bh.btf_id_at(kctx, kctx.reader.ptr(kctx.require_symbol("btf_vmlinux")))
            except (KtstrError, KeyError, ReadError) as e:
                errors.append(f"kernel BTF: {e}")
        return key_t, value_t, vmlinux_id

    def _generator(self):
        kctx = KernelContext.from_plugin(self)
        stats = idr.WalkStats()
        for m in ps.list_maps(kctx, stats):
            if m.error and m.type < 0:
                yield (0, self._bad_row(m.id, m.kva, m.error))
                continue
            errors = [m.error] if m.error else []
            key_t, value_t, vmlinux_id = self._type_names(kctx, m, errors)
            btf_id = bh.btf_id_at(kctx, m.btf_kva)
            if btf_id < 0:
                errors.append(f"struct btf at {m.btf_kva:#x} unreadable")
            yield (0, (m.id, m.type_name, m.name, m.key_size, m.value_size, m.max_entries,
                       format_hints.Hex(m.flags), int(m.frozen), format_hints.Hex(m.map_extra),
                       btf_id, m.btf_key_type_id, m.btf_value_type_id, m.btf_vmlinux_value_type_id,
                       vmlinux_id, key_t, value_t, format_hints.Hex(m.kva), "; ".join(errors)))
        for node, reason in stats.bad_nodes:
            yield (0, self._bad_row(-1, node, f"map_idr node skipped: {reason}"))
        if stats.truncated:
            yield (0, self._bad_row(-1, 0, "map_idr walk stopped at its bound"))

    @staticmethod
    def _bad_row(map_id, addr, reason):
        return (map_id, "?", "", 0, 0, 0, format_hints.Hex(0), 0, format_hints.Hex(0), -1, 0, 0, 0, 0,
                "", "", format_hints.Hex(addr), reason)

    def run(self):
        return renderers.TreeGrid(
            [("ID", int), ("Type", str), ("Name", str), ("KeySize", int), ("ValueSize", int),
             ("MaxEntries", int), ("Flags", format_hints.Hex), ("Frozen", int),
             ("MapExtra", format_hints.Hex), ("BtfId", int), ("BtfKeyTypeId", int),
             ("BtfValueTypeId", int), ("BtfVmlinuxValueTypeId", int), ("BtfVmlinuxId", int),
             ("KeyType", str), ("ValueType", str), ("Address", format_hints.Hex), ("Error", str)],
            guarded("linux.ktstr.maps", self._generator()))
