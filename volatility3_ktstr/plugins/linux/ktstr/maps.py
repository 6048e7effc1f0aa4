"""linux.ktstr.maps: every BPF map in the dump, like `bpftool map list`.

One row per ``map_idr`` entry: id, type, name, key/value size, max_entries, flags, frozen,
map_extra (arena: user_vm_start), the BTF object id (``struct btf.id``) and the key/value
type names from the map's program BTF (STRUCT_OPS values: from the kernel's BTF, with
``BtfVmlinuxId``), and the kernel address. A map whose struct or BTF cannot be read keeps
its row with the reason in ``Error``; skipped ``map_idr`` nodes get rows of their own.
"""

from volatility3.framework import interfaces

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import maps as view


class Maps(interfaces.plugins.PluginInterface):
    """Lists BPF maps (map_idr): id, type, name, sizes, flags, BTF id and key/value types."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 1, 0)

    @classmethod
    def get_requirements(cls):
        return [ps.kernel_requirement()]

    def run(self):
        return ps.tree_grid("linux.ktstr.maps", view.GRID, view.rows(KernelContext.from_plugin(self)))
