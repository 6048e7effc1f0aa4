"""Where BTF comes from: raw files, the .BTF section of ELF files (tiny hand-made ones and the
real vmlinux), and the real kernels' BTF (this machine's and the dumps' 7.2 kernels)."""

import pytest

from helpers.btf import all_kinds_blob, make_elf
import dumps
from volatility3_ktstr import btf as btfmod
from volatility3_ktstr.btf import Btf, BtfError


@pytest.fixture
def small_blob():
    return all_kinds_blob()[0]


def same_types(a, b):
    return [(t.id, t.kind, t.name, t.size, t.type) for t in a.all_types()] == \
           [(t.id, t.kind, t.name, t.size, t.type) for t in b.all_types()]


def test_raw_file(tmp_path, small_blob):
    p = tmp_path / "x.btf"
    p.write_bytes(small_blob)
    assert same_types(btfmod.load(p), Btf.parse(small_blob))
    assert btfmod.load(p).source == str(p)


@pytest.mark.parametrize("machine, arch", [(62, "x86_64"), (183, "arm64")])
def test_elf_btf_section(tmp_path, small_blob, machine, arch):
    p = tmp_path / "prog.bpf.o"
    p.write_bytes(make_elf({".text": b"\x90" * 16, ".BTF": small_blob, ".BTF.ext": b"\0" * 8}, machine))
    assert btfmod.elf_section(p, ".BTF") == small_blob
    assert same_types(btfmod.load(p), Btf.parse(small_blob))
    assert btfmod.elf_arch(p) == arch


def test_elf_without_btf_section(tmp_path):
    p = tmp_path / "nobtf.o"
    p.write_bytes(make_elf({".text": b"\x90" * 16}))
    with pytest.raises(BtfError, match=r"no \.BTF section"):
        btfmod.load(p)


def test_elf_with_corrupt_btf_section(tmp_path, small_blob):
    p = tmp_path / "bad.o"
    p.write_bytes(make_elf({".BTF": small_blob[:40]}))
    with pytest.raises(BtfError, match="bad.o: corrupt BTF"):
        btfmod.load(p)


def test_truncated_elf_is_a_btf_error(tmp_path, small_blob):
    data = make_elf({".BTF": small_blob})
    p = tmp_path / "trunc.o"
    for cut in range(4, len(data)):
        p.write_bytes(data[:cut])
        with pytest.raises(BtfError):
            btfmod.load(p)


def test_missing_and_non_btf_files(tmp_path):
    with pytest.raises(BtfError, match="cannot read"):
        btfmod.load(tmp_path / "nope")
    p = tmp_path / "text"
    p.write_text("this is a text file, not BTF at all\n")
    with pytest.raises(BtfError, match="bad magic"):
        btfmod.load(p)
    assert btfmod.elf_arch(p) is None


# --- real BTF ------------------------------------------------------------------------------


def check_kernel_btf(k):
    """Sanity of a whole kernel BTF, from its own content (no sample numbers)."""
    task = k.struct("task_struct")
    comm = k.offsetof("task_struct", "comm")
    assert 0 < comm < task.size
    assert k.size_of(k.struct("task_struct").member("comm").type) == 16
    # Every member of every struct lies inside its struct; every reference resolves.
    for t in k.all_types():
        if t.is_struct:
            for m in t.members:
                end = m.bit_offset + (m.bit_size or 8 * k.size_of(m.type))
                # Flexible array members have size 0; everything else must fit.
                assert end <= 8 * t.size or k.size_of(m.type) == 0, (t, m)
    assert k.find("list_head")[0].size == 2 * k.pointer_size


def test_machine_btf(machine_btf):
    check_kernel_btf(machine_btf)
    assert btfmod.guess_arch(machine_btf) in ("x86_64", "arm64")


@pytest.mark.parametrize("kdir", dumps.kernel_dirs(), ids=lambda p: p.name)
def test_dump_kernel_btf(kdir):
    k = btfmod.load(kdir / "btf.raw")
    check_kernel_btf(k)
    assert btfmod.guess_arch(k) == ("arm64" if kdir.name.endswith("arm64") else "x86_64")


def test_real_vmlinux_btf_section_equals_raw_btf(amd64_kernel_dir):
    vmlinux = dumps.vmlinux_path(amd64_kernel_dir)
    if vmlinux is None:
        pytest.skip(f"no vmlinux.zst in {amd64_kernel_dir}")
    raw = (amd64_kernel_dir / "btf.raw").read_bytes()
    assert btfmod.elf_section(vmlinux, ".BTF") == raw
    assert btfmod.elf_arch(vmlinux) == "x86_64"
    from_elf = btfmod.load(vmlinux)
    assert from_elf.end_id == Btf.parse(raw).end_id
