"""bpf.objects verdicts and kds.idr_lookup on a synthetic kernel (tests/helpers/bpfworld.py):
a slot that was read decides "hidden", a slot that could not be read gives "unverifiable"."""

import pytest

from helpers.bpfworld import World
from volatility3_ktstr.bpf import objects
from volatility3_ktstr.core import ReadError, Reader
from volatility3_ktstr.kds import DamageLog, SlotUnreadable, idr_lookup


@pytest.fixture(params=[8, 0], ids=["padded", "natural"])
def world(request):
    w = World(pad=request.param)
    m3 = w.map(3, "three")
    m5 = w.map(5, "five")
    w.write_idrs()
    return w, m3, m5


def _registry(w, damage=None):
    k = w.kernel()
    reg = objects.Registry("map", "map_idr", w.syms["map_idr"], list(k.maps))
    if damage is not None:
        reg.damage = damage
    return reg


def test_idr_lookup_reads_only_the_slot(world):
    w, m3, m5 = world
    idr = w.syms["map_idr"]
    assert idr_lookup(w.mem, w.L, idr, 3) == m3
    assert idr_lookup(w.mem, w.L, idr, 5) == m5
    assert idr_lookup(w.mem, w.L, idr, 4) == 0
    w.mem.set("idr", idr, "idr_next", 1 << 21)
    assert idr_lookup(w.mem, w.L, idr, 1 << 20) == 0       # beyond the tree


def test_verdicts(world):
    w, m3, m5 = world
    stray = w.map(9, "stray", register=False)
    w.write_idrs()
    reg = _registry(w)
    assert objects.verdict(w.mem, w.L, reg, m3, 3)[0] == objects.REGISTERED
    v, why = objects.verdict(w.mem, w.L, reg, stray, 9)
    assert v == objects.HIDDEN and "slot for id 9 was read and is empty" in why
    v, why = objects.verdict(w.mem, w.L, reg, stray, 5)
    assert v == objects.HIDDEN and f"holds {m5:#x}" in why
    v, why = objects.verdict(w.mem, w.L, reg, stray, -1)
    assert v == objects.HIDDEN and "read whole" in why


def test_unreadable_node_is_unverifiable(world):
    w, m3, _m5 = world
    xa = w.syms["map_idr"] + w.L.offset("idr", "idr_rt")
    node = w.mem.u64(xa + w.L.offset("xarray", "xa_head")) - 2
    stray = w.map(9, "stray", register=False)

    class Holed(Reader):
        """The world's memory with the IDR node's page gone."""

        def read(self, addr, size):
            if addr < (node | 0xFFF) + 1 and addr + size > node & ~0xFFF:
                raise ReadError(addr, size, "unmapped")
            return w.mem.read(addr, size)

    with pytest.raises(SlotUnreadable):
        idr_lookup(Holed(), w.L, w.syms["map_idr"], 3)
    damage = DamageLog()
    damage.add("xa_node", node, "unmapped")
    reg = objects.Registry("map", "map_idr", w.syms["map_idr"], [], damage)
    v, why = objects.verdict(Holed(), w.L, reg, stray, 9)
    assert v == objects.UNVERIFIABLE and "slot for id 9 unreadable" in why and "unmapped" in why
    v, why = objects.verdict(w.mem, w.L, reg, stray, -1)
    assert v == objects.UNVERIFIABLE and "damaged" in why
    gone = objects.Registry("map", "map_idr", w.syms["map_idr"], error="head unreadable")
    assert objects.verdict(w.mem, w.L, gone, m3, 3)[0] == objects.UNVERIFIABLE


def test_id_the_registry_never_handed_out_is_unverifiable(world):
    """A registry head that is zeroed or stale (idr_next not past the id) is no witness."""
    w, _m3, _m5 = world
    stray = w.map(9, "stray", register=False)
    reg = _registry(w)
    w.mem.set("idr", w.syms["map_idr"], "idr_next", 6)    # as if id 9 was never handed out
    v, why = objects.verdict(w.mem, w.L, reg, stray, 9)
    assert v == objects.UNVERIFIABLE and "never handed out id 9" in why


def test_zeroed_node_is_damage_not_an_empty_registry(world):
    from volatility3_ktstr.kds import idr_entries

    w, _m3, _m5 = world
    xa = w.syms["map_idr"] + w.L.offset("idr", "idr_rt")
    node = w.mem.u64(xa + w.L.offset("xarray", "xa_head")) - 2
    w.mem.write(node, bytes(w.L.size("xa_node")))
    damage = DamageLog()
    assert list(idr_entries(w.mem, w.L, w.syms["map_idr"], damage=damage)) == []
    assert [d.kind for d in damage] == ["corrupt"] and "no entry" in next(iter(damage)).reason
    with pytest.raises(SlotUnreadable):
        idr_lookup(w.mem, w.L, w.syms["map_idr"], 3)
