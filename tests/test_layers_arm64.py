"""AArch64 layer on synthetic page tables: every granule / VA width / descriptor format.

Tables are built from the architecture's rules (ARM ARM D8, VMSAv8-64) by this file's own
encoder, and every probed address is compared with the mapping the test created.
"""

import struct
import time

import pytest
from volatility3.framework import contexts, exceptions
from volatility3.framework.layers import physical

from volatility3_ktstr.layers import AArch64, LinuxAArch64, WalkConfig
from volatility3_ktstr.layers import stackers

SHIFT = {4096: 12, 16384: 14, 65536: 16}
# (granule, VA bits, 52-bit OA format): what Linux can run with.
CONFIGS = [
    (4096, 39, False), (4096, 48, False), (4096, 52, True),
    (16384, 36, False), (16384, 47, False), (16384, 48, False), (16384, 52, True),
    (65536, 42, False), (65536, 48, False), (65536, 52, True),
]
M64 = (1 << 64) - 1


def legal_block_levels(granule, lpa):
    if granule == 4096:
        return {1, 2} | ({0} if lpa else set())
    return {2} | ({1} if lpa else set())


class Geometry:
    """Levels of a regime, from the architecture definition."""

    def __init__(self, granule, va_bits):
        self.shift = SHIFT[granule]
        self.stride = self.shift - 3
        n = -(-(va_bits - self.shift) // self.stride)
        self.first = 4 - n
        self.levels = list(range(self.first, 4))
        self.top_entries = 1 << (va_bits - self.lshift(self.first))

    def lshift(self, level):
        return self.shift + self.stride * (3 - level)


class Image:
    """Physical memory plus a descriptor encoder for one configuration."""

    def __init__(self, granule, lpa, pages=40):
        self.granule, self.lpa, self.shift = granule, lpa, SHIFT[granule]
        self.buf = bytearray(granule * pages)
        self.next_page = 1  # page 0 holds a marker pattern (read through a block at PA 0)
        self.buf[0:16] = b"PA-ZERO-MARKER!!"

    def alloc(self, fill=None):
        pa = self.next_page * self.granule
        self.next_page += 1
        if fill is not None:
            self.buf[pa:pa + self.granule] = (fill * (self.granule // len(fill) + 1))[: self.granule]
        return pa

    def encode_oa(self, pa):
        if self.lpa and self.granule != 65536:
            return (pa & ((1 << 50) - 1)) | (((pa >> 50) & 3) << 8)
        if self.lpa:
            return (pa & ((1 << 48) - 1)) | (((pa >> 48) & 0xF) << 12)
        assert pa < (1 << 48)
        return pa

    def noise(self):
        # AF (bit 10), DBM (51), PXN/UXN (53/54), a software bit (56); SH=0b11 (bits 9:8)
        # except with LPA2 4K/16K, where bits 9:8 are OA[51:50].
        bits = (1 << 10) | (1 << 51) | (1 << 53) | (1 << 54) | (1 << 56)
        if not (self.lpa and self.granule != 65536):
            bits |= 3 << 8
        return bits

    def table(self, pa):
        return self.encode_oa(pa) | 3

    def page(self, pa):
        return self.encode_oa(pa) | self.noise() | 3

    def block(self, pa, lshift):
        # nT (bit 16) lies in the RES0 part of a block's OA field for these block sizes.
        extra = (1 << 16) if self.shift <= 16 < lshift and not (self.granule == 65536 and self.lpa) else 0
        return self.encode_oa(pa) | self.noise() | extra | 1

    def put(self, table, index, desc):
        struct.pack_into("<Q", self.buf, table + 8 * index, desc)

    def get(self, table, index):
        return struct.unpack_from("<Q", self.buf, table + 8 * index)[0]


def build(cfg):
    """Builds tables for cfg; returns (image, kernel_root, user_root, expectations)."""
    granule, va_bits, lpa = cfg
    g = Geometry(granule, va_bits)
    img = Image(granule, lpa)
    kernel_start = (M64 << va_bits) & M64
    exp = {"ok": {}, "fault": [], "beyond": {}, "blocks": {}}

    root = img.alloc()
    top = g.top_entries - 1  # highest top-level slot, as the kernel image uses
    prefix = kernel_start + top * (1 << g.lshift(g.first))
    tables = {g.first: root}
    # Main chain: slot `top` at the root, then slot 1 at each lower level.
    table = root
    va_chain = prefix
    for level in g.levels[:-1]:
        nxt = img.alloc()
        img.put(table, top if level == g.first else 1, img.table(nxt))
        if level != g.first:
            va_chain += 1 << g.lshift(level)
        table = nxt
        tables[level + 1] = nxt
    last = table
    base_va = va_chain  # VA of slot 0 of the last-level table
    ls3 = g.lshift(3)
    data = img.alloc(fill=b"DATAPAGE")
    img.put(last, 1, img.page(data))
    exp["ok"][base_va + 1 * (1 << ls3)] = data
    exp["ok"][base_va + 1 * (1 << ls3) + 0x123] = data + 0x123
    img.put(last, 6, 0)  # not valid
    exp["fault"].append(base_va + 6 * (1 << ls3))
    img.put(last, 7, img.encode_oa(data) | 1)  # 0b01 at level 3 is reserved
    exp["fault"].append(base_va + 7 * (1 << ls3))
    far = 1 << 45
    img.put(last, 8, img.page(far))  # a page outside physical memory
    exp["beyond"][base_va + 8 * (1 << ls3) + 8] = far + 8
    if lpa:  # output address above 2^48 (LPA2: OA[51:50] in bits 9:8; 64K LPA: OA[51:48] in 15:12)
        high = (0x3 << 50 | data) if granule != 65536 else (0xA << 48 | data)
        img.put(last, 9, img.page(high))
        exp["beyond"][base_va + 9 * (1 << ls3) + 0x10] = high + 0x10

    # Per-level slots along the chain: blocks where legal (4), illegal blocks (5).
    legal = legal_block_levels(granule, lpa)
    va_level = {}
    va = prefix
    for level in g.levels:
        va_level[level] = va  # VA of slot 0 of this level's chain table (for level > first)
        if level != g.first:
            va += 1 << g.lshift(level)
    for level in g.levels[:-1]:
        t = tables[level]
        entries = g.top_entries if level == g.first else 1 << g.stride
        slot0 = kernel_start if level == g.first else va_level[level]
        if entries <= 5:
            continue
        size = 1 << g.lshift(level)
        if level in legal:
            pa = size  # aligned, non-zero
            img.put(t, 4, img.block(pa, g.lshift(level)))
            exp["blocks"][slot0 + 4 * size + 0x5678] = pa + 0x5678
            exp["blocks"][slot0 + 4 * size + size - 8] = pa + size - 8
        else:
            img.put(t, 5, img.encode_oa(size) | img.noise() | 1)
            exp["fault"].append(slot0 + 5 * size)
    # A block at PA 0 at the smallest block level, read back for real.
    small = max(legal)
    if small in tables and small != 3:
        t = tables[small]
        entries = g.top_entries if small == g.first else 1 << g.stride
        if entries > 10:
            slot0 = kernel_start if small == g.first else va_level[small]
            img.put(t, 10, img.block(0, g.lshift(small)))
            exp["ok"][slot0 + 10 * (1 << g.lshift(small))] = 0
            exp["zero_block_va"] = slot0 + 10 * (1 << g.lshift(small))

    # Second-level table: a table outside physical memory (2) and a self-reference (3).
    second = g.levels[1]
    t1 = tables[second]
    slot0 = va_level[second]
    if second != 3:
        img.put(t1, 2, img.table(1 << 44))
        exp["fault"].append(slot0 + 2 * (1 << g.lshift(second)))
    img.put(t1, 3, img.table(t1))
    self_va = slot0 + sum(3 * (1 << g.lshift(level)) for level in g.levels[1:])
    exp["self"] = (self_va, t1)

    # Non-canonical / outside the TTBR1 range.
    exp["fault"].append(kernel_start - (1 << g.shift))
    exp["fault"].append(0x0000_8000_0000_0000 if va_bits < 48 else 1 << va_bits)

    # User half: its own root, slot 1 at every level.
    uroot = img.alloc()
    table, uva = uroot, 0
    for level in g.levels[:-1]:
        nxt = img.alloc()
        img.put(table, 1, img.table(nxt))
        uva += 1 << g.lshift(level)
        table = nxt
    udata = img.alloc(fill=b"USERPAGE")
    img.put(table, 1, img.page(udata))
    uva += 1 << ls3
    exp["user"] = (uva + 0x40, udata + 0x40)
    exp["data_page"] = data
    return img, root, uroot, exp


def make_layer(img, root, uroot, cfg, cls=LinuxAArch64, name="virt"):
    granule, va_bits, lpa = cfg
    ctx = contexts.Context()
    ctx.add_layer(physical.BufferDataLayer(ctx, "phys", "phys", bytes(img.buf)))
    ctx.config[f"{name}.memory_layer"] = "phys"
    ctx.config[f"{name}.page_map_offset"] = uroot
    ctx.config[f"{name}.page_map_offset_kernel"] = root
    ctx.config[f"{name}.arm64_granule"] = granule
    ctx.config[f"{name}.arm64_va_bits"] = va_bits
    ctx.config[f"{name}.arm64_lpa"] = lpa
    layer = cls(ctx, name, name)
    ctx.add_layer(layer)
    return ctx, layer


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0] // 1024}K-{c[1]}{'-lpa' if c[2] else ''}")
def test_synthetic_tables(cfg):
    img, root, uroot, exp = build(cfg)
    ctx, layer = make_layer(img, root, uroot, cfg)
    assert layer.metadata["architecture"] == "AArch64"
    assert layer.page_size == cfg[0]

    for va, pa in exp["ok"].items():
        assert layer.translate(va) == (pa, "phys"), hex(va)
    data = exp["data_page"]
    va_data = next(va for va, pa in exp["ok"].items() if pa == data)
    assert layer.read(va_data, 8) == b"DATAPAGE"
    if "zero_block_va" in exp:
        assert layer.read(exp["zero_block_va"], 16) == b"PA-ZERO-MARKER!!"

    for va, pa in {**exp["beyond"], **exp["blocks"]}.items():
        # Translation is right even where no memory backs it; reads there fail cleanly.
        assert layer._translate(va)[0] == pa, hex(va)
        assert not layer.is_valid(va, 8)

    for va in exp["fault"]:
        with pytest.raises(exceptions.InvalidAddressException):
            layer.translate(va)
        assert not layer.is_valid(va)

    self_va, t1 = exp["self"]
    assert layer.translate(self_va)[0] == t1
    assert layer.read(self_va, 8 * 4) == bytes(img.buf[t1:t1 + 32])

    uva, upa = exp["user"]
    assert layer.translate(uva)[0] == upa
    assert layer.read(uva, 8) == bytes(img.buf[upa:upa + 8])

    # Same tables as a kernel-only layer (both roots equal): the lower half is unmapped.
    _, klayer = make_layer(img, root, root, cfg, name="kern")
    with pytest.raises(exceptions.InvalidAddressException):
        klayer.translate(uva)
    assert klayer.translate(va_data)[0] == data


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0] // 1024}K-{c[1]}{'-lpa' if c[2] else ''}")
def test_mapping_skips_holes_quickly(cfg):
    img, root, uroot, exp = build(cfg)
    _, layer = make_layer(img, root, uroot, cfg)
    start = time.perf_counter()
    runs = list(layer.mapping(0, 1 << 64, ignore_errors=True))
    assert time.perf_counter() - start < 10
    offsets = [r[0] for r in runs]
    assert offsets == sorted(offsets)
    for (o1, l1, *_), (o2, *_rest) in zip(runs, runs[1:]):
        assert o1 + l1 <= o2
    covered = {(o, m) for o, _l, m, _ml, _n in runs}
    va_data = next(va for va, pa in exp["ok"].items() if pa == exp["data_page"])
    assert any(o <= va_data < o + l and m + va_data - o == exp["data_page"] for o, l, m, _ml, _n in runs)
    assert covered


def test_read_spanning_pages_and_padding():
    cfg = (4096, 48, False)
    img, root, uroot, exp = build(cfg)
    _, layer = make_layer(img, root, uroot, cfg)
    va_data = next(va for va, pa in exp["ok"].items() if pa == exp["data_page"])
    # The next slot (2) is empty: a padded read crossing into it gives zeros there.
    data = layer.read(va_data + 4096 - 4, 8, pad=True)
    assert data == b"PAGE" + b"\0" * 4
    with pytest.raises(exceptions.InvalidAddressException):
        layer.read(va_data + 4096 - 4, 8)


@pytest.mark.parametrize("granule,va_bits,lpa", [(8192, 48, False), (4096, 52, False), (16384, 52, False),
                                                 (4096, 60, True), (4096, 20, False)])
def test_bad_configuration_is_a_clear_error(granule, va_bits, lpa):
    with pytest.raises(ValueError):
        WalkConfig(granule, va_bits, lpa)
    ctx = contexts.Context()
    ctx.add_layer(physical.BufferDataLayer(ctx, "phys", "phys", bytes(4096)))
    for k, v in {"memory_layer": "phys", "page_map_offset": 0, "arm64_granule": granule,
                 "arm64_va_bits": va_bits, "arm64_lpa": lpa}.items():
        ctx.config[f"v.{k}"] = v
    with pytest.raises(exceptions.LayerException):
        AArch64(ctx, "v", "v")


def test_walk_config_levels():
    # 4K/52 LPA2 starts at level -1 with 16 entries; 64K/42 has two levels.
    w = WalkConfig(4096, 52, True)
    assert w.first_level == -1 and w.levels[0][1] == 15
    assert [lv[4] for lv in WalkConfig(65536, 42, False).levels] == [2, 3]
    assert WalkConfig(16384, 48, False).levels[0][1] == 1


# --- stacker helpers on arm64 VMCOREINFO --------------------------------------------------

VMCI_52 = b"""OSRELEASE=6.99.0-test\nPAGESIZE=4096\nSYMBOL(init_uts_ns)=ffff952b9e99d580
SYMBOL(swapper_pg_dir)=ffff952b9e103000\nNUMBER(VA_BITS)=52\nNUMBER(kimage_voffset)=0xffff952b5ba00000
NUMBER(PHYS_OFFSET)=0x40000000\nNUMBER(TCR_EL1_T1SZ)=0xc\nKERNELOFFSET=152b1bc00000
NUMBER(MAX_PHYSMEM_BITS)=52\n\0garbage"""
VMCI_48_ON_52 = VMCI_52.replace(b"NUMBER(TCR_EL1_T1SZ)=0xc", b"NUMBER(TCR_EL1_T1SZ)=0x10").replace(
    b"NUMBER(PHYS_OFFSET)=0x40000000", b"NUMBER(PHYS_OFFSET)=0xfff1000040000000")


def test_parse_vmcoreinfo_arm64():
    info = stackers.parse_vmcoreinfo(VMCI_52)
    assert info["SYMBOL(swapper_pg_dir)"] == 0xFFFF952B9E103000
    assert info["KERNELOFFSET"] == 0x152B1BC00000
    assert stackers.vmcoreinfo_arch(info) == "arm64"
    assert stackers.arm64_config_from_vmcoreinfo(info) == (4096, 52, True)
    assert stackers.arm64_phys_offset_from_vmcoreinfo(info) == 0x40000000
    info48 = stackers.parse_vmcoreinfo(VMCI_48_ON_52)
    assert stackers.arm64_config_from_vmcoreinfo(info48) == (4096, 48, False)
    # memstart_addr of a VA_BITS=52 kernel on a 48-bit CPU is biased; the base is still 1 GiB.
    assert stackers.arm64_phys_offset_from_vmcoreinfo(info48) == 0x40000000
    assert stackers.parse_vmcoreinfo(b"OSRELEASE=%s\n\0") is None


def test_ttbr1_root_offset_for_52bit_kernel_on_48bit_cpu():
    # 64K pages: a 52-bit kernel's PGD has 1024 entries; on a 48-bit CPU TTBR1 points at the
    # last 64 of them.
    roots = stackers.arm64_root_candidates(0x1000000, (65536, 48, False), 52)
    assert roots == [0x1000000, 0x1000000 + (1024 - 64) * 8]


def _synthetic_arm64_image(phys_base):
    """A tiny 'kernel': 4K/48-bit tables, init_uts_ns and a VMCOREINFO block, at phys_base."""
    cfg = (4096, 48, False)
    g = Geometry(4096, 48)
    img = Image(4096, False, pages=64)
    root = img.alloc()
    kimage_va = 0xFFFF800080000000 + 0x1234 * 0x200000
    table = root
    for level in g.levels[:-1]:
        nxt = img.alloc()
        img.put(table, (kimage_va >> g.lshift(level)) & ((1 << 9) - 1), img.table(phys_base + nxt))
        table = nxt
    uts = img.alloc()
    img.buf[uts:uts + 5] = b"Linux"
    img.buf[uts + 130:uts + 130 + 12] = b"6.99.0-test\0"
    img.put(table, (kimage_va >> 12) & 511, img.page(phys_base + uts))
    kvoff = kimage_va - (phys_base + uts)
    vmci = img.alloc()
    text = (f"OSRELEASE=6.99.0-test\nPAGESIZE=4096\nSYMBOL(init_uts_ns)={kimage_va:x}\n"
            f"SYMBOL(swapper_pg_dir)={kvoff + phys_base + root:x}\nNUMBER(VA_BITS)=48\n"
            f"NUMBER(kimage_voffset)={kvoff:#x}\nNUMBER(PHYS_OFFSET)={phys_base:#x}\n"
            f"NUMBER(TCR_EL1_T1SZ)=0x10\nKERNELOFFSET=2000000\n\0").encode()
    img.buf[vmci:vmci + len(text)] = text
    banner = b"Linux version 6.99.0-test (x@y) (gcc) #1 SMP\n\0"
    img.buf[vmci + 2048:vmci + 2048 + len(banner)] = banner
    return img, root, kimage_va, banner, cfg


@pytest.mark.parametrize("phys_base", [0x40000000, 0x0])
def test_stacker_builds_arm64_from_vmcoreinfo(monkeypatch, phys_base):
    img, root, kimage_va, banner, cfg = _synthetic_arm64_image(phys_base)

    class Cache:
        def get_identifier_dictionary(self, operating_system=None):
            return {banner: "file:///nonexistent.json"}

    monkeypatch.setattr(stackers.symbol_cache, "load_cache_manager", lambda *a, **k: Cache())
    monkeypatch.delenv(stackers.PHYS_BASE_ENV, raising=False)
    ctx = contexts.Context()
    ctx.add_layer(physical.BufferDataLayer(ctx, "phys", "phys", bytes(img.buf)))
    layer = stackers.KtstrLinuxStacker.stack(ctx, "phys")
    assert isinstance(layer, LinuxAArch64)
    assert layer.config["page_map_offset_kernel"] == phys_base + root
    assert layer.config["kernel_virtual_offset"] == 0x2000000
    assert layer.config["kernel_banner"] == banner.decode("latin-1")
    assert layer.read(kimage_va, 5) == b"Linux"
    # Nothing stacks on top of it: the guarded stock stackers return None.
    from volatility3.framework.automagic import linux as vl
    ctx.add_layer(layer)
    assert vl.LinuxIntelStacker.stack(ctx, layer.name) is None


def test_stacker_uses_configured_phys_base(monkeypatch):
    img, root, kimage_va, banner, cfg = _synthetic_arm64_image(0x80000000)

    class Cache:
        def get_identifier_dictionary(self, operating_system=None):
            return {banner: "file:///nonexistent.json"}

    monkeypatch.setattr(stackers.symbol_cache, "load_cache_manager", lambda *a, **k: Cache())
    ctx = contexts.Context()
    ctx.add_layer(physical.BufferDataLayer(ctx, "phys", "phys", bytes(img.buf)))
    monkeypatch.setenv(stackers.PHYS_BASE_ENV, "0x1000")  # wrong on purpose: must not validate
    assert stackers.KtstrLinuxStacker.stack(ctx, "phys") is None
    monkeypatch.setenv(stackers.PHYS_BASE_ENV, "0x80000000")
    layer = stackers.KtstrLinuxStacker.stack(ctx, "phys")
    assert layer is not None and layer.read(kimage_va, 5) == b"Linux"


def test_architecture_acceptance_patch():
    from volatility3.framework.configuration import requirements

    from volatility3_ktstr import volpatches

    # In-process users apply the patches themselves (vol does it via our plugin folder).
    assert "aarch64_requirement" in volpatches.apply(["compat"])
    cfg = (4096, 48, False)
    img, root, uroot, _ = build(cfg)
    ctx, layer = make_layer(img, root, root, cfg)
    intel_only = requirements.TranslationLayerRequirement(name="layer", architectures=["Intel32", "Intel64"])
    ctx.config["p.layer"] = layer.name
    assert intel_only.unsatisfied(ctx, "p") == {}
    # A requirement without Intel64 (e.g. Windows-only Intel32) is not widened.
    intel32 = requirements.TranslationLayerRequirement(name="layer", architectures=["Intel32"])
    assert intel32.unsatisfied(ctx, "p")
    # The requirement object itself is not modified.
    assert intel_only.architectures == ["Intel32", "Intel64"]


def _elf_core(payload: bytes, phys_base: int) -> bytes:
    """A minimal ELF64 core file with one PT_LOAD at p_paddr=phys_base (as QEMU writes)."""
    ehdr = struct.pack("<4sBBBB8xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 4, 183, 1, 0, 64, 0, 0,
                       64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 7, 0x1000, 0, phys_base, len(payload), len(payload), 0)
    head = ehdr + phdr
    return head + bytes(0x1000 - len(head)) + payload


def test_stacker_on_elf_core_uses_header_addresses(monkeypatch):
    """ELF cores place RAM at p_paddr: no base option needed, and a stray one is ignored."""
    from volatility3.framework.layers import elf

    img, root, kimage_va, banner, cfg = _synthetic_arm64_image(0x40000000)

    class Cache:
        def get_identifier_dictionary(self, operating_system=None):
            return {banner: "file:///nonexistent.json"}

    monkeypatch.setattr(stackers.symbol_cache, "load_cache_manager", lambda *a, **k: Cache())
    monkeypatch.setenv(stackers.PHYS_BASE_ENV, "0x1000")  # for raw images only
    ctx = contexts.Context()
    ctx.add_layer(physical.BufferDataLayer(ctx, "file", "file", _elf_core(bytes(img.buf), 0x40000000)))
    elf_layer = elf.Elf64Stacker.stack(ctx, "file")
    ctx.add_layer(elf_layer)
    layer = stackers.KtstrLinuxStacker.stack(ctx, elf_layer.name)
    assert isinstance(layer, LinuxAArch64)
    assert layer.config["memory_layer"] == elf_layer.name
    assert layer.read(kimage_va, 5) == b"Linux"


def test_bad_phys_base_value_is_ignored_with_warning(monkeypatch, caplog):
    monkeypatch.setenv(stackers.PHYS_BASE_ENV, "forty")
    assert stackers.configured_phys_base(contexts.Context()) is None
    assert "KTSTR_PHYS_BASE" in caplog.text


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c[0] // 1024}K-{c[1]}{'-lpa' if c[2] else ''}")
def test_mapping_of_a_sparse_leaf_table_equals_page_by_page(cfg):
    """mapping() skips a last-level table's invalid entries in one scan (arena ranges): it must
    give exactly the pages a page-by-page walk finds."""
    img, root, uroot, exp = build(cfg)
    _, layer = make_layer(img, root, uroot, cfg)
    page = layer.page_size
    span = (page // 8) * page                    # what one last-level table maps
    va_data = next(va for va, pa in exp["ok"].items() if pa == exp["data_page"])
    start = va_data & ~(span - 1)
    base = layer.context.layers[layer.config["memory_layer"]]
    expect = []
    for va in range(start, start + span, page):
        try:
            pa = layer._translate(va)[0]
        except exceptions.InvalidAddressException:
            continue
        if base.is_valid(pa, page):          # translated but past the image: not mapped data
            expect.append((va, pa))
    assert (va_data, exp["data_page"]) in expect
    got = [(o + k, m + k) for o, ln, m, _ml, _n in layer._mapping(start, span, ignore_errors=True)
           for k in range(0, ln, page)]
    assert got == expect
