"""The test harness itself (no dump needed): volrun's in-process opener says in one line why it
cannot open a file, and dumps.smoke_first keeps one dump in the quick tier."""

import pytest

import dumps
import volrun


def test_open_in_process_says_why_in_one_line(tmp_path, monkeypatch):
    import volatility3.symbols
    from volatility3.framework import constants

    # the opener sets these process-wide, as `vol` does; put them back for later tests
    monkeypatch.setattr(constants, "CACHE_PATH", constants.CACHE_PATH)
    monkeypatch.setattr(volatility3.symbols, "__path__", list(volatility3.symbols.__path__))
    not_linux = tmp_path / "zeros.raw"
    not_linux.write_bytes(bytes(1 << 20))
    with pytest.raises(volrun.OpenError) as e:
        volrun.open_in_process(not_linux, ["maps", "sdtalloc"])
    msg = str(e.value)
    assert "\n" not in msg and str(not_linux) in msg
    assert "symbol_table_name" in msg and "no Linux banner" in msg
    with pytest.raises(volrun.OpenError, match="no such file"):
        volrun.open_in_process(tmp_path / "absent.raw", ["maps"])
    with pytest.raises(volrun.OpenError, match="no linux.ktstr plugin module named nosuch"):
        volrun.open_in_process(not_linux, ["nosuch"])


def test_smoke_first_marks_all_but_one_dump_slow():
    names = ["arm64/a", "x86_64/scx_sdt", "x86_64/b"]
    params = dumps.smoke_first(names)
    assert params[1] == "x86_64/scx_sdt"
    assert [p.values[0] for p in (params[0], params[2])] == ["arm64/a", "x86_64/b"]
    assert all(m.name == "slow" for p in (params[0], params[2]) for m in p.marks)
    assert dumps.smoke_first(["arm64/a", "arm64/c"])[0] == "arm64/a"
    assert dumps.smoke_first(["arm64/a", "arm64/c"], smoke="arm64/c")[1] == "arm64/c"
    assert dumps.smoke_first([]) == []
