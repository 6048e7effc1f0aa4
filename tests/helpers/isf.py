"""ISF checks shared by the generator tests: Volatility's own JSON schema and loading an ISF
dictionary as a Volatility symbol table in memory (no file, no cache)."""

import json
from pathlib import Path


def schema():
    import volatility3

    path = Path(volatility3.__file__).parent / "schemas" / "schema-6.2.0.json"
    return json.loads(path.read_text())


def validate(isf):
    import jsonschema

    jsonschema.Draft4Validator(schema()).validate(isf)


def volatility_table(isf, name="t"):
    """The ISF dict as a Volatility 6.2.0 symbol table (no file, no cache)."""
    from volatility3.framework import contexts
    from volatility3.framework.symbols import intermed

    ctx = contexts.Context()
    table = intermed.Version8Format(ctx, f"tables.{name}", name, isf)
    ctx.symbol_space.append(table)
    return ctx, table
