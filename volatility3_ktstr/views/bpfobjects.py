"""What the BPF forensics views share: who holds each BPF object (fds) and where it is pinned.

Built once per kernel (``kernel_model.Kernel``) and kept in its memo, so ``links``, ``progs``,
``bpffds``, ``bpfpins`` and ``bpfhidden`` walk the task list and bpffs once per run. No
Volatility import.
"""

import json
from typing import Any, Dict, List

from ..bpf import bpffs
from ..bpf import fds as bpffds
from ..errors import KtstrError
from ..kds import DamageLog
from . import Kernel


def _memo(kctx, key, fn):
    return kctx.memo(("bpfobjects", key), fn)


def fd_scan(kctx):
    """([BpfFd] incl. perf event files, DamageLog) of every process (empty without init_task)."""

    def scan():
        damage = DamageLog()
        init_task = kctx.symbol("init_task")
        if init_task is None or not kctx.layout.has("files_struct"):
            return [], damage
        return list(bpffds.bpf_fds(kctx.bpf_kernel(), init_task, damage, perf=True)), damage

    return _memo(kctx, "fds", scan)


def pin_scan(kctx):
    """([Pin], DamageLog) of every bpffs instance."""

    def scan():
        damage = DamageLog()
        try:
            return list(bpffs.pins(kctx.bpf_kernel(), damage)), damage
        except KtstrError:
            return [], damage

    return _memo(kctx, "pins", scan)


def holders(kctx):
    """{(kind, object address): [BpfFd]} of every BPF fd."""

    def build():
        out = {}
        for f in fd_scan(kctx)[0]:
            out.setdefault((f.kind, f.obj), []).append(f)
        return out

    return _memo(kctx, "holders", build)


def pinned(kctx):
    """{(kind, object address): [Pin]}."""

    def build():
        out = {}
        for p in pin_scan(kctx)[0]:
            out.setdefault((p.kind, p.obj), []).append(p)
        return out

    return _memo(kctx, "pinned", build)


def pids_of(kctx: Kernel, kind: str, kva: int) -> List[Dict[str, Any]]:
    """bpftool's ``pids``: one {pid, comm} per process holding an fd on the object."""
    seen, out = set(), []
    for f in holders(kctx).get((kind, kva), ()):
        if f.pid not in seen:
            seen.add(f.pid)
            out.append({"pid": f.pid, "comm": f.comm})
    return out


def pids_text(pids: List[Dict[str, Any]]) -> str:
    return ",".join(f"{p['pid']}:{p['comm']}" for p in pids)


def pins_of(kctx: Kernel, kind: str, kva: int) -> List[str]:
    return [p.path for p in pinned(kctx).get((kind, kva), ())]


def to_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
