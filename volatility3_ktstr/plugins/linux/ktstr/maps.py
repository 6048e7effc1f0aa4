"""linux.ktstr.maps: every BPF map in the dump, like `bpftool map list`."""

from volatility3.framework import interfaces, renderers
from volatility3.framework.renderers import format_hints

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.bpf import idr
from volatility3_ktstr.errors import guarded
from volatility3_ktstr.kernel import KernelContext


class Maps(interfaces.plugins.PluginInterface):
    """Lists BPF maps (map_idr): id, type, name, sizes, flags, BTF ids."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement()]

    def _generator(self):
        kctx = KernelContext.from_plugin(self)
        stats = idr.WalkStats()
        for m in ps.list_maps(kctx, stats):
            yield (0, (m.id, m.type_name, m.name, m.key_size, m.value_size, m.max_entries,
                       format_hints.Hex(m.flags), m.btf_key_type_id, m.btf_value_type_id,
                       format_hints.Hex(m.kva), m.error or ""))
        for node, reason in stats.bad_nodes:
            yield (0, (-1, "?", "", 0, 0, 0, format_hints.Hex(0), 0, 0, format_hints.Hex(node),
                       f"map_idr node skipped: {reason}"))

    def run(self):
        return renderers.TreeGrid(
            [("ID", int), ("Type", str), ("Name", str), ("KeySize", int), ("ValueSize", int),
             ("MaxEntries", int), ("Flags", format_hints.Hex), ("BtfKeyTypeId", int),
             ("BtfValueTypeId", int), ("Address", format_hints.Hex), ("Error", str)],
            guarded("linux.ktstr.maps", self._generator()))
