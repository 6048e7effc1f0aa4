"""Where a task's kernel stack lies (no Volatility import).

``task->stack`` is the lowest address; its size is THREAD_SIZE, which no type records. With
virtually mapped stacks (CONFIG_VMAP_STACK) ``task->stack_vm_area`` (a ``struct vm_struct``)
holds the mapped page count; without one the architecture's default size is taken (16 KiB on
x86-64 and arm64, 4 pages of 4 KiB: arch/*/include/asm/thread_info.h / page_64_types.h)
and said so.
"""

from dataclasses import dataclass
from typing import Optional

from ..core import Layout, LayoutError, ReadError, Reader, Record, read_int

DEFAULT_THREAD_PAGES = 4
MAX_THREAD_SIZE = 1 << 20


@dataclass(frozen=True)
class StackRange:
    lo: int
    hi: int
    what: str = "task stack"
    size_source: str = "stack_vm_area"

    def holds(self, addr: int, size: int = 8) -> bool:
        return self.lo <= addr and addr + size <= self.hi


def task_stack_range(reader: Reader, layout: Layout, task: int, page_size: int = 4096) -> Optional[StackRange]:
    """The task's kernel stack [lo, hi) or None when ``task->stack`` is NULL/unreadable."""
    if not layout.has("task_struct", "stack"):
        return None
    # The two members lie pages apart in a task_struct: read each alone (a dump may lack a page).
    try:
        lo = read_int(reader, layout, "task_struct", task, "stack")
    except ReadError:
        return None
    if not lo:
        return None
    vm = 0
    if layout.has("task_struct", "stack_vm_area"):
        try:
            vm = read_int(reader, layout, "task_struct", task, "stack_vm_area")
        except ReadError:
            vm = 0
    size, source = 0, "default THREAD_SIZE"
    if vm and layout.has("vm_struct", "nr_pages"):
        try:
            pages = Record(reader, layout, "vm_struct", vm, ("nr_pages", "addr")).int("nr_pages")
            if 0 < pages * page_size <= MAX_THREAD_SIZE:
                size, source = pages * page_size, "stack_vm_area"
        except (ReadError, LayoutError):
            pass
    if not size:
        size = DEFAULT_THREAD_PAGES * page_size
    return StackRange(lo, lo + size, "task stack", source)
