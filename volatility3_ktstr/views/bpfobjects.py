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
    """([BpfFd] incl. perf event files, DamageLog) of every process of any task list (empty
    without init_task); a process missing from ``init_task.tasks`` has ``via`` saying so."""

    def scan():
        damage = DamageLog()
        init_task = kctx.symbol("init_task")
        if init_task is None or not kctx.layout.has("files_struct"):
            return [], damage
        fds = list(bpffds.bpf_fds(kctx.bpf_kernel(), init_task, damage, perf=True))
        # a loader unlinked from init_task.tasks (or behind a damaged part of it) still holds
        # its fds: the processes the other task lists know are read too, and named so
        fds += _off_list_fds(kctx, fds, damage)
        return fds, damage

    return _memo(kctx, "fds", scan)


def socket_scan(kctx):
    """([BpfFd] of kind socket (obj: struct socket), DamageLog) of every process any task list
    knows."""

    def scan():
        damage = DamageLog()
        init_task = kctx.symbol("init_task")
        kinds = bpffds.socket_kinds(kctx)
        if init_task is None or not kinds or not kctx.layout.has("files_struct"):
            return [], damage
        fds = list(bpffds.bpf_fds(kctx.bpf_kernel(), init_task, damage, kinds=kinds))
        fds += _off_list_fds(kctx, fds, damage, kinds)
        return fds, damage

    return _memo(kctx, "sockets", scan)


def _off_list_fds(kctx, fds, damage, kinds=None):
    """The BPF fds of processes the damaged task list did not reach but the other task lists
    (pid IDR, scx_tasks, cgroups, runqueues) did."""
    from ..core import ReadError
    from ..walkers import tasks as taskwalk
    from . import inventory

    lists = inventory.tasks(kctx)
    seen_tasks = {f.task for f in fds}
    extra = []
    for t in lists.by_kva.values():
        if "tasks" in t.found_in or t.kva in seen_tasks or t.pid <= 0:
            continue
        try:
            task = taskwalk.read_task(kctx.reader, kctx.layout, t.kva)
        except ReadError as e:
            damage.add("task_struct", t.kva, f"found in {', '.join(t.found_in)}, unreadable ({e.reason})")
            continue
        if task is not None and task.pid == task.tgid:
            extra.append((task, "not on init_task.tasks; found in " + ", ".join(t.found_in)))
    files = set()
    try:
        for f in fds:
            files.add(kctx.reader.ptr(f.task + kctx.layout.offset("task_struct", "files")))
    except ReadError:
        pass
    return list(bpffds.bpf_fds_of_tasks(kctx.bpf_kernel(), extra, files, damage, perf=True, kinds=kinds))


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
