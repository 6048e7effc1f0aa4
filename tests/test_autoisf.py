"""isf.autoisf on a small synthetic image through a Volatility FileLayer (no vol process)."""

import gzip
import json

import pytest

from helpers.images import BANNER, make_image, tiny_btf, write_raw

volatility3 = pytest.importorskip("volatility3")

from volatility3.framework import contexts  # noqa: E402
from volatility3.framework.layers import physical  # noqa: E402

from volatility3_ktstr.layers import autoisf  # noqa: E402


class FakeCache:
    def __init__(self, known):
        self.known = known
        self.updates = 0

    def get_identifier_dictionary(self, operating_system=None, local_only=False):
        return dict(self.known)

    def update(self, progress_callback=None):
        self.updates += 1


@pytest.fixture
def setup(tmp_path, monkeypatch):
    mem, _ = make_image(tiny_btf(pad_strings=70000))
    path = write_raw(tmp_path, mem)
    ctx = contexts.Context()
    ctx.config["t.location"] = path.as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "t", "base"))
    out_dir = tmp_path / "symbols" / "linux"
    monkeypatch.setattr(autoisf, "symbols_dir", lambda: str(out_dir))
    monkeypatch.setattr(autoisf, "_attempted", set())
    return ctx, out_dir, monkeypatch


def test_builds_when_no_isf_matches(setup, caplog):
    ctx, out_dir, monkeypatch = setup
    cache = FakeCache({b"Linux version other\n\0": "file:///x.json"})
    monkeypatch.setattr(autoisf.symbol_cache, "load_cache_manager", lambda: cache)
    out = autoisf.ensure_isf(ctx, "base")
    assert out is not None and out.startswith(str(out_dir)) and out.endswith(".json.gz")
    with gzip.open(out) as f:
        isf = json.load(f)
    import base64
    assert base64.b64decode(isf["symbols"]["linux_banner"]["constant_data"]) == BANNER
    assert cache.updates == 1                       # indexed for the stackers of this run
    assert "building one" in caplog.text and "wrote" in caplog.text
    # Once per image and run.
    assert autoisf.ensure_isf(ctx, "base") is None
    assert cache.updates == 1


def test_bails_out_when_banner_known(setup):
    ctx, out_dir, monkeypatch = setup
    cache = FakeCache({BANNER: "file:///known.json"})
    monkeypatch.setattr(autoisf.symbol_cache, "load_cache_manager", lambda: cache)
    assert autoisf.ensure_isf(ctx, "base") is None
    assert not out_dir.exists() and cache.updates == 0


def test_stacker_never_stacks_and_can_be_disabled(setup):
    ctx, out_dir, monkeypatch = setup
    monkeypatch.setenv("VOLATILITY3_KTSTR_NO_AUTOISF", "1")
    assert autoisf.KtstrAutoIsfStacker.stack(ctx, "base") is None
    assert not out_dir.exists()
    assert autoisf.KtstrAutoIsfStacker.stack_order < 33


def test_failure_is_one_warning(tmp_path, monkeypatch, caplog):
    mem = bytearray(4 << 20)
    mem[0x1000:0x1000 + len(BANNER)] = BANNER        # a banner but no kallsyms/BTF
    path = write_raw(tmp_path, bytes(mem))
    ctx = contexts.Context()
    ctx.config["t.location"] = path.as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "t", "base"))
    monkeypatch.setattr(autoisf, "_attempted", set())
    monkeypatch.setattr(autoisf.symbol_cache, "load_cache_manager", lambda: FakeCache({}))
    assert autoisf.ensure_isf(ctx, "base") is None
    warn = [r for r in caplog.records if "cannot build" in r.getMessage()]
    assert len(warn) == 1 and "--system-map" in warn[0].getMessage()


def test_layer_image_carves_like_the_file_reader():
    """Layers our reader does not handle (AVML, QEMU, ...) are read through Volatility."""
    from volatility3_ktstr.isf import fromdump

    mem, _ = make_image(tiny_btf(pad_strings=70000))
    ctx = contexts.Context()
    ctx.add_layer(physical.BufferDataLayer(ctx, "b", "buf", mem))
    image = autoisf.image_for(ctx, "buf")
    assert isinstance(image, autoisf.LayerImage)
    c = fromdump.carve(image)
    assert c.banner == BANNER and c.symbols["init_task"][0] > 0


def test_memo_skips_the_scan_next_time(setup, tmp_path):
    ctx, out_dir, monkeypatch = setup
    monkeypatch.setattr(autoisf.constants, "CACHE_PATH", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    monkeypatch.setattr(autoisf.symbol_cache, "load_cache_manager", lambda: FakeCache({BANNER: "file:///k.json"}))
    assert autoisf.ensure_isf(ctx, "base") is None
    path = str(tmp_path / "mem.raw")
    assert autoisf.memo_banner(path) == BANNER
    monkeypatch.setattr(autoisf, "_attempted", set())
    monkeypatch.setattr(autoisf, "iter_banners", lambda image: (_ for _ in ()).throw(AssertionError("scanned")))
    assert autoisf.ensure_isf(ctx, "base") is None
