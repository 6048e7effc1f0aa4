"""What the BPF forensics walkers take: a kernel with its program and map registries read.

:class:`BpfKernel` is a thin view of a ``kernel_model.Kernel`` (``Kernel.bpf_kernel()``): the
registries as plain lists (empty when the dump lacks them) and look-up tables by address;
everything else (symbols, the nearest symbol, enums, BTF) is the kernel's own. Nothing here
imports Volatility.
"""

from typing import Any, Dict, List, Optional

from ..errors import KtstrError


class BpfKernel:
    """A kernel (``kernel``) plus its BPF registries read once: ``progs``/``maps`` (BpfProg /
    BpfMap records), ``prog_by_kva``/``map_by_kva``, the type-name tables and the kernel BTF's
    id. Attributes it does not define are the kernel's."""

    def __init__(self, kernel: Any, progs: Optional[list] = None, maps: Optional[list] = None) -> None:
        self.kernel = kernel
        self.progs: List[Any] = list(progs if progs is not None else _or_empty(kernel.progs))
        self.maps: List[Any] = list(maps if maps is not None else _or_empty(kernel.maps))
        self.prog_by_kva: Dict[int, Any] = {p.kva: p for p in self.progs}
        self.map_by_kva: Dict[int, Any] = {m.kva: m for m in self.maps}
        self.prog_type_names: Dict[int, str] = kernel.prog_type_names()
        self.map_type_names: Dict[int, str] = kernel.map_type_names()
        self.kernel_btf_id: int = kernel.kernel_btf_id()

    @classmethod
    def of(cls, kernel: Any) -> "BpfKernel":
        return cls(kernel)

    def __getattr__(self, name: str) -> Any:
        # Only called for names not set above: reader, layout, symbol, symbol_at, enum, ...
        return getattr(self.__dict__["kernel"], name)

    def prog_name(self, kva: int) -> Optional[str]:
        p = self.prog_by_kva.get(kva)
        return p.name if p is not None else None


def _or_empty(registry) -> list:
    try:
        return registry()
    except KtstrError:
        return []
