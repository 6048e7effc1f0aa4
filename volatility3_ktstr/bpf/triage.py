"""Rootkit triage of BPF programs and of the kernel tables a BPF rootkit leans on.

Per program, :func:`program_flags` gives (flag, severity, reason) for:

- dangerous helpers and kfuncs (decoded from the xlated instructions, ``bpf.insns``): writing
  user memory, overriding a kernel function's return value, sending signals, reading other
  tasks' memory (``copy_from_user_task`` and kin; ``probe_read_user`` and kin in a program on a
  hook, where the current task is whichever process hits it), resolving paths (``d_path``),
  calling ``bpf()`` from BPF (``sys_bpf``)...;
- sensitive attach targets (from the hook rows): syscall entry/exit and syscall
  implementations, directory listing, ``kill``, ``bpf``, ``/proc/net`` socket listings, LSM
  hooks, the network data path (netfilter, tc/tcx, XDP, sk_lookup, sockmap verdicts), user
  probes on authentication code;
- how it is held: hidden from ``prog_idr``, or held by no process, pin or held map;
- what its loader stripped: no BTF, no func_info.

:func:`table_findings` checks the syscall tables (every entry in kernel text) and the ftrace ops
list (every handler and direct call in kernel text; a direct call into a BPF trampoline is
named). No Volatility import.
"""

import re
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from ..core import ReadError, Record
from ..kds import DamageLog, follow, list_entries

HIGH, MEDIUM, LOW, INFO = "high", "medium", "low", "info"

# helper name (BPF_FUNC_ spelling) -> (severity, why it matters)
DANGEROUS_HELPERS: Dict[str, Tuple[str, str]] = {
    "probe_write_user": (HIGH, "writes user memory of the running process"),
    "override_return": (HIGH, "overrides a kernel function's return value"),
    "send_signal": (HIGH, "sends a signal to the running process"),
    "send_signal_thread": (HIGH, "sends a signal to the running thread"),
    "sys_bpf": (HIGH, "calls bpf() from BPF (loads or changes BPF objects)"),
    "sys_close": (MEDIUM, "closes file descriptors from BPF"),
    "kallsyms_lookup_name": (MEDIUM, "looks up kernel symbols from BPF"),
    "copy_from_user_task": (HIGH, "reads another task's user memory"),
    "access_process_vm": (HIGH, "reads another process's memory"),
    "d_path": (MEDIUM, "resolves file paths (file-hiding and exfiltration logic)"),
    "probe_read_user": (LOW, "reads user memory"),
    "probe_read_user_str": (LOW, "reads user strings"),
    "skb_store_bytes": (LOW, "rewrites packet bytes"),
    "set_retval": (MEDIUM, "changes the return value a hooked syscall gives"),
    "sk_assign": (MEDIUM, "steers packets to a chosen socket"),
    "sk_redirect_map": (LOW, "redirects socket data"),
    "msg_redirect_map": (LOW, "redirects socket messages"),
}

DANGEROUS_KFUNCS: Dict[str, Tuple[str, str]] = {
    "bpf_send_signal_task": (HIGH, "sends a signal to any task"),
    "bpf_copy_from_user_task_str": (HIGH, "reads another task's user strings"),
    "bpf_probe_write_user": (HIGH, "writes user memory"),
    "bpf_set_dentry_xattr": (MEDIUM, "sets file extended attributes"),
    "bpf_remove_dentry_xattr": (MEDIUM, "removes file extended attributes"),
    "bpf_path_d_path": (MEDIUM, "resolves file paths"),
    "bpf_get_file_xattr": (LOW, "reads file extended attributes"),
    "bpf_copy_from_user_task_dynptr": (HIGH, "reads another task's user memory"),
    "bpf_copy_from_user_task_str_dynptr": (HIGH, "reads another task's user strings"),
    "bpf_probe_read_user_dynptr": (LOW, "reads user memory"),
    "bpf_probe_read_user_str_dynptr": (LOW, "reads user strings"),
    "bpf_copy_from_user_dynptr": (LOW, "reads user memory"),
    "bpf_copy_from_user_str_dynptr": (LOW, "reads user strings"),
    "bpf_copy_from_user_str": (LOW, "reads user strings"),
}

# reads of the *current* task's user memory: on a hook, the current task is whichever process
# hits it, so an attached program reads other processes' memory (syscall buffers, arguments)
USER_READS = {"probe_read_user", "probe_read_user_str", "bpf_probe_read_user_dynptr",
              "bpf_probe_read_user_str_dynptr", "bpf_copy_from_user_dynptr",
              "bpf_copy_from_user_str_dynptr", "bpf_copy_from_user_str"}

# (pattern on the hooked function or tracepoint name, severity, reason)
SENSITIVE_FUNCS: List[Tuple[str, str, str]] = [
    (r"(^|_)sys_(enter|exit)(_|$)", HIGH, "the syscall entry/exit tracepoints"),
    (r"getdents|filldir|iterate_dir|readdir", HIGH, "directory listing (file hiding)"),
    (r"(^|_)(sys_)?kill$|do_send_sig_info|group_send_sig_info|kill_pid", HIGH, "signal delivery (kill)"),
    (r"(^|_)sys_bpf$|^bpf_prog_load|^bpf_check$|bpf_sys_bpf", HIGH, "the bpf() syscall (hiding BPF objects)"),
    (r"tcp[46]?_seq_show|udp[46]?_seq_show|raw_seq_show|packet_seq_show|unix_seq_show", HIGH,
     "/proc/net socket listing (connection hiding)"),
    (r"^(__x64_|__ia32_|__arm64_|__se_|__do_)?sys_|^do_sys_|^ksys_", MEDIUM, "a syscall implementation"),
    (r"^(security|bpf_lsm)_", MEDIUM, "an LSM hook"),
    (r"^vfs_(read|write|open)|^do_filp_open|^(do_)?sys_open", MEDIUM, "file I/O path"),
    (r"^(commit_creds|prepare_creds|__sys_setuid|cap_capable)", HIGH, "credential handling"),
    (r"^(load_module|do_init_module|init_module|finit_module)", HIGH, "module loading"),
]

USER_PATHS = re.compile(r"(ssh|pam|sudo|login|passwd|shadow|libcrypt|libssl|gnutls)", re.I)

NETWORK_HOOKS = {"xdp": (HIGH, "XDP on an interface (sees and can drop or rewrite every packet)"),
                 "tcx": (MEDIUM, "tc on an interface (sees and can rewrite traffic)"),
                 "tc": (MEDIUM, "tc on an interface (sees and can rewrite traffic)"),
                 "netfilter": (MEDIUM, "a netfilter hook (filters or rewrites traffic)")}
NETNS_ATTACH = {"sk_lookup": (MEDIUM, "steers incoming connections to a chosen socket")}


@dataclass
class Flag:
    flag: str
    severity: str
    reason: str
    evidence: str = ""


def call_flags(helpers: Iterable[str], kfuncs: Iterable[str], attached: Iterable[str] = ()) -> List[Flag]:
    """Flags of the helpers and kfuncs a program calls; ``attached``: where it runs (hook
    targets), which makes a read of the current task's user memory a read of other processes'."""
    attached = list(attached)
    where = attached[0] + (f" (+{len(attached) - 1} more)" if len(attached) > 1 else "") if attached else ""
    out = []
    for kind, names, table in (("helper", helpers, DANGEROUS_HELPERS), ("kfunc", kfuncs, DANGEROUS_KFUNCS)):
        for name in names:
            hit = table.get(name)
            if not hit:
                continue
            called = f"calls bpf_{name}" if kind == "helper" else f"calls {name}"
            if name in USER_READS and where:
                out.append(Flag(f"{kind}:{name}", MEDIUM, "reads the user memory of whichever process "
                                "hits its hook (other processes', not only its loader's)",
                                f"{called} on {where}"))
            else:
                out.append(Flag(f"{kind}:{name}", hit[0], hit[1], called))
    return out


def target_flags(hook: str, target: str, attach_type: str) -> List[Flag]:
    """Flags of one attachment (a bpfhooks row: hook kind, target, attach type)."""
    where = f"{hook} {target} ({attach_type})" if attach_type else f"{hook} {target}"
    if hook in NETWORK_HOOKS:
        sev, why = NETWORK_HOOKS[hook]
        return [Flag(f"target:{hook}", sev, why, where)]
    if hook == "netns" and attach_type in NETNS_ATTACH:
        sev, why = NETNS_ATTACH[attach_type]
        return [Flag(f"target:{attach_type}", sev, why, where)]
    if hook == "sockmap" and "verdict" in attach_type:
        return [Flag("target:sockmap", LOW, "decides the fate of socket data (sockmap verdict)", where)]
    if hook in ("uprobe", "uretprobe"):
        path = target.rsplit("+", 1)[0]
        if USER_PATHS.search(path.rsplit("/", 1)[-1]):
            return [Flag(f"target:{hook}", HIGH, "probes authentication or crypto code in user space",
                         where)]
        return []
    if hook == "cgroup" and attach_type.startswith("lsm_cgroup"):
        return [Flag("target:lsm", MEDIUM, "an LSM hook (per cgroup)", where)]
    if hook == "none" or hook == "tail_call" or hook == "struct_ops":
        return []
    name = target
    if hook in ("kprobe", "kretprobe"):
        name = target.split("+", 1)[0]
    for pattern, sev, why in SENSITIVE_FUNCS:
        if re.search(pattern, name):
            return [Flag(f"target:{hook}", sev, f"on {why}", where)]
    return []


# --- kernel tables ----------------------------------------------------------------------------

SYSCALL_TABLES = ("sys_call_table", "ia32_sys_call_table", "x32_sys_call_table", "compat_sys_call_table")
MAX_SYSCALLS = 2048
MAX_FTRACE_OPS = 1 << 12
MAX_KSYMS = 1 << 17


@dataclass
class TableFinding:
    table: str              # sys_call_table, ftrace_ops_list, ...
    index: int              # syscall number / position on the list
    address: int            # the entry's value
    severity: str
    reason: str
    symbol: str = ""


def bpf_code_ranges(kernel, damage: Optional[DamageLog] = None) -> List[Tuple[int, int, str]]:
    """(start, end, name) of every JIT image on ``bpf_kallsyms`` (programs, trampolines,
    dispatchers)."""
    reader, layout = kernel.reader, kernel.layout
    head = kernel.symbol("bpf_kallsyms")
    if not head or not layout.has("bpf_ksym", "lnode"):
        return []
    out = []
    for ksym in list_entries(reader, layout, head, "bpf_ksym", "lnode", limit=MAX_KSYMS,
                             damage=damage, what="bpf_ksym (bpf_kallsyms)"):
        try:
            r = Record(reader, layout, "bpf_ksym", ksym, ("start", "end", "name"))
        except ReadError:
            continue
        out.append((r.int("start"), r.int("end"), r.str("name")))
    return out


class CodeMap:
    """Where a code address lies: kernel text, a BPF image, elsewhere."""

    def __init__(self, kernel, damage: Optional[DamageLog] = None) -> None:
        self.k = kernel
        self.text = (kernel.symbol("_stext") or kernel.symbol("_text") or 0, kernel.symbol("_etext") or 0)
        self.bpf = bpf_code_ranges(kernel, damage)

    def in_text(self, addr: int) -> bool:
        lo, hi = self.text
        return bool(lo and hi and lo <= addr < hi)

    def bpf_image(self, addr: int) -> Optional[str]:
        for start, end, name in self.bpf:
            if start <= addr < end:
                return name
        return None

    def judge(self, addr: int) -> Optional[Tuple[str, str]]:
        """(severity, reason) when ``addr`` is not in kernel text, else None."""
        if self.in_text(addr):
            return None
        img = self.bpf_image(addr)
        if img:
            return HIGH, f"points into BPF code ({img})"
        return HIGH, "points outside the kernel text"


def _kernel_pointer(value: int, ps: int) -> bool:
    """A pointer into the kernel half of the address space (top 16 bits all set on 64-bit)."""
    return value >> (8 * ps - 16) == 0xFFFF if ps == 8 else value >= 0xC0000000


def syscall_findings(kernel, code: CodeMap, damage: DamageLog) -> Tuple[int, List[TableFinding]]:
    """(entries checked, findings) over the kernel's syscall tables. A table's length is the
    distance to the next symbol, which may overshoot when that symbol is missing from the
    symbol table: trailing words that are not kernel pointers (string bytes) end it. NULL
    entries are what a page missing from the dump reads as: counted in ``damage``, not judged."""
    checked, out = 0, []
    if not all(code.text):
        damage.add("kernel text", 0, "_stext/_etext not in the symbol table: syscall tables not checked")
        return 0, out
    ps = kernel.reader.pointer_size
    for table in SYSCALL_TABLES:
        addr = kernel.symbol(table)
        if not addr:
            continue
        n = min(kernel.symbol_size(table) // ps, MAX_SYSCALLS)
        raw = kernel.reader.try_read(addr, n * ps)
        if raw is None:
            damage.add(table, addr, "unreadable: not checked")
            continue
        entries = [int.from_bytes(raw[i * ps:(i + 1) * ps], "little") for i in range(n)]
        while entries and entries[-1] and not _kernel_pointer(entries[-1], ps):
            entries.pop()
        zero = 0
        for i, entry in enumerate(entries):
            if not entry:
                zero += 1
                continue
            checked += 1
            bad = code.judge(entry)
            if bad:
                out.append(TableFinding(table, i, entry, bad[0], bad[1], kernel.symbol_near(entry)))
        if zero:
            damage.add(table, addr, f"{zero} entries read as NULL (pages missing from the dump, "
                                    "or cleared): not judged")
    return checked, out


def ftrace_findings(kernel, code: CodeMap, damage: DamageLog) -> Tuple[int, List[TableFinding]]:
    """(ops checked, findings) over ``ftrace_ops_list``: each ops' ``func`` must be kernel text;
    a ``direct_call`` (a BPF trampoline for fentry/fexit) is named."""
    reader, layout = kernel.reader, kernel.layout
    first_sym = kernel.symbol("ftrace_ops_list")
    end = kernel.symbol("ftrace_list_end")
    if not first_sym or not end or not layout.has("ftrace_ops", "next") or not all(code.text):
        return 0, []
    try:
        first = reader.ptr(first_sym)
    except ReadError as e:
        damage.add("ftrace_ops_list", first_sym, f"unreadable ({e.reason})")
        return 0, []
    checked, out = 0, []
    paths = tuple(p for p in ("func", "direct_call") if layout.has("ftrace_ops", p))
    for i, ops in enumerate(follow(reader, first, layout.offset("ftrace_ops", "next"),
                                   lambda a: a == 0 or a == end, limit=MAX_FTRACE_OPS,
                                   damage=damage, what="ftrace_ops")):
        try:
            r = Record(reader, layout, "ftrace_ops", ops, paths)
        except ReadError as e:
            damage.add("ftrace_ops", ops, f"unreadable ({e.reason})")
            continue
        checked += 1
        func = r.int("func")
        bad = code.judge(func)
        if bad:
            out.append(TableFinding("ftrace_ops_list", i, func, bad[0], f"ftrace ops {ops:#x}: handler "
                                    + bad[1], kernel.symbol_near(func)))
        direct = r.int("direct_call", 0)
        if direct and not code.in_text(direct):
            img = code.bpf_image(direct)
            if img:
                out.append(TableFinding("ftrace_ops_list", i, direct, INFO,
                                        f"ftrace ops {ops:#x}: direct call into BPF trampoline {img} "
                                        "(fentry/fexit/LSM programs run there)", img))
            else:
                out.append(TableFinding("ftrace_ops_list", i, direct, HIGH,
                                        f"ftrace ops {ops:#x}: direct call outside kernel text and BPF code",
                                        kernel.symbol_near(direct)))
    return checked, out


def held_programs(progs: Iterable, fds: Iterable, pins: Iterable, links: Iterable,
                  attachments: Iterable, perf_progs: Dict[int, int], rounds: int = 4) -> Dict[int, str]:
    """{program address: what holds it} of the programs a live process or bpffs holds: an fd
    or pin on it or on one of its links, a perf event fd running it, or a held map holding it
    (prog_array slot, struct_ops, sockmap), a map being held when an fd or pin is on it or a
    held program uses it."""
    held: Dict[int, str] = {}
    held_maps: Dict[int, str] = {}
    links = list(links)
    link_prog = {link.kva: link.prog_kva for link in links}
    link_maps = {link.kva: list(link.maps) for link in links}
    # each holder (an fd, a pin) as (kind, object, how it is named)
    holders = [(f.kind, f.obj, f"fd {f.fd} of pid {f.pid} ({f.comm})") for f in fds]
    holders += [(p.kind, p.obj, f"pin {p.path}") for p in pins]
    for kind, obj, how in holders:
        if kind == "prog":
            held.setdefault(obj, how)
        elif kind == "link":
            if link_prog.get(obj):
                held.setdefault(link_prog[obj], f"link {how}")
            for m in link_maps.get(obj, ()):
                held_maps.setdefault(m, f"link {how}")
        elif kind == "map":
            held_maps.setdefault(obj, how)
        elif kind == "perf" and perf_progs.get(obj):
            held.setdefault(perf_progs[obj], f"perf {how}")
    by_kva = {p.kva: p for p in progs}
    attachments = [a for a in attachments if a.map_kva]
    for _ in range(rounds):
        before = (len(held), len(held_maps))
        for kva in list(held):
            p = by_kva.get(kva)
            for m in (p.used_map_kvas if p is not None else ()):
                held_maps.setdefault(m, f"used by held program {p.id}")
        for a in attachments:
            if a.map_kva in held_maps and a.prog_kva:
                held.setdefault(a.prog_kva, f"{a.hook} map held ({held_maps[a.map_kva]})")
        if (len(held), len(held_maps)) == before:
            break
    return held


def lines(findings: Iterable[TableFinding]) -> Iterator[str]:
    for f in findings:
        yield f"{f.table}[{f.index}] = {f.address:#x} ({f.symbol}): {f.reason}"
