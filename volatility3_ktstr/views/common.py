"""What several views share: selecting maps the same way in every plugin."""

from typing import Any, Iterable, List, Optional, Tuple

from ..errors import KtstrError


def select_maps(maps: List[Any], ids: Optional[Iterable[int]] = None,
                names: Optional[Iterable[str]] = None,
                types: Optional[Iterable[str]] = None) -> Tuple[List[Any], List[str]]:
    """(maps matching any of ``ids`` or ``names`` -- all when neither is given --, the selectors
    that matched nothing). ``types`` (type names) narrows the result. Nothing matching an
    explicit selector at all is an error naming the selectors."""
    ids, names = list(ids or []), list(names or [])
    out = maps if not ids and not names else [m for m in maps if m.id in ids or m.name in names]
    missing = [f"id {i}" for i in ids if all(m.id != i for m in out)]
    missing += [f"name {n!r}" for n in names if all(m.name != n for m in out)]
    if (ids or names) and not out:
        raise KtstrError(f"no BPF map matches {', '.join(missing)}")
    if types:
        out = [m for m in out if m.type_name in types]
    return out, missing
