"""ktstr-triage: triage many memory dumps on Dask into one table and a browsable report.

    ktstr-triage DUMP_OR_DIR_OR_GLOB... --out DIR [--scheduler tcp://host:8786] [--workers N]
                 [--plugins linux.ktstr.scxstate,...] [--timeout S] [-s SYMBOL_DIR]

Needs the ``fleet`` extra (``pip install 'volatility3-ktstr[fleet]'``: Dask, pyarrow).
"""

import argparse
import sys
from typing import List, Optional

USAGE_ERROR = 2


def parse(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ktstr-triage", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="+", metavar="DUMP_OR_DIR_OR_GLOB")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="an existing Dask scheduler (tcp://host:8786); default: a local cluster")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local cluster worker processes (default: one per core)")
    p.add_argument("--plugins", metavar="LIST",
                   help="comma-separated plugins (default: every linux.ktstr plugin)")
    p.add_argument("--timeout", type=float, default=900.0, metavar="S",
                   help="seconds per dump before it is cut (default 900)")
    p.add_argument("-s", "--symbol-dirs", action="append", default=[], metavar="DIR",
                   help="extra symbol folders (as vol -s); repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse(argv)
    try:
        import distributed  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as e:
        print(f"ktstr-triage: error: {e.name} is missing; install the fleet extra: "
              "pip install 'volatility3-ktstr[fleet]'", file=sys.stderr)
        return USAGE_ERROR
    from . import discover, engine, report

    inputs = discover.expand(args.inputs)
    if not inputs:
        print(f"ktstr-triage: error: no dump file in {' '.join(args.inputs)}", file=sys.stderr)
        return USAGE_ERROR
    plugins = [p.strip() for p in args.plugins.split(",") if p.strip()] if args.plugins else None
    if plugins:
        from . import inprocess

        unknown = [p for p in plugins if p not in inprocess.plugin_modules()]
        if unknown:
            print(f"ktstr-triage: error: no plugin named {', '.join(unknown)}", file=sys.stderr)
            return USAGE_ERROR
    rows, stats = engine.run(inputs, args.out, scheduler=args.scheduler, workers=args.workers,
                             plugins=plugins, timeout=args.timeout, symbol_dirs=args.symbol_dirs,
                             progress=not args.no_progress)
    paths = engine.write_table(rows, args.out)
    pages = report.write_report(rows, args.out)
    bad = sum(1 for r in rows if r.get("error"))
    print(f"{len(rows)} dumps ({stats.triaged} triaged, {stats.reused} already done, "
          f"{bad} with errors) in {stats.seconds:.1f} s: {paths['parquet']}, {paths['csv']}, "
          f"{pages[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
