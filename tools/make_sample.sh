#!/usr/bin/env bash
# Rebuild the bundled sample (samples/) and its ISF (symbols/linux/) from the real scx_sdt dump.
# Needs KTSTR_DUMPS (the shared dumps folder) and the package installed (ktstr-isf, ktstr-minimize).
# Run it again whenever a plugin's output changes on purpose: the sample keeps exactly the pages
# today's plugins read, and samples/*.expected.json.xz holds their output on the full dump.
#   usage: tools/make_sample.sh [extra ktstr-minimize args]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KTSTR_DUMPS:?set KTSTR_DUMPS to the dumps folder}"
NAME=scx_sdt-x86_64
DUMP_NAME=x86_64/scx_sdt
PY=${PYTHON:-python3}
# tests/dumps.py decompresses the dump and the kernel's vmlinux into ~/.cache/ktstr-dumps once.
read -r DUMP VMLINUX SYSMAP RELEASE < <(PYTHONPATH=tests "$PY" -c '
import sys, dumps
name = sys.argv[1]
k = dumps.kernel_dir(name)
print(dumps.dump_path(name), dumps.vmlinux_path(k), k / "System.map", k.name)' "$DUMP_NAME")
mkdir -p symbols/linux samples
ktstr-isf "$VMLINUX" --system-map "$SYSMAP" -o "symbols/linux/$RELEASE.json.xz"
# Plugin code is snapshotted: others may edit the tree during the ~10 minutes this takes.
SNAP=$(mktemp -d)
trap 'rm -rf "$SNAP"' EXIT
cp -r volatility3_ktstr "$SNAP/"
# (ktstr-minimize's vol runs find the snapshot's plugins themselves: no -p needed.)
PYTHONPATH="$SNAP" "$PY" -m volatility3_ktstr.minimize "$DUMP" -s symbols \
  --plugin linux.pslist --all-ktstr \
  -o "samples/$NAME.elf.xz" --expected "samples/$NAME.expected.json.xz" \
  --manifest "samples/$NAME.json" "$@"
ls -l samples symbols/linux
