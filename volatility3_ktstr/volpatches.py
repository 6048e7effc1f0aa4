"""Every change volatility3-ktstr makes to Volatility's own behaviour, in one module.

Volatility 3 has extension points for plugins, layers and stackers, and ktstr uses them for
everything it can. What they cannot do is below, one :class:`Patch` each:

compat (needed for arm64 to work at all)
  ``aarch64_requirement``  Linux plugins require a layer whose ``architecture`` is Intel32 or
                           Intel64; a requirement that accepts Intel64 also accepts our
                           LinuxAArch64 layer (the Linux object model is architecture-neutral).
  ``stacker_guard``        the stock Linux/Mac/Windows stackers skip only Intel layers and would
                           stack an Intel layer on top of our AArch64 one; they skip it too.
  ``kallsyms_pcrel``       kernels since 6.15 keep each ``kallsyms_offsets`` entry relative to its
                           own address (kernel/kallsyms.c: ``offset_to_ptr``) and have no
                           ``kallsyms_relative_base``; Volatility 2.28 reads only the older
                           layouts and raises, so ``linux.kallsyms``, ``linux.pscallstack`` and
                           every symbol lookup through kallsyms failed on them.
  ``pscallstack_arm64``    ``linux.pscallstack`` scans a task's kernel stack from ``thread.sp``,
                           which is x86's; arm64 saves it in ``thread.cpu_context.sp`` and the
                           plugin raised there. The task is handed over with that value as
                           ``thread.sp``; everything else is Volatility's own scan.
  ``kallsyms_long_names``  a ``kallsyms_names`` entry longer than 127 tokens has a two-byte
                           length (kernels since 6.1, Rust symbols); Volatility 2.28 steps over
                           it as if the length had one byte, and every later name of the walk
                           came out garbled (133,000 of 199,000 on the 7.2 kernels here).
speed (outputs unchanged; see bench/e2e_bench.py)
  ``shared_isf_load``      an ISF file is decoded once per process, from a compact cached copy
                           (``isf.compact``) when its identity (size, mtime, inode, edges) is
                           unchanged, with the collector paused. On x86 the stacker and the
                           symbol finder each loaded the kernel ISF: 2 x 1 s and 2 x 190 MB.
  ``validation_hash``      Volatility recognises an already-validated ISF by the SHA-1 of its
                           whole re-encoded content (1 s per load for a kernel ISF); the hash is
                           remembered per file identity and looked up instead. Everything else
                           about validation (the jsonschema check on a miss, the warnings) is
                           Volatility's own code.
  ``type_class_check``     ``set_type_class`` tests membership in a freshly merged dict of every
                           type name (13k) per call, ~45 calls per kernel table; it tests the two
                           dicts instead (same answer).

:func:`apply` installs them, once per process. It is called from one place,
``plugins/linux/ktstr/stacking.py`` (Volatility imports plugin-folder modules before automagic
runs); in-process users of the framework that do not import our plugin folder call it
themselves. The patches were written and tested against the Volatility versions in
:data:`TESTED_VERSIONS` (setup.py allows that minor series). On another version each patch is
applied only if every function it replaces still has the source it was written against
(:data:`FINGERPRINTS`); one warning names the tested versions and any patch refused, so an
untested Volatility runs unpatched where it differs (Volatility's own behaviour: slower, arm64
and 6.15+ kallsyms unsupported), never half-patched.
``VOLATILITY3_KTSTR_NO_PATCHES=1`` applies none, ``=speed`` only the compat ones.
tests/test_volpatches.py checks that each target still has the source it was written against.
"""

import codecs
import collections
import copy
import json
import logging
import os
import types
import urllib.parse
import urllib.request
from typing import Callable, Dict, List, Optional, Tuple

vollog = logging.getLogger(__name__)

# Volatility versions the patches were written and tested against (the whole suite ran on each).
TESTED_VERSIONS = ((2, 28, 2),)
# sha256[:16] of the source of every function a patch replaces, as in the tested versions
# (tests/test_volpatches.py checks them against the installed Volatility).
FINGERPRINTS = {
    "volatility3.framework.configuration.requirements:TranslationLayerRequirement.unsatisfied": "ec5398b66cd1fe84",
    "volatility3.framework.automagic.linux:LinuxIntelStacker.stack": "b63db9fdcf7b7ea3",
    "volatility3.framework.automagic.linux:LinuxIntelVMCOREINFOStacker.stack": "ca39e777ee1ba950",
    "volatility3.framework.automagic.mac:MacIntelStacker.stack": "993c8345f0e655c3",
    "volatility3.framework.automagic.windows:WindowsIntelStacker.stack": "8158958c7a1abce9",
    "volatility3.framework.symbols.linux.kallsyms:Kallsyms._get_symbol_address_by_index": "e8603ca60c3f2656",
    "volatility3.framework.symbols.linux.kallsyms:Kallsyms._expand_symbol": "ab64f3b0324da5d2",
    "volatility3.plugins.linux.pscallstack:PsCallStack.get_task_callstack": "50a63a6c52e29e83",
    "volatility3.framework.symbols.intermed:IntermediateSymbolTable.__init__": "b27151ee5a168acf",
    "volatility3.schemas:create_json_hash": "e944d32913672eb2",
    "volatility3.framework.symbols.intermed:Version1Format.set_type_class": "49cab881d6979258",
}
# Patches that only make sense together: one refused refuses the others (arm64 then does not
# open, rather than our layer accepted with the stock stackers piling an Intel layer on it).
TOGETHER = (("aarch64_requirement", "stacker_guard"),)
ENV = "VOLATILITY3_KTSTR_NO_PATCHES"
CACHE_SUBDIR = "ktstr-isf"


class Patch:
    """One replaced Volatility attribute: ``owner.attr`` (a class or a module)."""

    def __init__(self, name: str, kind: str, targets: List[str],
                 install: Callable[[], List[Tuple[object, str, object]]]):
        self.name = name
        self.kind = kind  # "compat" or "speed"
        self.targets = targets  # dotted paths of what is replaced (tests check their source)
        self._install = install
        self.saved: Optional[List[Tuple[object, str, object]]] = None

    def apply(self) -> None:
        if self.saved is None:
            self.saved = self._install()

    def revert(self) -> None:
        for owner, attr, original in reversed(self.saved or []):
            setattr(owner, attr, original)
        self.saved = None


_state = {"warned": False}


def volatility_version() -> Tuple[int, int, int]:
    from volatility3.framework.constants import _version as v

    return (v.VERSION_MAJOR, v.VERSION_MINOR, v.VERSION_PATCH)


def supported(version: Optional[Tuple[int, int, int]] = None) -> bool:
    """Whether ``version`` (default: the installed one) is one the patches were tested on."""
    return tuple(version or volatility_version()) in TESTED_VERSIONS


def source_fingerprint(target: str) -> str:
    """sha256[:16] of the source of ``module:Qual.name`` (a function, method or classmethod)."""
    import hashlib
    import importlib
    import inspect

    mod, qual = target.split(":")
    obj = importlib.import_module(mod)
    parts = qual.split(".")
    for attr in parts[:-1]:
        obj = getattr(obj, attr)
    value = obj.__dict__[parts[-1]] if isinstance(obj, type) else getattr(obj, parts[-1])
    value = getattr(value, "__wrapped__", None) or value        # ours, if already patched
    value = getattr(value, "fget", None) or getattr(value, "__func__", value)
    value = getattr(value, "__wrapped__", None) or value
    return hashlib.sha256(inspect.getsource(value).encode()).hexdigest()[:16]


def _fingerprints_hold(patch: "Patch") -> bool:
    for target in patch.targets:
        try:
            if source_fingerprint(target) != FINGERPRINTS.get(target):
                return False
        except (ImportError, AttributeError, KeyError, OSError, TypeError, ValueError):
            return False
    return True


def _version_text(version) -> str:
    return ".".join(map(str, version))


def apply(kinds: Optional[List[str]] = None) -> List[str]:
    """Install the patches (idempotent); returns the names of those in place.

    ``kinds`` restricts to "compat" and/or "speed" (default: both, less what the
    ``VOLATILITY3_KTSTR_NO_PATCHES`` environment variable turns off). On a Volatility outside
    :data:`TESTED_VERSIONS` a patch goes in only where its targets' sources are unchanged, and
    one warning says so."""
    if kinds is None:
        off = os.environ.get(ENV, "").strip().lower()
        kinds = [] if off in ("1", "all", "yes", "true") else ["compat"] if off == "speed" else ["compat", "speed"]
    tested = supported()
    wanted = [p for p in PATCHES if p.kind in kinds and p.saved is None]
    refused = set() if tested else {p.name for p in wanted if not _fingerprints_hold(p)}
    for group in TOGETHER:
        if refused & set(group):
            refused |= set(group)
    for patch in wanted:
        if patch.name not in refused:
            patch.apply()
    refused = [p.name for p in wanted if p.name in refused]
    if not tested and not _state["warned"]:
        _state["warned"] = True
        vollog.warning(
            "volatility3-ktstr: Volatility %s is untested (tested: %s); %s",
            _version_text(volatility_version()),
            ", ".join(_version_text(v) for v in TESTED_VERSIONS),
            f"not patching what changed there ({', '.join(refused)}): Volatility's own behaviour "
            f"there" if refused else "its patched functions are unchanged, patches applied")
    return applied()


def revert() -> None:
    """Undo every patch (tests)."""
    for patch in reversed(PATCHES):
        patch.revert()
    _loaded.clear()
    _origin.clear()


def applied() -> List[str]:
    return [p.name for p in PATCHES if p.saved is not None]


# --- compat: AArch64 layers for Intel64 requirements --------------------------------------------


def _install_aarch64_requirement():
    from volatility3.framework import interfaces
    from volatility3.framework.configuration import requirements

    from volatility3_ktstr.layers.arm64 import LinuxAArch64

    req_cls = requirements.TranslationLayerRequirement
    original = req_cls.__dict__["unsatisfied"]

    def unsatisfied(self, context, config_path):
        archs = self.architectures
        if archs and "Intel64" in archs and "AArch64" not in archs:
            value = context.config.get(interfaces.configuration.path_join(config_path, self.name), None)
            # By class, not by metadata "os": layers rebuilt from configuration by Volatility's
            # ConstructionMagic lose the metadata the stacker passed in.
            if isinstance(value, str) and value in context.layers and isinstance(context.layers[value], LinuxAArch64):
                widened = copy.copy(self)
                widened.architectures = list(archs) + ["AArch64"]
                return original(widened, context, config_path)
        return original(self, context, config_path)

    unsatisfied.__doc__ = original.__doc__
    unsatisfied.__wrapped__ = original
    req_cls.unsatisfied = unsatisfied
    return [(req_cls, "unsatisfied", original)]


# --- compat: stock stackers leave our AArch64 layer alone ---------------------------------------


def _stock_stackers():
    from volatility3.framework.automagic import linux, mac, windows

    return [linux.LinuxIntelStacker, linux.LinuxIntelVMCOREINFOStacker, mac.MacIntelStacker,
            windows.WindowsIntelStacker]


def _install_stacker_guard():
    from volatility3_ktstr.layers.arm64 import LinuxAArch64

    saved = []
    for stacker in _stock_stackers():
        original = stacker.__dict__["stack"]
        func = original.__func__

        def guarded(klass, context, layer_name, progress_callback=None, _func=func):
            if isinstance(context.layers[layer_name], LinuxAArch64):
                return None
            return _func(klass, context, layer_name, progress_callback)

        guarded.__wrapped__ = func
        stacker.stack = classmethod(guarded)
        saved.append((stacker, "stack", original))
    return saved


# --- compat: kallsyms with place-relative offsets (kernels since 6.15) --------------------------


def _install_kallsyms_pcrel():
    from volatility3.framework.symbols.linux import kallsyms

    cls = kallsyms.Kallsyms
    original = cls.__dict__["_get_symbol_address_by_index"]

    def _get_symbol_address_by_index(self, index):
        # No kallsyms_relative_base (and no absolute table): each s32 entry of kallsyms_offsets
        # is relative to its own address, the kernel's offset_to_ptr(kallsyms_offsets + idx).
        if (self._kallsyms_offsets_address and self._kallsyms_relative_base is None
                and not self._kas_config.addresses_address):
            entry = self._kallsyms_offsets_address + index * 4
            offset = self._read_int(entry, 4, signed=True)
            if offset is None:
                return None
            return (entry + offset) & self._context.layers[self._layer_name].address_mask
        return original(self, index)

    _get_symbol_address_by_index.__doc__ = original.__doc__
    _get_symbol_address_by_index.__wrapped__ = original
    cls._get_symbol_address_by_index = _get_symbol_address_by_index
    return [(cls, "_get_symbol_address_by_index", original)]


def _install_kallsyms_long_names():
    from volatility3.framework.symbols.linux import kallsyms

    cls = kallsyms.Kallsyms
    original = cls.__dict__["_expand_symbol"]

    def _expand_symbol(self, offset, filters=None):
        symbol, length = original(self, offset, filters)
        # Its callers step to the next entry by length + 1 (one length byte); an entry longer
        # than 0x7F tokens has two (scripts/kallsyms.c), so report one more.
        if length is not None and length > 0x7F:
            length += 1
        return symbol, length

    _expand_symbol.__doc__ = original.__doc__
    _expand_symbol.__wrapped__ = original
    cls._expand_symbol = _expand_symbol
    return [(cls, "_expand_symbol", original)]


# --- compat: linux.pscallstack on arm64 -----------------------------------------------------------


class _TaskWithSavedSp:
    """A task_struct whose ``thread.sp`` is the kernel stack pointer arm64 saved at its last
    switch (``thread.cpu_context.sp``); every other attribute is the task's own."""

    def __init__(self, task, sp: int):
        self._task = task
        self.thread = types.SimpleNamespace(sp=sp)

    def __getattr__(self, name):
        return getattr(self._task, name)


def with_saved_sp(task):
    """``task`` where its thread has ``sp`` (x86), else a stand-in whose ``thread.sp`` is arm64's
    ``thread.cpu_context.sp``."""
    thread = task.thread
    if not thread.has_member("sp") and thread.has_member("cpu_context"):
        return _TaskWithSavedSp(task, int(thread.cpu_context.sp))
    return task


def _install_pscallstack_arm64():
    from volatility3.plugins.linux import pscallstack

    cls = pscallstack.PsCallStack
    original = cls.__dict__["get_task_callstack"]
    func = original.__func__

    def get_task_callstack(klass, context, module_name, task, kas=None, include_unresolved=False):
        return func(klass, context, module_name, with_saved_sp(task), kas, include_unresolved)

    get_task_callstack.__doc__ = func.__doc__
    get_task_callstack.__wrapped__ = func
    cls.get_task_callstack = classmethod(get_task_callstack)
    return [(cls, "get_task_callstack", original)]


# --- speed: one ISF decode per file and process ---------------------------------------------------

# (url, identity) -> decoded ISF, the most recent few; id(ISF dict) -> (the dict, path,
# identity) for the validation hash (the dict is kept so that its id cannot be reused).
MAX_LOADED = 4
_loaded: "collections.OrderedDict[Tuple, dict]" = collections.OrderedDict()
_origin: Dict[int, Tuple[dict, str, Tuple]] = {}


def _remember(key, isf, origin=None) -> None:
    _loaded[key] = isf
    if origin is not None and isinstance(isf, dict):
        _origin[id(isf)] = (isf,) + origin
    while len(_loaded) > MAX_LOADED:
        _old_key, old = _loaded.popitem(last=False)
        entry = _origin.get(id(old))
        if entry is not None and entry[0] is old and not any(v is old for v in _loaded.values()):
            del _origin[id(old)]


def _cache_dir() -> str:
    from volatility3.framework import constants

    return os.path.join(constants.CACHE_PATH, CACHE_SUBDIR)


def _local_path(isf_url: str) -> Optional[str]:
    parsed = urllib.parse.urlparse(isf_url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    path = urllib.request.url2pathname(parsed.path)
    return path if os.path.isfile(path) else None


def _decode(isf_url: str) -> dict:
    """Volatility's own decode (ResourceAccessor handles .xz/.gz/.bz2/zip/remote URLs)."""
    from volatility3.framework.layers import resources

    from volatility3_ktstr.isf import compact

    with resources.ResourceAccessor().open(isf_url) as fp:
        reader = codecs.getreader("utf-8")
        with compact.collector_paused():
            return json.load(reader(fp))


def load_isf(isf_url: str) -> dict:
    """The decoded ISF at ``isf_url``: from this process's memo, the compact cache, or decoded
    (then cached). Raises what Volatility's own load raises for a missing or broken file."""
    from volatility3_ktstr.isf import compact

    path = _local_path(isf_url)
    if path is None:
        key = (isf_url, None)
        if key not in _loaded:
            _remember(key, _decode(isf_url))
        return _loaded[key]
    identity = compact.file_identity(path)
    key = (isf_url, identity)
    hit = _loaded.get(key)
    if hit is not None:
        return hit
    store = compact.CompactStore(_cache_dir())
    isf = store.get(path, identity)
    if isf is None:
        isf = _decode(isf_url)
        if isinstance(isf, dict):
            store.put(path, identity, isf)
    _remember(key, isf, (path, identity))
    return isf


def _install_shared_isf_load():
    from volatility3.framework import constants, exceptions
    from volatility3.framework.symbols import intermed
    from volatility3 import schemas
    from volatility3.framework import class_subclasses

    cls = intermed.IntermediateSymbolTable
    original = cls.__dict__["__init__"]

    # Volatility 2.28's IntermediateSymbolTable.__init__ with the file decode replaced by
    # load_isf(); every other step is the same, in the same order.
    def __init__(self, context, config_path, name, isf_url, native_types=None, table_mapping=None,
                 validate=True, class_types=None, symbol_mask=0):
        self._versions = dict((x.version, x) for x in class_subclasses(intermed.ISFormatTable))
        json_object = load_isf(isf_url)

        if validate and not schemas.validate(json_object):
            raise exceptions.SymbolSpaceError(f"File does not pass version validation: {isf_url}")

        metadata = json_object.get("metadata", None)
        if not metadata:
            raise exceptions.SymbolSpaceError(f"Invalid ISF file attempted to be parsed: {isf_url}")

        self._delegate = self._closest_version(metadata.get("format", "0.0.0"), self._versions)(
            context, config_path, name, json_object, native_types, table_mapping)
        if self._delegate.version < constants.ISF_MINIMUM_SUPPORTED:
            raise RuntimeError("ISF version {} is no longer supported: {}".format(
                metadata.get("format", "0.0.0"), isf_url))
        elif self._delegate.version < constants.ISF_MINIMUM_DEPRECATED:
            vollog.warning(f"ISF version {metadata.get('format', '0.0.0')} has been deprecated: {isf_url}")

        super(intermed.IntermediateSymbolTable, self).__init__(
            context, config_path, name, native_types or self._delegate.natives,
            table_mapping=table_mapping, class_types=class_types)

        self.config["isf_url"] = isf_url
        self.config["symbol_mask"] = symbol_mask

    __init__.__doc__ = original.__doc__
    __init__.__wrapped__ = original
    cls.__init__ = __init__
    return [(cls, "__init__", original)]


# --- speed: the validation hash, remembered per file ----------------------------------------------


def _install_validation_hash():
    from volatility3 import schemas

    from volatility3_ktstr.isf import compact

    original = schemas.__dict__["create_json_hash"]
    schema_keys: Dict[str, str] = {}

    def create_json_hash(input, schema=None):
        origin = _origin.get(id(input)) if isinstance(input, dict) else None
        if origin is None or origin[0] is not input or schema is None:
            return original(input, schema)
        text = json.dumps(schema, sort_keys=True)
        skey = schema_keys.get(text)
        if skey is None:
            skey = schema_keys[text] = original({}, schema)  # a fingerprint of the schema alone
        _isf, path, identity = origin
        store = compact.HashStore(_cache_dir())
        value = store.get(path, identity, skey)
        if value is None:
            value = original(input, schema)
            if value is not None:
                store.put(path, identity, skey, value)
        return value

    create_json_hash.__doc__ = original.__doc__
    create_json_hash.__wrapped__ = original
    schemas.create_json_hash = create_json_hash
    return [(schemas, "create_json_hash", original)]


# --- speed: set_type_class membership -------------------------------------------------------------


def _install_type_class_check():
    from volatility3.framework.symbols import intermed

    cls = intermed.Version1Format
    original = cls.__dict__["set_type_class"]

    def set_type_class(self, name, clazz):
        # Same test as ``name not in self.types`` without building the merged dict of names.
        if name not in self._json_object.get("user_types", {}) and name not in self.natives.types:
            raise ValueError(f"Symbol type not in {self.name} SymbolTable: {name}")
        self._overrides[name] = clazz

    set_type_class.__doc__ = original.__doc__
    set_type_class.__wrapped__ = original
    cls.set_type_class = set_type_class
    return [(cls, "set_type_class", original)]


_AM = "volatility3.framework.automagic."
PATCHES: List[Patch] = [
    Patch("aarch64_requirement", "compat",
          ["volatility3.framework.configuration.requirements:TranslationLayerRequirement.unsatisfied"],
          _install_aarch64_requirement),
    Patch("stacker_guard", "compat",
          [_AM + "linux:LinuxIntelStacker.stack", _AM + "linux:LinuxIntelVMCOREINFOStacker.stack",
           _AM + "mac:MacIntelStacker.stack", _AM + "windows:WindowsIntelStacker.stack"],
          _install_stacker_guard),
    Patch("kallsyms_pcrel", "compat",
          ["volatility3.framework.symbols.linux.kallsyms:Kallsyms._get_symbol_address_by_index"],
          _install_kallsyms_pcrel),
    Patch("pscallstack_arm64", "compat",
          ["volatility3.plugins.linux.pscallstack:PsCallStack.get_task_callstack"],
          _install_pscallstack_arm64),
    Patch("kallsyms_long_names", "compat",
          ["volatility3.framework.symbols.linux.kallsyms:Kallsyms._expand_symbol"],
          _install_kallsyms_long_names),
    Patch("shared_isf_load", "speed",
          ["volatility3.framework.symbols.intermed:IntermediateSymbolTable.__init__"],
          _install_shared_isf_load),
    Patch("validation_hash", "speed", ["volatility3.schemas:create_json_hash"],
          _install_validation_hash),
    Patch("type_class_check", "speed",
          ["volatility3.framework.symbols.intermed:Version1Format.set_type_class"],
          _install_type_class_check),
]
