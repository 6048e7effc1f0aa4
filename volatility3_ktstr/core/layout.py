"""Structure layouts: sizes and member offsets by name, resolved once and cached.

Walkers never hard-code an offset: they ask a :class:`Layout`. :class:`BtfLayout` answers from a
parsed BTF; the Volatility-backed one (volatility3_ktstr.kernel.IsfLayout) from the kernel ISF.
"""


class LayoutError(KeyError):
    """A type or member the walker needs is missing; the message names it."""

    def __str__(self):
        return self.args[0] if self.args else "missing type"


class Layout:
    """Interface: ``size(struct)``, ``offset(struct, 'a.b')``, ``has(struct, path)``."""

    def __init__(self):
        self._cache = {}

    def size(self, struct: str) -> int:
        key = (struct, None)
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = self._size(struct)
        return v

    def offset(self, struct: str, path: str) -> int:
        key = (struct, path)
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = self._offset(struct, path)
        return v

    def offsets(self, struct: str, *paths):
        return tuple(self.offset(struct, p) for p in paths)

    def has(self, struct: str, path: str = None) -> bool:
        try:
            if path is None:
                self.size(struct)
            else:
                self.offset(struct, path)
            return True
        except LayoutError:
            return False

    def first(self, struct: str, *paths) -> int:
        """Offset of the first of ``paths`` that exists (members renamed across kernel versions)."""
        for p in paths:
            if self.has(struct, p):
                return self.offset(struct, p)
        raise LayoutError(f"struct {struct} has none of the members {', '.join(paths)}")

    def _size(self, struct):
        raise NotImplementedError

    def _offset(self, struct, path):
        raise NotImplementedError


class BtfLayout(Layout):
    """Layout from a parsed :class:`volatility3_ktstr.btf.Btf`."""

    def __init__(self, btf):
        super().__init__()
        self.btf = btf

    def _type(self, struct):
        try:
            return self.btf.struct(struct)
        except KeyError:
            raise LayoutError(f"type 'struct {struct}' is not in the BTF") from None

    def _size(self, struct):
        return self._type(struct).size

    def _offset(self, struct, path):
        t = self._type(struct)
        try:
            bit, _ = self.btf.member_path(t.id, path)
        except KeyError:
            raise LayoutError(f"type 'struct {struct}' has no member '{path}'") from None
        return bit // 8
