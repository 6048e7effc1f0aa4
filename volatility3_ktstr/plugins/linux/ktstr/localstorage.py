"""linux.ktstr.localstorage: every BPF task/cgroup/inode/socket storage entry, owner named."""

from volatility3.framework import interfaces
from volatility3.framework.configuration import requirements

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import localstorage as view


class LocalStorage(interfaces.plugins.PluginInterface):
    """Lists BPF local storage entries (task, cgroup, inode, socket storage) with their owners.

    Walks each local storage map's buckets from memory (bpftool shows these maps as empty).
    Values are rendered with the map's program BTF (hex without one); arena pointers to
    sdt_alloc slots are followed. Each map ends with a summary row counting anything skipped;
    --verbose adds one row per skipped bucket, broken chain or dropped element."""

    _required_framework_version = (2, 0, 0)
    _version = (2, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [
            ps.kernel_requirement(),
            *ps.map_selectors(),
            requirements.ListRequirement(name="pid", element_type=int, optional=True,
                                         description="Only entries owned by these tasks (thread ids)"),
            requirements.StringRequirement(name="payload_type", optional=True, default=None,
                                           description="BTF type of sdt_alloc slot payloads "
                                                       "(default: guessed from the payload size)"),
            requirements.BooleanRequirement(name="verbose", default=False, optional=True,
                                            description="One row per skipped or dropped item, with the reason"),
        ]

    def run(self):
        kctx = KernelContext.from_plugin(self)
        ids, names = ps.selected_maps(self.config)
        return ps.tree_grid("linux.ktstr.localstorage", view.GRID, view.rows(
            kctx, ids, names, self.config.get("pid"), self.config.get("payload_type"),
            self.config.get("verbose", False)))
