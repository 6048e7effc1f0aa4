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

from ..core import ReadError
from ..kds import DamageLog, hlist_nodes, list_entries

MAX_DEPTH = 64        # components of one path (and mount crossings)
MAX_NAME = 256        # bytes of one component
MAX_SUPERBLOCKS = 1 << 14
MAX_MOUNTS = 1 << 12  # mounts of one superblock
MAX_CHILDREN = 1 << 16


class Vfs:
    """Names and paths of dentries, mounts and files of one kernel (offsets resolved once)."""

    def __init__(self, reader, layout):
        self.reader = reader
        self.layout = layout
        self.d_parent = layout.offset("dentry", "d_parent")
        self.d_name = layout.offset("dentry", "d_name.name")
        self.d_inode = layout.offset("dentry", "d_inode")
        self.mnt = layout.offset("mount", "mnt")
        self.mnt_parent = layout.offset("mount", "mnt_parent")
        self.mnt_mountpoint = layout.offset("mount", "mnt_mountpoint")
        self.mnt_root = layout.offset("vfsmount", "mnt_root")
        self.path_mnt = layout.offset("path", "mnt")
        self.path_dentry = layout.offset("path", "dentry")
        self._names = {}

    # --- names ----------------------------------------------------------------------------

    def name(self, dentry):
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

    def dentry_path(self, dentry, stop=0):
        """Path of ``dentry`` inside its filesystem (up to its root, or up to ``stop``)."""
        parts = []
        cur = dentry
        for _ in range(MAX_DEPTH):
            if cur == stop:
                return "/" + "/".join(reversed(parts))
            try:
                parent = self.reader.ptr(cur + self.d_parent)
            except ReadError:
                return "<unreadable>/" + "/".join(reversed(parts))
            if not parent or parent == cur:
                return "/" + "/".join(reversed(parts))
            parts.append(self.name(cur))
            cur = parent
        return ".../" + "/".join(reversed(parts))

    def path(self, vfsmount, dentry):
        """``d_path`` of (``struct vfsmount *``, ``struct dentry *``): mount crossings followed
        up to the namespace root."""
        if not vfsmount:
            return self.dentry_path(dentry)
        mount = vfsmount - self.mnt
        parts = []
        cur = dentry
        steps = 0
        while steps < 4 * MAX_DEPTH:
            steps += 1
            try:
                root = self.reader.ptr(mount + self.mnt + self.mnt_root)
                if cur == root:
                    parent = self.reader.ptr(mount + self.mnt_parent)
                    if not parent or parent == mount:
                        return "/" + "/".join(reversed(parts))
                    cur = self.reader.ptr(mount + self.mnt_mountpoint)
                    mount = parent
                    continue
                up = self.reader.ptr(cur + self.d_parent)
            except ReadError:
                return "<unreadable>/" + "/".join(reversed(parts))
            if not up or up == cur:      # a filesystem root that is not the mount's root
                return "/" + "/".join(reversed(parts))
            parts.append(self.name(cur))
            if len(parts) > MAX_DEPTH:
                break
            cur = up
        return ".../" + "/".join(reversed(parts))

    def struct_path(self, addr):
        """The path of the ``struct path`` at ``addr``."""
        raw = self.reader.read(addr, max(self.path_mnt, self.path_dentry) + 8)
        mnt = int.from_bytes(raw[self.path_mnt:self.path_mnt + 8], "little")
        dentry = int.from_bytes(raw[self.path_dentry:self.path_dentry + 8], "little")
        return self.path(mnt, dentry) if dentry else ""

    def file_path(self, file):
        return self.struct_path(file + self.layout.offset("file", "f_path"))

    # --- trees ----------------------------------------------------------------------------

    def children(self, dentry, damage=None):
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

    def inode(self, dentry):
        return self.reader.ptr(dentry + self.d_inode)


def super_blocks(reader, layout, head, damage=None):
    """Every ``struct super_block`` on the ``super_blocks`` list at ``head``."""
    yield from list_entries(reader, layout, head, "super_block", "s_list", limit=MAX_SUPERBLOCKS,
                            damage=damage, what="super_block (super_blocks)")


def sb_mounts(reader, layout, sb, damage=None):
    """Every ``struct mount`` of the superblock at ``sb``."""
    damage = damage if damage is not None else DamageLog()
    if layout.has("mount", "mnt_next_for_sb"):
        nxt = layout.offset("mount", "mnt_next_for_sb")
        try:
            cur = reader.ptr(sb + layout.offset("super_block", "s_mounts"))
        except ReadError as e:
            damage.add("super_block.s_mounts", sb, f"unreadable ({e.reason})")
            return
        seen = set()
        while cur:
            if cur in seen or len(seen) >= MAX_MOUNTS:
                damage.add("mount (s_mounts)", cur, "cycle or too many mounts")
                return
            seen.add(cur)
            yield cur
            try:
                cur = reader.ptr(cur + nxt)
            except ReadError as e:
                damage.add("mount (s_mounts)", cur, f"unreadable ({e.reason})")
                return
    elif layout.has("mount", "mnt_instance"):
        yield from list_entries(reader, layout, sb + layout.offset("super_block", "s_mounts"),
                                "mount", "mnt_instance", limit=MAX_MOUNTS, damage=damage,
                                what="mount (s_mounts)")
