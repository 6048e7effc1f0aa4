"""Network namespaces, their devices, and the cgroup v2 hierarchy (where BPF programs hook).

- Namespaces: ``net_namespace_list`` through ``struct net.list``; a namespace is named by its
  inode number (``net.ns.inum``, what ``/proc/PID/ns/net`` shows).
- Devices: ``net.dev_base_head`` through ``struct net_device.dev_list``; ``name``, ``ifindex``.
- cgroups: ``cgrp_dfl_root.cgrp`` and its descendants: ``cgroup.self.children`` holds the
  children's ``self.sibling`` (``struct cgroup_subsys_state`` embedded as ``cgroup.self``).

No Volatility import; bounded, cycle-checked walks (``kds``).
"""

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

from ..core import Layout, ReadError, Reader, Record, read_int
from ..kds import DamageLog, list_entries, tree_nodes

MAX_NAMESPACES = 1 << 14
MAX_DEVICES = 1 << 16
MAX_CGROUPS = 1 << 17
MAX_CGROUP_DEPTH = 64


@dataclass
class NetDev:
    kva: int
    name: str
    ifindex: int
    net: int            # struct net of its namespace
    netns_ino: int


def namespaces(reader: Reader, layout: Layout, net_namespace_list: int,
               damage: Optional[DamageLog] = None) -> Iterator[Tuple[int, int]]:
    """(``struct net *``, inode number) of every network namespace."""
    damage = damage if damage is not None else DamageLog()
    has_inum = layout.has("net", "ns")
    for net in list_entries(reader, layout, net_namespace_list, "net", "list",
                            limit=MAX_NAMESPACES, damage=damage, what="net (net_namespace_list)"):
        ino = 0
        if has_inum:
            try:
                ino = read_int(reader, layout, "net", net, "ns.inum")
            except ReadError as e:
                damage.add("struct net", net, f"ns.inum unreadable ({e.reason})")
        yield net, ino


def devices(reader: Reader, layout: Layout, net: int, netns_ino: int = 0,
            damage: Optional[DamageLog] = None) -> Iterator[NetDev]:
    """:class:`NetDev` of every device of the namespace ``net``."""
    damage = damage if damage is not None else DamageLog()
    for dev in list_entries(reader, layout, net + layout.offset("net", "dev_base_head"),
                            "net_device", "dev_list", limit=MAX_DEVICES, damage=damage,
                            what="net_device (dev_base_head)"):
        try:
            r = Record(reader, layout, "net_device", dev, ("name", "ifindex"))
        except ReadError as e:
            damage.add("net_device", dev, f"unreadable ({e.reason})")
            continue
        yield NetDev(dev, r.str("name", ""), r.int("ifindex"), net, netns_ino)


def all_devices(reader: Reader, layout: Layout, net_namespace_list: int,
                damage: Optional[DamageLog] = None) -> Iterator[NetDev]:
    for net, ino in namespaces(reader, layout, net_namespace_list, damage):
        yield from devices(reader, layout, net, ino, damage)


def cgroups(reader: Reader, layout: Layout, root_cgroup: int, damage: Optional[DamageLog] = None,
            limit: int = MAX_CGROUPS) -> Iterator[int]:
    """Every cgroup of the hierarchy under ``root_cgroup`` (itself first), depth first."""
    damage = damage if damage is not None else DamageLog()
    self_off = layout.offset("cgroup", "self")
    children = layout.offset("cgroup_subsys_state", "children")

    def kids(cg):
        for css in list_entries(reader, layout, cg + self_off + children, "cgroup_subsys_state",
                                "sibling", limit=limit, damage=damage, what="cgroup (self.children)"):
            yield css - self_off

    for cg, _depth, _parent in tree_nodes(root_cgroup, kids, limit=limit, max_depth=MAX_CGROUP_DEPTH,
                                          damage=damage, what="cgroup"):
        yield cg
