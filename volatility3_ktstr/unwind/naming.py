"""Names of code addresses as the kernel prints them (no Volatility import).

``symbol+0xoff/0xsize`` is ``%pB`` (``/proc/PID/stack``): the symbol is looked up at
``ip - 1`` for a return address (a call at a function's very end returns past it), the offset
counts from the symbol's start to ``ip``, the size runs to the next symbol with a higher
address (kallsyms' rule; ``__pfx_`` padding symbols are kallsyms symbols too, so they end
the function before them). BPF code is named from the kernel's ``bpf_kallsyms`` list (programs,
subprograms, trampolines, dispatchers, struct_ops trampolines ``bpf__<ops>_<callback>``), a
program's frame also with its id and source line (:mod:`.lineinfo`).
"""

import bisect
import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Tuple

from ..core import ReadError, Record
from ..kds import DamageLog, list_entries
from .modules import ModuleText, module_texts

MAX_BPF_KSYMS = 1 << 16
MAX_KALLSYMS = 1 << 22
KALLSYMS_OFFSET_SIZE = 4     # kallsyms_offsets[] holds s32 (scripts/kallsyms.c)
MAX_FUNCTION_SIZE = 1 << 20

_addr = operator.itemgetter(0)


@dataclass(frozen=True)
class BpfSymbol:
    """One ``struct bpf_ksym`` of ``bpf_kallsyms``: [start, end), its kallsyms name, and for a
    program (``prog`` true) the address of its ``struct bpf_prog_aux``."""

    start: int
    end: int
    name: str
    aux: int = 0
    ksym: int = 0             # the struct bpf_ksym's address

    @property
    def kind(self) -> str:
        """bpf (a program), bpf_trampoline (fentry/fexit/fmod_ret), bpf_dispatcher,
        bpf_struct_ops (``bpf__<ops>_<callback>``), else bpf_image."""
        if self.aux:
            return "bpf"
        for prefix, kind in (("bpf_trampoline_", "bpf_trampoline"), ("bpf_dispatcher_", "bpf_dispatcher"),
                             ("bpf__", "bpf_struct_ops")):
            if self.name.startswith(prefix):
                return kind
        return "bpf_image"


@dataclass(frozen=True)
class FrameName:
    text: str                 # symbol+0xoff/0xsize, or the bare address
    kind: str                 # kernel, module, unknown, or a BpfSymbol's kind
    symbol: str = ""
    offset: int = 0
    size: int = 0
    bpf: Optional[BpfSymbol] = None
    serves: str = ""          # a trampoline's traced function, a dispatcher's (bpf_images.py)


class CodeNames:
    """Names of kernel and BPF code addresses for one kernel (``kernel_model.Kernel``)."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.damage = DamageLog()
        self._text: Optional[List[Tuple[int, str]]] = None
        self._bpf: Optional[List[BpfSymbol]] = None
        self._bpf_starts: List[int] = []
        self._ranges: Optional[List[Tuple[int, int]]] = None

    # --- kernel text -----------------------------------------------------------------

    def _pairs(self) -> List[Tuple[int, str]]:
        if self._text is None:
            self._text = self.kernel.sorted_symbols()
        return self._text

    def text_ranges(self) -> List[Tuple[int, int]]:
        """[start, end) of the kernel's own code (core text, init text, entry trampolines)."""
        if self._ranges is None:
            out = []
            for lo, hi in (("_stext", "_etext"), ("_sinittext", "_einittext")):
                a, b = self.kernel.symbol(lo), self.kernel.symbol(hi)
                if a and b and a < b:
                    out.append((a, b))
            self._ranges = out
        return self._ranges

    def in_kernel_text(self, ip: int) -> bool:
        return any(lo <= ip < hi for lo, hi in self.text_ranges())

    def is_code(self, ip: int) -> bool:
        """Kernel text, a module's text or a BPF image (what the kernel's unwinders accept as
        a return address)."""
        return self.in_kernel_text(ip) or self.bpf_symbol(ip) is not None or self.module(ip) is not None

    def module(self, ip: int) -> Optional[ModuleText]:
        for m in module_texts(self.kernel):
            if m.holds(ip):
                return m
        return None

    def kernel_symbol(self, ip: int) -> Optional[Tuple[str, int, int]]:
        """(name, start, size) of the kernel symbol holding ``ip``, or None."""
        pairs = self._pairs()
        i = bisect.bisect_right(pairs, ip, key=_addr) - 1
        if i < 0:
            return None
        start = pairs[i][0]
        # Of several symbols at one address kallsyms prints the first that is not padding.
        j = i
        while j > 0 and pairs[j - 1][0] == start:
            j -= 1
        names = [n for a, n in pairs[j:i + 1] if not n.startswith("__pfx_")]
        if not names:
            return None
        end = self.kallsyms_end(start)
        if end is None:
            k = i + 1
            while k < len(pairs) and pairs[k][0] == start:
                k += 1
            if k >= len(pairs):
                return None
            end = pairs[k][0]
        size = end - start
        if not 0 < size <= MAX_FUNCTION_SIZE or ip - start >= size:
            return None
        return names[0], start, size

    def kallsyms_end(self, start: int) -> Optional[int]:
        """The next kallsyms address above ``start`` (the kernel's symbol size rule), from the
        kernel's own kallsyms table in memory (``kallsyms_offsets``, or ``kallsyms_addresses``
        on kernels storing absolute addresses): its ``__pfx_`` padding symbols end a function
        16 bytes before the next one, and a symbol table may not list them."""
        table = self.kernel.memo(("unwind", "kallsyms"), self._read_kallsyms)
        if table is None:
            return None
        count, at = table
        i = bisect.bisect_right(range(count), start, key=at)
        return at(i) if i < count else None

    def _read_kallsyms(self) -> Optional[Tuple[int, Callable[[int], int]]]:
        """(count, address of entry i) of the kernel's kallsyms table, the first of its
        encodings (kernel/kallsyms.c kallsyms_sym_address) that decodes to sorted addresses
        holding ``_stext``; None when none does."""
        k = self.kernel
        num = k.symbol("kallsyms_num_syms")
        text = k.symbol("_stext") or k.symbol("_text")
        if not (num and text):
            return None
        try:
            count = k.reader.u32(num)
        except ReadError:
            return None
        if not 0 < count <= MAX_KALLSYMS:
            return None
        for at in self._kallsyms_decoders(count):
            if _valid_kallsyms(count, at, text):
                return count, at
        return None

    def _kallsyms_decoders(self, count: int) -> Iterator[Callable[[int], int]]:
        k = self.kernel
        offs, addrs = k.symbol("kallsyms_offsets"), k.symbol("kallsyms_addresses")
        if offs:
            try:
                raw = k.reader.read(offs, KALLSYMS_OFFSET_SIZE * count)
            except ReadError:
                raw = b""
            if raw:
                signed, unsigned = memoryview(raw).cast("i"), memoryview(raw).cast("I")
                base = k.symbol("kallsyms_relative_base")
                if not base:
                    # 6.11+: each entry relative to its own position
                    yield lambda i: offs + KALLSYMS_OFFSET_SIZE * i + signed[i]
                else:
                    try:
                        base_value = k.reader.ptr(base)
                    except ReadError:
                        base_value = None
                    if base_value is not None:
                        # unsigned offsets from the base ...
                        yield lambda i: base_value + unsigned[i]
                        # ... or, with CONFIG_KALLSYMS_ABSOLUTE_PERCPU, non-negative entries
                        # absolute (per-CPU symbols) and the others base - 1 - entry
                        yield lambda i: signed[i] if signed[i] >= 0 else base_value - 1 - signed[i]
        if addrs:
            # no CONFIG_KALLSYMS_BASE_RELATIVE: absolute addresses, one pointer each
            width = k.reader.pointer_size
            try:
                raw = k.reader.read(addrs, width * count)
            except ReadError:
                return
            values = memoryview(raw).cast("Q" if width == 8 else "I")
            yield lambda i: values[i]

    # --- BPF -------------------------------------------------------------------------

    def bpf_symbols(self) -> List[BpfSymbol]:
        """Every entry of ``bpf_kallsyms`` sorted by start ([] when the kernel has none)."""
        if self._bpf is None:
            self._bpf = self.kernel.memo(("unwind", "bpf_ksyms"), self._read_bpf_ksyms)
            self._bpf_starts = [s.start for s in self._bpf]
        return self._bpf

    def _read_bpf_ksyms(self) -> List[BpfSymbol]:
        k = self.kernel
        head = k.symbol("bpf_kallsyms")
        lay = k.layout
        if head is None or not lay.has("bpf_ksym", "lnode"):
            return []
        paths = [p for p in ("start", "end", "name", "prog") if lay.has("bpf_ksym", p)]
        aux_off = lay.offset("bpf_prog_aux", "ksym") if lay.has("bpf_prog_aux", "ksym") else None
        out = []
        for ksym in list_entries(k.reader, lay, head, "bpf_ksym", "lnode", limit=MAX_BPF_KSYMS,
                                 damage=self.damage, what="bpf_ksym (bpf_kallsyms)"):
            try:
                r = Record(k.reader, lay, "bpf_ksym", ksym, paths)
            except ReadError as e:
                self.damage.add("bpf_ksym", ksym, f"unreadable ({e.reason})")
                continue
            start, end = r.int("start"), r.int("end")
            if not start or not start < end <= start + MAX_FUNCTION_SIZE:
                self.damage.add("bpf_ksym", ksym, f"implausible range {start:#x}-{end:#x}")
                continue
            aux = ksym - aux_off if r.int("prog", 0) and aux_off is not None else 0
            out.append(BpfSymbol(start, end, r.str("name", ""), aux, ksym))
        out.sort(key=lambda s: s.start)
        return out

    def bpf_symbol(self, ip: int) -> Optional[BpfSymbol]:
        syms = self.bpf_symbols()
        i = bisect.bisect_right(self._bpf_starts, ip) - 1
        if i >= 0 and syms[i].start <= ip < syms[i].end:
            return syms[i]
        return None

    # --- one address -----------------------------------------------------------------

    def name(self, ip: int, return_address: bool = True) -> FrameName:
        """The name of ``ip`` (a return address: looked up at ``ip - 1``)."""
        look = ip - 1 if return_address and ip else ip
        hit = self.kernel_symbol(look) if self.in_kernel_text(look) else None
        if hit is not None:
            name, start, size = hit
            return FrameName(f"{name}+{ip - start:#x}/{size:#x}", "kernel", name, ip - start, size)
        b = self.bpf_symbol(look)
        if b is not None:
            from .bpf_images import serves

            size = b.end - b.start
            return FrameName(f"{b.name}+{ip - b.start:#x}/{size:#x}", b.kind, b.name, ip - b.start,
                             size, b, "" if b.aux else serves(self.kernel, b))
        mod = self.module(look)
        if mod is not None:
            found = mod.symbol(look)
            if found is not None:
                name, start, size = found
                return FrameName(f"{name}+{ip - start:#x}/{size:#x} [{mod.name}]", "module", name,
                                 ip - start, size)
            return FrameName(f"{ip:#x} [{mod.name}]", "module")
        if not self.text_ranges():      # a table without _stext/_etext: any symbol below
            hit = self.kernel_symbol(look)
            if hit is not None:
                name, start, size = hit
                return FrameName(f"{name}+{ip - start:#x}/{size:#x}", "kernel", name, ip - start, size)
        return FrameName(f"{ip:#x}", "unknown")


def _valid_kallsyms(count: int, at: Callable[[int], int], text: int) -> bool:
    """A decoding holds when sampled entries are sorted and ``_stext`` is among them."""
    samples = [at(i) for i in range(0, count, max(1, count // 64))] + [at(count - 1)]
    if samples != sorted(samples):
        return False
    i = bisect.bisect_left(range(count), text, key=at)
    return i < count and at(i) == text


def code_names(kernel: Any) -> CodeNames:
    """The one CodeNames of a kernel (cached in its memo)."""
    return kernel.memo(("unwind", "names"), lambda: CodeNames(kernel))


def in_ranges(ip: int, ranges: List[Tuple[int, int]]) -> bool:
    return any(lo <= ip < hi for lo, hi in ranges)


def sched_ranges(kernel: Any) -> List[Tuple[int, int]]:
    """The code ``stack_trace_save_tsk`` leaves out of a task's stack: ``.sched.text``
    (``__schedule``, ``schedule_timeout``...) and ``.spinlock.text`` (in_sched_functions)."""

    def build():
        out = []
        for lo, hi in (("__sched_text_start", "__sched_text_end"),
                       ("__lock_text_start", "__lock_text_end")):
            a, b = kernel.symbol(lo), kernel.symbol(hi)
            if a and b and a < b:
                out.append((a, b))
        return out

    return kernel.memo(("unwind", "sched_ranges"), build)
