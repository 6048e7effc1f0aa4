"""Renderer throughput (values/s) on a real program BTF.

    python bench/render_bench.py --dump ~/.cache/ktstr-dumps/x86_64/scx_sdt/dump.raw -s /tmp/syms
    python bench/render_bench.py --btf prog.btf [--base vmlinux.btf]

With ``--dump`` the scheduler's BTF (the BTF of the first map that has one) and its map values
are read out of the dump in-process; with ``--btf`` every struct of the BTF is rendered from
pseudo-random bytes. Prints one line per case: values/s, µs/value, and the first-render
(compile) cost.
"""

import argparse
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from volatility3_ktstr.btf import Btf, Kind  # noqa: E402
from volatility3_ktstr.render import render, render_text  # noqa: E402
from volatility3_ktstr.render.plan import compiler_for  # noqa: E402


def kernel_context(dump, symbol_dirs):
    """A KernelContext over ``dump`` built in-process (what `vol` does for a plugin)."""
    import volatility3.plugins
    import volatility3.symbols
    from volatility3 import framework
    from volatility3.framework import automagic, contexts, interfaces, plugins

    from volatility3_ktstr.kernel import KernelContext

    plugin_dir = str(REPO / "volatility3_ktstr" / "plugins")
    if plugin_dir not in volatility3.plugins.__path__:
        volatility3.plugins.__path__.append(plugin_dir)
    for d in reversed(symbol_dirs):
        volatility3.symbols.__path__.insert(0, d)
    framework.import_files(volatility3.plugins, True)
    cls = next(c for c in framework.class_subclasses(interfaces.plugins.PluginInterface)
               if c.__module__.endswith("ktstr.maps"))
    ctx = contexts.Context()
    ctx.config["automagic.LayerStacker.single_location"] = Path(dump).resolve().as_uri()
    ams = automagic.choose_automagic(automagic.available(ctx), cls)
    plugin = plugins.construct_plugin(ctx, ams, cls, "plugins", None, None)
    return KernelContext.from_plugin(plugin)


def cases_from_dump(dump, symbol_dirs):
    from volatility3_ktstr import plugin_support as ps
    from volatility3_ktstr.bpf import values

    kctx = kernel_context(dump, symbol_dirs)
    cases = []
    for m in kctx.maps():
        if m.error or not m.btf_kva or not m.btf_value_type_id:
            continue
        try:
            btf = kctx.btf_at(m.btf_kva)
        except Exception as e:
            print(f"map {m.id} {m.name}: {e}", file=sys.stderr)
            continue
        try:
            entries = values.iter_entries(kctx.reader, kctx.layout, m, kctx.per_cpu_offsets(), limit=64)
            for entry in entries:
                value = entry.value if entry.value is not None else (entry.percpu or [(0, None)])[0][1]
                if value is not None:
                    cases.append((f"map {m.id} {m.name}", btf, m.btf_value_type_id, value))
                    break
        except values.ValueError_:
            continue
    return cases


def cases_from_btf(path, base_path=None, limit=200):
    base = Btf.parse(Path(base_path).read_bytes()) if base_path else None
    btf = Btf.parse(Path(path).read_bytes(), base=base)
    rng = random.Random(1)
    structs = [t for t in btf.own_types if t.kind in (Kind.STRUCT, Kind.DATASEC) and 0 < btf.size_of(t.id) <= 1 << 16]
    structs.sort(key=lambda t: -len(t.members or t.vars))
    return [(f"{Kind(t.kind).name.lower()} {t.name}", btf, t.id, rng.randbytes(btf.size_of(t.id)))
            for t in structs[:limit]]


def bench(cases, seconds):
    total_n = 0
    total_t = 0.0
    for label, btf, tid, data in cases:
        t0 = time.perf_counter()
        render(btf, tid, data)
        first = time.perf_counter() - t0
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while True:
            for _ in range(50):
                render(btf, tid, data)
            n += 50
            now = time.perf_counter()
            if now >= deadline:
                break
        dt = now - t0
        total_n += n
        total_t += dt
        print(f"{label:40s} {len(data):6d} B  {n / dt:10.0f} values/s  {1e6 * dt / n:8.1f} µs/value  "
              f"first {1e3 * first:6.2f} ms")
    if total_t:
        print(f"{'all':40s} {'':8s} {total_n / total_t:10.0f} values/s (mean over cases)")
    # Text form cost on the last case, for reference.
    if cases:
        label, btf, tid, data = cases[-1]
        v = render(btf, tid, data)
        t0 = time.perf_counter()
        for _ in range(200):
            render_text(v)
        print(f"render_text {label}: {(time.perf_counter() - t0) / 200 * 1e6:.1f} µs")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dump")
    ap.add_argument("-s", "--symbols", action="append", default=[])
    ap.add_argument("--btf")
    ap.add_argument("--base")
    ap.add_argument("--seconds", type=float, default=0.3)
    args = ap.parse_args(argv)
    if args.dump:
        cases = cases_from_dump(os.path.expanduser(args.dump), args.symbols)
    elif args.btf:
        cases = cases_from_btf(args.btf, args.base)
    else:
        ap.error("need --dump or --btf")
    if not cases:
        print("nothing to render", file=sys.stderr)
        return 1
    bench(cases, args.seconds)
    n_plans = sum(len(compiler_for(b).plans) for b in {id(c[1]): c[1] for c in cases}.values())
    print(f"compiled plans: {n_plans}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
