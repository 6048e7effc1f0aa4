"""Rows between walkers and TreeGrids (no Volatility import).

A plugin's grid is declared once as a :class:`Grid` of columns (name, type); rows are built by
keyword (``grid.row(MapId=3, Name="arena")``), so no row is padded by position and a misspelt
column is an error, not a silent shift. Absent values are :data:`NA` (this kernel or object has
no such thing) or :data:`UNREADABLE` (there, but could not be read); a column left out of a row
is NA. Damage (:class:`volatility3_ktstr.kds.Damage`) becomes a row the same way in every grid:
the key columns given, the grid's note column saying what was skipped, where and why.

``volatility3_ktstr.plugin_support.tree_grid`` turns a Grid and its rows into a Volatility
TreeGrid (``HEX`` columns become ``format_hints.Hex``, NA/UNREADABLE the renderers' absent values).
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Tuple, Union

if TYPE_CHECKING:
    # The kernel a view reads (KernelContext builds one from Volatility; tests from synthetic
    # memory): mypy checks every view against it. Not imported at run time (views sit below it).
    from ..kernel_model import Kernel
else:
    Kernel = Any
Row = Tuple[Any, ...]
Rows = Iterator[Tuple[int, Row]]        # (tree depth, row) as TreeGrid takes them


class _Absent:
    __slots__ = ("label",)

    def __init__(self, label: str) -> None:
        self.label = label

    def __repr__(self) -> str:
        return self.label

    def __bool__(self) -> bool:
        return False


NA = _Absent("NA")                   # not applicable / not in this kernel
UNREADABLE = _Absent("UNREADABLE")   # present but unreadable


class HEX:
    """Column type: an integer shown in hex (addresses, flags)."""


@dataclass(frozen=True)
class Column:
    name: str
    type: type      # int, str, float, bytes or HEX


class Grid:
    """Columns of one plugin's output, declared once.

    ``note`` names the text column that damage rows (:meth:`damage`) write into."""

    def __init__(self, *columns: Union[Column, Tuple[str, type]], note: Optional[str] = None) -> None:
        self.columns = tuple(c if isinstance(c, Column) else Column(*c) for c in columns)
        self.index = {c.name: i for i, c in enumerate(self.columns)}
        if len(self.index) != len(self.columns):
            raise ValueError("duplicate column names")
        if note is not None and note not in self.index:
            raise ValueError(f"note column {note!r} is not a column")
        self.note = note

    def row(self, **values: Any) -> Row:
        """A row tuple; columns not given are NA, ``None`` is NA."""
        out = [NA] * len(self.columns)
        for name, value in values.items():
            try:
                out[self.index[name]] = NA if value is None else value
            except KeyError:
                raise TypeError(f"no column {name!r} (columns: {', '.join(self.index)})") from None
        return tuple(out)

    def damage(self, damage: object, **keys: Any) -> Row:
        """A row reporting ``damage`` (a Damage, or any text) in the note column."""
        if self.note is None:
            raise TypeError("this grid has no note column for damage rows")
        note = str(damage)
        if keys.get(self.note):
            note = f"{keys.pop(self.note)}; {note}"
        keys[self.note] = note
        return self.row(**keys)

    def names(self) -> List[str]:
        return [c.name for c in self.columns]
