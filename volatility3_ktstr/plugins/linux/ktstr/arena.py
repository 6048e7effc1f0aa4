"""linux.ktstr.arena: BPF arena maps, their kernel window and mapped pages; --dump writes them."""

import json
import os

from volatility3.framework import interfaces, renderers
from volatility3.framework.configuration import requirements
from volatility3.framework.renderers import format_hints

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.core import ReadError
from volatility3_ktstr.errors import KtstrError, guarded
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.walkers import arena as arenaw

NAME = "linux.ktstr.arena"


class Arena(interfaces.plugins.PluginInterface):
    """Lists BPF arena maps: user_vm_start, size, the kernel window (bpf_arena.kern_vm->addr
    plus the guard half) and every mapped page (user address -> kernel VA -> physical).

    --dump DIR writes arena-<id>.bin per arena: a sparse image the size of the arena with each
    mapped page at its offset from user_vm_start (holes read as zeros), plus arena-<id>.json
    (addresses and the list of pages present)."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [
            ps.kernel_requirement(),
            requirements.ListRequirement(name="id", element_type=int, optional=True,
                                         description="only these arena map ids"),
            requirements.StringRequirement(name="dump", optional=True, default=None,
                                           description="directory to write arena images to"),
        ]

    def _generator(self):
        kctx = KernelContext.from_plugin(self)
        kctx.require_type("bpf_arena")
        maps = ps.select_maps(kctx.maps(), ids=self.config.get("id"))
        infos = arenaw.arena_infos(kctx.reader, kctx.layout, maps, kctx.page_size)
        if not infos:
            raise KtstrError("no BPF arena map in the dump" if not self.config.get("id")
                             else "none of the selected maps is an arena")
        out_dir = self.config.get("dump")
        if out_dir:
            try:
                os.makedirs(out_dir, exist_ok=True)
            except OSError as e:
                raise KtstrError(f"--dump {out_dir}: {e.strerror}") from None
        layer = kctx.layer
        for info in infos:
            pages = list(arenaw.mapped_pages(
                info, lambda off, length: layer.mapping(off, length, ignore_errors=True)))
            note = info.error or ""
            if out_dir and info.usable:
                note = _join(note, _dump(kctx.reader, info, pages, out_dir))
            yield (0, (info.map_id, info.name, format_hints.Hex(info.user_vm_start), info.size,
                       format_hints.Hex(info.kern_vm_start), renderers.NotApplicableValue(),
                       len(pages), note))
            for p in pages:
                yield (1, (info.map_id, info.name, format_hints.Hex(p.user_addr), info.page_size,
                           format_hints.Hex(p.kernel_va), format_hints.Hex(p.phys),
                           renderers.NotApplicableValue(), ""))

    def run(self):
        return renderers.TreeGrid(
            [("MapID", int), ("Name", str), ("UserAddr", format_hints.Hex), ("Size", int),
             ("KernelVA", format_hints.Hex), ("Physical", format_hints.Hex), ("Pages", int),
             ("Note", str)],
            guarded(NAME, self._generator()))


def _join(a, b):
    return f"{a}; {b}" if a else b


def _dump(reader, info, pages, out_dir):
    """Write the sparse image and its index; returns the note for the arena's row."""
    base = os.path.join(out_dir, f"arena-{info.map_id}")
    written, unreadable = [], 0
    try:
        with open(base + ".bin", "wb") as f:
            for p in pages:
                try:
                    data = reader.read(p.kernel_va, info.page_size)
                except ReadError:
                    unreadable += 1     # mapped but outside the dump file
                    continue
                f.seek(p.user_addr - info.user_vm_start)
                f.write(data)
                written.append(p.user_addr)
            # Holes stay holes: the file has the arena's size but only written pages use disk.
            f.truncate(info.size)
        with open(base + ".json", "w") as f:
            json.dump({"map_id": info.map_id, "name": info.name,
                       "user_vm_start": info.user_vm_start, "size": info.size,
                       "kern_vm_start": info.kern_vm_start, "page_size": info.page_size,
                       "pages": written}, f, indent=1)
    except OSError as e:
        raise KtstrError(f"--dump: cannot write {base}.bin: {e.strerror}") from None
    note = f"wrote {base}.bin ({len(written)} pages)"
    if unreadable:
        note += f"; {unreadable} mapped pages unreadable"
    return note
