"""Errors that end a plugin run with one clear line (no traceback)."""

import contextlib
import sys


class KtstrError(Exception):
    """Something the run needs is missing (a symbol, a type, a map, a file); the message says what."""


EXIT_MISSING = 2


@contextlib.contextmanager
def cli_errors(plugin_name: str):
    """Turn a KtstrError into `<plugin>: error: <message>` on stderr and exit status 2."""
    try:
        yield
    except KtstrError as e:
        sys.stdout.flush()
        print(f"{plugin_name}: error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_MISSING) from None


def guarded(plugin_name: str, rows):
    """Wrap a row generator so a KtstrError raised while rendering ends the run the same way."""
    with cli_errors(plugin_name):
        yield from rows
