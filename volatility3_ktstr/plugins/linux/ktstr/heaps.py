"""linux.ktstr.heaps: every block of every BPF arena allocator (scx library buddy, stack, bump;
sdt_alloc), with the allocators' invariants checked."""

from volatility3.framework import interfaces
from volatility3.framework.configuration import requirements

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.views import heaps as view


class Heaps(interfaces.plugins.PluginInterface):
    """Lists the blocks of BPF arena allocators: the scx library's buddy, stack and bump
    allocators and sdt_alloc, one row per live block (arena address, size, buddy order, kernel
    VA, physical address, type, references).

    Allocators are found by type: every global variable of a BPF object whose BTF type is
    struct buddy/scx_buddy, stk/scx_stk, bump/scx_static or scx_allocator. Broken invariants
    (a block both allocated and free, free-list links out of the chunk or cyclic, orders that do
    not tile a chunk, the chunk header handed out, counters that disagree with the walk) are
    rows with State "damage" naming the chunk and the evidence. A block that a typed pointer
    reaches is rendered with that type, else shown as hex with the reason."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [
            ps.kernel_requirement(),
            requirements.StringRequirement(name="kind", optional=True, default=None,
                                           description="only buddy, stack, bump or sdt_alloc"),
            requirements.BooleanRequirement(name="freed", optional=True, default=False,
                                            description="also list free blocks"),
            requirements.IntRequirement(name="max_blocks", optional=True, default=None,
                                        description="stop each allocator after N live blocks"),
        ]

    def run(self):
        return ps.tree_grid("linux.ktstr.heaps", view.GRID, view.rows(
            KernelContext.from_plugin(self), self.config.get("kind"), bool(self.config.get("freed")),
            self.config.get("max_blocks")))
