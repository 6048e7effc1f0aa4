"""Lazy BTF parsing (``Btf.parse(..., lazy=True)``): the same types, the same errors.

Every type of a real kernel BTF is compared field by field with the full parse; damaged blobs
(random byte flips of the all-kinds blob) must give the same BtfError or the same types."""

import random

import pytest

from helpers.btf import BtfBuilder, all_kinds_blob
from volatility3_ktstr.btf import Btf, BtfError
from volatility3_ktstr.btf.lazy import LazyTypes as _LazyTypes

FIELDS = [f for f in Btf.parse(all_kinds_blob()[0]).own_types[0].__slots__]


def snapshot(btf):
    return [tuple(getattr(t, f, None) for f in FIELDS) for t in btf.own_types]


def outcome(data, lazy):
    try:
        btf = Btf.parse(data, source="x", lazy=lazy)
        return ("ok", snapshot(btf), btf.end_id, [t.id for t in btf.find("int")])
    except BtfError as e:
        return ("error", str(e), e.offset)


def test_all_kinds_blob_is_lazy_and_equal():
    blob, _ids = all_kinds_blob()
    lazy = Btf.parse(blob, lazy=True)
    assert isinstance(lazy._types, _LazyTypes)
    assert lazy._types._decoded == 0
    assert outcome(blob, True) == outcome(blob, False)


def test_legacy_bitfields_get_the_full_parse():
    b = BtfBuilder()
    u = b.int("unsigned int", 4)
    odd = b.int("u3", 4, bits=3)  # an INT narrower than its size: the pre-kind_flag encoding
    b.struct("s", 4, [("a", odd, 0), ("b", u, 0)])
    blob = b.build()
    lazy = Btf.parse(blob, lazy=True)
    assert not isinstance(lazy._types, _LazyTypes)
    assert snapshot(lazy) == snapshot(Btf.parse(blob))


def test_damaged_blobs_same_outcome():
    blob, _ids = all_kinds_blob()
    rng = random.Random(14)
    checked = 0
    for _ in range(1500):
        data = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(24, len(data))] = rng.randrange(256)
        want = outcome(bytes(data), False)
        assert outcome(bytes(data), True) == want
        checked += want[0] == "ok"
    assert checked > 100  # enough mutants parse to compare their types too


def test_kernel_btf_every_type_equal(amd64_kernel_btf, amd64_kernel_dir):
    data = (amd64_kernel_dir / "btf.raw").read_bytes()
    lazy = Btf.parse(data, lazy=True)
    assert isinstance(lazy._types, _LazyTypes)
    assert lazy.end_id == amd64_kernel_btf.end_id
    for name in ("task_struct", "bpf_map", "sched_ext_ops", "int", "rq"):
        assert [t.id for t in lazy.find(name)] == [t.id for t in amd64_kernel_btf.find(name)]
    assert snapshot(lazy) == snapshot(amd64_kernel_btf)
