"""DEVELOPING.md's Rules as checks, by reading the package's source (AST), not by running it.

1. No fixed-width read of a layout member. A value derived from the layout (``layout.offset``,
   ``layout.first``, ``layout.field(...)``, ``Record.addr_of``, and every name or ``self.x``
   assigned from one) is a *member offset*; what may not meet one is a width the walker chose:
   - a slice ``raw[off:off + W]`` / ``raw[off:][:W]`` whose width ``W`` is an int literal, a
     name bound to one, or a helper's parameter (not a size from the layout, the data or the
     reader: ``fl.size``, ``m.key_size``, ``reader.pointer_size``);
   - ``reader.read/try_read(addr, <int literal>)`` and ``reader.u8/u16/u32/u64/s32/s64(addr)``
     with ``addr`` at a member offset;
   - ``struct.unpack_from`` / ``Struct.unpack_from`` at a member offset;
   - a hand-written width table: a dict literal of at least two string keys whose values are
     all widths (1, 2, 4, 8) or (width, signedness) pairs.
   Pointer reads (``reader.ptr``) are the reader's pointer width, not a guess, and stay allowed.
2. No hand-rolled walk outside ``kds/``:
   - a ``while`` loop (or a ``for`` over a work list it appends to) that tests membership in a
     local set (``seen = set()``), adds to it, and reads guest memory in its body;
   - a pointer chase: a loop in which a name is reassigned from a memory read whose address
     depends on that same name (``cur = reader.ptr(cur + off)``, ``tp = Record(.., tp, ..)
     .int("next")``, through intermediate names).
   Memory reads are calls of ``read``, ``try_read``, ``ptr``, ``u8``...``s64``, ``cstring``,
   ``Record(...)`` and the kds generators.

The whole package is scanned, sub-packages included (a new ``sched_ext/`` too); ``kds/`` is
exempt from rule 2 (it is where walks live) and ``core/`` from rule 1 (it decodes Fields).
"""

import ast
import functools
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "volatility3_ktstr"

LAYOUT_CALLS = {"offset", "first", "field", "first_field", "addr_of"}
FIXED_READS = {"u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64"}
MEMORY_READS = FIXED_READS | {"read", "try_read", "ptr", "cstring", "Record", "follow",
                              "list_nodes", "list_entries", "hlist_nodes", "hlist_nulls_nodes",
                              "parent_chain", "rb_nodes", "rhashtable_nodes", "xa_entries",
                              "idr_entries", "tree_nodes", "children"}
WIDTHS = {1, 2, 4, 8}


def _callee(node):
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def _is_layout_call(node):
    # layout.offset("s", "m") / layout.field(...) / layout.first(...): two or more arguments
    # (a struct and a member); r.addr_of("m") has one.
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    name = node.func.attr
    return name in LAYOUT_CALLS and (len(node.args) >= 2 or name == "addr_of" and node.args)


def _key(node):
    """A trackable name: ``x`` or ``self.x``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return "self." + node.attr
    return None


def _targets(node):
    if isinstance(node, (ast.Tuple, ast.List)):
        for e in node.elts:
            yield from _targets(e)
    else:
        k = _key(node)
        if k:
            yield k


class Offsets:
    """Which names hold layout-derived values in one scope (plus the class's ``self.x``)."""

    def __init__(self, tainted=()):
        self.tainted = set(tainted)

    def derived(self, node):
        for n in ast.walk(node):
            if _is_layout_call(n) or _key(n) in self.tainted:
                return True
        return False

    def learn(self, body_nodes):
        # to a fixed point: names assigned from layout-derived expressions
        assigns = [n for root in body_nodes for n in ast.walk(root)
                   if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and n.value is not None]
        if not self.tainted and not any(_is_layout_call(n) for a in assigns for n in ast.walk(a.value)):
            return
        changed = True
        while changed:
            changed = False
            for a in assigns:
                if not self.derived(a.value):
                    continue
                targets = a.targets if isinstance(a, ast.Assign) else [a.target]
                for t in targets:
                    for k in _targets(t):
                        if k not in self.tainted:
                            self.tainted.add(k)
                            changed = True


def _fixed_width(node, f):
    """A width the walker chose: an int literal (``8``, ``8 * 2``), or a name bound to one in
    ``f`` or passed in by ``f``'s caller (a helper like ``_field(raw, .., width)``). Widths from
    the layout (``fl.size``), the data (``m.key_size``, ``n * stride``) or the reader
    (``reader.pointer_size``) are not."""
    if isinstance(node, ast.Constant):
        return type(node.value) is int
    if isinstance(node, ast.BinOp):
        return _fixed_width(node.left, f) and _fixed_width(node.right, f)
    if isinstance(node, ast.IfExp):
        return _fixed_width(node.body, f) or _fixed_width(node.orelse, f)
    if isinstance(node, ast.Name):
        args = f.args
        if node.id in {a.arg for a in args.args + args.kwonlyargs + args.posonlyargs}:
            return True
        return any(isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                   and type(n.value.value) is int
                   and node.id in {k for t in n.targets for k in _targets(t)} for n in ast.walk(f))
    return False


def _added_width(upper, lower, f):
    """The ``W`` of ``lower + W`` (None when ``upper`` is not that)."""
    if isinstance(upper, ast.BinOp) and isinstance(upper.op, ast.Add):
        if ast.dump(upper.left) == ast.dump(lower):
            return upper.right
        return upper.right if _fixed_width(upper.right, f) else None
    return None


def _width_table(node):
    if not isinstance(node, ast.Dict) or len(node.keys) < 2:
        return False
    if not all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys):
        return False

    def width(v):
        if isinstance(v, ast.Tuple) and v.elts:
            v = v.elts[0]
        return isinstance(v, ast.Constant) and type(v.value) is int and v.value in WIDTHS

    return all(width(v) for v in node.values)


def _functions(tree):
    """(qualname-ish name, function node, class node or None) of every function."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for f in node.body:
                if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f.name, f, node
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node, None


def fixed_width_reads(tree):
    """[(rule, function, line, text)] of rule 1 in a module's AST."""
    out = []
    for n in ast.walk(tree):
        if _width_table(n):
            out.append(("width-table", "<module>", n.lineno, "hand-written width table"))
    class_taint = {}
    for _, f, cls in _functions(tree):
        if cls is not None and id(cls) not in class_taint:
            o = Offsets()
            o.learn([m for m in cls.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))])
            class_taint[id(cls)] = {k for k in o.tainted if k.startswith("self.")}
    for name, f, cls in _functions(tree):
        offs = Offsets(class_taint.get(id(cls), ()) if cls is not None else ())
        offs.learn([f])
        for n in ast.walk(f):
            if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Slice):
                s = n.slice
                if s.lower is not None and s.upper is not None and offs.derived(s.lower):
                    w = _added_width(s.upper, s.lower, f)
                    if w is not None and _fixed_width(w, f):
                        out.append(("fixed-width", name, n.lineno, "slice of a fixed width at a member offset"))
                elif s.lower is None and s.upper is not None and _fixed_width(s.upper, f) \
                        and isinstance(n.value, ast.Subscript) and isinstance(n.value.slice, ast.Slice) \
                        and n.value.slice.lower is not None and n.value.slice.upper is None \
                        and offs.derived(n.value.slice.lower):
                    out.append(("fixed-width", name, n.lineno, "[off:][:width] at a member offset"))
            if not isinstance(n, ast.Call):
                continue
            callee = _callee(n)
            if callee in ("read", "try_read") and len(n.args) == 2 and offs.derived(n.args[0]) \
                    and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, int):
                out.append(("fixed-width", name, n.lineno, f"{callee}(member, {n.args[1].value})"))
            elif callee in FIXED_READS and n.args and offs.derived(n.args[0]):
                out.append(("fixed-width", name, n.lineno, f"{callee}() of a member"))
            elif callee == "unpack_from" and any(offs.derived(a) for a in n.args[1:]) \
                    or callee == "unpack_from" and any(kw.arg == "offset" and offs.derived(kw.value)
                                                      for kw in n.keywords):
                out.append(("fixed-width", name, n.lineno, "unpack_from at a member offset"))
    return out


def _reads_memory(node, nodes=None):
    return any(isinstance(n, ast.Call) and _callee(n) in MEMORY_READS
               for n in (nodes if nodes is not None else ast.walk(node)))


def _local_sets(f):
    sets = set()
    for n in ast.walk(f):
        if isinstance(n, ast.Assign):
            pairs = []
            for t in n.targets:
                if isinstance(t, ast.Tuple) and isinstance(n.value, ast.Tuple) \
                        and len(t.elts) == len(n.value.elts):
                    pairs += zip(t.elts, n.value.elts)
                else:
                    pairs.append((t, n.value))
            for t, v in pairs:
                if isinstance(t, ast.Name) and (isinstance(v, (ast.Set, ast.SetComp)) or (
                        isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "set")):
                    sets.add(t.id)
    return sets


def _is_worklist_for(loop):
    """``for x in work:`` whose body appends/extends ``work`` (a queue walked by hand)."""
    if not isinstance(loop, ast.For) or not isinstance(loop.iter, ast.Name):
        return False
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr in ("append", "extend") and isinstance(n.func.value, ast.Name)
               and n.func.value.id == loop.iter.id for n in ast.walk(loop))


def _seen_walk(loop, sets, nodes):
    tested = {c.comparators[0].id for c in nodes if isinstance(c, ast.Compare)
              and any(isinstance(op, (ast.In, ast.NotIn)) for op in c.ops)
              and isinstance(c.comparators[0], ast.Name)} & sets
    added = {c.func.value.id for c in nodes if isinstance(c, ast.Call)
             and isinstance(c.func, ast.Attribute) and c.func.attr == "add"
             and isinstance(c.func.value, ast.Name)} & sets
    return bool(tested & added)


def _loop_carried(loop, name, nodes):
    """Is ``name`` read in the loop before the loop assigns it (its value comes from the last
    iteration), rather than set afresh each time?"""
    stores = [n for n in nodes if isinstance(n, ast.Assign)
              and name in {k for t in n.targets for k in _targets(t)}]
    if not stores:
        return False
    first = min(stores, key=lambda n: (n.lineno, n.col_offset))
    if isinstance(loop, ast.While) and any(_key(n) == name for n in ast.walk(loop.test)):
        return True
    in_value = {id(n) for n in ast.walk(first.value)}
    for n in nodes:
        if _key(n) == name and isinstance(getattr(n, "ctx", None), ast.Load):
            if n.lineno < first.lineno or id(n) in in_value:
                return True
    return False


def _pointer_chase(loop, nodes):
    """A name reassigned in the loop from a memory read whose address depends on it."""
    deps, via_read = {}, {}
    for n in nodes:
        if isinstance(n, ast.Assign):
            names = {m.id for m in ast.walk(n.value) if isinstance(m, ast.Name)}
            for t in n.targets:
                for k in _targets(t):
                    deps.setdefault(k, set()).update(names)
                    via_read[k] = via_read.get(k, False) or _reads_memory(n.value)
    for start in deps:
        if not _loop_carried(loop, start, nodes):
            continue
        # is there a path start -> ... -> start with a memory read on it?
        stack, seen_here = [(start, via_read.get(start, False))], set()
        while stack:
            name, read = stack.pop()
            for d in deps.get(name, ()):
                r = read or via_read.get(d, False)
                if d == start and r:
                    return True
                if (d, r) not in seen_here and d in deps:
                    seen_here.add((d, r))
                    stack.append((d, r))
    return False


def hand_walks(tree):
    """[(rule, function, line, text)] of rule 2 in a module's AST."""
    out = []
    for name, f, _ in _functions(tree):
        sets = None
        for loop in ast.walk(f):
            if not isinstance(loop, (ast.While, ast.For)):
                continue
            nodes = list(ast.walk(loop))
            if not _reads_memory(loop, nodes):
                continue
            sets = _local_sets(f) if sets is None else sets
            if (isinstance(loop, ast.While) or _is_worklist_for(loop)) and _seen_walk(loop, sets, nodes):
                out.append(("seen-walk", name, loop.lineno, "hand-rolled walk with a seen set"))
            elif _pointer_chase(loop, nodes):
                out.append(("pointer-chase", name, loop.lineno, "pointer chased by hand"))
    # a loop nested in a reported loop is the same walk
    return sorted({(r, n, ln, t) for r, n, ln, t in out}, key=lambda x: x[2])


def package_files():
    return sorted(p for p in PKG.rglob("*.py") if "plugins" not in p.relative_to(PKG).parts)


def violations(files=None):
    out = []
    for path in files or package_files():
        rel = path.relative_to(PKG).as_posix()
        tree = ast.parse(path.read_text(), filename=str(path))
        found = []
        if rel.split("/")[0] != "core":
            found += fixed_width_reads(tree)
        if rel.split("/")[0] != "kds":
            found += hand_walks(tree)
        out += [(rel,) + v for v in found]
    return out


def _report(vs):
    return "\n".join(f"{rel}:{line}: {rule} in {func}: {text}" for rel, rule, func, line, text in vs)


@functools.lru_cache(maxsize=1)
def package_violations():
    return tuple(violations())


def test_house_rules_hold():
    vs = list(package_violations())
    assert not vs, "house rules broken (docs/DEVELOPING.md, Rules):\n" + _report(vs)


def test_scan_covers_the_whole_package(tmp_path, monkeypatch):
    rels = {p.relative_to(PKG).as_posix() for p in package_files()}
    for pkg in ("bpf", "walkers", "views", "kds", "core"):
        assert any(r.startswith(pkg + "/") for r in rels), pkg
    # a package that does not exist yet (sched_ext/) is scanned like the others; kds/ may walk
    (tmp_path / "sched_ext").mkdir()
    (tmp_path / "sched_ext" / "dsq.py").write_text(OFFENDERS["seen"])
    (tmp_path / "kds").mkdir()
    (tmp_path / "kds" / "lists.py").write_text(OFFENDERS["seen"])
    monkeypatch.setattr(sys.modules[__name__], "PKG", tmp_path)
    assert [(v[0], v[1]) for v in violations()] == [("sched_ext/dsq.py", "seen-walk")]


OFFENDERS = {
    "width": '''
def _field(raw, layout, struct, member, width):
    off = layout.offset(struct, member)
    return int.from_bytes(raw[off:off + width], "little")
''',
    "slice8": '''
def f(raw, lay):
    f_progs = lay.field("netns_bpf", "progs")
    return int.from_bytes(raw[f_progs.offset + 8:][:8], "little")
''',
    "read8": '''
def f(reader, layout, addr):
    return reader.read(addr + layout.offset("s", "m"), 8)
''',
    "u32": '''
class V:
    def __init__(self, layout):
        self.off = layout.offset("bpf_map", "id")
    def get(self, reader, kva):
        return reader.u32(kva + self.off)
''',
    "unpack": '''
import struct
def f(raw, layout):
    off = layout.offset("s", "m")
    return struct.unpack_from("<Q", raw, off)[0]
''',
    "table": '''
_W = {"enable_state": (4, True), "jiffies": (8, False)}
''',
    "seen": '''
def mounts(reader, sb, nxt):
    seen = set()
    cur = reader.ptr(sb)
    while cur:
        if cur in seen:
            return
        seen.add(cur)
        yield cur
        cur = reader.ptr(cur + nxt)
''',
    "chase": '''
def path(reader, dentry, d_parent):
    cur = dentry
    for _ in range(64):
        parent = reader.ptr(cur + d_parent)
        if parent == cur:
            return
        cur = parent
''',
    "record_chase": '''
def filters(reader, lay, tp):
    while tp:
        r = Record(reader, lay, "tcf_proto", tp, ("next",))
        tp = r.int("next")
''',
}

LEGIT = {
    "field_decode": '''
def f(raw, layout):
    fl = layout.field("bpf_prog", "type")
    return fl.decode(raw), raw[fl.offset:fl.offset + fl.size]
''',
    "dedupe": '''
def uniq(rows):
    seen, out = set(), []
    for r in rows:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out
''',
    "anchors": '''
def carve(image, anchors):
    seen = set()
    for phys in anchors:
        if phys in seen:
            continue
        seen.add(phys)
        image.read(phys, 16)
''',
    "ptr": '''
def f(reader, layout, addr):
    return reader.ptr(addr + layout.offset("s", "m"))
''',
    "data_width": '''
def f(data, layout, m, reader):
    key_off = layout.offset("htab_elem", "key")
    return data[key_off:key_off + m.key_size], data[key_off:key_off + reader.pointer_size]
''',
    "bulk": '''
def f(reader, layout, addr, n):
    return reader.read(addr + layout.offset("s", "m"), n * layout.size("u64"))
''',
}


@pytest.mark.parametrize("name", sorted(OFFENDERS))
def test_detector_catches(name):
    tree = ast.parse(OFFENDERS[name])
    assert fixed_width_reads(tree) + hand_walks(tree), name


@pytest.mark.parametrize("name", sorted(LEGIT))
def test_detector_passes_legit_code(name):
    tree = ast.parse(LEGIT[name])
    assert not fixed_width_reads(tree) + hand_walks(tree), name
