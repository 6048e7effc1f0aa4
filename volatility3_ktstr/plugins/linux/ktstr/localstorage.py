"""linux.ktstr.localstorage: every BPF task/cgroup/inode/socket storage entry, owner named."""

import json

from volatility3.framework import interfaces, renderers
from volatility3.framework.configuration import requirements
from volatility3.framework.renderers import format_hints

from volatility3_ktstr import plugin_support as ps
from volatility3_ktstr.bpf.maps import LOCAL_STORAGE_TYPES
from volatility3_ktstr.core import LayoutError
from volatility3_ktstr.errors import KtstrError, guarded
from volatility3_ktstr.kernel import KernelContext
from volatility3_ktstr.render import hex_list, render, render_text
from volatility3_ktstr.walkers import localstorage as ls
from volatility3_ktstr.walkers.owners import OWNER_KINDS, OwnerResolver

PLUGIN = "linux.ktstr.localstorage"
NA = renderers.NotApplicableValue


class LocalStorage(interfaces.plugins.PluginInterface):
    """Lists BPF local storage entries (task, cgroup, inode, socket storage) with their owners.

    Walks each local storage map's buckets from memory (bpftool shows these maps as empty).
    Values are rendered with the map's program BTF (hex without one); arena pointers to
    sdt_alloc slots are followed. Each map ends with a summary row counting anything skipped;
    --verbose adds one row per skipped bucket, broken chain or dropped element."""

    _required_framework_version = (2, 0, 0)
    _version = (1, 0, 0)

    @classmethod
    def get_requirements(cls):
        return [
            ps.kernel_requirement(),
            requirements.ListRequirement(name="map_id", element_type=int, optional=True,
                                         description="Only these map ids"),
            requirements.ListRequirement(name="map_name", element_type=str, optional=True,
                                         description="Only maps with these names"),
            requirements.ListRequirement(name="pid", element_type=int, optional=True,
                                         description="Only entries owned by these tasks (thread ids)"),
            requirements.BooleanRequirement(name="verbose", default=False, optional=True,
                                            description="One row per skipped or dropped item, with the reason"),
        ]

    def _maps(self, kctx):
        ids = self.config.get("map_id") or None
        names = self.config.get("map_name") or None
        maps = ps.select_maps(ps.list_maps(kctx), ids, names)
        chosen = [m for m in maps if m.type_name in LOCAL_STORAGE_TYPES]
        if (ids or names) and not chosen:
            raise KtstrError("the selected maps are not local storage maps ("
                             + ", ".join(f"{m.id} {m.name}: {m.type_name}" for m in maps) + ")")
        return chosen

    def _generator(self):
        kctx = KernelContext.from_plugin(self)
        maps = self._maps(kctx)
        if not maps:
            return
        kctx.require_type("bpf_local_storage_map")
        try:
            offs = ls.LocalStorageOffsets.from_layout(kctx.layout)
        except LayoutError as e:
            raise KtstrError(str(e)) from None
        pids = set(self.config.get("pid") or ())
        verbose = self.config.get("verbose", False)
        budget = ls.VisitBudget()
        owners = OwnerResolver(kctx.reader, kctx.layout)
        for m in maps:
            yield from self._map_rows(kctx, offs, m, budget, owners, pids, verbose)

    def _map_rows(self, kctx, offs, m, budget, owners, pids, verbose):
        kind = OWNER_KINDS.get(m.type_name, m.type_name)
        stats = ls.WalkStats()
        if m.error:
            stats.rejected = m.error
            elems = []
        else:
            elems = list(ls.walk(kctx.reader, offs, m.kva, m.value_size, stats, budget))
        values = _ValueRenderer(kctx, m)
        rows = []
        for e in elems:
            if e.owner_error:
                owner = owners.resolve(kind, 0)
                owner.error = e.owner_error
            else:
                owner = owners.resolve(kind, e.owner, e.storage)
            if pids and not (kind == "task" and owner.pid in pids):
                continue
            text, hexed, formatted, vnote = values.render(e.value)
            note = "; ".join(n for n in (owner.error, owner.note, vnote) if n)
            key = (owner.pid if owner.pid is not None else
                   owner.ident if owner.ident is not None else 1 << 64, owner.kva, e.kva)
            rows.append((key, (
                m.id, m.name, kind, format_hints.Hex(owner.kva),
                _opt(owner.pid), _opt(owner.tgid), _opt(owner.comm), _opt(owner.ident),
                owner.describe() if kind != "task" or owner.pid is None else owner.comm,
                text, hexed, formatted, format_hints.Hex(e.kva), note)))
        rows.sort(key=lambda r: r[0])
        for _, row in rows:
            yield 0, row
        if verbose:
            for what, addr, reason in stats.problems:
                yield 0, self._info_row(m, "problem", addr, f"{what}: {reason}")
            if stats.problems_dropped:
                yield 0, self._info_row(m, "problem", 0, f"{stats.problems_dropped} more not listed")
        summary = stats.summary()
        if values.note:
            summary += f"; {values.note}"
        if stats.problems and not verbose:
            summary += " (--verbose for reasons)"
        yield 0, self._info_row(m, "summary", m.kva, summary, count=stats.elements)

    @staticmethod
    def _info_row(m, kind, addr, note, count=None):
        return (m.id, m.name, kind, format_hints.Hex(addr), NA(), NA(), NA(),
                count if count is not None else NA(), NA(), NA(), NA(), NA(),
                format_hints.Hex(0), note)

    def run(self):
        return renderers.TreeGrid(
            [("MapId", int), ("MapName", str), ("OwnerKind", str), ("Owner", format_hints.Hex),
             ("PID", int), ("TGID", int), ("Comm", str), ("OwnerId", int), ("OwnerName", str),
             ("Value", str), ("ValueHex", str), ("Formatted", str), ("Element", format_hints.Hex),
             ("Note", str)],
            guarded(PLUGIN, self._generator()))


def _opt(v):
    return NA() if v is None else v


class _ValueRenderer:
    """Value bytes -> (text, hex, JSON) with the map's program BTF; hex when it has none."""

    def __init__(self, kctx, m):
        self.btf = None
        self.type_id = m.btf_value_type_id
        self.note = None
        if m.btf_kva and self.type_id:
            try:
                self.btf = kctx.btf_at(m.btf_kva)
            except KtstrError as e:
                self.note = f"values as hex: {e}"
        elif not m.btf_kva:
            self.note = "values as hex: map has no BTF"

    def render(self, value):
        hexed = value.hex()
        if self.btf is not None:
            try:
                typed = render(self.btf, self.type_id, value)
                return render_text(typed), hexed, json.dumps(typed), None
            except Exception as e:  # a corrupt program BTF must cost one value, not the run
                return hexed, hexed, json.dumps(hex_list(value)), f"render failed: {e}"
        return hexed, hexed, json.dumps(hex_list(value)), None
