"""volpatches: each patch's target is still what it was written against, each patch keeps
Volatility's answers, and the version pin holds. Offline: small ISFs made here, and the
kernel ISF bundled under symbols/."""

import hashlib
import importlib
import inspect
import json
import logging
import lzma
import marshal
import os
import pathlib

import pytest

from volatility3_ktstr import volpatches as vp
from volatility3_ktstr.isf import compact

REPO = pathlib.Path(__file__).resolve().parents[1]
BUNDLED_ISF = sorted((REPO / "symbols" / "linux").glob("*.json.xz"))

# sha256[:16] of the source of every Volatility function a patch replaces (vp.FINGERPRINTS,
# which apply() checks on an untested Volatility) or our code mirrors or relies on, as in
# volatility3 2.28.2. A mismatch means Volatility changed underneath: re-read the function,
# check that volpatches.py (or kernel.IsfLayout, KernelContext.symbol,
# layers/stackers.stock_x86_layer) still matches it, then update the value here.
FINGERPRINTS = {
    **vp.FINGERPRINTS,
    # relied upon: valid() calls create_json_hash through its module; set_type_class's test is
    # `types`; format tables never write to the ISF dict (shared between tables); IsfLayout
    # mirrors _reduce_fields/get_type; KernelContext.symbol uses the table's get_symbol.
    "volatility3.schemas:valid": "f6ce36f5d3b05a0c",
    "volatility3.framework.symbols.intermed:Version1Format.types": "f36725fd165b923a",
    "volatility3.framework.symbols.intermed:ISFormatTable.__init__": "a5ba92f850f4b24b",
    "volatility3.framework.symbols.intermed:Version8Format._reduce_fields": "8f27b60a80660f36",
    "volatility3.framework.symbols.intermed:Version8Format.get_type": "4e23cc38b2b13ac0",
    "volatility3.framework.symbols.intermed:Version5Format.get_symbol": "7fe7fa2893a29c30",
    # relied upon by layers/stackers.stock_x86_layer, which builds what
    # LinuxIntelVMCOREINFOStacker.stack (above) builds, with its own helpers and checks.
    "volatility3.framework.automagic.linux:LinuxIntelVMCOREINFOStacker._vmcoreinfo_find_aslr": "a7b9029a38bcdccd",
    "volatility3.framework.automagic.linux:LinuxIntelVMCOREINFOStacker._vmcoreinfo_get_dtb": "ec59f4a3c261493d",
    "volatility3.framework.automagic.linux:LinuxIntelVMCOREINFOStacker._vmcoreinfo_is_32bit": "5b493510d061951c",
    "volatility3.framework.automagic.linux:LinuxIntelVMCOREINFOStacker._check_versions": "f23e920e1c6ebfe3",
    "volatility3.framework.symbols.linux:VMCoreInfo._vmcoreinfo_data_to_dict": "7582fc10bb28d7bb",
    "volatility3.framework.symbols.linux:VMCoreInfo.search_vmcoreinfo_elf_note": "df3c243ab15eb781",
    # relied upon by the kallsyms_pcrel patch: the attributes it reads are set in __init__ and
    # _bootstrap (kallsyms_relative_base stays None without the symbol).
    "volatility3.framework.symbols.linux.kallsyms:Kallsyms._bootstrap": "11cbc84b3038df47",
    "volatility3.framework.symbols.linux.kallsyms:Kallsyms.__init__": "6f50d9be27eb8894",
    # relied upon by kallsyms_long_names: the callers step by the length it returns, + 1.
    "volatility3.framework.symbols.linux.kallsyms:Kallsyms.get_core_symbols": "d58911519fa8ffdf",
    "volatility3.framework.symbols.linux.kallsyms:Kallsyms._core_lookup_name_slow": "7140e382286bd332",
    "volatility3.framework.symbols.linux.kallsyms:Kallsyms._get_symbol": "e4fa05e3771e7c95",
}


def _source_hash(target):
    return vp.source_fingerprint(target)


@pytest.fixture
def unpatched():
    """Volatility as shipped; the patches in place before come back afterwards."""
    was = vp.applied()
    vp.revert()
    yield
    vp.revert()
    if was:
        vp.apply(["compat", "speed"])


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    from volatility3.framework import constants

    path = tmp_path / "cache"
    path.mkdir()
    monkeypatch.setattr(constants, "CACHE_PATH", str(path))
    return path


@pytest.fixture
def patched(unpatched, cache_dir):
    assert vp.apply(["compat", "speed"]) == [p.name for p in vp.PATCHES]
    return cache_dir


# --- the pin -------------------------------------------------------------------------------


def test_installed_volatility_is_a_tested_version():
    assert vp.supported(), (f"volatility3 {vp.volatility_version()} is not one of the tested "
                            f"{vp.TESTED_VERSIONS}")


def test_setup_py_allows_the_tested_minor_series_only():
    """setup.py's volatility3 requirement: from the oldest tested version to the next minor."""
    import re

    text = (REPO / "setup.py").read_text()
    (low, high), = re.findall(r'"volatility3>=([0-9.]+),<([0-9.]+)"', text)
    oldest = min(vp.TESTED_VERSIONS)
    assert tuple(map(int, low.split("."))) == oldest
    assert tuple(map(int, high.split("."))) == (oldest[0], oldest[1] + 1)
    assert all(v[:2] == oldest[:2] for v in vp.TESTED_VERSIONS)


def test_every_patch_target_has_a_fingerprint():
    for patch in vp.PATCHES:
        for target in patch.targets:
            assert target in vp.FINGERPRINTS, f"{patch.name}: {target} has no fingerprint here"
    assert set(vp.FINGERPRINTS) == {t for p in vp.PATCHES for t in p.targets}


@pytest.mark.parametrize("target", sorted(FINGERPRINTS))
def test_patch_targets_are_unchanged(unpatched, target):
    got = _source_hash(target)
    assert got == FINGERPRINTS[target], (
        f"{target} changed in this Volatility (source {got}, written against "
        f"{FINGERPRINTS[target]}): re-check volpatches.py against it, then update FINGERPRINTS")


def test_fingerprint_sees_through_our_own_patches(unpatched):
    before = {t: vp.source_fingerprint(t) for t in vp.FINGERPRINTS}
    vp.apply(["compat", "speed"])
    assert {t: vp.source_fingerprint(t) for t in vp.FINGERPRINTS} == before


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if "untested" in r.getMessage()]


def test_untested_version_with_unchanged_sources_patches_and_warns_once(unpatched, monkeypatch, caplog):
    monkeypatch.setattr(vp, "volatility_version", lambda: (2, 28, 9))
    monkeypatch.setitem(vp._state, "warned", False)
    with caplog.at_level(logging.WARNING, logger=vp.__name__):
        assert vp.apply(["compat", "speed"]) == [p.name for p in vp.PATCHES]
        vp.apply(["compat", "speed"])
    (line,) = _warnings(caplog)
    assert "2.28.9" in line and "2.28.2" in line and "\n" not in line
    assert not vp.supported((2, 28, 0)) and vp.supported((2, 28, 2)) and not vp.supported((2, 29, 0))


def test_untested_version_refuses_a_patch_whose_target_changed(unpatched, monkeypatch, caplog):
    """A changed function is left as Volatility has it (never a patch written for other code),
    the rest are applied, and the one warning names what was refused."""
    from volatility3.framework.symbols.linux import kallsyms

    monkeypatch.setattr(vp, "volatility_version", lambda: (2, 29, 0))
    monkeypatch.setitem(vp._state, "warned", False)
    target = "volatility3.framework.symbols.linux.kallsyms:Kallsyms._get_symbol_address_by_index"
    monkeypatch.setitem(vp.FINGERPRINTS, target, "0" * 16)
    original = kallsyms.Kallsyms.__dict__["_get_symbol_address_by_index"]
    with caplog.at_level(logging.WARNING, logger=vp.__name__):
        got = vp.apply(["compat", "speed"])
    assert got == [p.name for p in vp.PATCHES if p.name != "kallsyms_pcrel"]
    assert kallsyms.Kallsyms.__dict__["_get_symbol_address_by_index"] is original
    (line,) = _warnings(caplog)
    assert "2.29.0" in line and "2.28.2" in line and "kallsyms_pcrel" in line


def test_arm64_patches_go_in_together_or_not_at_all(unpatched, monkeypatch):
    monkeypatch.setattr(vp, "volatility_version", lambda: (2, 29, 0))
    monkeypatch.setitem(vp._state, "warned", False)
    monkeypatch.setitem(vp.FINGERPRINTS, "volatility3.framework.automagic.mac:MacIntelStacker.stack", "0" * 16)
    got = vp.apply(["compat", "speed"])
    assert "stacker_guard" not in got and "aarch64_requirement" not in got
    assert "kallsyms_pcrel" in got and "shared_isf_load" in got


def test_environment_turns_patches_off(unpatched, monkeypatch):
    monkeypatch.setenv(vp.ENV, "1")
    assert vp.apply() == []
    monkeypatch.setenv(vp.ENV, "speed")
    assert vp.apply() == ["aarch64_requirement", "stacker_guard", "kallsyms_pcrel",
                          "pscallstack_arm64", "kallsyms_long_names"]
    vp.revert()
    monkeypatch.delenv(vp.ENV)
    assert vp.apply() == [p.name for p in vp.PATCHES]


def test_apply_is_idempotent_and_revert_restores_the_originals(unpatched):
    from volatility3 import schemas
    from volatility3.framework.automagic import linux
    from volatility3.framework.configuration import requirements
    from volatility3.framework.symbols import intermed

    before = [intermed.IntermediateSymbolTable.__init__, schemas.create_json_hash,
              requirements.TranslationLayerRequirement.unsatisfied,
              linux.LinuxIntelStacker.__dict__["stack"], intermed.Version1Format.set_type_class]
    vp.apply(["compat", "speed"])
    once = intermed.IntermediateSymbolTable.__init__
    vp.apply(["compat", "speed"])
    assert intermed.IntermediateSymbolTable.__init__ is once is not before[0]
    assert once.__wrapped__ is before[0]
    vp.revert()
    after = [intermed.IntermediateSymbolTable.__init__, schemas.create_json_hash,
             requirements.TranslationLayerRequirement.unsatisfied,
             linux.LinuxIntelStacker.__dict__["stack"], intermed.Version1Format.set_type_class]
    assert after == before


def test_patches_are_applied_from_the_plugin_folder_only():
    """One call site in the package: plugins/linux/ktstr/stacking.py."""
    callers = []
    for path in (REPO / "volatility3_ktstr").rglob("*.py"):
        if path.name != "volpatches.py" and "volpatches.apply(" in path.read_text():
            callers.append(path.relative_to(REPO).as_posix())
    assert callers == ["volatility3_ktstr/plugins/linux/ktstr/stacking.py"]


# --- kallsyms_pcrel ------------------------------------------------------------------------


def _kallsyms_over(data, base, offsets_at, relative_base=None, addresses_at=None):
    """A Kallsyms API object over a buffer layer mapped at ``base`` (only the state
    _get_symbol_address_by_index reads; Volatility's __init__ needs a whole kernel)."""
    from volatility3.framework import contexts
    from volatility3.framework.layers import physical
    from volatility3.framework.symbols.linux import kallsyms

    class Based(physical.BufferDataLayer):
        address_mask = (1 << 64) - 1

        def read(self, offset, length, pad=False):
            return super().read(offset - base, length, pad)

    ctx = contexts.Context()
    ctx.add_layer(Based(ctx, "mem", "mem", data))
    ks = object.__new__(kallsyms.Kallsyms)
    ks._context, ks._layer_name, ks._endian, ks._long_size = ctx, "mem", "little", 8
    ks._kallsyms_offsets_address = offsets_at
    ks._kallsyms_relative_base = relative_base
    ks._kas_config = kallsyms.KASConfig(0, 0, 0, 0, offsets_at, 0, 0, addresses_address=addresses_at)
    return ks


def test_kallsyms_place_relative_offsets(unpatched):
    """Kernels >= 6.15: address = &kallsyms_offsets[i] + kallsyms_offsets[i] (s32). Without the
    patch Volatility raises a TypeError on them; older layouts keep Volatility's answers."""
    import struct

    base = 0xFFFFFFFF82000000
    table = base + 0x100
    want = [base - 0x1000000, base + 0x40, table + 8 + 0x1000000]
    data = bytearray(0x200)
    for i, addr in enumerate(want):
        struct.pack_into("<i", data, 0x100 + 4 * i, addr - (table + 4 * i))
    pcrel = _kallsyms_over(bytes(data), base, table)
    with pytest.raises(TypeError):
        pcrel._get_symbol_address_by_index(0)
    rel = struct.pack("<ii", -1, 5)
    baserel = _kallsyms_over(rel, base, base, relative_base=0xFFFFFFFF81000000)
    stock = [baserel._get_symbol_address_by_index(i) for i in (0, 1)]
    vp.apply(["compat"])
    assert [pcrel._get_symbol_address_by_index(i) for i in range(3)] == want
    assert [baserel._get_symbol_address_by_index(i) for i in (0, 1)] == stock == [0xFFFFFFFF81000000, 5]
    past_end = _kallsyms_over(bytes(data), base, base + 0x1FE)
    assert past_end._get_symbol_address_by_index(0) is None


def test_kallsyms_names_longer_than_127_tokens(unpatched):
    """A 130-token name (two length bytes, kernels >= 6.1) then a short one: stepping by the
    returned length + 1, as Volatility's callers do, reaches the second name only patched."""
    from volatility3.framework.symbols.linux import kallsyms

    base = 0xFFFFFFFF82000000
    tokens = b"".join(bytes([i]) + b"\0" for i in range(256))    # token i is the byte i
    long_name = b"T" + b"a" * 129
    names = bytes([0x80 | (130 & 0x7F), 130 >> 7]) + long_name + bytes([3]) + b"tbc"
    ks = _kallsyms_over(tokens + names + bytes(600), base, 0)
    ks._kallsyms_token_index = [2 * i for i in range(256)]
    ks._kallsyms_names_io = kallsyms._KallsymsIO(ks._context, "mem", base + len(tokens))
    ks._kallsyms_token_table_io = kallsyms._KallsymsIO(ks._context, "mem", base)

    def walk():
        first, length = ks._expand_symbol(0)
        second, _ = ks._expand_symbol(length + 1)
        return (first.type, first.name), second and (second.type, second.name)

    stock = walk()
    vp.apply(["compat"])
    assert walk() == (("T", "a" * 129), ("t", "bc"))
    assert stock[0] == ("T", "a" * 129) and stock[1] != ("t", "bc")


def test_pscallstack_gets_arm64_s_saved_stack_pointer():
    """The scan starts at thread.sp: x86 tasks as they are, arm64 ones (no thread.sp) with
    thread.cpu_context.sp in its place; everything else of the task is the task's own."""
    import types

    class Thread(types.SimpleNamespace):
        def has_member(self, name):
            return hasattr(self, name)

    x86 = types.SimpleNamespace(pid=1, thread=Thread(sp=0x10), get_address_space_layer=lambda: "x")
    arm = types.SimpleNamespace(pid=2, thread=Thread(cpu_context=types.SimpleNamespace(sp=0x20)),
                                get_address_space_layer=lambda: "a")
    assert vp.with_saved_sp(x86) is x86
    got = vp.with_saved_sp(arm)
    assert (got.thread.sp, got.pid, got.get_address_space_layer()) == (0x20, 2, "a")


# --- a small ISF ---------------------------------------------------------------------------


def small_isf():
    """Anonymous struct/union members (nested), arrays, pointers, a bitfield, an enum."""
    base = lambda n: {"kind": "base", "name": n}  # noqa: E731
    return {
        "metadata": {"format": "6.2.0", "producer": {"name": "test", "version": "1.0.0"}},
        "base_types": {
            "int": {"kind": "int", "size": 4, "signed": True, "endian": "little"},
            "unsigned int": {"kind": "int", "size": 4, "signed": False, "endian": "little"},
            "long unsigned int": {"kind": "int", "size": 8, "signed": False, "endian": "little"},
            "char": {"kind": "char", "size": 1, "signed": True, "endian": "little"},
            "pointer": {"kind": "int", "size": 8, "signed": False, "endian": "little"},
            "void": {"kind": "void", "size": 0, "signed": False, "endian": "little"},
        },
        "user_types": {
            "list_head": {"kind": "struct", "size": 16, "fields": {
                "next": {"offset": 0, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "list_head"}}},
                "prev": {"offset": 8, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "list_head"}}}}},
            "__anon_inner": {"kind": "struct", "size": 8, "fields": {
                "lo": {"offset": 0, "type": base("unsigned int")},
                "hi": {"offset": 4, "type": base("unsigned int")}}},
            "__anon_u": {"kind": "union", "size": 8, "fields": {
                "__anon_inner_m": {"offset": 0, "anonymous": True, "type": {"kind": "struct", "name": "__anon_inner"}},
                "whole": {"offset": 0, "type": base("long unsigned int")}}},
            "task": {"kind": "struct", "size": 64, "fields": {
                "pid": {"offset": 0, "type": base("int")},
                "flags": {"offset": 4, "type": {"kind": "bitfield", "bit_position": 3, "bit_length": 2, "type": base("unsigned int")}},
                "u": {"offset": 8, "anonymous": True, "type": {"kind": "union", "name": "__anon_u"}},
                "tasks": {"offset": 16, "type": {"kind": "struct", "name": "list_head"}},
                "comm": {"offset": 32, "type": {"kind": "array", "count": 16, "subtype": base("char")}},
                "state": {"offset": 48, "type": {"kind": "enum", "name": "state"}},
                "parent": {"offset": 56, "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "task"}}}}},
            "holder": {"kind": "struct", "size": 72, "fields": {
                "t": {"offset": 8, "type": {"kind": "struct", "name": "task"}},
                "ghost": {"offset": 0, "type": {"kind": "struct", "name": "missing_struct"}}}},
        },
        "enums": {"state": {"size": 4, "base": "int", "constants": {"RUNNING": 0, "SLEEPING": 1}}},
        "symbols": {
            "init_task": {"address": 0xFFFFFFFF82000000, "type": {"kind": "struct", "name": "task"}},
            "jiffies": {"address": 0xFFFFFFFF81000000, "type": base("long unsigned int")},
            "text": {"address": 0xFFFFFFFF80000000},
        },
    }


def write_isf(path, isf):
    path.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(path, "wb", preset=0) as f:
        f.write(json.dumps(isf).encode())
    return path


# --- compact form -------------------------------------------------------------------------


def test_canonical_is_equal_same_order_and_shares_descriptors():
    c = compact.canonical(small_isf())
    assert c == small_isf() and json.dumps(c) == json.dumps(small_isf())
    inner = c["user_types"]["__anon_inner"]["fields"]
    lh = c["user_types"]["list_head"]["fields"]
    assert lh["next"]["type"] is lh["prev"]["type"]
    assert inner["lo"]["type"] is inner["hi"]["type"]
    assert marshal.loads(marshal.dumps(c)) == small_isf()
    # marshal keeps the sharing: one object per descriptor after loading too.
    back = marshal.loads(marshal.dumps(c))["user_types"]["list_head"]["fields"]
    assert back["next"]["type"] is back["prev"]["type"]


def test_canonical_keeps_true_apart_from_one():
    isf = small_isf()
    f = isf["user_types"]["task"]["fields"]
    f["a"] = {"offset": 0, "anonymous": True, "type": {"kind": "base", "name": "int"}}
    f["b"] = {"offset": 0, "anonymous": 1, "type": {"kind": "base", "name": "int"}}
    want = json.dumps(isf)
    assert json.dumps(compact.canonical(isf)) == want


def test_store_hit_miss_and_corruption(tmp_path):
    isf_path = write_isf(tmp_path / "sym" / "k.json.xz", small_isf())
    store = compact.CompactStore(str(tmp_path / "c"))
    ident = compact.file_identity(str(isf_path))
    assert store.get(str(isf_path), ident) is None
    assert store.put(str(isf_path), ident, small_isf())
    assert store.get(str(isf_path), ident) == small_isf()
    # Another identity (the file was rewritten): a miss.
    assert store.get(str(isf_path), (ident[0] + 1,) + ident[1:]) is None
    os.utime(isf_path, ns=(ident[1] + 10**9, ident[1] + 10**9))
    assert store.get(str(isf_path), compact.file_identity(str(isf_path))) is None
    # A damaged entry is a miss, not an error.
    entry = store._entry(str(isf_path))
    with open(entry, "r+b") as f:
        f.seek(-20, 2)
        f.write(b"\xff" * 20)
    assert store.get(str(isf_path), ident) is None
    with open(entry, "wb") as f:
        f.write(b"garbage")
    assert store.get(str(isf_path), ident) is None


def test_identity_sees_a_same_size_rewrite_of_the_tail(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"a" * (300 << 10))
    st = os.stat(p)
    one = compact.file_identity(str(p))
    with open(p, "r+b") as f:
        f.seek(-5, 2)
        f.write(b"bbbbb")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert compact.file_identity(str(p)) != one


# --- shared ISF load, validation hash ---------------------------------------------------------


def _table(ctx, url, name, cls=None):
    from volatility3.framework.symbols import intermed

    cls = cls or intermed.IntermediateSymbolTable
    table = cls(ctx, f"tables.{name}", name, isf_url=url)
    ctx.symbol_space.append(table)
    return table


def test_one_decode_per_file_shared_by_tables(patched, tmp_path, monkeypatch):
    from volatility3.framework import contexts

    url = write_isf(tmp_path / "sym" / "k.json.xz", small_isf()).as_uri()
    decodes = []
    real = vp._decode
    monkeypatch.setattr(vp, "_decode", lambda u: decodes.append(u) or real(u))
    ctx = contexts.Context()
    a = _table(ctx, url, "a")
    b = _table(ctx, url, "b")
    assert decodes == [url]
    assert a._delegate._json_object is b._delegate._json_object
    assert a.config["isf_url"] == url and b.config["symbol_mask"] == 0
    # A new process (fresh memo) reads the compact copy, not the JSON.
    vp._loaded.clear()
    c = _table(ctx, url, "c")
    assert decodes == [url] and c._delegate._json_object == small_isf()


def test_patched_tables_answer_like_stock_ones(unpatched, cache_dir, tmp_path):
    from volatility3.framework import contexts

    url = write_isf(tmp_path / "sym" / "k.json.xz", small_isf()).as_uri()

    def answers():
        ctx = contexts.Context()
        _table(ctx, url, "t")
        out = {}
        for name in ("task", "holder", "list_head"):
            tmpl = ctx.symbol_space.get_type("t!" + name)
            out[name] = (tmpl.size, sorted((m, off, sub.vol.type_name) for m, (off, sub) in tmpl.vol.members.items()))
        for sym in ("init_task", "jiffies", "text"):
            out[sym] = ctx.symbol_space.get_symbol("t!" + sym).address
        out["enum"] = dict(ctx.symbol_space.get_enumeration("t!state").choices)
        return out

    stock = answers()
    vp.apply(["speed"])
    assert answers() == stock
    vp._loaded.clear()
    assert answers() == stock  # from the compact copy


def test_validation_hash_is_volatility_s_and_remembered(patched, tmp_path, monkeypatch):
    from volatility3 import schemas

    url = write_isf(tmp_path / "sym" / "k.json.xz", small_isf()).as_uri()
    original = schemas.create_json_hash.__wrapped__
    schema = json.loads((pathlib.Path(schemas.__file__).parent / "schema-6.2.0.json").read_text())
    want = original(small_isf(), schema)
    isf = vp.load_isf(url)
    assert schemas.create_json_hash(isf, schema) == want
    assert schemas.validate(isf)  # Volatility's validate, through the patched hash

    # The next process (fresh memo, compact copy) looks the hash up: no re-encoding of the ISF.
    vp._loaded.clear()
    isf2 = vp.load_isf(url)
    assert isf2 is not isf
    encoded = []

    class Spy:
        def __getattr__(self, name):
            return getattr(json, name)

        def dumps(self, obj, **kw):
            encoded.append(obj)
            return json.dumps(obj, **kw)

    monkeypatch.setattr(schemas, "json", Spy())
    assert schemas.create_json_hash(isf2, schema) == want
    assert not any(isinstance(o, tuple) and o and o[0] is isf2 for o in encoded)
    # A dict that did not come from a file goes through Volatility's own function.
    other = dict(small_isf(), symbols={})
    assert schemas.create_json_hash(other, schema) == original(other, schema)
    assert any(isinstance(o, tuple) and o and o[0] is other for o in encoded)


def test_a_broken_isf_fails_as_it_does_without_the_patch(unpatched, cache_dir, tmp_path):
    from volatility3.framework import contexts

    bad = tmp_path / "sym" / "bad.json.xz"
    bad.parent.mkdir(parents=True)
    with lzma.open(bad, "wb") as f:
        f.write(b"{not json")
    missing = (tmp_path / "sym" / "nope.json.xz").as_uri()
    stock = []
    for url in (bad.as_uri(), missing):
        with pytest.raises(Exception) as e:
            _table(contexts.Context(), url, "x")
        stock.append(type(e.value))
    vp.apply(["speed"])
    for url, kind in zip((bad.as_uri(), missing), stock):
        with pytest.raises(kind):
            _table(contexts.Context(), url, "x")


def test_set_type_class_same_answers(unpatched):
    from volatility3.framework import contexts, objects
    from volatility3.framework.symbols import intermed

    def attempt():
        table = intermed.Version8Format(contexts.Context(), "t", "t", small_isf())
        out = []
        for name in ("task", "int", "pointer", "nope"):
            try:
                table.set_type_class(name, objects.StructType)
                out.append((name, table.get_type_class(name)))
            except ValueError as e:
                out.append((name, str(e)))
        return out

    stock = attempt()
    vp.apply(["speed"])
    assert attempt() == stock
    assert stock[-1][1] == "Symbol type not in t SymbolTable: nope"


# --- IsfLayout: raw ISF vs templates ----------------------------------------------------------


def _layout_answers(layout, paths):
    out = []
    for struct, path in paths:
        try:
            out.append((struct, path, layout.size(struct) if path is None else layout.offset(struct, path)))
        except Exception as e:  # the same failure, whichever way the layout is read
            out.append((struct, path, f"{type(e).__name__}: {e}"))
    return out


def test_isf_layout_raw_equals_templates_small(unpatched):
    from volatility3.framework import contexts
    from volatility3.framework.symbols import intermed

    from volatility3_ktstr.kernel import IsfLayout

    ctx = contexts.Context()
    ctx.symbol_space.append(intermed.Version8Format(ctx, "t", "t", small_isf()))
    paths = [(s, None) for s in ("task", "holder", "list_head", "__anon_u", "int", "nope")] + [
        ("task", p) for p in ("pid", "flags", "lo", "hi", "whole", "u", "tasks", "tasks.next",
                              "tasks.prev", "comm", "comm.x", "state", "parent", "parent.pid", "nope")
    ] + [("holder", p) for p in ("t.tasks.prev", "t.hi", "ghost", "ghost.x", "t.u")]
    raw = IsfLayout(ctx, "t")
    assert raw._types is not None
    assert _layout_answers(raw, paths) == _layout_answers(IsfLayout(ctx, "t", raw=False), paths)


@pytest.mark.skipif(not BUNDLED_ISF, reason="no bundled kernel ISF under symbols/linux")
def test_isf_layout_raw_equals_templates_kernel(unpatched):
    """Every member of a spread of the kernel's types (and those the walkers read)."""
    from volatility3.framework import contexts
    from volatility3.framework.symbols import intermed

    from volatility3_ktstr.kernel import IsfLayout, isf_json

    ctx = contexts.Context()
    table = intermed.IntermediateSymbolTable(ctx, "k", "k", isf_url=BUNDLED_ISF[0].as_uri(), validate=False)
    ctx.symbol_space.append(table)
    types = isf_json(ctx, "k")["user_types"]
    names = sorted(types)[::97] + ["bpf_map", "bpf_prog", "task_struct", "sched_ext_entity",
                                   "bpf_local_storage_map", "bpf_arena", "btf", "xarray", "idr"]
    raw, tmpl = IsfLayout(ctx, "k"), IsfLayout(ctx, "k", raw=False)
    paths = []
    for name in names:
        if name not in types:
            continue
        paths.append((name, None))
        for member, (off, desc) in raw._members(name).items():
            paths.append((name, member))
            if isinstance(desc, dict) and desc.get("kind") == "struct" and desc.get("name") in types:
                for sub in list(raw._members(desc["name"]))[:3]:
                    paths.append((name, f"{member}.{sub}"))
    assert len(paths) > 1000
    assert _layout_answers(raw, paths) == _layout_answers(tmpl, paths)


def test_kernel_symbol_addresses_as_volatility_gives_them(unpatched):
    from volatility3.framework import contexts
    from volatility3.framework.layers import physical
    from volatility3.framework.symbols import intermed

    from volatility3_ktstr.kernel import KernelContext

    ctx = contexts.Context()
    ctx.add_layer(physical.BufferDataLayer(ctx, "phys", "phys", b"\0" * 4096))
    table = intermed.Version8Format(ctx, "t", "t", small_isf())
    table.config["symbol_mask"] = (1 << 48) - 1
    ctx.symbol_space.append(table)
    name = contexts.Module.create(ctx, module_name="kernel", layer_name="phys", offset=0x1000,
                                  symbol_table_name="t").name
    kctx = KernelContext(ctx, name)
    for sym in ("init_task", "jiffies", "text"):
        # the same address, canonical (Volatility's is cut to the symbol mask)
        assert kctx.symbol(sym) == kctx.canonical(ctx.modules[name].get_absolute_symbol_address(sym))
    assert kctx.symbol("nope") is None


def test_store_prunes_entries_of_vanished_files_and_the_oldest(tmp_path, monkeypatch):
    monkeypatch.setattr(compact, "MAX_ENTRIES", 3)
    store = compact.CompactStore(str(tmp_path / "c"))
    paths = []
    for n in range(5):
        p = write_isf(tmp_path / "sym" / f"k{n}.json.xz", small_isf())
        paths.append(p)
        assert store.put(str(p), compact.file_identity(str(p)), small_isf())
        os.utime(store._entry(str(p)), ns=(n * 10**9, n * 10**9))  # entry ages follow n
    kept = sorted(os.listdir(tmp_path / "c"))
    assert len(kept) == 3
    assert store.get(str(paths[4]), compact.file_identity(str(paths[4]))) == small_isf()
    assert store.get(str(paths[0]), compact.file_identity(str(paths[0]))) is None
    paths[4].unlink()
    store.prune()
    assert sorted(os.listdir(tmp_path / "c")) == sorted(
        os.path.basename(store._entry(str(p))) for p in paths[2:4])


def test_memo_keeps_a_few_and_never_confuses_ids(patched, tmp_path):
    from volatility3 import schemas

    urls = [write_isf(tmp_path / "sym" / f"k{n}.json.xz", dict(small_isf(), symbols={f"s{n}": {"address": n}})).as_uri()
            for n in range(vp.MAX_LOADED + 2)]
    isfs = [vp.load_isf(u) for u in urls]
    assert len(vp._loaded) == vp.MAX_LOADED
    assert id(isfs[0]) not in vp._origin and id(isfs[-1]) in vp._origin
    schema = json.loads((pathlib.Path(schemas.__file__).parent / "schema-6.2.0.json").read_text())
    for isf in isfs:
        assert schemas.create_json_hash(isf, schema) == schemas.create_json_hash.__wrapped__(isf, schema)
