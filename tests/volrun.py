"""Run `vol` on real dumps from tests, with a kernel ISF built from the dump's BTF.

- :func:`kernel_isf_dir` builds the kernel ISF of a dump once (btf.raw + System.map + the banner
  from truth.json) into ~/.cache/ktstr-test-isf/<sha of inputs and generator code>/linux/ and
  returns that symbol dir; later sessions reuse the file. ISF output is deterministic, so
  Volatility's per-content-hash schema validation (about a minute for a full kernel ISF) is
  paid once per generator change, not once per run.
- :func:`run_vol` runs the current venv's `vol` as a subprocess with `-q -r json` and returns
  the rows flattened (tree children follow their parent), plus rc/stdout/stderr. It names our
  plugin folder with `-p` only when `vol` does not already find it (:func:`plugin_dir_args`).
- :func:`open_in_process` constructs linux.ktstr plugins in this process the way `vol` does
  (fuzzlib.Session, in-process real-dump tests); a dump it cannot open is an
  :class:`OpenError` whose message says why in one line.

vol runs use their own XDG_CACHE_HOME under the same cache dir: Volatility always searches
$XDG_CACHE_HOME/volatility3/symbols, and a stray ISF for the same banner there (say from a manual
`ktstr-isf` without -o) would otherwise compete with the one under test.
"""

import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import dumps

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("KTSTR_TEST_CACHE", "~/.cache/ktstr-test-isf")).expanduser()
VOL_XDG = CACHE / "xdg"
# Code that decides the ISF's content: a change here must not reuse an old file.
_GENERATOR_CODE = sorted((REPO / "volatility3_ktstr" / "btf").glob("*.py")) + sorted(
    (REPO / "volatility3_ktstr" / "isf").glob("*.py")) + [REPO / "volatility3_ktstr" / "__init__.py"]


def venv_bin(name) -> str:
    """A console script of the running interpreter's venv (not whatever is first on PATH)."""
    return str(Path(sys.executable).parent / name)


def _sha_files(paths, extra=b""):
    h = hashlib.sha256(extra)
    for p in paths:
        h.update(str(Path(p).name).encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def code_digest() -> str:
    return _sha_files(_GENERATOR_CODE)[:16]


def kernel_inputs(name):
    """(btf path, System.map path, banner text, arch) of a dump's kernel."""
    truth = dumps.load_truth(name)
    kdir = dumps.kernel_dir(name)
    return kdir / "btf.raw", kdir / "System.map", truth["kernel"]["banner"], truth["run"]["arch"]


@functools.lru_cache(maxsize=None)
def kernel_isf_dir(name) -> Path:
    """Symbol dir (for `vol -s`) holding the kernel ISF of dump ``name``; built once."""
    btf_path, sysmap, banner, arch = kernel_inputs(name)
    key = _sha_files([btf_path, sysmap], f"{banner}\0{arch}\0{code_digest()}".encode())[:24]
    sym_dir = CACHE / key
    out = sym_dir / "linux" / f"{btf_path.parent.name}.json.xz"
    if not out.exists():
        from volatility3_ktstr.isf import cli

        tmp = out.with_name(out.name + f".{os.getpid()}.json.xz")
        rc = cli.main([str(btf_path), "--system-map", str(sysmap), "--banner", banner,
                       "--arch", arch, "-o", str(tmp)])
        if rc != 0:
            raise RuntimeError(f"ktstr-isf failed ({rc}) for {name}")
        os.replace(tmp, out)
    return sym_dir


@dataclasses.dataclass
class VolResult:
    rc: int
    rows: list
    stdout: str
    stderr: str
    argv: list

    def check(self):
        """Assert success with the command and stderr in the message."""
        assert self.rc == 0, f"{' '.join(self.argv)} exited {self.rc}:\n{self.stderr[-4000:]}"
        return self


def flatten(rows, depth=0):
    """JSON renderer rows: a tree (``__children``) -> a flat list; each row gets ``__depth``."""
    out = []
    for row in rows:
        children = row.get("__children") or []
        flat = {k: v for k, v in row.items() if k != "__children"}
        flat["__depth"] = depth
        out.append(flat)
        out.extend(flatten(children, depth + 1))
    return out


VALIDATIONS = "valid_isf.hashcache"
SEED_FILES = (VALIDATIONS, "ktstr-autoisf.json", "ktstr-stack-hints.json")
SHARED_DIRS = ("ktstr-isf",)      # volpatches' compact ISF cache, keyed per ISF file: shared


def known_validations(shared: Path) -> set:
    """Every ISF validation any test cache folder (and ``shared``) recorded. They are content
    hashes, right whatever the symbol dirs, so a new folder (e.g. for a fresh tmp ISF of the same
    kernel) need not validate that ISF again (a minute or two of CPU per kernel ISF)."""
    hashes = set()
    for f in [shared, *sorted((CACHE / "vcache").glob(f"*/{VALIDATIONS}"))]:
        hashes |= _hashes_in(f)
    return hashes


def _hashes_in(path: Path) -> set:
    try:
        return {h for h in json.loads(path.read_text()) if isinstance(h, str)}
    except (OSError, ValueError, TypeError):
        return set()     # absent, or being rewritten by a concurrent run: its hashes are a bonus


def identifier_cache_dir(symbol_dirs, xdg=None) -> Path:
    """Volatility's cache folder (``--cache-path``: identifier cache, autoisf memo) for one set
    of symbol dirs. Volatility drops from its identifier cache every ISF that is not on the
    current run's symbol path, so runs with other ``-s`` dirs sharing one cache undo each
    other's entries, and a concurrent run then misses its kernel ISF ("unsatisfied
    symbol_table_name"). One cache per set of dirs (and XDG_CACHE_HOME) keeps runs apart. A new
    one starts with what XDG_CACHE_HOME's cache learnt (:data:`SEED_FILES`: the ISF validations,
    by content hash, since validating a kernel ISF again costs about a minute of CPU; the
    banners the automatic ISF builder found and the stack hints, per dump file) and shares its
    compact ISF cache (:data:`SHARED_DIRS`)."""
    xdg = xdg or os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    key = "\0".join([os.path.abspath(xdg)] + [os.path.abspath(str(d)) for d in symbol_dirs])
    path = CACHE / "vcache" / hashlib.sha256(key.encode()).hexdigest()[:16]
    path.mkdir(parents=True, exist_ok=True)
    for seed in SEED_FILES:
        mine, shared = path / seed, Path(xdg) / "volatility3" / seed
        if seed == VALIDATIONS:
            # Every time, not only for a new folder: an ISF regenerated by a changed generator
            # is validated once by whichever run meets it first, and the other folders learn
            # its hash here instead of validating it again (minutes of CPU each).
            known = known_validations(shared)
            if known <= _hashes_in(mine):
                continue
            data = json.dumps(sorted(known)).encode()
        elif mine.exists():
            continue
        elif shared.is_file():
            data = shared.read_bytes()
        else:
            continue
        tmp = mine.with_name(f"{seed}.{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, mine)
    for sub in SHARED_DIRS:
        mine, shared = path / sub, Path(xdg) / "volatility3" / sub
        if not mine.exists() and not mine.is_symlink():
            shared.mkdir(parents=True, exist_ok=True)
            try:
                mine.symlink_to(shared, target_is_directory=True)
            except FileExistsError:
                pass
    return path


def vol_env(extra=None):
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(VOL_XDG)
    env.pop("VOLATILITY3_KTSTR_DISABLE", None)
    if extra:
        env.update(extra)
    return env


PLUGINS_DIR = REPO / "volatility3_ktstr" / "plugins"
KTSTR_PLUGIN_DIR = PLUGINS_DIR / "linux" / "ktstr"


def plugin_classes():
    """(module, class) of every plugin class in the tree's linux/ktstr folder, found by reading
    the source (importing the modules here would register them with Volatility twice); the
    modules without one register stackers."""
    import ast

    out = []
    for path in sorted(KTSTR_PLUGIN_DIR.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and any(
                    ast.unparse(b).endswith("PluginInterface") for b in node.bases):
                out.append((path.stem, node.name))
    return out


def ktstr_plugins():
    """``linux.ktstr.<module>`` of every plugin, as a user types it."""
    return [f"linux.ktstr.{module}" for module, _cls in plugin_classes()]


@functools.lru_cache(maxsize=None)
def plugin_dir_args():
    """`-p <repo plugins>` unless `vol` already finds our plugin folder (the installed .pth
    hook; an editable install made before the hook existed lacks it)."""
    code = "import volatility3.plugins as p; print(p.__path__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=vol_env()).stdout
    return () if str(PLUGINS_DIR) in out else ("-p", str(PLUGINS_DIR))


def run_vol(dump, plugin, *plugin_args, renderer="json", symbol_dirs=(), extra_global=(),
            timeout=900, env=None, name=None, tries=3) -> VolResult:
    """Run ``vol -q -r <renderer> -s <dirs> -f <dump> [-p plugins] [extra_global] plugin
    plugin_args``.

    ``dump``: a path, or a dump name ("x86_64/scx_sdt"), in which case its kernel ISF dir is
    added to the symbol dirs automatically. ``name``: the dump name whose kernel ISF to use
    when ``dump`` is a path (e.g. an ELF core of that dump). Each set of symbol dirs gets its
    own identifier cache (:func:`identifier_cache_dir`); a run that still misses the kernel ISF
    ("symbol_table_name" unsatisfied) is tried again, up to ``tries`` runs.
    """
    dirs = [str(d) for d in symbol_dirs]
    if name is None and not os.path.exists(str(dump)):
        name = str(dump)
        dump = dumps.dump_path(name)
    if name is not None:
        dirs.insert(0, str(kernel_isf_dir(name)))
    full_env = vol_env(env)
    argv = [venv_bin("vol"), "-q", "-r", renderer, "--cache-path",
            str(identifier_cache_dir(dirs, full_env["XDG_CACHE_HOME"]))]
    if dirs:
        argv += ["-s", ";".join(dirs)]
    ours = () if (env or {}).get("VOLATILITY3_KTSTR_DISABLE") else plugin_dir_args()
    argv += ["-f", str(dump), *ours, *extra_global, plugin, *map(str, plugin_args)]
    CACHE.mkdir(parents=True, exist_ok=True)
    for _ in range(max(1, tries)):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=full_env, cwd=str(CACHE if CACHE.exists() else REPO))
        if proc.returncode == 0 or "symbol_table_name" not in proc.stdout + proc.stderr:
            break
    rows = []
    if renderer == "json" and proc.stdout.strip():
        try:
            rows = flatten(json.loads(proc.stdout))
        except ValueError:
            rows = []
    return VolResult(proc.returncode, rows, proc.stdout, proc.stderr, argv)


def make_elf_core(raw_path, out_path, ranges, phys_base=0, machine=62):
    """Wrap a raw physical image (byte 0 = ``phys_base``) into an ELF64 core with one PT_LOAD
    per RAM range at ``p_paddr``, the way QEMU's dump-guest-memory writes guest RAM."""
    import struct

    out_path = Path(out_path)
    size = os.path.getsize(raw_path)
    ranges = [(s, min(e, phys_base + size)) for s, e in ranges if s < phys_base + size]
    ehsize, phsize = 64, 56
    data_off = (ehsize + phsize * len(ranges) + 0xFFF) & ~0xFFF
    phdrs = b""
    off = data_off
    for start, end in ranges:
        n = end - start
        # PT_LOAD, flags RWX, p_vaddr 0 like QEMU for physical-only dumps, filesz == memsz.
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, off, 0, start, n, n, 0x1000)
        off += n
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, machine, 1, 0, ehsize, 0, 0, ehsize, phsize,
                               len(ranges), 0, 0, 0)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
    with open(raw_path, "rb") as src, open(tmp, "wb") as dst:
        dst.write(ehdr + phdrs)
        dst.write(b"\0" * (data_off - dst.tell()))
        for start, end in ranges:
            src.seek(start - phys_base)
            left = end - start
            while left:
                chunk = src.read(min(left, 8 << 20))
                if not chunk:
                    raise ValueError(f"{raw_path} ends before physical {end:#x}")
                dst.write(chunk)
                left -= len(chunk)
    os.replace(tmp, out_path)
    return out_path


def elf_core_of(name) -> Path:
    """An ELF core of dump ``name`` (cached next to the ISFs; rebuilt when the raw is newer)."""
    raw = dumps.dump_path(name)
    out = CACHE / "cores" / (name.replace("/", "_") + ".elf")
    if out.exists() and out.stat().st_mtime >= raw.stat().st_mtime:
        return out
    truth = dumps.load_truth(name)
    machine = 183 if truth["run"]["arch"] in ("arm64", "aarch64") else 62
    return make_elf_core(raw, out, dumps.ram_ranges(truth), truth["memory"].get(
        "dump_raw_phys_base", truth["run"]["ram_phys_base"]), machine)


def check_documented(out, plugin):
    """What README ("Errors and exit status") promises of a `vol` run (a CompletedProcess):
    exit 0 with JSON rows; 2 with one line `<plugin>: error: ...`; 1 with Volatility's
    "Unable to validate the plugin requirements"; never a traceback."""
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.returncode in (0, 1, 2), (out.returncode, out.stderr[-2000:])
    if out.returncode == 2:
        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip() and not ln.startswith(("WARNING", "Volatility 3 Framework"))]
        assert len(lines) == 1 and lines[0].startswith(f"{plugin}: error: "), out.stderr
    if out.returncode == 1:
        assert "Unable to validate the plugin requirements" in out.stderr, out.stderr[-2000:]
    if out.returncode == 0:
        json.loads(out.stdout)


# --- in-process ---------------------------------------------------------------------------------


class OpenError(Exception):
    """Volatility could not open a dump in this process; the message is one line saying why."""


def open_in_process(dump, modules, symbol_dirs=(), tries=2):
    """Construct the linux.ktstr plugins ``modules`` (module names: "maps", "sdtalloc", ...) on
    one Volatility context over the file ``dump``, the way `vol -f DUMP -s DIRS PLUGIN` builds
    its plugin: our plugin folder on volatility3.plugins' path, ``symbol_dirs`` in front of
    Volatility's own symbol paths (its user cache included, where the autoisf stacker writes),
    every automagic, and the stackers the CLI picks for a Linux plugin. Later plugins share the
    first one's kernel configuration (one stacking, one ISF load). Volatility's cache folder is
    the one `run_vol` gives these symbol dirs (:func:`identifier_cache_dir`, i.e. `vol
    --cache-path`); a run that misses the kernel ISF anyway is tried again (``tries``).

    Returns (context, {module: plugin}). Raises :class:`OpenError` (one line) when the kernel
    requirement cannot be met, where `vol` would print "Unable to validate the plugin
    requirements".
    """
    import volatility3.plugins
    import volatility3.symbols
    from volatility3 import framework
    from volatility3.framework import constants, exceptions, interfaces

    if str(PLUGINS_DIR) not in volatility3.plugins.__path__:
        volatility3.plugins.__path__.append(str(PLUGINS_DIR))
    dirs = [os.path.abspath(str(d)) for d in symbol_dirs]
    volatility3.symbols.__path__ = dirs + constants.SYMBOL_BASEPATHS
    constants.CACHE_PATH = str(identifier_cache_dir(dirs))
    framework.import_files(volatility3.plugins, True)
    classes = {c.__module__.rsplit(".", 1)[-1]: c
               for c in framework.class_subclasses(interfaces.plugins.PluginInterface)
               if ".ktstr." in c.__module__}
    missing = [m for m in modules if m not in classes]
    if missing:
        raise OpenError(f"no linux.ktstr plugin module named {', '.join(missing)}")
    path = Path(dump)
    if not path.is_file():
        raise OpenError(f"{dump}: no such file")
    for attempt in range(max(1, tries)):
        try:
            return _construct(path, [classes[m] for m in modules], modules)
        except exceptions.UnsatisfiedException as e:
            if attempt + 1 < max(1, tries) and any(p.endswith("symbol_table_name") for p in e.unsatisfied):
                continue
            raise OpenError(_why_unopened(path, e, dirs)) from None


def _construct(path, classes, modules):
    from volatility3.framework import automagic, contexts, plugins
    from volatility3.framework.automagic import stacker
    from volatility3.framework.configuration import requirements

    ctx = contexts.Context()
    ctx.config["automagic.LayerStacker.single_location"] = \
        requirements.URIRequirement.location_from_file(str(path.resolve()))
    ctx.config["automagic.LayerStacker.stackers"] = stacker.choose_os_stackers(classes[0])
    built = {}
    first = None
    for module, cls in zip(modules, classes):
        if first is not None:   # same kernel config: no second stacking / ISF load
            ctx.config.splice(f"plugins.{cls.__name__}", first)
        ams = automagic.choose_automagic(automagic.available(ctx), cls)
        built[module] = plugins.construct_plugin(ctx, ams, cls, "plugins", None, None)
        if first is None:
            first = ctx.config.branch(f"plugins.{cls.__name__}")
    return ctx, built


def _why_unopened(path, excp, dirs):
    """One line: what Volatility could not satisfy, and the likely reason."""
    names = sorted({p.rsplit(".", 1)[-1] for p in excp.unsatisfied})
    msg = f"{path}: Volatility cannot open this dump (unsatisfied: {', '.join(names)})"
    if not {"symbol_table_name", "layer_name"} & set(names):
        return msg
    banners = dump_banners(path)
    if not banners:
        return msg + ": no Linux banner in the file (not a Linux memory image Volatility reads)"
    from volatility3.framework.automagic import symbol_cache

    try:
        known = symbol_cache.load_cache_manager().get_identifier_dictionary(operating_system="linux")
    except ValueError:
        known = {}
    banner = banners[0].rstrip(b"\0\n").decode("utf-8", "replace")
    if not any(b in known for b in banners):
        where = "; ".join(dirs) if dirs else "no -s"
        return (msg + f": no ISF matches its banner {banner[:100]!r} (symbol dirs: {where}; "
                "the automatic ISF builder could not make one, see its warning)")
    return msg + f": an ISF matches its banner {banner[:60]!r} but no kernel page tables were found"


def dump_banners(path, limit=4):
    """The first ``limit`` Linux banners (exact bytes) in a raw/ELF/LiME dump file."""
    from volatility3_ktstr.isf import fromdump
    from volatility3_ktstr.layers.autoisf import iter_banners

    try:
        image = fromdump.open_image(str(path))
    except (OSError, ValueError):
        return []
    try:
        out = []
        for _phys, text in iter_banners(image):
            out.append(text)
            if len(out) >= limit:
                break
        return out
    finally:
        image.close()
