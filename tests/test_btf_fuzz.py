"""Corrupt and truncated BTF: only BtfError (with a byte offset when the parser knows one),
never IndexError/struct.error/RecursionError, never a hang. Deterministic (fixed seeds)."""

import random
import struct

import pytest

from helpers.btf import BtfBuilder, all_kinds_blob
from volatility3_ktstr.btf import Btf, BtfError
from volatility3_ktstr.isf import generate_types_only

BLOB, IDS = all_kinds_blob()


def exercise(btf):
    """Use every accessor on every type, the way a plugin or the ISF generator would."""
    for t in btf.all_types():
        btf.type_name(t.id)
        try:
            btf.size_of(t.id)
            btf.resolve(t.id)
        except BtfError:
            pass                    # a reference cycle is reported, not followed forever
        if t.is_struct:
            for m in t.members:
                if m.name and "." not in m.name:        # a flipped byte can make "a.b"
                    btf.member_path(t.id, m.name)
    generate_types_only(btf)


def parse_or_btf_error(data):
    """Parse ``data``; returns the Btf or the BtfError. Anything else fails the test."""
    try:
        btf = Btf.parse(data, source="fuzz")
    except BtfError as e:
        assert str(e).startswith("fuzz: corrupt BTF at byte "), str(e)
        assert e.offset is not None
        return e
    try:
        exercise(btf)
    except BtfError as e:
        return e
    return btf


def test_valid_blob_is_valid():
    assert isinstance(parse_or_btf_error(BLOB), Btf)


def test_every_truncation_raises_btf_error_with_offset():
    for n in range(len(BLOB)):
        with pytest.raises(BtfError) as e:
            Btf.parse(BLOB[:n])
        assert e.value.offset is not None, f"truncated to {n} bytes: {e.value}"


def test_every_truncation_of_a_section_length_is_caught():
    """Shrinking type_len cuts a record in the middle: the record, not the reader, fails."""
    hdr = list(struct.unpack_from("<HBBIIIII", BLOB))
    type_len = hdr[5]
    caught = 0
    for cut in range(1, type_len):
        hdr2 = hdr[:5] + [type_len - cut] + hdr[6:]
        data = struct.pack("<HBBIIIII", *hdr2) + BLOB[24:]
        out = parse_or_btf_error(data)
        caught += isinstance(out, BtfError)
    assert caught >= type_len // 2


@pytest.mark.parametrize("seed", range(4))
def test_random_byte_flips(seed):
    rng = random.Random(seed)
    outcomes = {"ok": 0, "error": 0}
    for _ in range(1500):
        data = bytearray(BLOB)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            data[pos] = rng.randrange(256) if rng.random() < 0.5 else data[pos] ^ (1 << rng.randrange(8))
        out = parse_or_btf_error(bytes(data))
        outcomes["ok" if isinstance(out, Btf) else "error"] += 1
    # Both paths must be exercised, or the loop proves nothing.
    assert outcomes["ok"] > 50 and outcomes["error"] > 50, outcomes


def test_random_word_values_in_type_section():
    """Big values (vlen, sizes, ids, name offsets) in records: bounds checks, not allocations."""
    rng = random.Random(7)
    tstart = 24
    type_len = struct.unpack_from("<I", BLOB, 12)[0]
    for _ in range(2000):
        data = bytearray(BLOB)
        pos = tstart + 4 * rng.randrange(type_len // 4)
        struct.pack_into("<I", data, pos, rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 1 << 24, rng.getrandbits(32)]))
        parse_or_btf_error(bytes(data))


def test_huge_vlen_does_not_allocate_or_hang():
    b = BtfBuilder()
    b.raw(struct.pack("<III", 0, (4 << 24) | 0xFFFF, 8))       # struct claiming 65535 members
    with pytest.raises(BtfError, match="run past the type section"):
        Btf.parse(b.build())


def test_random_garbage_after_valid_header():
    rng = random.Random(11)
    for n in (0, 1, 11, 12, 13, 64, 500):
        for _ in range(50):
            body = bytes(rng.getrandbits(8) for _ in range(n))
            hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, n, n, 0)
            parse_or_btf_error(hdr + body)
