"""Hostile dumps, quick mode: mutants of the real dumps must not crash, hang or lose entries.

Each real dump gets a deterministic set of mutants (tests/fuzzlib.py: bit flips, pointer swaps,
self-loops, huge counts, zeroed pages, page-table damage, truncation) aimed at the structures the
plugins read; every linux.ktstr plugin runs on each. The long mode is tools/fuzz_dumps.py.
Defects the harness found are pinned below as regression tests with the smallest mutant.
"""

import struct

import pytest

import dumps
import fuzzlib
import volrun

pytestmark = pytest.mark.fuzz

# (dump, mutants): a few hundred in all, about five minutes on 2 cores.
QUICK = {"x86_64/scx_sdt": 200, "arm64/scx_sdt_lpa2": 100, "x86_64/scx_sdt_zoo": 60}
SEED_BASE = 20261202
GENERATOR_MUTANTS = 6


def _available(name):
    return dumps.dumps_root() is not None and (dumps.dumps_root() / name / "truth.json").is_file()


def _skip_reason(name):
    if dumps.dumps_root() is None:
        return "KTSTR_DUMPS is unset or not a directory"
    return f"no {name} under {dumps.dumps_root()}"


@pytest.fixture(scope="module", params=sorted(QUICK))
def session(request):
    name = request.param
    if not _available(name):
        pytest.skip(_skip_reason(name))
    s = fuzzlib.Session(name, volrun.kernel_isf_dir(name), dumps.dump_path(name))
    s.record_baseline()
    return s


def test_baseline_is_clean_and_targets_every_walker(session):
    bad = {p: (o.status, o.message) for p, o in session.baseline.items() if o.status != "ok"}
    assert not bad, f"{session.name}: plugins fail on the intact dump: {bad}"
    pool = fuzzlib.target_pool(session)
    for cat in ("idr", "maps", "progs", "btf", "localstorage", "owners", "sdtalloc", "arena", "scx",
                "pagetable", "links", "fds", "tasks", "hooks", "netdev", "bpffs", "hidden"):
        assert pool.get(cat), f"{session.name}: no {cat} reads recorded to mutate"
    for p in ("maps", "progs", "localstorage", "sdtalloc", "links", "bpffds", "bpfhooks"):
        assert session.models[p].reach, f"{session.name}: no entries modelled for {p}"


def test_quick_mode_no_crash_hang_or_loss(session):
    n = QUICK[session.name]
    tallies, findings = fuzzlib.fuzz(session, range(SEED_BASE, SEED_BASE + n), timeout=60)
    print(f"\n{session.name}: {n} mutants\n{fuzzlib.table(tallies)}")
    assert all(t.mutants == tallies["maps"].mutants for t in tallies.values())
    assert tallies["maps"].mutants >= n * 0.9, "too many seeds made no mutant"
    assert not findings, "\n".join(str(f) for f in findings[:10])


# --- the checker itself can fail ----------------------------------------------------------------


def test_lost_entries_are_detected_outside_the_damage_only(session):
    model = session.models["localstorage"]
    base = session.baseline["localstorage"].rows
    keys = sorted(model.keys(base), key=repr)
    assert len(keys) >= 2
    victim, other = keys[0], keys[1]
    rows = [r for r in base if model.key_of(r) != victim]
    # Damage elsewhere (a page no entry depends on): the missing entry is a loss.
    used = model.shared + [r for reach in model.reach.values() for r in reach]
    page = next(p for p in range(session.file_size - fuzzlib.PAGE, 0, -fuzzlib.PAGE)
                if not fuzzlib.overlaps([(p, fuzzlib.PAGE)], used))
    assert model.lost(base, rows, [(page, 8)]) == [victim]
    # Damage on the victim's own element: its absence is allowed.
    assert model.lost(base, rows, model.reach[victim]) == []
    # Damage on the map's registry entry or page tables hides everything: nothing is judged.
    rows2 = [r for r in rows if model.key_of(r) != other]
    assert model.lost(base, rows2, model.shared[:1]) == []


@pytest.mark.parametrize("plugin", ["bpffds", "links"])
def test_bpf_forensics_models_judge_losses(session, plugin):
    """An fd holder / link missing while only unrelated memory was damaged is a loss; missing
    with its own task, file or link struct damaged is not."""
    model = session.models[plugin]
    base = session.baseline[plugin].rows
    keys = sorted(model.keys(base), key=repr)
    assert keys, f"{session.name}: no {plugin} entries"
    victim = keys[-1]
    rows = [r for r in base if model.key_of(r) != victim]
    used = model.shared + [r for reach in model.reach.values() for r in reach]
    page = next(p for p in range(session.file_size - fuzzlib.PAGE, 0, -fuzzlib.PAGE)
                if not fuzzlib.overlaps([(p, fuzzlib.PAGE)], used))
    assert model.lost(base, rows, [(page, 8)]) == [victim]
    assert model.reach[victim] and model.lost(base, rows, model.reach[victim][-1:]) == []


def test_a_mutant_that_changes_nothing_reports_everything(session):
    read = [(o, n) for reads in session.reads.values() for o, n, _c in reads]
    page = next(p for p in range(session.file_size - fuzzlib.PAGE, 0, -fuzzlib.PAGE)
                if not fuzzlib.overlaps([(p, fuzzlib.PAGE)], read))   # no plugin reads it
    m = fuzzlib.Mutant(-1, "zero_page", "none", [(page, bytes(fuzzlib.PAGE))])
    outcomes = session.run_mutant(m)
    for p, out in outcomes.items():
        assert out.status == "ok", (p, out.message)
        assert out.rows == session.baseline[p].rows, f"{p}: output changed by an unread page"


# --- regressions: the smallest mutants of defects found ------------------------------------------


def test_regression_unreadable_registry_is_one_line(session):
    """Truncating the dump at map_idr's page crashed every map-listing plugin (ReadError). Now
    the listings say so in a row and go on with what other paths reach (bpf/objects.py); those
    that then find nothing of their kind end with a one-line error naming it."""
    kctx = session.kctx
    idr = kctx.symbol("map_idr")
    cut = session.file_ranges(idr, 1)[0][0] & ~(fuzzlib.PAGE - 1)
    m = fuzzlib.Mutant(-2, "truncate", "idr", [], truncate=cut)
    outcomes = session.run_mutant(m)
    for p in ("maps", "localstorage", "mapdump", "arena", "sdtalloc"):
        out = outcomes[p]
        assert out.status in ("error", "ok"), (p, out.status, out.message)
        text = out.message if out.status == "error" else " ".join(map(str, out.rows))
        assert "map_idr" in text and "unreadable" in text, (p, text[:500])


def test_regression_unreadable_global_dsq_array_is_a_row(session):
    """An unreadable global DSQ pointer array made scxstate raise TypeError (error rows were
    mixed into the (node, address) list)."""
    kctx = session.kctx
    layout = kctx.layout
    root = kctx.symbol("scx_root")
    if root is None:
        pytest.skip("kernel without scx_root")
    field = next((f for f in ("pnode", "global_dsqs") if layout.has("scx_sched", f)), None)
    if field is None:
        pytest.skip("scx_sched has neither pnode nor global_dsqs")
    sch = kctx.reader.u64(root)
    at = session.file_ranges(sch + layout.offset("scx_sched", field), 8)
    m = fuzzlib.Mutant(-3, "ptr_other", "scx", [(at[0][0], struct.pack("<Q", 8))])
    out = session.run_mutant(m)["scxstate"]
    assert out.status == "ok", out.message
    assert any(r[:3] == ("dsq", "global", "error") and "unreadable" in str(r[3]) for r in out.rows), \
        [r for r in out.rows if r[0] == "dsq"][:5]


def test_regression_kernel_btf_swapped_for_a_program_btf(session):
    """btf_vmlinux pointing at a program's (small) BTF made mapdump raise KeyError when it named
    the struct_ops function slots by a type id beyond that BTF (seed 20261216 of the quick set)."""
    kctx = session.kctx
    prog_btf = next((m.btf_kva for m in kctx.maps() if m.btf_kva), None)
    if prog_btf is None or not any(m.type_name == "struct_ops" for m in kctx.maps()):
        pytest.skip("no program BTF or no struct_ops map")
    at = session.file_ranges(kctx.symbol("btf_vmlinux"), 8)
    m = fuzzlib.Mutant(-4, "ptr_other", "btf", [(at[0][0], struct.pack("<Q", prog_btf))])
    out = session.run_mutant(m)["mapdump"]
    assert out.status in ("ok", "error"), out.message


# --- the ISF generator ---------------------------------------------------------------------------


def test_generator_on_mutants_fails_cleanly_or_succeeds(tmp_path):
    name = "x86_64/scx_sdt"
    if not _available(name):
        pytest.skip(_skip_reason(name))
    path = dumps.dump_path(name)
    targets = fuzzlib.generator_targets(path)
    assert any(t[0] == "btf header" for t in targets) and len(targets) > 2
    results = []
    for seed in range(SEED_BASE, SEED_BASE + GENERATOR_MUTANTS):
        what, patches = fuzzlib.generator_mutant(path, targets, seed)
        status, message = fuzzlib.run_generator(path, patches, tmp_path / f"{seed}.json.gz")
        results.append((what, status, message))
    bad = [r for r in results if r[1] not in ("ok", "error")]
    assert not bad, bad
    # Regression: with the kernel BTF's header zeroed or its type section made huge, carving
    # took the scheduler's program BTF (it has task_struct) for the kernel's and succeeded.
    btf_phys = next(p for n, p, _ in targets if n == "btf header")
    for what, patch in (("zeroed", (btf_phys & ~(fuzzlib.PAGE - 1), bytes(fuzzlib.PAGE))),
                        ("huge type_off", (btf_phys + 8, struct.pack("<I", 0xFFFFFFF0)))):
        status, message = fuzzlib.run_generator(path, [patch], tmp_path / "hdr.json.gz")
        assert status == "error" and "no kernel BTF" in message, (what, status, message)


# --- kdump-compressed vmcores --------------------------------------------------------------------

VMCORE = "vmcore/x86_64/scx_sdt"
VMCORE_MUTANTS = 60


@pytest.fixture(scope="module")
def vmcore_session():
    if not _available(VMCORE):
        pytest.skip(_skip_reason(VMCORE))
    s = fuzzlib.Session(VMCORE, volrun.kernel_isf_dir(VMCORE), dumps.dump_path(VMCORE))
    s.record_baseline()
    return s


@pytest.mark.fuzz
def test_vmcore_mutants_no_crash_hang_or_loss(vmcore_session):
    """Mutants of the file bytes the plugins read on the real vmcore: its bitmaps, page
    descriptors and compressed page data (and truncation). Damage to a page's descriptor or
    data costs that page; plugins say so in rows or one line, and lose nothing else."""
    s = vmcore_session
    assert s.baseline["scxtasks"].status == "ok" and s.baseline["scxtasks"].rows
    tallies, findings = fuzzlib.fuzz(s, range(SEED_BASE, SEED_BASE + VMCORE_MUTANTS), timeout=60)
    print(f"\n{VMCORE}: {VMCORE_MUTANTS} mutants\n{fuzzlib.table(tallies)}")
    assert tallies["maps"].mutants >= VMCORE_MUTANTS * 0.8
    assert not findings, "\n".join(str(f) for f in findings[:10])


def _vmcore_file_mutants(path):
    """(what, bytes) of damaged copies of a vmcore's header, bitmaps and descriptor table."""
    import random

    from volatility3_ktstr.dumpfile import kdump

    data = path.read_bytes()
    kd = kdump.KdumpFile(kdump.FileSource(str(path)))
    rng = random.Random(SEED_BASE)
    out = [("truncated in the bitmaps", data[:kd.bitmap_offset + 100]),
           ("truncated in the descriptors", data[:kd.data_offset + 5000]),
           ("truncated in the page data", data[:len(data) // 2])]
    for what, lo, hi in (("header", 8, 464), ("bitmap", kd.bitmap_offset, kd.data_offset),
                         ("descriptors", kd.data_offset, kd.data_offset + 24 * 4096)):
        bad = bytearray(data)
        for _ in range(16):
            at = rng.randrange(lo, hi)
            bad[at] ^= 1 << rng.randrange(8)
        out.append((f"bit flips in the {what}", bytes(bad)))
    kd.close()
    return out


@pytest.mark.fuzz
def test_hostile_vmcore_files_through_vol(tmp_path):
    """Damaged kdump headers, bitmaps and descriptor tables through the real `vol`: exit 0 with
    rows, 2 with one line, or 1 with Volatility's "Unable to validate" -- never a traceback."""
    if not _available(VMCORE):
        pytest.skip(_skip_reason(VMCORE))
    for i, (what, blob) in enumerate(_vmcore_file_mutants(dumps.dump_path(VMCORE))):
        path = tmp_path / f"vmcore{i}"
        path.write_bytes(blob)
        out = volrun.run_vol(path, "linux.ktstr.maps", name=VMCORE, timeout=300,
                             extra_global=("-p", str(volrun.REPO / "volatility3_ktstr" / "plugins")))
        volrun.check_documented(_Completed(out), "linux.ktstr.maps")
        path.unlink()


class _Completed:
    """VolResult as volrun.check_documented expects a CompletedProcess."""

    def __init__(self, res):
        self.returncode, self.stdout, self.stderr = res.rc, res.stdout, res.stderr
