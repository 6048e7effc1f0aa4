#!/usr/bin/env python3
"""Record every plugin's JSON output on the real dumps, or compare two recordings.

    KTSTR_DUMPS=../shared/dumps python tools/plugin_outputs.py record OUT_DIR [--dump NAME ...]
    python tools/plugin_outputs.py compare OLD_DIR NEW_DIR

A refactor must keep every plugin's output byte for byte: record before, record after, compare.
Runs `vol` of the running interpreter's venv (tests/volrun.py), so record from the checkout
being measured.
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import volrun  # noqa: E402

PLUGINS = ["linux.pslist"] + volrun.ktstr_plugins()     # Volatility's pslist and every one of ours


def record(out, names, plugins):
    import dumps
    import volrun

    for name in names or dumps.list_dumps():
        for plugin in plugins:
            for _ in range(3):
                res = volrun.run_vol(name, plugin)
                # A concurrent vol run rewriting the shared banner cache can hide the ISF: retry.
                if res.rc == 0 or "symbol_table_name" not in res.stderr:
                    break
            path = Path(out) / name.replace("/", "_") / f"{plugin}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"rc": res.rc, "stdout": res.stdout,
                                        "stderr": res.stderr.strip().splitlines()[-1:]}, indent=1))
            print(f"{name} {plugin}: rc {res.rc}, {len(res.rows)} rows", flush=True)


def compare(old, new):
    bad = 0
    for a in sorted(Path(old).rglob("*.json")):
        b = Path(new) / a.relative_to(old)
        if not b.exists():
            print(f"missing in {new}: {a.relative_to(old)}")
            bad += 1
            continue
        ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
        if ra["stdout"] != rb["stdout"] or ra["rc"] != rb["rc"]:
            bad += 1
            print(f"DIFFERS: {a.relative_to(old)} (rc {ra['rc']} -> {rb['rc']})")
            la, lb = ra["stdout"].splitlines(), rb["stdout"].splitlines()
            shown = 0
            for i, (x, y) in enumerate(zip(la, lb)):
                if x != y and shown < 5:
                    print(f"  line {i}:\n    - {x[:300]}\n    + {y[:300]}")
                    shown += 1
            if len(la) != len(lb):
                print(f"  {len(la)} -> {len(lb)} lines")
    print("identical" if not bad else f"{bad} outputs differ")
    return 1 if bad else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out")
    r.add_argument("--dump", action="append")
    r.add_argument("--plugin", action="append")
    c = sub.add_parser("compare")
    c.add_argument("old")
    c.add_argument("new")
    args = ap.parse_args(argv)
    if args.cmd == "record":
        record(args.out, args.dump, args.plugin or PLUGINS)
        return 0
    return compare(args.old, args.new)


if __name__ == "__main__":
    sys.exit(main())
