"""A program's BTF as a run-time Volatility symbol table.

    name = program_symbol_table(context, btf, arch=kctx.arch)
    obj = context.object(name + "!scx_task_map_val", layer_name=kctx.layer_name, offset=addr)
    obj.tid.idx

The ISF dict comes from :func:`volatility3_ktstr.isf.generator.generate_types_only` and is
loaded with Volatility's ``intermed.Version8Format`` (no file, no schema validation pass).
One table per (context, Btf object), cached. libbpf loads scx programs' BTF standalone (ids
from 1), so the table holds exactly that blob's types; a split BTF (on the kernel's) gets its
base types too, which is much bigger (the kernel's table is usually the better choice there).
"""

import hashlib
import weakref

from volatility3.framework import constants
from volatility3.framework.symbols import intermed

from .errors import KtstrError
from .isf.generator import generate_types_only

_TABLES = weakref.WeakKeyDictionary()   # Btf -> {id(context): table name}


def isf_dict(btf, arch="x86_64") -> dict:
    """The ISF dict of ``btf``'s types (base types included when the BTF is split)."""
    return generate_types_only(btf, arch, own_only=btf.base is None)


def _table_name(btf, hint):
    h = hashlib.sha1(f"{id(btf)}:{btf.start_id}:{btf.end_id}:{hint}".encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() else "_" for c in hint)[:32] or "btf"
    return f"ktstr_btf_{safe}_{h}"


def program_symbol_table(context, btf, arch="x86_64", hint="prog") -> str:
    """Name of a symbol table in ``context.symbol_space`` holding ``btf``'s types; built once."""
    per_btf = _TABLES.setdefault(btf, {})
    name = per_btf.get(id(context))
    if name is not None and name in context.symbol_space:
        return name
    name = _table_name(btf, hint)
    if name not in context.symbol_space:
        try:
            table = intermed.Version8Format(context, f"ktstr.symtab.{name}", name, isf_dict(btf, arch))
        except Exception as e:   # a BTF the generator or Volatility rejects: one clear line
            raise KtstrError(f"cannot build a symbol table from {btf.source or 'program BTF'}: {e}") from None
        context.symbol_space.append(table)
    per_btf[id(context)] = name
    return name


def type_name(table, name) -> str:
    """``table!name`` as Volatility spells a type of that table."""
    return table + constants.BANG + name
