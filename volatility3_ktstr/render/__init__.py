"""(BTF type, bytes) -> typed Python value, bpftool "formatted" style, plus a one-line text form.

    from volatility3_ktstr.render import render, render_text, hex_list
    value = render(btf, type_id, data)                 # JSON-able
    render_text(value)                                 # '{pid=12 comm="x" mask=0-3}'
    hex_list(b"\\x00*")                                  # ['0x00', '0x2a']

Value shapes (``render``):

- integers -> int (bitfields sign-extended for signed types); ``_Bool`` -> bool; floats ->
  float (``long double`` -> "0x..." of its bytes); a single ``char`` -> int.
- enums -> the enumerator name (a ``str``; :class:`EnumName`), or the int when none matches.
- pointers -> "0x..." (:class:`Hex`, a ``str``). With ``chase``, a non-NULL pointer whose
  pointee ``chase`` can read becomes ``{"ptr": "0x...", "target": <rendered pointee>}``; a
  pointer back to an address already on the chase path is ``{"ptr": "0x...", "cycle": True}``.
  Pointers to functions, ``void`` and forward declarations are never chased.
- ``char`` arrays (bpftool's rule: ``char``-named or CHAR-encoded 1-byte ints, typedefs not
  peeled) -> str up to the first NUL, non-printable bytes as ``\\xHH``. Other arrays -> list;
  longer than ``max_elems``: the first ``max_elems`` then a marker string ``"...(+N)"``.
- structs/unions -> dict in member order; members of anonymous struct/union members are
  flattened into the parent (first one wins on a repeated name).
- cpumask-like structs (``cpumask``, ``bpf_cpumask``, ``scx_bitmap``, or any struct whose only
  member is ``unsigned long bits[]``) -> CPU list str like "0-3,5" (:class:`CpuList`).
- DATASEC -> dict var name -> rendered var (each var sliced at its secinfo offset/size).
- data shorter than the type: struct/DATASEC dicts hold the members that fit plus
  ``"__truncated__": {"needed": N, "had": M}``; any other type gives
  ``{"__truncated__": {...}, "partial": <what fits>}``. Types with no value (FWD, FUNC,
  unknown ids) give ``{"__unrendered__": reason, "hex": [...]}``.

``chase(addr, size, type_id) -> bytes | None`` reads ``size`` bytes of the pointee (type
``type_id`` of the same BTF) at ``addr``; None (or an exception) leaves the pointer as hex.
Chasing nests at most ``max_depth`` pointers deep.

Plans are compiled once per (BTF object, type id, max_elems) and cached (weakly, per Btf).
"""

import json

from .plan import CpuList, EnumName, Hex, compiler_for, cpu_list, hex_list, render_at

__all__ = ["render", "render_text", "hex_list", "cpu_list", "Hex", "EnumName", "CpuList"]


class _Chaser:
    """Pointer-chasing state of one render call (path for cycles, depth)."""

    __slots__ = ("chase", "max_depth", "max_elems", "path")

    def __init__(self, chase, max_depth, max_elems):
        self.chase = chase
        self.max_depth = max_depth
        self.max_elems = max_elems
        self.path = []

    def chase_ptr(self, compiler, addr, type_id, size):
        ptr = Hex(f"{addr:#x}")
        if addr in self.path:
            return {"ptr": ptr, "cycle": True}
        if len(self.path) >= self.max_depth:
            return ptr
        try:
            raw = self.chase(addr, size, type_id)
        except Exception:   # a chaser's read failure must not end the render
            raw = None
        if raw is None:
            return ptr
        self.path.append(addr)
        try:
            target = render_at(compiler.plan(type_id, self.max_elems), raw, 0, self)
        finally:
            self.path.pop()
        return {"ptr": ptr, "target": target}


def render(btf, type_id, data, *, chase=None, max_depth=32, max_elems=4096):
    """Render ``data`` as BTF type ``type_id`` of ``btf`` (see the module docstring)."""
    plan = compiler_for(btf).plan(type_id, max_elems)
    ctx = _Chaser(chase, max_depth, max_elems) if chase is not None else None
    if len(data) >= plan.size:
        return plan.fn(data, 0, ctx)
    return render_at(plan, data, 0, ctx)


_ESC = json.encoder.encode_basestring   # C-accelerated "..." quoting


def render_text(value, max_len=4096) -> str:
    """Compact one-line text: ``{a=1 b="x" p=0xffff... l=[1,2]}``; cut at ``max_len`` with "..."."""
    parts = []
    budget = [max_len + 1]

    def emit(s):
        parts.append(s)
        budget[0] -= len(s)

    def walk(v):
        if budget[0] <= 0:
            return
        if isinstance(v, str):
            emit(v if isinstance(v, (Hex, EnumName, CpuList)) else _ESC(v))
        elif isinstance(v, bool):
            emit("true" if v else "false")
        elif isinstance(v, dict):
            emit("{")
            first = True
            for k, x in v.items():
                if budget[0] <= 0:
                    return
                emit(("" if first else " ") + f"{k}=")
                first = False
                walk(x)
            emit("}")
        elif isinstance(v, (list, tuple)):
            emit("[")
            for i, x in enumerate(v):
                if budget[0] <= 0:
                    return
                if i:
                    emit(",")
                walk(x)
            emit("]")
        elif v is None:
            emit("null")
        else:
            emit(str(v))

    walk(value)
    text = "".join(parts)
    if len(text) > max_len:
        text = text[:max(0, max_len - 3)] + "..."
    return text
