"""What a walk could not read: one :class:`Damage` record per skipped part.

Every walker and kernel-structure generator reports damage the same way, so every plugin can
render it the same way (a row saying what was skipped, where, and why): "empty" and "could not
read" never look alike.
"""

from dataclasses import dataclass
from typing import Dict, Iterable, Optional

DEFAULT_LIMIT = 1000     # records kept per log; later ones are only counted
KINDS = ("unreadable", "cycle", "null", "bound", "corrupt", "excluded")


@dataclass(frozen=True)
class Damage:
    """One skipped part of a walk.

    ``what`` names the part ("list node", "bucket", "xa_node", "leaf subtree"), ``addr`` is where
    it is (0 when there is no address), ``reason`` why it was skipped ("unmapped at 0x...",
    "cycle", "NULL link", "stopped after 65536 entries"); ``kind`` classifies it for counting:
    one of :data:`KINDS`. ``index`` is the part's position in its structure when the walk
    has one (the first slot index a skipped subtree covers), else None."""

    what: str
    addr: int
    reason: str
    kind: str = "unreadable"
    index: Optional[int] = None

    def __str__(self):
        where = f" at {self.addr:#x}" if self.addr else ""
        return f"{self.what}{where}: {self.reason}"


class DamageLog:
    """The damage of one walk, in the order met. Keeps the first ``limit`` records and counts
    the rest (a corrupt structure must not make the report itself unbounded)."""

    def __init__(self, limit=DEFAULT_LIMIT):
        self.items = []
        self.dropped = 0
        self.limit = limit

    def add(self, what: str, addr: int, reason: str, kind: str = "unreadable",
            index: Optional[int] = None) -> Damage:
        d = Damage(what, addr or 0, str(reason), kind, index)
        if len(self.items) < self.limit:
            self.items.append(d)
        else:
            self.dropped += 1
        return d

    def extend(self, other: Iterable[Damage]) -> None:
        for d in other:
            self.add(d.what, d.addr, d.reason, d.kind, d.index)
        self.dropped += getattr(other, "dropped", 0)

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items) + self.dropped

    def __bool__(self):
        return bool(self.items) or bool(self.dropped)

    def count(self, kind: str) -> int:
        """Records of ``kind`` kept (the dropped ones are not classified)."""
        return sum(1 for d in self.items if d.kind == kind)

    def summary(self) -> str:
        """"2 parts skipped (list node: 1, bucket: 1)", or "" when nothing was."""
        if not self:
            return ""
        counts: Dict[str, int] = {}
        for d in self.items:
            counts[d.what] = counts.get(d.what, 0) + 1
        parts = ", ".join(f"{k}: {v}" for k, v in counts.items())
        more = f", {self.dropped} more" if self.dropped else ""
        n = len(self)
        return f"{n} part{'s' if n != 1 else ''} skipped ({parts}{more})"


def log_of(damage: Optional["DamageLog"]) -> "DamageLog":
    """``damage`` or a fresh log (generators take ``damage=None`` for "do not care")."""
    return damage if damage is not None else DamageLog()
