"""BPF maps from the kernel's ``map_idr``: one bulk read of ``struct bpf_map`` per map."""

from dataclasses import dataclass

from ..core import ReadError, Record
from ..kds import idr_entries

# enum bpf_map_type is uapi (stable ABI): names for kernels whose ISF lacks the enum.
UAPI_MAP_TYPES = (
    "unspec hash array prog_array perf_event_array percpu_hash percpu_array stack_trace "
    "cgroup_array lru_hash lru_percpu_hash lpm_trie array_of_maps hash_of_maps devmap sockmap "
    "cpumap xskmap sockhash cgroup_storage reuseport_sockarray percpu_cgroup_storage queue stack "
    "sk_storage devmap_hash struct_ops ringbuf inode_storage task_storage bloom_filter "
    "user_ringbuf cgrp_storage arena insn_array"
).split()

LOCAL_STORAGE_TYPES = ("sk_storage", "inode_storage", "task_storage", "cgrp_storage")


def type_names_from_enum(constants, prefix, fallback=()):
    """{value: short name} from enum constants like BPF_MAP_TYPE_HASH -> 'hash'."""
    names = dict(enumerate(fallback))
    for name, value in (constants or {}).items():
        if name.startswith(prefix) and not name.startswith("__"):
            short = name[len(prefix):].lower()
            if short.endswith("_deprecated"):
                short = short[: -len("_deprecated")]
            names[value] = short
    return names


@dataclass
class BpfMap:
    kva: int
    id: int
    type: int = -1
    type_name: str = "?"
    name: str = ""
    key_size: int = 0
    value_size: int = 0
    max_entries: int = 0
    flags: int = 0
    map_extra: int = 0
    btf_kva: int = 0
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0
    btf_vmlinux_value_type_id: int = 0
    frozen: bool = False
    error: str = None   # set when the struct could not be read; other fields are then unknown


_FIELDS = (  # (attribute, member): widths and signedness come from the layout
    ("type", "map_type"), ("key_size", "key_size"), ("value_size", "value_size"),
    ("max_entries", "max_entries"), ("flags", "map_flags"), ("map_extra", "map_extra"),
    ("btf_kva", "btf"), ("btf_key_type_id", "btf_key_type_id"),
    ("btf_value_type_id", "btf_value_type_id"),
    ("btf_vmlinux_value_type_id", "btf_vmlinux_value_type_id"), ("frozen", "frozen"),
)


def read_map(reader, layout, kva, map_id=None, type_names=None) -> BpfMap:
    """The ``struct bpf_map`` at ``kva``. Unreadable memory gives a BpfMap with ``error`` set."""
    m = BpfMap(kva=kva, id=map_id if map_id is not None else -1)
    try:
        r = Record(reader, layout, "bpf_map", kva)
    except ReadError as e:
        m.error = f"struct bpf_map unreadable: {e.reason}"
        return m
    for attr, member in _FIELDS:
        if r.has(member):
            setattr(m, attr, r.int(member))
    m.frozen = bool(m.frozen)
    real_id = r.int("id")
    if map_id is not None and real_id != map_id:
        m.error = f"map_idr says id {map_id} but the struct says {real_id} (stale or corrupt)"
    m.id = real_id if map_id is None else map_id
    m.name = r.str("name")
    names = type_names or dict(enumerate(UAPI_MAP_TYPES))
    m.type_name = names.get(m.type, f"type {m.type}")
    return m


def iter_maps(reader, layout, map_idr_addr, type_names=None, damage=None, max_maps=1 << 16):
    """Every map in ``map_idr`` in id order; skipped registry nodes go to ``damage``."""
    for map_id, kva in idr_entries(reader, layout, map_idr_addr, limit=max_maps, damage=damage):
        yield read_map(reader, layout, kva, map_id, type_names)
