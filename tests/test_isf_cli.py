"""`ktstr-isf`: outputs, default location, banner sources, and one-line errors (exit 2)."""

import base64
import json
import lzma
import os
import subprocess
from pathlib import Path

import pytest

import dumps
from helpers.btf import BtfBuilder, make_elf
from volatility3_ktstr.isf import cli
from volrun import venv_bin

BANNER = "Linux version 6.6.6-cli (t@example) (gcc 1.0) #1 SMP"
BANNER_ADDR = 0xFFFFFFFF82000040


def small_btf():
    b = BtfBuilder()
    i = b.int("int", 4, signed=True)
    b.struct("task_struct", 8, [("pid", i, 0), ("tgid", i, 32)])
    return b.build()


@pytest.fixture
def inputs(tmp_path):
    btf = tmp_path / "vmlinux.btf"
    btf.write_bytes(small_btf())
    sysmap = tmp_path / "System.map"
    sysmap.write_text(f"ffffffff81000000 T _text\n{BANNER_ADDR:016x} D linux_banner\n"
                      "ffffffff82100000 D init_task\n")
    rodata = b"\0" * 0x40 + BANNER.encode() + b"\n\0" + b"\0" * 16
    elf = tmp_path / "vmlinux"
    elf.write_bytes(make_elf({".BTF": small_btf(), ".rodata": rodata},
                             addrs={".rodata": BANNER_ADDR - 0x40}))
    return {"btf": btf, "map": sysmap, "elf": elf, "dir": tmp_path}


def read_isf(path):
    opener = lzma.open if str(path).endswith(".xz") else open
    with opener(path, "rb") as f:
        return json.loads(f.read())


def banner_of(isf):
    return base64.b64decode(isf["symbols"]["linux_banner"]["constant_data"])


def run_cli(*args, env=None):
    """The installed console script, as a user runs it."""
    return subprocess.run([venv_bin("ktstr-isf"), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def test_raw_btf_with_banner(inputs, capsys):
    out = inputs["dir"] / "k.json.xz"
    assert cli.main([str(inputs["btf"]), "--system-map", str(inputs["map"]), "--banner", BANNER,
                     "-o", str(out)]) == 0
    isf = read_isf(out)
    assert banner_of(isf) == BANNER.encode() + b"\n\0"
    assert isf["user_types"]["task_struct"]["fields"]["tgid"]["offset"] == 4
    assert isf["symbols"]["init_task"]["address"] == 0xFFFFFFFF82100000
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and f"banner: {BANNER}" in printed


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_other_output_formats(inputs, suffix):
    import gzip

    out = inputs["dir"] / f"k{suffix}"
    assert cli.main([str(inputs["btf"]), "--system-map", str(inputs["map"]), "--banner", BANNER,
                     "-o", str(out)]) == 0
    data = gzip.open(out).read() if suffix.endswith(".gz") else out.read_bytes()
    assert json.loads(data)["metadata"]["format"] == "6.2.0"


def test_banner_from_elf_sections(inputs):
    out = inputs["dir"] / "e.json"
    assert cli.main([str(inputs["elf"]), "--system-map", str(inputs["map"]), "-o", str(out)]) == 0
    assert banner_of(read_isf(out)) == BANNER.encode() + b"\n\0"


def test_default_output_goes_where_volatility_looks(inputs, tmp_path, monkeypatch, capsys):
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    assert cli.main([str(inputs["btf"]), "--system-map", str(inputs["map"]), "--banner", BANNER]) == 0
    written = list((xdg / "volatility3" / "symbols" / "linux").glob("*.json.xz"))
    assert len(written) == 1
    assert f"wrote {written[0]}" in capsys.readouterr().out
    assert banner_of(read_isf(written[0])) == BANNER.encode() + b"\n\0"


def test_kallsyms_input_is_unrelocated(inputs, capsys):
    ks = inputs["dir"] / "kallsyms"
    shift = 0x2a000000
    ks.write_text(f"{0xffffffff81000000 + shift:016x} T _text\n"
                  f"{BANNER_ADDR + shift:016x} D linux_banner\n"
                  f"{0xffffffffc0000000:016x} t mod_fn\t[mod]\n")
    out = inputs["dir"] / "ks.json"
    assert cli.main([str(inputs["btf"]), "--kallsyms", str(ks), "--banner", BANNER, "-o", str(out)]) == 0
    isf = read_isf(out)
    assert isf["symbols"]["linux_banner"]["address"] == BANNER_ADDR
    assert "mod_fn" not in isf["symbols"]
    assert f"{shift:#x}" in capsys.readouterr().err


def one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ktstr-isf: error: "), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert proc.stdout == ""


def test_errors_are_one_line(inputs):
    d = inputs["dir"]
    nobanner_map = d / "nobanner.map"
    nobanner_map.write_text("ffffffff81000000 T _text\n")
    corrupt = d / "corrupt.btf"
    corrupt.write_bytes(small_btf()[:30])
    bad_elf = d / "bad_elf"
    bad_elf.write_bytes(make_elf({".BTF": small_btf(), ".rodata": b"\0" * 128},
                                 addrs={".rodata": BANNER_ADDR - 0x40}))
    cases = [
        ((d / "missing", "--system-map", inputs["map"]), ["no such file", "missing"]),
        ((inputs["btf"], "--system-map", d / "nomap"), ["no such symbol file"]),
        ((inputs["btf"],), ["--system-map"]),
        ((inputs["btf"], "--system-map", inputs["map"]), ["raw BTF", "--banner"]),
        ((inputs["elf"], "--system-map", nobanner_map), ["no linux_banner", "--banner"]),
        ((inputs["btf"], "--system-map", nobanner_map, "--banner", BANNER), ["linux_banner"]),
        ((bad_elf, "--system-map", inputs["map"]), ["no banner at linux_banner", "--banner"]),
        ((corrupt, "--system-map", inputs["map"], "--banner", BANNER), ["corrupt BTF at byte"]),
        ((inputs["btf"], "--system-map", inputs["map"], "--banner", "not a banner"), ["Linux version"]),
    ]
    for args, needles in cases:
        one_line_error(run_cli(*args, "-o", d / "never.json"), *needles)
    assert not (d / "never.json").exists()


def test_real_vmlinux_banner_from_stripped_elf(amd64_kernel_dir, tmp_path):
    """Debian's stripped vmlinux + System.map: the banner comes from .rodata, as the guest
    printed it (truth.json)."""
    vmlinux = dumps.vmlinux_path(amd64_kernel_dir)
    if vmlinux is None:
        pytest.skip("no vmlinux.zst")
    truth_banner = next(dumps.load_truth(n)["kernel"]["banner"] for n in dumps.list_dumps()
                        if dumps.kernel_dir(n) == amd64_kernel_dir)
    out = tmp_path / "k.json"
    proc = run_cli(vmlinux, "--system-map", amd64_kernel_dir / "System.map", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert f"banner: {truth_banner}\n" in proc.stdout
    assert banner_of(read_isf(out)) == truth_banner.encode() + b"\n\0"


def test_default_output_is_found_by_vol_without_s(inputs, tmp_path):
    """What ktstr-isf writes with no -o is what `vol` (no -s) indexes, keyed by the banner."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    made = run_cli(inputs["btf"], "--system-map", inputs["map"], "--banner", BANNER, env=env)
    assert made.returncode == 0, made.stderr
    written = made.stdout.split("\n")[0].removeprefix("wrote ")
    proc = subprocess.run([venv_bin("vol"), "-q", "-r", "json", "isfinfo"], capture_output=True,
                          text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["URI"]: r for r in json.loads(proc.stdout)}
    row = rows[Path(written).as_uri()]
    assert row["Identifying information"] == repr(BANNER.encode() + b"\n\0")
