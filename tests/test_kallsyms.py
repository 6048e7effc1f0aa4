"""isf.kallsyms on synthetic tables in every supported layout."""

import pytest

from helpers import kallsyms as synth
from volatility3_ktstr.isf import kallsyms as ks

TEXT = 0xFFFFFFFF81000000
KASLR = 0x2E000000


def decode(blob):
    anchor = blob.find(ks.ANCHOR)
    assert anchor > 0
    return ks.decode_at(blob, anchor, 0)


def expected(entries):
    out = {}
    for kind, name, addr in sorted(entries, key=lambda e: e[2]):
        out.setdefault(name, (addr, kind))
    return out


@pytest.mark.parametrize("layout", ["pcrel", "baserel", "baserel_old", "baserel_62", "absolute"])
def test_layouts_decode_names_kinds_addresses(layout):
    entries = synth.sample_entries(big=True)
    blob, pos = synth.build(entries, layout)
    k = decode(blob)
    assert k.layout == ("baserel" if layout.startswith("baserel") else layout)
    assert len(k) == len(entries)
    assert k.phys["kallsyms_token_table"] == pos["kallsyms_token_table"]
    assert k.phys["kallsyms_names"] == pos["kallsyms_names"]
    syms, how = ks.link_time(k, TEXT)
    assert how == "default _text"
    assert syms == expected(entries)
    assert ("x" * 150 + "_long") in syms      # 2-byte (big symbol) length


@pytest.mark.parametrize("layout", ["pcrel", "baserel", "absolute"])
def test_kaslr_undone_to_link_time(layout):
    entries = synth.sample_entries()
    runtime = [(k, n, a + KASLR) for k, n, a in entries]
    blob, _ = synth.build(runtime, layout)
    syms, _ = ks.link_time(decode(blob), TEXT)
    assert syms == expected(entries)


def test_vmcoreinfo_gives_exact_base():
    # Link-time _text differs from the default: only VMCOREINFO can tell.
    link_text = 0xFFFFFFFF80200000
    entries = synth.sample_entries(text=link_text)
    runtime = [(k, n, a + KASLR) for k, n, a in entries]
    blob, _ = synth.build(runtime, "pcrel")
    k = decode(blob)
    init_task = dict((n, a) for _k, n, a in runtime)["init_task"]
    vmci = {"KERNELOFFSET": KASLR, "SYMBOL": {"not_there": 1, "init_task": init_task}}
    syms, how = ks.link_time(k, TEXT, vmci)
    assert "VMCOREINFO" in how
    assert syms == expected(entries)
    wrong, how = ks.link_time(k, TEXT)
    assert wrong["_text"][0] == TEXT


def test_absolute_percpu_entries_do_not_move():
    entries = synth.sample_entries()
    percpu = [("D", "fixed_percpu_data", 0x0), ("D", "runqueues_pcpu", 0x2A000)]
    runtime = [(k, n, a + KASLR) for k, n, a in entries] + percpu
    blob, _ = synth.build(runtime, "baserel_old", abs_percpu={n for _k, n, _a in percpu})
    k = decode(blob)
    assert k.layout == "baserel"
    syms, _ = ks.link_time(k, TEXT)
    assert syms["runqueues_pcpu"] == (0x2A000, "D")
    assert syms["init_task"] == expected(entries)["init_task"]


def test_first_definition_wins_and_pfx_dropped():
    entries = synth.sample_entries() + [("t", "dup_name", TEXT + 0x50), ("t", "dup_name", TEXT + 0x60),
                                        ("T", "__pfx_startup_64", TEXT + 0x30)]
    blob, _ = synth.build(entries, "pcrel")
    syms, _ = ks.link_time(decode(blob), TEXT)
    assert syms["dup_name"] == (TEXT + 0x50, "t")
    assert "__pfx_startup_64" not in syms


def test_without_data_symbols_reports_missing():
    entries = synth.sample_entries(with_data=False) + [("T", "kallsyms_offsets", TEXT + 0x200000)]
    blob, _ = synth.build(entries, "pcrel")
    k = decode(blob)
    assert not k.has_data_symbols()
    syms, _ = ks.link_time(k, TEXT)
    assert ks.missing_required(syms, "x86_64") == ["linux_banner", "init_task", "init_files",
                                                   "init_top_pgt/init_level4_pgt"]
    assert ks.missing_required(syms, "arm64")[-1] == "swapper_pg_dir"


def test_garbage_and_truncation_raise():
    entries = synth.sample_entries()
    blob, pos = synth.build(entries, "pcrel")
    anchor = blob.find(ks.ANCHOR)
    with pytest.raises(ks.KallsymsError):
        ks.decode_at(blob[:pos["kallsyms_markers"] + 8] + b"\0" * 16, anchor - 0, 0)
    bad = bytearray(blob)
    bad[pos["kallsyms_token_index"] + 2] ^= 0xFF       # token index no longer increasing
    with pytest.raises(ks.KallsymsError, match="token table"):
        ks.decode_at(bytes(bad), anchor, 0)
    text = b"abc" * 100 + ks.ANCHOR + b"{\0|\0" + b"\xff" * 64
    with pytest.raises(ks.KallsymsError):
        ks.decode_at(text, 300, 0)
