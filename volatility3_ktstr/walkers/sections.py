"""Section maps: the ARRAY maps libbpf makes of a BPF object's .bss/.data/.rodata (one element,
whose BTF value type is a DATASEC of the object's global variables). No Volatility import."""

from typing import Any, Callable, Iterable, Iterator, Optional, Tuple

from ..btf import Kind


def section_maps(maps: Iterable[Any], btf_at: Callable[[int], Any]
                 ) -> Iterator[Tuple[Any, Optional[Any], Optional[Exception]]]:
    """(map, program BTF, None) for every ARRAY map whose BTF value type is a DATASEC, and
    (map, None, error) for an ARRAY map with BTF that does not parse: a broken program BTF hides
    only that map, and the caller says so. ``btf_at(kva)`` parses a ``struct btf``."""
    for m in maps:
        if m.type_name != "array" or not m.btf_kva or not m.btf_value_type_id or m.error:
            continue
        try:
            btf = btf_at(m.btf_kva)
            sec = btf.type(m.btf_value_type_id)
        except Exception as e:   # noqa: BLE001 - any parse failure: this map only
            yield m, None, e
            continue
        if sec is not None and sec.kind == Kind.DATASEC:
            yield m, btf, None
