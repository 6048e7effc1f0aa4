"""Processes holding BPF objects: every fd whose file is a BPF map, program, link or BTF object.

A BPF fd is an anonymous-inode file whose ``f_op`` is one of the kernel's ``bpf_map_fops``,
``bpf_prog_fops``, ``bpf_link_fops`` / ``bpf_link_fops_poll`` or ``btf_fops`` (compared by
address, never by the file's name); ``file->private_data`` is the object (``struct bpf_map``,
``struct bpf_prog``, ``struct bpf_link``, ``struct btf``). Perf event files (``perf_fops``) are
returned too when asked: their ``perf_event`` may carry a program attached without a link.
This is what ``bpftool ... show`` prints as ``pids``. No Volatility import.
"""

from dataclasses import dataclass

from ..core import ReadError, Record
from ..kds import DamageLog
from ..walkers import tasks as taskwalk

FOPS = (("bpf_map_fops", "map"), ("bpf_prog_fops", "prog"), ("bpf_link_fops", "link"),
        ("bpf_link_fops_poll", "link"), ("btf_fops", "btf"))
PERF_FOPS = "perf_fops"


@dataclass
class BpfFd:
    pid: int             # tgid of the process
    comm: str            # the process's (leader's) comm
    fd: int
    kind: str            # map, prog, link, btf (perf: a perf_event file)
    obj: int             # file->private_data
    file: int
    task: int
    via: str = ""        # set for a process found off the task list (the lists it is on)


def socket_kinds(kernel):
    """{f_op address: "socket"}: socket files (``socket_file_ops``; private_data: struct socket)."""
    a = kernel.symbol("socket_file_ops")
    return {a: "socket"} if a else {}


def fops_kinds(kernel, perf=False):
    """{f_op address: kind} of this kernel (kinds whose symbol is missing are left out)."""
    out = {}
    for sym, kind in FOPS:
        a = kernel.symbol(sym)
        if a:
            out[a] = kind
    if perf:
        a = kernel.symbol(PERF_FOPS)
        if a:
            out[a] = "perf"
    return out


def bpf_fds(kernel, init_task, damage=None, perf=False, kinds=None):
    """:class:`BpfFd` of every process's BPF fds (and perf event fds with ``perf``), pid order
    as on the task list, fd order within a process. ``kinds``: {f_op address: kind} to look
    for instead (sockets: :func:`socket_kinds`)."""
    damage = damage if damage is not None else DamageLog()
    reader, layout = kernel.reader, kernel.layout
    kinds = kinds if kinds is not None else fops_kinds(kernel, perf)
    if not kinds:
        return
    tables = {}   # files_struct -> [(fd, kind, object, file)]: kernel threads share init_files
    for task in taskwalk.processes(reader, layout, init_task, damage):
        files = task.files
        if not files:
            # An exited leader keeps its pid; the threads still share one files_struct.
            files = next((t.files for t in taskwalk.threads(reader, layout, task, damage) if t.files), 0)
        if not files:
            continue
        if files not in tables:
            tables[files] = list(_bpf_files(reader, layout, files, kinds, task.tgid, damage))
        for fd, kind, obj, file in tables[files]:
            yield BpfFd(task.tgid, task.comm, fd, kind, obj, file, task.kva)


def bpf_fds_of_tasks(kernel, tasks, seen_files=(), damage=None, perf=False, kinds=None):
    """:class:`BpfFd` of processes the task list did not give (``tasks``: (Task, via text)
    pairs from the other task lists); fd tables in ``seen_files`` were read already."""
    damage = damage if damage is not None else DamageLog()
    kinds = kinds if kinds is not None else fops_kinds(kernel, perf)
    if not kinds:
        return
    seen = set(seen_files)
    for task, via in tasks:
        if not task.files or task.files in seen:
            continue
        seen.add(task.files)
        for fd, kind, obj, file in _bpf_files(kernel.reader, kernel.layout, task.files, kinds,
                                              task.tgid, damage):
            yield BpfFd(task.tgid, task.comm, fd, kind, obj, file, task.kva, via)


def _bpf_files(reader, layout, files, kinds, pid, damage):
    """(fd, kind, object, file) of the BPF files of one ``files_struct``."""
    for fd, file in taskwalk.fd_files(reader, layout, files, damage):
        try:
            r = Record(reader, layout, "file", file, ("f_op", "private_data"))
        except ReadError as e:
            damage.add("struct file", file, f"fd {fd} of pid {pid} unreadable ({e.reason})")
            continue
        kind = kinds.get(r.int("f_op"))
        if kind is not None:
            yield fd, kind, r.int("private_data"), file


def object_id(kernel, kind, kva):
    """(id, name, type name) of a BPF object by kind and address; id -1 when unreadable."""
    reader, layout = kernel.reader, kernel.layout
    try:
        if kind == "map":
            m = kernel.map_by_kva.get(kva)
            if m is not None:
                return m.id, m.name, m.type_name
            r = Record(reader, layout, "bpf_map", kva, ("id", "name", "map_type"))
            return r.int("id"), r.str("name"), kernel.map_type_names.get(r.int("map_type"), "?")
        if kind == "prog":
            p = kernel.prog_by_kva.get(kva)
            if p is not None:
                return p.id, p.name, p.type_name
            r = Record(reader, layout, "bpf_prog", kva, ("aux", "type"))
            aux = Record(reader, layout, "bpf_prog_aux", r.int("aux"), ("id", "name"))
            return aux.int("id"), aux.str("name"), kernel.prog_type_names.get(r.int("type"), "?")
        if kind == "link":
            r = Record(reader, layout, "bpf_link", kva, ("id", "type"))
            names = kernel.link_type_names()
            return r.int("id"), "", names.get(r.int("type"), f"type {r.int('type')}")
        if kind == "btf":
            r = Record(reader, layout, "btf", kva, ("id", "name"))
            return r.int("id"), r.str("name", ""), "btf"
    except ReadError:
        pass
    return -1, "", "?"
