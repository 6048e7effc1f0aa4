"""Fleet triage pieces that need neither Dask nor a dump: which files are dumps, the row a
plugin's output gives, programs seen on one host only, a report with no way out of the machine.
(The Dask runs on real dumps, the external cluster and the browser: test_fleet_cluster.py.)"""

import hashlib
import json
import os
import re
import struct

import pytest

from volatility3_ktstr.fleet import discover, report, summarize


def _elf_header(e_type):
    return b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8 + struct.pack("<HH", e_type, 62) + b"\0" * 44


def test_dump_files_are_told_from_other_files(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "dump.raw").write_bytes(b"\0" * (2 << 20))
    (tmp_path / "a" / "core.elf").write_bytes(_elf_header(4) + b"\0" * 4096)   # ET_CORE
    (tmp_path / "a" / "vmlinux").write_bytes(_elf_header(2) + b"\0" * 4096)    # ET_EXEC
    (tmp_path / "a" / "btf.raw").write_bytes(b"\x9f\xeb\x01\0" + b"\0" * (2 << 20))
    (tmp_path / "a" / "small.raw").write_bytes(b"\0" * 100)                   # too small
    (tmp_path / "a" / "kd").write_bytes(b"KDUMP   " + b"\0" * 100)
    (tmp_path / "a" / "notes.txt").write_text("hello")
    cctx = zstandard.ZstdCompressor()
    (tmp_path / "a" / "vmlinux.zst").write_bytes(cctx.compress(_elf_header(2) + b"\0" * 64))
    (tmp_path / "a" / "mem.raw.zst").write_bytes(cctx.compress(b"\0" * 4096))
    (tmp_path / "a" / "core.zst").write_bytes(cctx.compress(_elf_header(4) + b"\0" * 64))
    found = {d.name for d in discover.expand([str(tmp_path)])}
    assert found == {"a/dump.raw", "a/core.elf", "a/kd", "a/mem.raw.zst", "a/core.zst"}
    # Named on the command line: taken as given (a row will say what is wrong with it).
    named = discover.expand([str(tmp_path / "a" / "notes.txt"), str(tmp_path / "a" / "*.elf")])
    assert [d.name for d in named] == ["notes.txt", "core.elf"]
    # The same file twice is one input.
    assert len(discover.expand([str(tmp_path / "a" / "kd"), str(tmp_path / "a" / "kd")])) == 1


def test_decompressed_copy_is_made_once(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    src = tmp_path / "d.raw.zst"
    src.write_bytes(zstandard.ZstdCompressor().compress(b"x" * 10000))
    sha = discover.content_hash(str(src))
    out = discover.decompressed_copy(str(src), sha, tmp_path / "cache")
    assert out.endswith("d.raw") and open(out, "rb").read() == b"x" * 10000
    mtime = (tmp_path / "cache").stat().st_mtime_ns
    assert discover.decompressed_copy(str(src), sha, tmp_path / "cache") == out
    assert discover.safe_name("x86_64/scx_sdt/dump.raw.zst") == "x86_64__scx_sdt__dump.raw.zst"
    assert mtime == (tmp_path / "cache").stat().st_mtime_ns


def _tree(section, obj, key, value, children=()):
    return {"Section": section, "Object": obj, "Key": key, "Value": value, "Address": None,
            "__children": list(children)}


SCX_EXITED = [
    _tree("exit", "summary", "verdict", "EXITED: qmap: ERROR_BPF (1025)"),
    _tree("exit", "kernel qmap", "kind", "ERROR_BPF (1025)"),
    _tree("exit", "kernel qmap", "reason", "scx_bpf_error"),
    _tree("exit", "kernel qmap", "msg", "a.bpf.c:1: boom"),
    _tree("exit", "uei x.data", "kind", "NONE (0)"),
    _tree("exit", "kernel log", "source", "printk", [
        _tree("exit", "kernel log", "line", "[    8.4] sched_ext: BPF scheduler \"qmap\" enabled"),
        _tree("exit", "kernel log", "line",
              "[   21.425321] sched_ext: BPF scheduler \"qmap\" disabled (scx_bpf_error)")]),
    _tree("scheduler", "(none)", "enable_state", "disabled"),
    _tree("scheduler", "qmap", "name", "qmap"),
    _tree("watchdog", "-", "stalled_tasks", "3"),
    _tree("events", "qmap", "SCX_EV_A", "5", [_tree("events", "qmap", "cpu0", "5")]),
    _tree("events", "qmap", "SCX_EV_B", "0"),
    _tree("events", "qmap", "SCX_EV_C", "9"),
]


def test_row_from_plugin_outputs():
    progs = [{"Tag": "aa", "Name": "p1", "Type": "kprobe", "ID": 1, "Error": ""},
             {"Tag": "bb", "Name": "p2", "Type": "xdp", "ID": 2, "Error": ""}]
    hidden = [{"Kind": "prog", "Verdict": "hidden", "Error": ""},
              {"Kind": "task", "Verdict": "unverifiable", "Error": "not read whole"},
              {"Kind": "summary", "Verdict": "", "Error": ""}]
    maps = [{"ID": 3, "Error": ""}, {"ID": -1, "Error": "map_idr unreadable at 0x10"}]
    triage = [
        {"Kind": "prog", "ID": 2, "Name": "p2", "Flag": "unheld", "Severity": "medium"},
        {"Kind": "prog", "ID": 1, "Name": "p1", "Flag": "no-btf", "Severity": "low"},
        {"Kind": "prog", "ID": 2, "Name": "p2", "Flag": "helper:probe_write_user",
         "Severity": "high"},
        {"Kind": "sys_call_table", "ID": 59, "Name": "", "Flag": "integrity",
         "Severity": "high", "Reason": "points into BPF code"},
        {"Kind": "sys_call_table", "ID": 0, "Name": "x64_sys_read", "Flag": "integrity",
         "Severity": "info", "Reason": "in a module"},
        {"Kind": "summary", "ID": 2, "Name": "2 of 2 programs flagged", "Flag": "",
         "Severity": ""}]
    row = summarize.summarize({
        "linux.ktstr.scxstate": list(summarize.flatten(SCX_EXITED)),
        "linux.ktstr.progs": progs, "linux.ktstr.bpfhidden": hidden, "linux.ktstr.maps": maps,
        "linux.ktstr.bpftriage": triage})
    assert (row["exit_kind"], row["exit_code"], row["exit_reason"], row["exit_message"]) == \
        ("ERROR_BPF", 1025, "scx_bpf_error", "a.bpf.c:1: boom")
    assert row["exit_time_s"] == 21.425321
    assert row["schedulers"] == "qmap" and row["scheduler_state"] == "disabled"
    assert row["stalled_tasks"] == 3 and row["top_events"] == "C=9, A=5"
    assert (row["hidden_objects"], row["unverifiable_objects"]) == (1, 1)
    assert row["bpf_maps"] == 1 and row["bpf_progs"] == 2 and row["bpf_links"] is None
    assert row["damage"] == 1 and "map_idr unreadable" in row["damage_examples"]
    assert row["program_fingerprints"] == "aa:p1:kprobe;bb:p2:xdp"
    # Worst first, each program's flags in the plugin's order; "info" integrity rows left out.
    assert row["flagged_programs"] == 2
    assert row["suspicious_programs"] == \
        "p2 (id 2, high: unheld, helper:probe_write_user); p1 (id 1, low: no-btf)"
    assert row["kernel_integrity"] == "sys_call_table[59] ?: points into BPF code"
    # Without bpftriage's output the columns are unknown, not "nothing found".
    bare = summarize.summarize({"linux.ktstr.progs": progs})
    assert (bare["flagged_programs"], bare["suspicious_programs"]) == (None, None)
    clean = summarize.summarize({"linux.ktstr.bpftriage": triage[-1:]})
    assert (clean["flagged_programs"], clean["suspicious_programs"]) == (0, None)


def test_no_exit_is_none_and_uei_stands_in_for_a_lost_kernel_record():
    none = summarize.exit_facts([_tree("exit", "kernel sdt", "kind", "NONE (0)")])
    assert none["exit_kind"] == "NONE" and none["exit_reason"] is None
    uei_only = summarize.exit_facts([_tree("exit", "uei a.data", "kind", "ERROR_STALL (1026)"),
                                     _tree("exit", "uei a.data", "reason", "stall")])
    assert (uei_only["exit_kind"], uei_only["exit_reason"]) == ("ERROR_STALL", "stall")


def test_programs_seen_on_one_host_only():
    rows = [{"program_fingerprints": "a:x:kprobe;b:y:xdp"}, {"program_fingerprints": "a:x:kprobe"},
            {"program_fingerprints": None}]
    summarize.mark_unique_programs(rows)
    assert [r["unique_programs"] for r in rows] == ["b:y:xdp", None, None]
    # A name that could not be read matches the program of that tag and type on other hosts.
    degraded = [{"program_fingerprints": "a:x:kprobe;c:z:lsm"}, {"program_fingerprints": "a:?:kprobe"},
                {"program_fingerprints": "c:?:xdp"}]
    summarize.mark_unique_programs(degraded)
    assert [r["unique_programs"] for r in degraded] == ["c:z:lsm", None, "c:?:xdp"]
    alone = [{"program_fingerprints": "a:x:kprobe"}]
    summarize.mark_unique_programs(alone)
    assert alone[0]["unique_programs"] is None      # a fleet of one has nothing to compare


def test_report_pages_are_self_contained(tmp_path):
    folder = tmp_path / "dumps" / "h1"
    folder.mkdir(parents=True)
    (folder / "linux.ktstr.scxstate.json").write_text(json.dumps(SCX_EXITED + [
        _tree("dsq", "GLOBAL node0", "nr", "4"), _tree("watchdog", "cpu0", "runnable_list",
                                                       "2 tasks")]))
    (folder / "linux.ktstr.bpfhooks.json").write_text(json.dumps([
        {"ProgName": "p1", "ProgType": "kprobe", "ProgId": 1, "Hook": "kprobe",
         "Target": "vfs_read", "__children": []}]))
    (folder / "linux.ktstr.scxtasks.json").write_text(json.dumps([
        {"PID": 7, "COMM": "stuck", "RunnableList": "cpu1[0]", "RunnableAtMs": -31250,
         "RunnableForJiffies": 7812, "At": "dump", "Starved": "STARVED", "__children": []},
        {"PID": 8, "COMM": "next", "RunnableList": "cpu1[1]", "RunnableAtMs": -40,
         "RunnableForJiffies": 10, "At": "dump", "Starved": "", "__children": []},
        {"PID": 9, "COMM": "other", "RunnableList": "cpu3[0]", "RunnableAtMs": None,
         "RunnableForJiffies": 120, "At": "exit", "Starved": "", "__children": []},
        {"PID": 1, "COMM": "init", "RunnableList": "", "RunnableAtMs": None,
         "RunnableForJiffies": None, "At": "dump", "Starved": "", "__children": []}]))
    (folder / "linux.ktstr.arena.json").write_text(json.dumps([
        {"Name": "arena", "MapID": 3, "Pages": 6, "Physical": None, "__children": []}]))
    (folder / "linux.ktstr.bpftriage.json").write_text(json.dumps([
        {"Kind": "prog", "ID": 1, "Name": "p1", "Type": "kprobe", "Flag": "target:kprobe",
         "Severity": "medium", "Reason": "a kprobe", "Evidence": "kprobe vfs_read",
         "__children": []}]))
    rows = [{"name": "h1", "exit_kind": "ERROR_BPF", "exit_verdict": "EXITED <b>", "damage": 0,
             "seconds": 1.5, "per_plugin": {"scxstate": {"seconds": 0.5}},
             "flagged_programs": 1, "suspicious_programs": "p1 (id 1, medium: target:kprobe)",
             "kernel_release": "6.99", "schedulers": "qmap", "stalled_tasks": 3},
            {"name": "h2", "error": "no Linux banner", "seconds": 0.1}]
    pages = report.write_report(rows, str(tmp_path))
    assert len(pages) == 3
    index = (tmp_path / "index.html").read_text()
    assert "EXITED &lt;b&gt;" in index and "no Linux banner" in index
    assert 'href="dumps/h1/index.html"' in index
    assert 'id="suspicious"' in index and "p1 (id 1, medium: target:kprobe)" in index
    # exits and stalls clustered by kernel and scheduler: 1 dump, 1 with stalls, 3 tasks
    kinds = index[index.index('id="exitkinds"'):]
    assert "<td>6.99</td><td>qmap</td><td>ERROR_BPF</td><td>1</td><td>1</td><td>3</td>" in kinds
    page = (folder / "index.html").read_text()
    assert page.count("<svg") >= 5 and "vfs_read" in page and "GLOBAL node0" in page
    assert page.count('<rect x="') >= 6       # arena: one square per page (6), plus the bars
    # Runnable ages per CPU: the oldest wait of each CPU's list, at the dump and at the exit.
    ages = page[page.index('id="runnable-ages"'):]
    assert 'id="ages-dump"' in ages and 'id="ages-exit"' in ages
    assert "cpu1 (2 waiting): 31250 ms" in ages and "cpu3 (1 waiting): 120 jiffies" in ages
    assert "stuck" in ages and "STARVED" in ages and ">init<" not in ages
    assert 'id="flags"' in page and "target:kprobe" in page and "kprobe vfs_read" in page
    for text in [index, page]:
        assert not re.search(r"(src|href)=\"(https?:)?//", text), "a link leaves the machine"
        assert "<script" not in text and "@import" not in text and "url(" not in text


BUILD = b"Linux version 6.99.1-test (b@h) (gcc 13) #7 SMP PREEMPT Mon Jan 1 00:00:00 UTC 2024\n\0"
STRAY = b"Linux version 6.99.1-test (b@h) (gcc 13) # SMP template line for nothing\n\0"


def _fake_dump(path, size=3 << 20):
    """A raw 'dump' holding a stray banner, then the running kernel's, at page offsets."""
    data = bytearray(os.urandom(size))
    data[0x1000:0x1000 + len(STRAY)] = STRAY
    data[0x200000:0x200000 + len(BUILD)] = BUILD
    path.write_bytes(bytes(data))
    return bytes(data)


def test_content_hash_is_sha256_across_chunks(tmp_path, monkeypatch):
    data = _fake_dump(tmp_path / "d.raw")
    monkeypatch.setattr(discover, "HASH_CHUNK", 1 << 20)     # three full chunks and a tail
    (tmp_path / "d.raw").write_bytes(data + b"tail")
    assert discover.content_hash(str(tmp_path / "d.raw")) == hashlib.sha256(data + b"tail").hexdigest()


def test_content_hash_of_sparse_files_hashes_holes_as_zeros(tmp_path, monkeypatch):
    """Holes (before, between and after data, none page-aligned in size) read as zeros, so the
    hash is the bytes' sha256 whether the file is sparse or not, and whether the filesystem
    can tell holes or not."""
    monkeypatch.setattr(discover, "HASH_CHUNK", 1 << 16)
    path = tmp_path / "sparse.raw"
    size = (5 << 20) + 123
    pieces = [(3 << 20, b"first"), ((3 << 20) + 70_000, os.urandom(200_000)),
              ((4 << 20) + 5, b"x" * 3)]
    with open(path, "wb") as f:
        for off, data in pieces:
            f.seek(off)
            f.write(data)
        f.truncate(size)
    flat = bytearray(size)
    for off, data in pieces:
        flat[off:off + len(data)] = data
    want = hashlib.sha256(bytes(flat)).hexdigest()
    assert discover.content_hash(str(path)) == want
    monkeypatch.delattr(os, "SEEK_DATA")       # a platform that cannot tell: read it all
    assert discover.content_hash(str(path)) == want
    (tmp_path / "empty.raw").write_bytes(b"")
    assert discover.content_hash(str(tmp_path / "empty.raw")) == hashlib.sha256().hexdigest()
    hole_only = tmp_path / "holes.raw"
    with open(hole_only, "wb") as f:
        f.truncate(3 << 20)
    assert discover.content_hash(str(hole_only)) == hashlib.sha256(bytes(3 << 20)).hexdigest()


def test_hard_links_are_probed_and_hashed_once(tmp_path, monkeypatch):
    from volatility3_ktstr.fleet import tasks

    data = _fake_dump(tmp_path / "a.raw")
    os.link(tmp_path / "a.raw", tmp_path / "b.raw")
    (tmp_path / "c.raw").write_bytes(data)                   # a copy: its own inode
    monkeypatch.setenv("KTSTR_FLEET_CACHE", str(tmp_path / "cache"))
    hashed = []
    real = discover.content_hash
    monkeypatch.setattr(discover, "content_hash", lambda p: hashed.append(p) or real(p))
    monkeypatch.setattr(tasks, "_HASHES_BY_INODE", {})
    a, b, c = (tasks.probe(str(tmp_path / n)) for n in ("a.raw", "b.raw", "c.raw"))
    assert hashed == [str(tmp_path / "a.raw"), str(tmp_path / "c.raw")]
    assert a["sha256"] == b["sha256"] == c["sha256"] == hashlib.sha256(data).hexdigest()
    # The running kernel's banner (with its build number), not the stray one before it.
    assert a["banner"] == BUILD.decode() and a["error"] is None and a["format"] == "raw"
    assert discover.inode_key(str(tmp_path / "a.raw")) == discover.inode_key(str(tmp_path / "b.raw"))
    assert discover.inode_key(str(tmp_path / "a.raw")) != discover.inode_key(str(tmp_path / "c.raw"))
    # A hash the caller knows is taken as is (the engine's state.json): no read for it.
    assert tasks.probe(str(tmp_path / "c.raw"), sha256="ab" * 32)["sha256"] == "ab" * 32
    assert len(hashed) == 2


def test_fsspec_urls_are_dumps_read_through_a_local_copy(tmp_path, monkeypatch):
    fsspec = pytest.importorskip("fsspec")
    from volatility3_ktstr.fleet import tasks

    data = _fake_dump(tmp_path / "d.raw")
    fs = fsspec.filesystem("memory")
    fs.pipe("/fleet2-test/hosts/h1.raw", data)
    fs.pipe("/fleet2-test/hosts/notes.txt", b"hello")
    try:
        found = discover.expand(["memory://fleet2-test/hosts"])
        assert [(d.path, d.name) for d in found] == [("memory://fleet2-test/hosts/h1.raw", "h1.raw")]
        globbed = discover.expand(["memory://fleet2-test/hosts/*.raw"])
        assert [d.path for d in globbed] == ["memory://fleet2-test/hosts/h1.raw"]
        monkeypatch.setenv("KTSTR_FLEET_CACHE", str(tmp_path / "cache"))
        info = tasks.probe("memory://fleet2-test/hosts/h1.raw")
        assert info["error"] is None and info["banner"] == BUILD.decode()
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
        assert info["open_path"].startswith(str(tmp_path / "cache"))
        # Another worker (no copy yet) makes its own from the URL.
        assert open(tasks.local_dump(dict(info, open_path="/nonexistent")), "rb").read() == data
    finally:
        fs.rm("/fleet2-test", recursive=True)
    # file:// URLs are local paths.
    url = (tmp_path / "d.raw").as_uri()
    assert [d.path for d in discover.expand([url])] == [str(tmp_path / "d.raw")]


def test_paging_says_the_scheme_not_the_stacker():
    """The paging column names the translation (arch, levels, VA bits), the same for a layer
    Volatility's stacker built and one this package's built from VMCOREINFO or CPU notes."""
    from volatility3.framework.layers import intel

    from volatility3_ktstr.fleet.inprocess import paging_of
    from volatility3_ktstr.layers import LinuxIntel32eLA57, arm64, la57

    def bare(cls):
        return object.__new__(cls)     # class attributes only: no context needed

    assert paging_of(bare(intel.Intel32e)) == paging_of(bare(la57.KtstrLinuxIntel32e)) == \
        "x86-64, 4 levels"
    assert paging_of(bare(LinuxIntel32eLA57)) == "x86-64, 5 levels (LA57)"
    lpa2, va48 = bare(arm64.LinuxAArch64), bare(arm64.LinuxAArch64)
    lpa2._kwalk, va48._kwalk = arm64.WalkConfig(4096, 52, True), arm64.WalkConfig(4096, 48, False)
    assert paging_of(lpa2) == "arm64, 52-bit VA, 4 KiB pages, 5 levels, LPA2"
    assert paging_of(va48) == "arm64, 48-bit VA, 4 KiB pages, 4 levels"
