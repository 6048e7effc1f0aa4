"""ktstr-minimize on the real x86_64/scx_sdt dump (needs KTSTR_DUMPS): the plugins print the
same rows on the minimized dump as on the full one, and the result is a few MB at most.

Both sides run today's plugin code, so this holds whatever the plugins print.
"""

import lzma

import pytest

import dumps
import volrun
from volatility3_ktstr import minimize as m

pytestmark = pytest.mark.slow   # every plugin recorded on the full dump, then minimized

NAME = "x86_64/scx_sdt"
RUNS = [m.Run("linux.pslist"), m.Run("linux.ktstr.maps"), m.Run("linux.ktstr.sdtalloc")]


@pytest.fixture(scope="module")
def minimized(tmp_path_factory, dumps_root):
    if NAME not in dumps.list_dumps():
        pytest.skip(f"{NAME} is not under KTSTR_DUMPS")
    dump = dumps.dump_path(NAME)
    out = tmp_path_factory.mktemp("min") / "scx_sdt.elf.xz"
    report = m.minimize(str(dump), str(out), RUNS, symbol_dirs=[volrun.kernel_isf_dir(NAME)],
                        env=volrun.vol_env(), jobs=2)
    return dump, out, report


def test_plugins_ran_on_the_full_dump(minimized):
    _, _, report = minimized
    for r in report.recorded:
        assert r.rc == 0, f"{r.run.spec} failed on the full dump: {m._last_line(r.stderr)}"
        assert r.rows(), f"{r.run.spec} printed no rows on the full dump"


def test_minimized_output_equals_full_output(minimized):
    _, _, report = minimized
    assert [run for run, _ in report.verified] == RUNS
    diffs = {run.spec: d for run, d in report.verified if d is not None}
    assert not diffs, f"output differs on the minimized dump: {diffs}"


def test_minimized_dump_is_small_and_sparse(minimized):
    dump, out, report = minimized
    assert report.compressed < 8 << 20, f"{out} is {report.compressed} bytes"
    assert report.pages * m.PAGE < dump.stat().st_size // 20
    # a real ELF core: header, then one PT_LOAD per kept run at its physical address
    raw = lzma.decompress(out.read_bytes())
    assert raw[:4] == b"\x7fELF" and raw[16] == 4  # ET_CORE
    plain = out.with_suffix("")
    plain.write_bytes(raw)
    src = m.open_source(str(plain))
    assert len(src.loads) == report.segments
    with open(dump, "rb") as full:
        for off, paddr, n in src.loads[:50]:
            full.seek(paddr)
            assert raw[off:off + n] == full.read(n), f"segment at {paddr:#x} differs"
