"""Objects pinned in bpffs: every file of every mounted BPF filesystem instance.

Each bpffs instance is a ``struct super_block`` on ``super_blocks`` whose ``s_type`` is the
kernel's ``bpf_fs_type``. Its files are walked from ``s_root`` through the dentry tree; a
file's inode says what it is by its ``i_op`` (``bpf_map_iops``, ``bpf_prog_iops``,
``bpf_link_iops``; directories ``bpf_dir_iops``), compared by address, and ``inode->i_private``
is the object. Paths are given under the instance's mount point(s) (``sb->s_mounts``). No
Volatility import.
"""

from dataclasses import dataclass, field

from ..core import ReadError, Record
from ..kds import DamageLog, tree_nodes
from ..walkers import vfs as vfswalk

IOPS = (("bpf_map_iops", "map"), ("bpf_prog_iops", "prog"), ("bpf_link_iops", "link"),
        ("bpf_dir_iops", "dir"))
MAX_ENTRIES = 1 << 16       # dentries visited per instance
MAX_DEPTH = 64


@dataclass
class Pin:
    path: str            # under the first mount point ("<unmounted bpffs>/..." when none)
    kind: str            # map, prog, link
    obj: int             # inode->i_private
    inode: int
    ino: int
    sb: int
    mounts: list = field(default_factory=list)   # every mount point of the instance


def iops_kinds(kernel):
    out = {}
    for sym, kind in IOPS:
        a = kernel.symbol(sym)
        if a:
            out[a] = kind
    return out


def instances(kernel, damage=None):
    """(superblock, [mount point paths]) of every bpffs instance."""
    damage = damage if damage is not None else DamageLog()
    reader, layout = kernel.reader, kernel.layout
    fs_type = kernel.symbol("bpf_fs_type")
    head = kernel.symbol("super_blocks")
    if not fs_type or not head:
        return
    vfs = vfswalk.Vfs(reader, layout)
    mnt = layout.offset("mount", "mnt")
    for sb in vfswalk.super_blocks(reader, layout, head, damage):
        try:
            if reader.ptr(sb + layout.offset("super_block", "s_type")) != fs_type:
                continue
        except ReadError as e:
            damage.add("super_block", sb, f"unreadable ({e.reason})")
            continue
        points = []
        for m in vfswalk.sb_mounts(reader, layout, sb, damage):
            try:
                root = reader.ptr(m + mnt + layout.offset("vfsmount", "mnt_root"))
            except ReadError as e:
                damage.add("mount", m, f"unreadable ({e.reason})")
                continue
            points.append(vfs.path(m + mnt, root))
        yield sb, sorted(set(points), key=lambda p: (len(p), p))


def pins(kernel, damage=None):
    """:class:`Pin` of every map, program and link pinned in any bpffs instance, by path."""
    damage = damage if damage is not None else DamageLog()
    reader, layout = kernel.reader, kernel.layout
    kinds = iops_kinds(kernel)
    if not kinds:
        return
    vfs = vfswalk.Vfs(reader, layout)
    out = []
    for sb, mounts in instances(kernel, damage):
        prefix = mounts[0] if mounts else f"<unmounted bpffs {sb:#x}>"
        try:
            root = reader.ptr(sb + layout.offset("super_block", "s_root"))
        except ReadError as e:
            damage.add("super_block.s_root", sb, f"unreadable ({e.reason})")
            continue
        paths = {root: prefix.rstrip("/")}
        dirs = {root}
        nodes = tree_nodes(root, lambda d: vfs.children(d, damage) if d in dirs else (),
                           limit=MAX_ENTRIES, max_depth=MAX_DEPTH, damage=damage, what="dentry")
        for child, _depth, parent in nodes:
            if child == root:
                continue
            try:
                inode = vfs.inode(child)
                if not inode:
                    continue        # a negative dentry: a name that is not there
                r = Record(reader, layout, "inode", inode, ("i_op", "i_private", "i_ino"))
            except ReadError as e:
                damage.add("dentry/inode", child, f"unreadable ({e.reason})")
                continue
            kind = kinds.get(r.int("i_op"))
            name = paths[child] = f"{paths[parent]}/{vfs.name(child)}"
            if kind == "dir":
                dirs.add(child)
            elif kind is not None:
                out.append(Pin(name, kind, r.int("i_private"), inode, r.int("i_ino"), sb, mounts))
    out.sort(key=lambda p: p.path)
    yield from out
