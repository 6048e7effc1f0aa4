"""CPU notes (volatility3_ktstr.dumpfile.notes) and what kdump files of QEMU say about their
machine: NT_PRSTATUS layouts of x86-64 and aarch64, QEMU's x86 CPU state, the machine taken
from the notes when utsname says "Unknown", block sizes other than the guest's pages, and the
one-line refusal of a machine the package does not support."""

import struct

import pytest

from helpers import kdump as kb
from volatility3_ktstr import dumpfile
from volatility3_ktstr.dumpfile import elf, kdump, notes
from volatility3_ktstr.dumpfile.errors import DumpError, ExcludedPage


def test_prstatus_layouts_give_registers_by_name():
    x86 = {"r15": 15, "rax": 0xAA, "rip": 0xFFFFFFFF81000000, "rsp": 0xFFFFC90000001000, "gs": 7}
    arm = {"x0": 1, "x29": 0x29, "x30": 0x30, "sp": 0xFFFF800080000000, "pc": 0xFFFF800081000000,
           "pstate": 0x3C5}
    blob = (kb.note(b"CORE", kb.prstatus("x86_64", 3, x86), kb.NT_PRSTATUS)
            + kb.note(b"QEMU", kb.qemu_x86_state({"cr3": 0x1A2B000 | 0x801, "cr4": 1 << 12,
                                                   "rip": 5, "idt_base": 0x1234}), 0))
    cpus = notes.cpu_states(elf.parse_notes(blob))
    assert len(cpus) == 1 and cpus[0].arch == "x86_64" and cpus[0].pid == 3
    regs = cpus[0].regs
    assert all(regs[k] == v for k, v in x86.items())
    assert regs["cr3"] == 0x1A2B801 and cpus[0].page_table_root == 0x1A2B000 and cpus[0].la57
    assert regs["idt_base"] == 0x1234 and regs["kernel_gs_base"] == 0
    assert regs["rip"] == x86["rip"]          # NT_PRSTATUS first, the CPU state adds what it lacks
    assert cpus[0].sources == ["NT_PRSTATUS", "QEMU"]
    assert list(regs)[:3] == ["r15", "r14", "r13"]         # the kernel's user_regs_struct order

    arm_notes = kb.qemu_notes("aarch64", [arm, {"pc": 2}])
    cpus = notes.cpu_states(elf.parse_notes(arm_notes))
    assert [c.arch for c in cpus] == ["aarch64", "aarch64"] and [c.pid for c in cpus] == [0, 1]
    assert all(cpus[0].regs[k] == v for k, v in arm.items()) and cpus[1].regs["pc"] == 2
    assert cpus[0].page_table_root is None and cpus[0].la57 is None
    assert notes.machine_of_notes(elf.parse_notes(arm_notes)) == "aarch64"
    assert "2 NT_PRSTATUS of 392 bytes (aarch64)" in notes.describe_notes(elf.parse_notes(arm_notes))


def test_qemu_x86_notes_pair_with_their_cpus():
    blob = kb.qemu_notes("x86_64", [{"rip": 1, "cr3": 0x1000}, {"rip": 2, "cr3": 0x2000}])
    cpus = notes.cpu_states(elf.parse_notes(blob))
    assert [(c.regs["rip"], c.page_table_root, c.la57) for c in cpus] == [(1, 0x1000, False), (2, 0x2000, False)]


@pytest.mark.parametrize("blob", [b"", b"\x01" * 11, struct.pack("<III", 5, 1 << 30, 1) + b"CORE\0\0\0\0",
                                  kb.note(b"CORE", bytes(100), 1), kb.note(b"QEMU", bytes(50), 0),
                                  kb.note(b"QEMU", struct.pack("<II", 1, 1 << 31) + bytes(440), 0)])
def test_damaged_notes_give_no_cpu_and_no_error(blob):
    assert notes.cpu_states(elf.parse_notes(blob)) == []
    assert notes.machine_of_notes(elf.parse_notes(blob)) is None


def qemu_arm64_file(block=65536, phys=0x40000000, cpus=2, **kw):
    """A kdump file as QEMU writes an aarch64 guest's: 64 KiB blocks, pfns from physical 0,
    RAM from ``phys``, empty utsname ("Unknown"), notes, no VMCOREINFO, zlib."""
    first = phys // block
    pages = {first + i: bytes([i + 1]) * 64 + bytes(block - 64) for i in range(8)}
    pages[first + 3] = bytes(block)
    ram = set(range(first, first + 12))
    blob = kb.build(pages, max_mapnr=first + 12, ram=ram, codec="zlib", block_size=block,
                    dump_level=1, phys_base=phys, qemu=True,
                    cpu_notes=kb.qemu_notes("aarch64", [{"pc": i} for i in range(cpus)]), **kw)
    return blob, pages


@pytest.mark.parametrize("flat", [False, True])
def test_qemu_arm64_file_opens_with_its_machine_from_the_notes(tmp_path, flat):
    blob, pages = qemu_arm64_file()
    path = tmp_path / "arm.kdump"
    path.write_bytes(kb.flatten(blob) if flat else blob)
    with dumpfile.open_image(str(path)) as img:
        assert img.utsname["machine"] == "Unknown" and img.machine == "aarch64"
        assert img.block_size == 65536 and not img.vmcoreinfo_texts()
        assert [c.regs["pc"] for c in notes.cpu_states(img)] == [0, 1]
        for pfn, page in pages.items():
            assert img.read(pfn * 65536, 65536, pad=False) == page
        # Reads of any size across 64 KiB blocks, at 4 KiB guest pages and odd offsets.
        base = 0x40000000
        whole = b"".join(pages[base // 65536 + i] for i in range(8))
        for start, size in ((0x1000, 0x1000), (65536 - 8, 16), (3, 5 * 65536 + 7), (0, 8 * 65536)):
            assert img.read(base + start, size, pad=False) == whole[start:start + size]
        with pytest.raises(ExcludedPage):
            img.read(base + 9 * 65536 + 0x2000, 8, pad=False)
        assert "65536-byte blocks" in img.describe() and "aarch64" in img.describe()


def test_x86_file_with_64k_blocks_and_qemu_notes(tmp_path):
    pages = {p: bytes([p]) * 65536 for p in range(1, 6)}
    blob = kb.build(pages, max_mapnr=8, codec="zstd", block_size=65536, qemu=True,
                    cpu_notes=kb.qemu_notes("x86_64", [{"cr3": 0x9000, "cr4": 0}]))
    path = tmp_path / "x86.kdump"
    path.write_bytes(blob)
    with dumpfile.open_image(str(path)) as img:
        assert img.machine == "x86_64"
        assert notes.cpu_states(img)[0].page_table_root == 0x9000
        assert img.read(65536 + 4096 * 15, 8192, pad=False) == bytes([1]) * 4096 + bytes([2]) * 4096


def test_no_notes_no_vmcoreinfo_leaves_the_machine_open(tmp_path):
    pages = {p: bytes([p]) * 4096 for p in range(1, 6)}
    path = tmp_path / "bare.kdump"
    path.write_bytes(kb.build(pages, max_mapnr=8, qemu=True))
    with dumpfile.open_image(str(path)) as img:
        assert img.machine is None and img.read_page(2) == bytes([2]) * 4096
        assert "machine unknown" in img.describe()


@pytest.mark.parametrize("machine, cpu_notes, expect", [
    ("ppc64le", b"", "'ppc64le' machine, notes: no ELF notes; only x86_64, aarch64"),
    ("Unknown", kb.note(b"CORE", bytes(504), 1) * 2,
     "'Unknown' machine, notes: 2 NT_PRSTATUS of 504 bytes (unknown machine); only x86_64, aarch64"),
])
def test_unsupported_machine_is_one_line_naming_machine_and_notes(tmp_path, machine, cpu_notes, expect):
    pages = {1: bytes(4096)}
    blob = kb.build(pages, max_mapnr=4, machine=machine, cpu_notes=cpu_notes,
                    qemu=(machine == "Unknown"))
    path = tmp_path / "other.kdump"
    path.write_bytes(blob)
    with pytest.raises(DumpError) as e:
        kdump.open_kdump(str(path))
    assert expect in str(e.value) and "\n" not in str(e.value) and "other.kdump" in str(e.value)


def test_utsname_of_a_known_machine_wins_over_nothing(tmp_path):
    pages = {1: bytes(4096)}
    path = tmp_path / "a.kdump"
    path.write_bytes(kb.build(pages, max_mapnr=4, machine="aarch64"))
    with kdump.open_kdump(str(path)) as img:
        assert img.machine == "aarch64"


# --- the kernel found from the CPU notes (layers.cpustack), no scan --------------------------


@pytest.mark.parametrize("flat, shift", [(False, 0), (True, 0x200000)])
def test_x86_kernel_from_qemu_cpu_state_without_a_scan(tmp_path, monkeypatch, flat, shift):
    from volatility3.framework import contexts
    from volatility3.framework.layers import intel, physical

    from volatility3_ktstr.layers import cpustack, stackers
    from volatility3_ktstr.layers import kdump as kdump_layer

    pages, _vmci = kb.x86_kernel()
    # QEMU's notes for 2 vCPUs, no VMCOREINFO, utsname "Unknown"; CPU 1's CR3 is the page-table
    # isolation user copy (one page above the kernel's).
    cpu_notes = kb.qemu_notes("x86_64", [{"cr3": kb.PHYS_BASE + 0x1000 | 0x1000, "cr4": 0},
                                         {"cr3": kb.PHYS_BASE + 0x1000, "cr4": 0}])
    blob = kb.build(pages, max_mapnr=512, ram=range(0, 400), codec="zstd", qemu=True,
                    cpu_notes=cpu_notes, dump_level=1)
    path = tmp_path / "qemu.kdump"
    path.write_bytes(kb.flatten(blob) if flat else blob)
    ctx = contexts.Context()
    ctx.config["file.location"] = path.resolve().as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
    phys = kdump_layer.KdumpStacker.stack(ctx, "file")
    ctx.add_layer(phys)
    assert phys.kdump.machine == "x86_64" and not phys.vmcoreinfo_texts()

    class Cache:
        def get_identifier_dictionary(self, operating_system=None):
            return {kb.BANNER: "file:///kernel.json", kb.OTHER_BUILD: "file:///other.json"}

    class Symbol:
        address = kb.KERNEL_MAP + 0x6000 - shift       # linux_banner where the kernel was linked

    class Table:                                         # the ISF's answer for linux_banner
        def get_symbol(self, name):
            assert name == "linux_banner"
            return Symbol

    def no_scan(*a, **k):
        raise AssertionError("the image was scanned")

    monkeypatch.setattr(stackers.symbol_cache, "load_cache_manager", lambda *a, **k: Cache())
    monkeypatch.setattr(stackers, "scan_image", no_scan)
    monkeypatch.setattr(cpustack, "_symbol_table", lambda ctx, url: Table() if url == "file:///kernel.json" else None)
    layer = stackers.KtstrLinuxStacker.stack(ctx, phys.name)
    assert isinstance(layer, intel.LinuxIntel32e) and not isinstance(layer, stackers.LinuxIntel32eLA57)
    assert layer.config["page_map_offset"] == kb.PHYS_BASE + 0x1000
    assert layer.config["kernel_virtual_offset"] == shift
    assert layer.config["kernel_banner"] == kb.BANNER.decode("latin-1")
    ctx.add_layer(layer)
    assert layer.read(kb.KERNEL_MAP + 0x8000, 8) == b"DATAPAGE"


def test_cpu_notes_that_lead_nowhere_fall_back(tmp_path):
    from volatility3_ktstr.layers import cpustack

    cpus = notes.cpu_states(elf.parse_notes(kb.qemu_notes("x86_64", [{"cr3": 0x5000 | 0x1000, "cr4": 1 << 12}] * 9)))
    roots = cpustack.x86_roots(cpus)
    assert roots == [(0x4000, True), (0x5000, True)]
    arm = notes.cpu_states(elf.parse_notes(kb.qemu_notes("aarch64", [{}])))
    assert cpustack.x86_roots(arm) == []


def test_x86_kernel_from_the_cpu_notes_of_an_elf_core(tmp_path, monkeypatch):
    """The same notes in an ELF core (QEMU dump-guest-memory without -device vmcoreinfo), read
    under Volatility's own Elf64Layer."""
    from volatility3.framework import contexts
    from volatility3.framework.layers import elf as vol_elf
    from volatility3.framework.layers import physical

    from volatility3_ktstr.layers import cpustack, fileinfo, stackers

    pages, _vmci = kb.x86_kernel()
    blob = kb.elf_core(pages, 0x120, kb.qemu_notes("x86_64", [{"cr3": kb.PHYS_BASE + 0x1000, "cr4": 0}]))
    path = tmp_path / "qemu.elf"
    path.write_bytes(blob)
    ctx = contexts.Context()
    ctx.config["file.location"] = path.resolve().as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
    phys = vol_elf.Elf64Stacker.stack(ctx, "file")
    ctx.add_layer(phys)
    assert [c.page_table_root for c in notes.cpu_states(fileinfo.layer_notes(ctx, phys.name))] == [kb.PHYS_BASE + 0x1000]

    class Cache:
        def get_identifier_dictionary(self, operating_system=None):
            return {kb.BANNER: "file:///kernel.json"}

    class Table:
        def get_symbol(self, name):
            return type("Symbol", (), {"address": kb.KERNEL_MAP + 0x6000})

    monkeypatch.setattr(stackers.symbol_cache, "load_cache_manager", lambda *a, **k: Cache())
    monkeypatch.setattr(stackers, "scan_image", lambda *a, **k: (_ for _ in ()).throw(AssertionError("scanned")))
    monkeypatch.setattr(cpustack, "_symbol_table", lambda ctx, url: Table())
    layer = stackers.KtstrLinuxStacker.stack(ctx, phys.name)
    assert layer.config["page_map_offset"] == kb.PHYS_BASE + 0x1000 and layer.config["kernel_virtual_offset"] == 0
    ctx.add_layer(layer)
    assert layer.read(kb.KERNEL_MAP + 0x8000, 8) == b"DATAPAGE"


def test_unsupported_machine_reaches_the_user_as_one_warning(tmp_path, caplog):
    from volatility3.framework import contexts
    from volatility3.framework.layers import physical

    from volatility3_ktstr.layers import kdump as kdump_layer

    path = tmp_path / "s390.kdump"
    path.write_bytes(kb.build({1: bytes(4096)}, max_mapnr=4, qemu=True,
                              cpu_notes=kb.note(b"CORE", bytes(432), kb.NT_PRSTATUS)))
    ctx = contexts.Context()
    ctx.config["file.location"] = path.resolve().as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
    assert kdump_layer.KdumpStacker.stack(ctx, "file") is None
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert lines == ["ktstr: s390.kdump: kdump file of a 'Unknown' machine, notes: 1 NT_PRSTATUS of 432 "
                     "bytes (unknown machine); only x86_64, aarch64 are supported"], lines
