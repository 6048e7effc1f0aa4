"""Rows of ``linux.ktstr.arena``: each BPF arena map (user window, kernel window, page count) with
one child row per mapped page (user address -> kernel VA -> physical), and the sparse image
writer behind ``--dump``.

Takes the kernel (``kernel_model.Kernel``) and, for dumping, ``open_file(name)`` returning a writable, seekable
file object (the plugin passes Volatility's ``self.open``, so ``vol -o DIR`` decides where files
go); no Volatility import.
"""

import json
from typing import Any, Callable, List, Optional

from ..core import ReadError
from ..errors import KtstrError
from ..walkers import arena as arenaw
from . import HEX, Grid
from . import Kernel, Rows, inventory
from .common import select_maps

GRID = Grid(("MapID", int), ("Name", str), ("UserAddr", HEX), ("Size", int), ("KernelVA", HEX),
            ("Physical", HEX), ("Pages", int), ("Note", str), note="Note")


def rows(kctx: Kernel, ids: Optional[List[int]] = None, names: Optional[List[str]] = None,
         open_file: Optional[Callable[..., Any]] = None) -> Rows:
    kctx.require_type("bpf_arena")
    maps, _missing = select_maps(inventory.maps(kctx), ids, names)
    infos = arenaw.arena_infos(kctx.reader, kctx.layout, maps, kctx.page_size)
    if not infos:
        damaged = inventory.damage_texts(kctx)
        why = f" ({inventory.summary_of(kctx)}: {'; '.join(damaged)})" if damaged else ""
        raise KtstrError(("no BPF arena map in the dump" if not (ids or names)
                          else "none of the selected maps is an arena") + why)
    for info in infos:
        pages = list(arenaw.mapped_pages(info, kctx.mapping))
        note = "; ".join(filter(None, [info.error, inventory.off_registry_note(kctx, "map", info.map_kva)]))
        if open_file is not None and info.usable:
            note = "; ".join(n for n in (note, dump(kctx.reader, info, pages, open_file)) if n)
        yield 0, GRID.row(MapID=info.map_id, Name=info.name, UserAddr=info.user_vm_start,
                          Size=info.size, KernelVA=info.kern_vm_start, Pages=len(pages), Note=note)
        for p in pages:
            yield 1, GRID.row(MapID=info.map_id, Name=info.name, UserAddr=p.user_addr,
                              Size=info.page_size, KernelVA=p.kernel_va, Physical=p.phys, Note="")
    for text in inventory.damage_texts(kctx):
        yield 0, GRID.row(MapID=-1, Name="", UserAddr=0, Size=0, KernelVA=0, Pages=0, Note=text)


def dump(reader: Any, info: Any, pages: Any, open_file: Callable[..., Any]) -> str:
    """Write ``arena-<id>.bin`` (the arena's size, each mapped page at its offset from
    user_vm_start, holes left as holes) and ``arena-<id>.json`` (addresses, pages present);
    returns the note for the arena's row."""
    base = f"arena-{info.map_id}"
    written, unreadable = [], 0
    try:
        with open_file(base + ".bin") as f:
            for p in pages:
                try:
                    data = reader.read(p.kernel_va, info.page_size)
                except ReadError:
                    unreadable += 1     # mapped but outside the dump file
                    continue
                f.seek(p.user_addr - info.user_vm_start)
                f.write(data)
                written.append(p.user_addr)
            f.truncate(info.size)
        with open_file(base + ".json") as f:
            f.write(json.dumps({"map_id": info.map_id, "name": info.name,
                                "user_vm_start": info.user_vm_start, "size": info.size,
                                "kern_vm_start": info.kern_vm_start, "page_size": info.page_size,
                                "pages": written}, indent=1).encode())
    except OSError as e:
        raise KtstrError(f"--dump: cannot write {base}.bin: {e.strerror or e}") from None
    note = f"wrote {base}.bin ({len(written)} pages)"
    if unreadable:
        note += f"; {unreadable} mapped pages unreadable"
    return note
