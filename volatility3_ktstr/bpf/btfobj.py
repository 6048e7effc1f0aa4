"""`struct btf` objects (kernel/bpf/btf.c) in guest memory: where their raw blob is."""

from dataclasses import dataclass

from ..core import Record

MAX_BTF_BYTES = 64 << 20


class BtfObjectError(Exception):
    pass


@dataclass
class BtfObject:
    kva: int
    id: int
    name: str
    data_kva: int
    data_size: int
    base_kva: int


def read_btf_object(reader, layout, kva) -> BtfObject:
    """Read the fields of the ``struct btf`` at ``kva`` with one bulk read."""
    r = Record(reader, layout, "btf", kva)
    obj = BtfObject(
        kva=kva,
        id=r.int("id", 0),
        name=r.str("name", ""),
        data_kva=r.int("data"),
        data_size=r.int("data_size"),
        base_kva=r.int("base_btf", 0),
    )
    if not obj.data_kva or not 24 <= obj.data_size <= MAX_BTF_BYTES:
        raise BtfObjectError(f"implausible BTF blob (data {obj.data_kva:#x}, size {obj.data_size})")
    if obj.base_kva == kva:
        raise BtfObjectError("BTF object is its own base")
    return obj


def read_blob(reader, obj: BtfObject, chunk=1 << 20) -> bytes:
    """The raw BTF bytes, read in large chunks."""
    parts = []
    done = 0
    while done < obj.data_size:
        n = min(chunk, obj.data_size - done)
        parts.append(reader.read(obj.data_kva + done, n))
        done += n
    return b"".join(parts)
