"""A kernel adapter (kernel.KernelContext) for a real dump, in this process: for tests that need
objects read from a dump (a program's BTF, cgroups, files, ...) without going through `vol`'s
output. The dump is opened the way `vol` opens it (volrun.open_in_process)."""

import functools

import dumps
import volrun


@functools.lru_cache(maxsize=None)
def open_kctx(name):
    """KernelContext of dump ``name`` (its kernel ISF built once by tests/volrun.py)."""
    from volatility3_ktstr.kernel import KernelContext

    _, plugins = volrun.open_in_process(dumps.dump_path(name), ["maps"], [volrun.kernel_isf_dir(name)])
    return KernelContext.from_plugin(plugins["maps"])
