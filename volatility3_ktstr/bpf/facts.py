"""What the BPF forensics walkers know about a kernel besides its memory: plain values.

:class:`BpfKernel` bundles a Reader, a Layout, symbol lookups, enum constants, the kernel's BTF
and the map/program registries. The views build it from the kernel adapter
(``volatility3_ktstr.kernel.KernelContext``); tests build it from a synthetic kernel. Nothing
here imports Volatility.
"""

import bisect
from dataclasses import dataclass, field
from typing import Callable, Optional

MAX_SYMBOL_DISTANCE = 1 << 20


def _none(*_a):
    return None


@dataclass
class BpfKernel:
    reader: object
    layout: object
    symbol: Callable[[str], Optional[int]] = _none          # runtime address of a symbol
    sorted_symbols: Callable[[], list] = list                # [(address, name)] sorted
    enum: Callable[[str], Optional[list]] = _none            # [(constant, value)] of an enum
    enumerator: Callable[[str], Optional[int]] = _none       # value of a constant of any enum
    kernel_btf: Callable[[], object] = _none                 # the kernel's Btf (may raise)
    kernel_btf_id: int = 1                                   # its id in btf_idr
    btf_by_id: Callable[[int], object] = _none               # a Btf object by id, or None
    btf_by_name: Callable[[str], object] = _none             # a module's Btf by name, or None
    progs: list = field(default_factory=list)                # BpfProg records (prog_idr)
    maps: list = field(default_factory=list)                 # BpfMap records (map_idr)
    prog_type_names: dict = field(default_factory=dict)
    map_type_names: dict = field(default_factory=dict)

    def __post_init__(self):
        self.prog_by_kva = {p.kva: p for p in self.progs}
        self.map_by_kva = {m.kva: m for m in self.maps}
        self._syms = None
        self._consts = {}
        self._modules = {}

    # --- symbols ---------------------------------------------------------------------------

    def _symbol_list(self):
        if self._syms is None:
            self._syms = self.sorted_symbols() or []
            self._starts = [a for a, _ in self._syms]
        return self._syms

    def symbol_at(self, addr):
        """Name of the kernel symbol exactly at ``addr`` (None when there is none)."""
        syms = self._symbol_list()
        i = bisect.bisect_left(self._starts, addr)
        while i < len(syms) and syms[i][0] == addr:
            name = syms[i][1]
            if not name.startswith("__pfx_"):
                return name
            i += 1
        return None

    def symbol_near(self, addr):
        """``sym`` or ``sym+0xoff`` for a code address ('' when nothing is close)."""
        syms = self._symbol_list()
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and 0 <= addr - syms[i][0] <= MAX_SYMBOL_DISTANCE:
            d = addr - syms[i][0]
            return syms[i][1] + (f"+{d:#x}" if d else "")
        return ""

    def symbol_size(self, name):
        """Bytes from symbol ``name`` to the next symbol (the size of a static array whose
        length the kernel types do not record); 0 when unknown."""
        addr = self.symbol(name)
        if not addr:
            return 0
        syms = self._symbol_list()
        i = bisect.bisect_right(self._starts, addr)
        return syms[i][0] - addr if i < len(syms) else 0

    def symbols(self, *names):
        """{address: name} of those of ``names`` the kernel has."""
        out = {}
        for n in names:
            a = self.symbol(n)
            if a:
                out[a] = n
        return out

    # --- enums -----------------------------------------------------------------------------

    def constants(self, enum_name):
        """{constant: value} of ``enum enum_name`` ({} when absent)."""
        hit = self._consts.get(enum_name)
        if hit is None:
            hit = self._consts[enum_name] = dict(self.enum(enum_name) or ())
        return hit

    def names(self, enum_name, prefix):
        """{value: lower-case name without ``prefix``} (bpftool's spelling of uapi enums)."""
        return {v: k[len(prefix):].lower() for k, v in self.constants(enum_name).items()
                if k.startswith(prefix) and not k.startswith("__")}

    def attach_type_names(self):
        return self.names("bpf_attach_type", "BPF_")

    def link_type_names(self):
        return self.names("bpf_link_type", "BPF_LINK_TYPE_")

    # --- BTF -------------------------------------------------------------------------------

    def btf_type_name(self, obj_id, type_id):
        """Name of BTF type ``type_id`` of BTF object ``obj_id`` ('' when unknown)."""
        try:
            btf = self.kernel_btf() if obj_id == self.kernel_btf_id else self.btf_by_id(obj_id)
            t = btf.type(type_id) if btf is not None else None
            return t.name if t is not None else ""
        except Exception:   # KtstrError (unreadable BTF), KeyError (id out of range)
            return ""

    def module_layout(self, name):
        """A Layout over module ``name``'s BTF (split on the kernel's), for types a module
        defines (``cls_bpf_prog``); None when the module or its BTF is not in the dump."""
        if name not in self._modules:
            layout = None
            try:
                btf = self.btf_by_name(name)
                if btf is not None:
                    from ..core import BtfLayout

                    layout = BtfLayout(btf)
            except Exception:   # KtstrError: unreadable module BTF
                layout = None
            self._modules[name] = layout
        return self._modules[name]

    def prog_name(self, kva):
        p = self.prog_by_kva.get(kva)
        return p.name if p is not None else None
