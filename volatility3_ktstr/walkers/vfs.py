"""Files, dentries, mounts and superblocks: names and paths of VFS objects in kernel memory.

- ``struct dentry``: ``d_name.name``, ``d_parent`` (a filesystem root is its own parent),
  ``d_inode``; children on ``d_children``/``d_sib`` (hlist, 6.8+) or ``d_subdirs``/``d_child``
  (list_head, older kernels).
- ``struct mount`` embeds ``struct vfsmount mnt`` (``mnt_root``, ``mnt_sb``); a mount sits on
  ``mnt_mountpoint`` of ``mnt_parent`` (the namespace root is its own parent). A superblock's
  mounts: ``s_mounts`` -> ``mount.mnt_next_for_sb`` (6.14+) or the ``s_mounts`` list through
  ``mount.mnt_instance`` (older).
- ``struct path {mnt, dentry}``; ``struct file`` has ``f_path``, ``f_op``, ``f_inode``,
  ``private_data``.
- Superblocks: the ``super_blocks`` list through ``super_block.s_list``.

A path is built like the kernel's ``d_path`` (mount crossings included) but bounded: at most
``MAX_DEPTH`` components. No Volatility import.
"""

from typing import Dict, Iterator, List, Optional

from ..core import Layout, ReadError, Reader, Record
from ..kds import DamageLog, follow, hlist_nodes, list_entries, parent_chain, steps

MAX_DEPTH = 64        # components of one path (and mount crossings)
MAX_NAME = 256        # bytes of one component
MAX_SUPERBLOCKS = 1 << 14
MAX_MOUNTS = 1 << 12  # mounts of one superblock
MAX_CHILDREN = 1 << 16


class Vfs:
    """Names and paths of dentries, mounts and files of one kernel (offsets resolved once)."""

    def __init__(self, reader: Reader, layout: Layout) -> None:
        self.reader = reader
        self.layout = layout
        self.d_parent = layout.offset("dentry", "d_parent")
        self.d_name = layout.offset("dentry", "d_name.name")
        self.d_inode = layout.offset("dentry", "d_inode")
        self.mnt = layout.offset("mount", "mnt")
        self.mnt_parent = layout.offset("mount", "mnt_parent")
        self.mnt_mountpoint = layout.offset("mount", "mnt_mountpoint")
        self.mnt_root = layout.offset("vfsmount", "mnt_root")
        self._names: Dict[int, str] = {}

    # --- names ----------------------------------------------------------------------------

    def name(self, dentry: int) -> str:
        """The dentry's own name ('?' when unreadable)."""
        hit = self._names.get(dentry)
        if hit is None:
            try:
                ptr = self.reader.ptr(dentry + self.d_name)
                hit = self.reader.cstring(ptr, MAX_NAME) if ptr else "?"
            except ReadError:
                hit = "?"
            self._names[dentry] = hit
        return hit

    def dentry_path(self, dentry: int, stop: int = 0) -> str:
        """Path of ``dentry`` inside its filesystem (up to its root, or up to ``stop``)."""
        chain = DamageLog()
        nodes: List[int] = []
        for cur in parent_chain(self.reader, dentry, self.d_parent, limit=MAX_DEPTH, damage=chain,
                                what="dentry (d_parent)"):
            if cur == stop:
                return "/" + "/".join(self.name(d) for d in reversed(nodes))
            nodes.append(cur)
        if dentry == 0:
            return "/" if stop == 0 else "<unreadable>/"
        if chain:       # a bound or a cycle: the path is cut; an unreadable parent: unknown
            kind = next(iter(chain)).kind
            names = "/".join(self.name(d) for d in reversed(nodes if kind != "unreadable" else nodes[:-1]))
            return (".../" if kind != "unreadable" else "<unreadable>/") + names
        return "/" + "/".join(self.name(d) for d in reversed(nodes[:-1]))   # the root has no name

    def _up(self, state):
        """One step of ``d_path`` from (mount, dentry, _): to the parent dentry (the state names
        the dentry it came from), across to the mount point of the parent mount, or None at
        the namespace root or a filesystem root."""
        mount, cur, _ = state
        root = self.reader.ptr(mount + self.mnt + self.mnt_root)
        if cur == root:
            parent = self.reader.ptr(mount + self.mnt_parent)
            if not parent or parent == mount:
                return None
            return parent, self.reader.ptr(mount + self.mnt_mountpoint), 0
        up = self.reader.ptr(cur + self.d_parent)
        if not up or up == cur:      # a filesystem root that is not the mount's root
            return None
        return mount, up, cur

    def path(self, vfsmount: int, dentry: int) -> str:
        """``d_path`` of (``struct vfsmount *``, ``struct dentry *``): mount crossings followed
        up to the namespace root."""
        if not vfsmount:
            return self.dentry_path(dentry)
        chain = DamageLog()
        parts = []
        for _mount, _cur, child in steps((vfsmount - self.mnt, dentry, 0), self._up,
                                         limit=4 * MAX_DEPTH, damage=chain, what="path"):
            if child:
                parts.append(self.name(child))
                if len(parts) > MAX_DEPTH:
                    return ".../" + "/".join(reversed(parts))
        if any(d.kind == "unreadable" for d in chain):
            return "<unreadable>/" + "/".join(reversed(parts))
        if chain:
            return ".../" + "/".join(reversed(parts))
        return "/" + "/".join(reversed(parts))

    def struct_path(self, addr: int) -> str:
        """The path of the ``struct path`` at ``addr``."""
        r = Record(self.reader, self.layout, "path", addr)
        mnt, dentry = r.int("mnt"), r.int("dentry")
        return self.path(mnt, dentry) if dentry else ""

    def file_path(self, file: int) -> str:
        return self.struct_path(file + self.layout.offset("file", "f_path"))

    # --- trees ----------------------------------------------------------------------------

    def children(self, dentry: int, damage: Optional[DamageLog] = None) -> Iterator[int]:
        """Child dentries of ``dentry`` (positive and negative)."""
        lay = self.layout
        if lay.has("dentry", "d_children") and lay.has("dentry", "d_sib"):
            off = lay.offset("dentry", "d_sib")
            for node in hlist_nodes(self.reader, lay, dentry + lay.offset("dentry", "d_children"),
                                    limit=MAX_CHILDREN, damage=damage, what="dentry (d_children)"):
                yield node - off
        else:
            yield from list_entries(self.reader, lay, dentry + lay.offset("dentry", "d_subdirs"),
                                    "dentry", "d_child", limit=MAX_CHILDREN, damage=damage,
                                    what="dentry (d_subdirs)")

    def inode(self, dentry: int) -> int:
        return self.reader.ptr(dentry + self.d_inode)


def super_blocks(reader: Reader, layout: Layout, head: int, damage: Optional[DamageLog] = None) -> Iterator[int]:
    """Every ``struct super_block`` on the ``super_blocks`` list at ``head``."""
    yield from list_entries(reader, layout, head, "super_block", "s_list", limit=MAX_SUPERBLOCKS,
                            damage=damage, what="super_block (super_blocks)")


def sb_mounts(reader: Reader, layout: Layout, sb: int, damage: Optional[DamageLog] = None) -> Iterator[int]:
    """Every ``struct mount`` of the superblock at ``sb``."""
    damage = damage if damage is not None else DamageLog()
    if layout.has("mount", "mnt_next_for_sb"):
        nxt = layout.offset("mount", "mnt_next_for_sb")
        try:
            first = reader.ptr(sb + layout.offset("super_block", "s_mounts"))
        except ReadError as e:
            damage.add("super_block.s_mounts", sb, f"unreadable ({e.reason})")
            return
        yield from follow(reader, first, nxt, lambda a: a == 0, limit=MAX_MOUNTS, damage=damage,
                          what="mount (s_mounts)")
    elif layout.has("mount", "mnt_instance"):
        yield from list_entries(reader, layout, sb + layout.offset("super_block", "s_mounts"),
                                "mount", "mnt_instance", limit=MAX_MOUNTS, damage=damage,
                                what="mount (s_mounts)")
