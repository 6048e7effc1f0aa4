"""LA57 (5-level x86-64 paging) layer on synthetic page tables, and the LA57 side of the stacker."""

import struct
import time

import pytest
from volatility3.framework import contexts, exceptions
from volatility3.framework.layers import intel, physical

from volatility3_ktstr.layers import Intel32eLA57, LinuxIntel32eLA57
from volatility3_ktstr.layers import stackers

P, RW, PS, PROTNONE = 1, 2, 1 << 7, 1 << 8
NX = 1 << 63
PAGE = 4096


def idx(va):
    """PML5, PML4, PDPT, PD, PT indices of a 57-bit address."""
    return [(va >> s) & 511 for s in (48, 39, 30, 21, 12)]


def canon(va):
    return va | (((1 << 64) - 1) ^ ((1 << 57) - 1)) if va & (1 << 56) else va


class Image:
    def __init__(self, pages=64):
        self.buf = bytearray(PAGE * pages)
        self.next = 1
        self.buf[0:16] = b"PHYS-ZERO-MARKER"

    def alloc(self, fill=None):
        pa = self.next * PAGE
        self.next += 1
        if fill:
            self.buf[pa:pa + PAGE] = (fill * (PAGE // len(fill) + 1))[:PAGE]
        return pa

    def put(self, table, i, e):
        struct.pack_into("<Q", self.buf, table + 8 * i, e)


def build():
    img = Image()
    exp = {"ok": {}, "fault": [], "translate_only": {}}
    pml5 = img.alloc()
    # Kernel-half address only reachable with 5 levels (PML5 index 0x1e2, below the 4-level range).
    va = canon(0x1E2 << 48 | 0x5 << 39 | 0x7 << 30 | 0x9 << 21 | 0xB << 12)
    i5, i4, i3, i2, i1 = idx(va)
    pml4, pdpt, pd, pt = img.alloc(), img.alloc(), img.alloc(), img.alloc()
    img.put(pml5, i5, pml4 | P | RW)
    img.put(pml4, i4, pdpt | P | RW)
    img.put(pdpt, i3, pd | P | RW)
    img.put(pd, i2, pt | P | RW)
    data = img.alloc(fill=b"LA57DATA")
    img.put(pt, i1, data | P | RW | NX)
    exp["ok"][va + 0x10] = data + 0x10
    exp["data_va"] = va
    # Non-present PTE, and a PROT_NONE PTE (present clear, PFN inverted, as Linux stores it).
    img.put(pt, i1 + 1, 0)
    exp["fault"].append(va + PAGE)
    prot = img.alloc(fill=b"PROTNONE")
    inverted = (~prot & ((1 << 52) - 1) & ~0xFFF) | PROTNONE
    img.put(pt, i1 + 2, inverted)
    exp["ok"][va + 2 * PAGE + 8] = prot + 8
    # PTE whose PFN uses bits 46..51 (LA57 kernels mask PFNs with 52 bits).
    img.put(pt, i1 + 3, (0x3 << 46) | data | P)
    exp["translate_only"][va + 3 * PAGE] = (0x3 << 46) | data
    # 2 MiB page (PD.PS) at PA 0 (readable) and 1 GiB page (PDPT.PS) beyond memory.
    img.put(pd, i2 + 1, 0 | P | PS)
    exp["ok"][va + (1 << 21) - (i1 << 12)] = 0
    exp["zero_va"] = va + (1 << 21) - (i1 << 12)
    img.put(pdpt, i3 + 1, (5 << 30) | P | PS)
    va_1g = canon(0x1E2 << 48 | 0x5 << 39 | (i3 + 1) << 30)
    exp["translate_only"][va_1g + 0x12345678] = (5 << 30) + 0x12345678
    # A table outside physical memory, a non-present PML5 slot.
    img.put(pd, i2 + 2, (1 << 40) | P | RW)
    exp["fault"].append(va - (i1 << 12) + 2 * (1 << 21))
    exp["fault"].append(canon(0x1E3 << 48))
    # Self-referencing PML5 slot: VA (R,R,R,R,R) maps the PML5 page itself.
    r = 0x1FE
    img.put(pml5, r, pml5 | P | RW)
    exp["self"] = (canon(r << 48 | r << 39 | r << 30 | r << 21 | r << 12), pml5)
    # Non-canonical: bit 56 set without sign extension; 4-level style kernel address.
    exp["fault"].append(1 << 56)
    exp["fault"].append(0x0000_8000_0000_0000 | (1 << 56) - (1 << 48))
    return img, pml5, exp


def layer_for(img, root, cls=LinuxIntel32eLA57):
    ctx = contexts.Context()
    ctx.add_layer(physical.BufferDataLayer(ctx, "phys", "phys", bytes(img.buf)))
    ctx.config["virt.memory_layer"] = "phys"
    ctx.config["virt.page_map_offset"] = root
    layer = cls(ctx, "virt", "virt")
    ctx.add_layer(layer)
    return layer


@pytest.mark.parametrize("cls", [LinuxIntel32eLA57, Intel32eLA57])
def test_la57_synthetic(cls):
    img, root, exp = build()
    layer = layer_for(img, root, cls)
    assert layer.metadata["architecture"] == "Intel64"
    assert isinstance(layer, intel.Intel32e)
    assert layer.maximum_address == (1 << 57) - 1
    for va, pa in exp["ok"].items():
        if cls is Intel32eLA57 and pa == exp["ok"][exp["data_va"] + 2 * PAGE + 8]:
            continue  # PROT_NONE is a Linux rule
        assert layer.translate(va) == (pa, "phys"), hex(va)
    assert layer.read(exp["data_va"], 8) == b"LA57DATA"
    assert layer.read(exp["zero_va"], 16) == b"PHYS-ZERO-MARKER"
    for va, pa in exp["translate_only"].items():
        assert layer._translate(va)[0] == pa, hex(va)
        assert not layer.is_valid(va)
    for va in exp["fault"]:
        with pytest.raises(exceptions.InvalidAddressException):
            layer.translate(va)
    self_va, pml5 = exp["self"]
    assert layer.translate(self_va)[0] == pml5
    assert layer.read(self_va, 16) == bytes(img.buf[pml5:pml5 + 16])


def test_linux_la57_prot_none_and_isinstance():
    img, root, exp = build()
    layer = layer_for(img, root)
    assert isinstance(layer, intel.LinuxIntel32e)
    assert layer.read(exp["data_va"] + 2 * PAGE, 8) == b"PROTNONE"


def test_stock_4level_layer_cannot_reach_la57_addresses():
    """The same tables read as 4-level give something else: LA57 really needs its own walk."""
    img, root, exp = build()
    layer = layer_for(img, root, intel.LinuxIntel32e)
    with pytest.raises(exceptions.InvalidAddressException):
        layer.translate(exp["data_va"])


def test_la57_mapping_over_whole_space_is_bounded():
    img, root, exp = build()
    layer = layer_for(img, root)
    start = time.perf_counter()
    runs = list(layer.mapping(0, 1 << 57, ignore_errors=True))
    assert time.perf_counter() - start < 20
    assert any(m == exp["ok"][exp["data_va"] + 0x10] - 0x10 for _o, _l, m, _ml, _n in runs)


# --- stacker: x86 side ------------------------------------------------------------------------

KERNEL_MAP = 0xFFFFFFFF80000000


def _x86_image(l5: bool):
    img, pml5, exp = build()
    # Map init_uts_ns at a kernel-image address through the same PML5.
    uts_va = KERNEL_MAP + 0x2345000
    i5, i4, i3, i2, i1 = idx(uts_va)
    pml4, pdpt, pd, pt = img.alloc(), img.alloc(), img.alloc(), img.alloc()
    img.put(pml5, i5, pml4 | P)
    img.put(pml4, i4, pdpt | P)
    img.put(pdpt, i3, pd | P)
    img.put(pd, i2, pt | P)
    uts = img.alloc()
    img.buf[uts:uts + 5] = b"Linux"
    img.buf[uts + 130:uts + 142] = b"6.99.0-test\0"
    img.put(pt, i1, uts | P)
    note = img.alloc()
    text = (f"OSRELEASE=6.99.0-test\nPAGESIZE=4096\nSYMBOL(init_uts_ns)={uts_va:x}\n"
            f"SYMBOL(swapper_pg_dir)={KERNEL_MAP + pml5:x}\nNUMBER(phys_base)=0\n"
            f"SYMBOL(init_top_pgt)={KERNEL_MAP + pml5:x}\nNUMBER(pgtable_l5_enabled)={int(l5)}\n"
            f"KERNELOFFSET=0\n\0").encode()
    img.buf[note:note + len(text)] = text
    banner = b"Linux version 6.99.0-test (x@y) (gcc) #1 SMP\n\0"
    img.buf[note + 2048:note + 2048 + len(banner)] = banner
    return img, pml5, uts_va, banner


@pytest.fixture
def fake_cache(monkeypatch):
    def install(banner):
        class Cache:
            def get_identifier_dictionary(self, operating_system=None):
                return {banner: "file:///nonexistent.json"}

        monkeypatch.setattr(stackers.symbol_cache, "load_cache_manager", lambda *a, **k: Cache())
        monkeypatch.delenv(stackers.PHYS_BASE_ENV, raising=False)

    return install


def test_stacker_builds_la57_from_vmcoreinfo(fake_cache):
    img, pml5, uts_va, banner = _x86_image(l5=True)
    fake_cache(banner)
    ctx = contexts.Context()
    ctx.add_layer(physical.BufferDataLayer(ctx, "phys", "phys", bytes(img.buf)))
    layer = stackers.KtstrLinuxStacker.stack(ctx, "phys")
    assert isinstance(layer, LinuxIntel32eLA57)
    assert layer.config["page_map_offset"] == pml5
    assert layer.read(uts_va, 5) == b"Linux"


def test_stacker_leaves_4level_to_stock(fake_cache):
    img, _pml5, _uts, banner = _x86_image(l5=False)
    fake_cache(banner)
    ctx = contexts.Context()
    ctx.add_layer(physical.BufferDataLayer(ctx, "phys", "phys", bytes(img.buf)))
    assert stackers.KtstrLinuxStacker.stack(ctx, "phys") is None


def test_stacker_ignores_intel_layers_and_no_banners(monkeypatch):
    img, root, _ = build()
    layer = layer_for(img, root)
    assert stackers.KtstrLinuxStacker.stack(layer.context, layer.name) is None

    class Empty:
        def get_identifier_dictionary(self, operating_system=None):
            return {}

    monkeypatch.setattr(stackers.symbol_cache, "load_cache_manager", lambda *a, **k: Empty())
    assert stackers.KtstrLinuxStacker.stack(layer.context, "phys") is None


def test_stack_order_precedes_stock_linux_stackers():
    from volatility3.framework.automagic import linux as vl

    assert stackers.KtstrLinuxStacker.stack_order < vl.LinuxIntelVMCOREINFOStacker.stack_order
    assert stackers.KtstrLinuxStacker.stack_order < vl.LinuxIntelStacker.stack_order
    assert "windows" in stackers.KtstrLinuxStacker.exclusion_list


def test_parse_vmcoreinfo_x86_signed_numbers():
    info = stackers.parse_vmcoreinfo(b"OSRELEASE=7.2\nPAGESIZE=4096\nNUMBER(phys_base)=-299892736\n"
                                     b"NUMBER(pgtable_l5_enabled)=1\nKERNELOFFSET=35e00000\n\0")
    assert info["NUMBER(phys_base)"] == -299892736
    assert info["KERNELOFFSET"] == 0x35E00000
    assert stackers.vmcoreinfo_arch(info) == "x86_64"
