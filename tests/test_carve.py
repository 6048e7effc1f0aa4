"""isf.carve / isf.fromdump on small synthetic images (raw, ELF core, LiME)."""

import struct

import pytest

from helpers import kallsyms as synth
from helpers.images import BANNER, KASLR, P0, TEXT, make_image, tiny_btf, write_elf, write_lime, write_raw
from volatility3_ktstr.isf import carve, cli, fromdump

@pytest.fixture(scope="module")
def btf_blob():
    return tiny_btf(pad_strings=70000)


@pytest.mark.parametrize("fmt", ["raw", "elf", "lime"])
def test_carve_formats(tmp_path, btf_blob, fmt):
    mem, entries = make_image(btf_blob)
    path = {"raw": write_raw, "elf": write_elf, "lime": write_lime}[fmt](tmp_path, mem)
    with fromdump.open_image(path) as image:
        assert image.format == fmt
        c = fromdump.carve(image, path.name)
    assert c.blob == btf_blob
    assert c.banner == BANNER
    assert c.kallsyms.layout == "pcrel"
    assert c.vmcoreinfo["KERNELOFFSET"] == KASLR
    assert "VMCOREINFO" in c.how
    want = {}
    for k, n, a in sorted(entries, key=lambda e: e[2]):
        want.setdefault(n, (a, k))
    assert c.symbols == want


def test_elf_note_vmcoreinfo(tmp_path, btf_blob):
    mem, _ = make_image(btf_blob, vmcoreinfo=False)
    note = f"OSRELEASE=7.2.0-test\nKERNELOFFSET={KASLR:x}\nSYMBOL(_text)={TEXT + KASLR:x}\n".encode()
    with fromdump.open_image(write_elf(tmp_path, mem, note)) as image:
        c = fromdump.carve(image)
    assert c.vmcoreinfo.symbol("_text") == TEXT + KASLR
    assert c.symbols["_text"] == (TEXT, "T")


def test_scan_windows_and_full_fallback(tmp_path, btf_blob):
    mem, _ = make_image(btf_blob)
    with fromdump.open_image(write_raw(tmp_path, mem)) as image:
        res = carve.scan(image)
        assert [t for _p, t in res.hits["banner"]] == [BANNER]
        assert res.hits["kallsyms"] and res.hits["btf"]
        assert res.full == {"banner"}
        carve.scan_full(image, res, ["btf", "kallsyms"])
        assert res.full == {"banner", "btf", "kallsyms"}
        found = carve.carve_btf(image, res)          # without kallsyms: by the 0xEB9F header
        assert found is not None and found[1] == btf_blob


def test_parse_vmcoreinfo():
    info = carve.parse_vmcoreinfo(b"OSRELEASE=6.1.0\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffff800081f00000\n"
                                  b"NUMBER(VA_BITS)=48\nKERNELOFFSET=2a0000\nCRASHTIME=1\n")
    assert info["OSRELEASE"] == "6.1.0"
    assert info.symbol("swapper_pg_dir") == 0xFFFF800081F00000
    assert info["SYMBOL(swapper_pg_dir)"] == 0xFFFF800081F00000
    assert info.number("VA_BITS") == 48
    assert info.symbols() == {"swapper_pg_dir": 0xFFFF800081F00000}
    assert info["KERNELOFFSET"] == 0x2A0000
    assert carve.parse_vmcoreinfo(b"PAGESIZE=4096\n") is None


def run_cli(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_no_btf_one_line_exit_2(tmp_path, capsys):
    mem, _ = make_image(b"\0" * 64)
    rc, _out, err = run_cli(["--from-dump", str(write_raw(tmp_path, mem)), "-o", str(tmp_path / "x.json")], capsys)
    assert rc == 2
    assert err.count("\n") == 1 and "no kernel BTF" in err and "System.map" in err


def test_cli_no_data_symbols_names_them(tmp_path, capsys, btf_blob):
    mem, _ = make_image(btf_blob, with_data=False)
    rc, _out, err = run_cli(["--from-dump", str(write_raw(tmp_path, mem)), "-o", str(tmp_path / "x.json")], capsys)
    assert rc == 2
    assert err.count("\n") == 1
    assert "CONFIG_KALLSYMS_ALL" in err and "linux_banner, init_task" in err and "--system-map" in err


def test_cli_no_kallsyms(tmp_path, capsys, btf_blob):
    mem = bytearray(4 << 20)
    mem[0x1000:0x1000 + len(BANNER)] = BANNER
    rc, _out, err = run_cli(["--from-dump", str(write_raw(tmp_path, bytes(mem))), "-o", str(tmp_path / "x.json")],
                            capsys)
    assert rc == 2 and "no kallsyms tables" in err and err.count("\n") == 1


def test_cli_from_dump_writes_isf(tmp_path, capsys, btf_blob):
    mem, _ = make_image(btf_blob)
    out = tmp_path / "k.json"
    rc, stdout, err = run_cli(["--from-dump", str(write_raw(tmp_path, mem)), "-o", str(out)], capsys)
    assert rc == 0, err
    import json
    isf = json.loads(out.read_text())
    assert isf["symbols"]["init_task"]["address"] > 0
    assert "task_struct" in isf["user_types"]
    assert isf["metadata"]["linux"]["types"][0]["name"] == "btf-in-memory"


def test_cli_needs_an_input(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2


def test_stale_copy_of_the_tables_is_skipped(tmp_path, btf_blob):
    """A copy of the tables elsewhere (page cache, an old image) decodes too; only the one whose
    linux_banner is where its own offsets say is the running kernel's."""
    mem, entries = make_image(btf_blob)
    start = P0 + 0x100000
    blob_len = mem.find(b"\0" * 4096, start) - start
    stale = bytearray(mem)
    stale[0x20000:0x20000 + blob_len] = mem[start:start + blob_len]
    with fromdump.open_image(write_raw(tmp_path, bytes(stale))) as image:
        res = carve.scan(image)
        assert len(res.hits["kallsyms"]) == 2
        ks, errors = carve.carve_kallsyms(image, [p for p, _ in res.hits["kallsyms"]])
    assert ks.phys["kallsyms_token_table"] > start
    assert any("stale copy" in e for e in errors)


def test_cli_from_dump_with_system_map_and_banner(tmp_path, capsys, btf_blob):
    """BTF from the dump, symbols from a System.map, banner given: the kallsyms-less fallback."""
    mem, entries = make_image(btf_blob, with_data=False)
    smap = tmp_path / "System.map"
    full = synth.sample_entries(text=TEXT)
    smap.write_text("".join(f"{a:016x} {k} {n}\n" for k, n, a in sorted(full, key=lambda e: e[2])))
    out = tmp_path / "k.json"
    rc, _stdout, err = run_cli(["--from-dump", str(write_raw(tmp_path, mem)), "--system-map", str(smap),
                                "--banner", "Linux version 9.9.9-x (y) #1", "-o", str(out)], capsys)
    assert rc == 0, err
    import json
    isf = json.loads(out.read_text())
    assert isf["symbols"]["init_task"]["address"] == dict((n, a) for _k, n, a in full)["init_task"]
    assert isf["metadata"]["linux"]["symbols"][0]["name"] == "system-map"


def _core_btf(section=None):
    from helpers.btf import BtfBuilder

    b = BtfBuilder()
    i = b.int("int", 4, signed=True)
    for name in ("task_struct", "mm_struct", "list_head"):
        b.struct(name, 8, [("x", i, 0), ("y", i, 32)])
    if section:
        v = b.var("v", i)
        b.datasec(section, 4, [(v, 0, 4)])
    return b.build()


def test_check_btf_refuses_a_bpf_objects_btf():
    """Regression (fuzzing): with the kernel BTF damaged, carving took an scx scheduler's BTF
    (it has task_struct, from vmlinux.h) as the kernel's and wrote a 291-type ISF."""
    from volatility3_ktstr.isf import carve as c

    assert c._check_btf(_core_btf(".maps")) is None
    assert c._check_btf(_core_btf(".bss")) is None
    assert c._check_btf(_core_btf(".data..percpu")) is not None
    assert c._check_btf(_core_btf()) is not None   # old pahole: no DATASEC at all
