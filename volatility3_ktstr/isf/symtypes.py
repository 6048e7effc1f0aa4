"""Types of kernel global symbols, without DWARF.

System.map and kallsyms give a symbol's address only; Volatility's plugins read most globals
with ``object_from_symbol``, which needs the symbol's type. Each typed symbol records where its
type came from (the ISF's ``metadata.producer.symbol_type_sources``: name -> source tag):

``btf-var <section>``
    a BTF_KIND_VAR in a BTF DATASEC: the declared type, exactly. Per-CPU variables always
    (``.data..percpu``); every global with pahole's ``global_var`` encoding (then symbols absent
    from the symbol file get the address of their section, placed by the section's other
    variables).
``table``
    :data:`DECLARED`: the globals Volatility's own Linux plugins (and ours) read, each with its
    declaration in the kernel source.
``section <name>``
    ``__start_<name>`` / ``__stop_<name>``, the linker's bounds of a section whose element type
    the kernel declares (:data:`SECTION_ELEMENTS`): an array of the elements from start to stop
    (the stop marker an empty array, as dwarf2json writes ``extern T x[]``).
``pattern <prefix>*``
    names a kernel macro makes, so the name says the type (:data:`NAME_PATTERNS`): e.g.
    DEFINE_TRACE makes ``__tracepoint_<event>``, a ``struct tracepoint``.
``alias <expression>``
    a name the kernel keeps as a macro over another global (:data:`ALIASES`), added as a symbol
    so plugins written against the older kernel find it (``tk_core`` is
    ``timekeeper_data[TIMEKEEPER_CORE]`` since 6.16).

A type is only given when BTF defines it and the symbol has room for it: the distance to the
next symbol (its *extent*) must be at least the type's size, so a name that does not mean
what the rule says keeps dwarf2json's ``void``. Array counts come from the extent (``T x[]``
and ``T x[N]`` alike; the extent may include alignment padding before the next symbol).
No Volatility import.
"""

import re
from typing import Dict, Iterator, Optional, Tuple

from ..btf import Kind

# name -> (C type, where the kernel declares it). "T[]": an array, count from the extent.
DECLARED: Dict[str, Tuple[str, str]] = {
    # processes, memory, namespaces
    "init_task": ("struct task_struct", "init/init_task.c"),
    "init_mm": ("struct mm_struct", "mm/init-mm.c"),
    "init_files": ("struct files_struct", "fs/file.c"),
    "init_fs": ("struct fs_struct", "fs/fs_struct.c"),
    "init_nsproxy": ("struct nsproxy", "kernel/nsproxy.c"),
    "init_pid_ns": ("struct pid_namespace", "kernel/pid.c"),
    "init_uts_ns": ("struct uts_namespace", "init/version.c"),
    "init_net": ("struct net", "net/core/net_namespace.c"),
    "init_cred": ("struct cred", "kernel/cred.c"),
    "init_css_set": ("struct css_set", "kernel/cgroup/cgroup.c"),
    "mem_section": ("struct mem_section **", "mm/sparse.c"),
    "node_data": ("struct pglist_data *[]", "arch/*/mm/numa.c"),
    "mem_map": ("struct page *", "mm/mm_init.c (flat memory)"),
    "__per_cpu_offset": ("long unsigned int[]", "arch/*/kernel/setup_percpu.c"),
    "page_offset_base": ("long unsigned int", "arch/x86/kernel/head64.c"),
    "vmemmap_base": ("long unsigned int", "arch/x86/kernel/head64.c"),
    "vmalloc_base": ("long unsigned int", "arch/x86/kernel/head64.c"),
    "phys_base": ("long unsigned int", "arch/x86/kernel/head64.c"),
    "kimage_voffset": ("u64", "arch/arm64/mm/mmu.c"),
    "memstart_addr": ("s64", "arch/arm64/mm/init.c"),
    "max_pfn": ("long unsigned int", "mm/memblock.c"),
    "__pgtable_l5_enabled": ("unsigned int", "arch/x86/kernel/head64.c"),
    "pgdir_shift": ("unsigned int", "arch/x86/kernel/head64.c"),
    "ptrs_per_p4d": ("unsigned int", "arch/x86/kernel/head64.c"),
    "nr_cpu_ids": ("unsigned int", "kernel/smp.c"),
    "nr_threads": ("int", "kernel/fork.c"),
    "cap_last_cap": ("const int", "kernel/capability.c"),
    "jiffies": ("long unsigned int", "kernel/time/timer.c (linker alias of jiffies_64)"),
    "jiffies_64": ("u64", "kernel/time/timer.c"),
    "iomem_resource": ("struct resource", "kernel/resource.c"),
    "taint_flags": ("const struct taint_flag[]", "kernel/panic.c"),
    # modules, kallsyms, tracing (linux.lsmod, linux.kallsyms, linux.tracing.*)
    "modules": ("struct list_head", "kernel/module/main.c"),
    "module_kset": ("struct kset *", "kernel/params.c"),
    "mod_tree": ("struct mod_tree_root", "kernel/module/main.c"),
    "module_addr_min": ("long unsigned int", "kernel/module.c (< 5.3)"),
    "module_addr_max": ("long unsigned int", "kernel/module.c (< 5.3)"),
    "kallsyms_num_syms": ("const unsigned int", "kernel/kallsyms_internal.h"),
    "kallsyms_names": ("const u8[]", "kernel/kallsyms_internal.h"),
    "kallsyms_markers": ("const unsigned int[]", "kernel/kallsyms_internal.h"),
    "kallsyms_token_table": ("const char[]", "kernel/kallsyms_internal.h"),
    "kallsyms_token_index": ("const u16[]", "kernel/kallsyms_internal.h"),
    "kallsyms_offsets": ("const int[]", "kernel/kallsyms_internal.h"),
    "kallsyms_relative_base": ("const long unsigned int", "kernel/kallsyms_internal.h (< 6.15)"),
    "kallsyms_addresses": ("const long unsigned int[]", "kernel/kallsyms_internal.h (< 6.15)"),
    "kallsyms_seqs_of_names": ("const u8[]", "kernel/kallsyms_internal.h"),
    "ftrace_ops_list": ("struct ftrace_ops *", "kernel/trace/ftrace.c"),
    "ftrace_list_end": ("struct ftrace_ops", "kernel/trace/ftrace.c"),
    "ftrace_mod_maps": ("struct list_head", "kernel/trace/ftrace.c"),
    "ftrace_ops_trampoline_list": ("struct list_head", "kernel/trace/ftrace.c"),
    "bpf_kallsyms": ("struct list_head", "kernel/bpf/core.c"),
    "bpf_tree": ("struct latch_tree_root", "kernel/bpf/core.c"),
    # BPF, cgroups, sched_ext (linux.ebpf, linux.ktstr.*)
    "map_idr": ("struct idr", "kernel/bpf/syscall.c"),
    "prog_idr": ("struct idr", "kernel/bpf/syscall.c"),
    "btf_idr": ("struct idr", "kernel/bpf/btf.c"),
    "link_idr": ("struct idr", "kernel/bpf/syscall.c"),
    "cgrp_dfl_root": ("struct cgroup_root", "kernel/cgroup/cgroup.c"),
    "scx_root": ("struct scx_sched *", "kernel/sched/ext.c"),
    "scx_tasks": ("struct list_head", "kernel/sched/ext.c"),
    "scx_sched_all": ("struct list_head", "kernel/sched/ext.c"),
    "scx_watchdog_timeout": ("long unsigned int", "kernel/sched/ext.c"),
    "scx_enable_seq": ("atomic_long_t", "kernel/sched/ext.c"),
    # files, sockets, network (linux.lsof, linux.sockstat, linux.ip, check_afinfo)
    "socket_file_ops": ("const struct file_operations", "net/socket.c"),
    "sockfs_dentry_operations": ("const struct dentry_operations", "net/socket.c"),
    "super_blocks": ("struct list_head", "fs/super.c"),
    "net_namespace_list": ("struct list_head", "net/core/net_namespace.c"),
    "tcp_hashinfo": ("struct inet_hashinfo", "net/ipv4/tcp_ipv4.c"),
    "raw_seq_ops": ("const struct seq_operations", "net/ipv4/raw.c"),
    "raw6_seq_ops": ("const struct seq_operations", "net/ipv6/raw.c"),
    "udp_seq_ops": ("const struct seq_operations", "net/ipv4/udp.c"),
    "udp6_seq_ops": ("const struct seq_operations", "net/ipv6/udp.c"),
    "tcp_seq_ops": ("const struct seq_operations", "net/ipv4/tcp_ipv4.c (< 4.18)"),
    "tcp4_seq_ops": ("const struct seq_operations", "net/ipv4/tcp_ipv4.c"),
    "tcp6_seq_ops": ("const struct seq_operations", "net/ipv6/tcp_ipv6.c"),
    "arp_seq_ops": ("const struct seq_operations", "net/ipv4/arp.c"),
    "unix_seq_ops": ("const struct seq_operations", "net/unix/af_unix.c"),
    "packet_seq_ops": ("const struct seq_operations", "net/packet/af_packet.c"),
    # devices, console, time (tty_check, keyboard_notifiers, fbdev, kmsg, boottime)
    "tty_drivers": ("struct list_head", "drivers/tty/tty_io.c"),
    "keyboard_notifier_list": ("struct atomic_notifier_head", "drivers/tty/vt/keyboard.c"),
    "registered_fb": ("struct fb_info *[]", "drivers/video/fbdev/core/fbmem.c"),
    "num_registered_fb": ("int", "drivers/video/fbdev/core/fbmem.c"),
    "idt_table": ("gate_desc[]", "arch/x86/kernel/idt.c"),
    "prb": ("struct printk_ringbuffer *", "kernel/printk/printk.c"),
    "log_buf_len": ("u32", "kernel/printk/printk.c"),
    "log_buf": ("char *", "kernel/printk/printk.c"),
    "tk_core": ("struct tk_data", "kernel/time/timekeeping.c (< 6.16)"),
    "timekeeper_data": ("struct tk_data[]", "kernel/time/timekeeping.c (>= 6.16)"),
}

# __start_<section> / __stop_<section>: the section's element type, as the kernel declares the
# bounds (``extern struct jump_entry __start___jump_table[];``).
SECTION_ELEMENTS: Dict[str, Tuple[str, str]] = {
    "__tracepoints_ptrs": ("tracepoint_ptr_t", "include/linux/tracepoint.h"),
    "__ksymtab": ("struct kernel_symbol", "include/linux/export-internal.h"),
    "__kcrctab": ("s32", "kernel/module/internal.h"),
    "__jump_table": ("struct jump_entry", "include/linux/jump_label.h"),
    "static_call_sites": ("struct static_call_site", "include/linux/static_call.h"),
    "__ex_table": ("struct exception_table_entry", "include/linux/extable.h"),
    "__bug_table": ("struct bug_entry", "include/asm-generic/bug.h"),
    "__param": ("struct kernel_param", "include/linux/moduleparam.h"),
    "__modver": ("struct module_version_attribute *", "kernel/params.c"),
    "mcount_loc": ("long unsigned int", "kernel/trace/ftrace.c"),
    "ftrace_events": ("struct trace_event_call *", "kernel/trace/trace_events.c"),
    "ftrace_eval_maps": ("struct trace_eval_map *", "kernel/trace/trace.c"),
    "syscalls_metadata": ("struct syscall_metadata *", "kernel/trace/trace_syscalls.c"),
    "_bpf_raw_tp": ("struct bpf_raw_event_map", "kernel/trace/bpf_trace.c"),
    "__dyndbg": ("struct _ddebug", "include/linux/dynamic_debug.h"),
    "__dyndbg_classes": ("struct ddebug_class_map", "include/linux/dynamic_debug.h"),
    "__trace_bprintk_fmt": ("const char *", "kernel/trace/trace_printk.c"),
    "__tracepoint_str": ("const char *", "kernel/trace/trace_printk.c"),
    "kprobe_blacklist": ("long unsigned int", "kernel/kprobes.c"),
    "builtin_fw": ("struct builtin_fw", "drivers/base/firmware_loader/builtin/main.c"),
    "orc_unwind_ip": ("int", "arch/x86/include/asm/unwind.h"),
    "orc_unwind": ("struct orc_entry", "arch/x86/include/asm/unwind.h"),
    "BTF": ("u8", "kernel/bpf/btf.c"),
}
for _fix in ("early", "header", "final", "enable", "resume", "resume_early", "suspend",
             "suspend_late"):
    SECTION_ELEMENTS[f"pci_fixups_{_fix}"] = ("struct pci_fixup", "drivers/pci/quirks.c")

# (prefix, C type, the macro that makes the name). Longest prefix wins.
NAME_PATTERNS = (
    ("__tracepoint_", "struct tracepoint", "DEFINE_TRACE_FN, include/linux/tracepoint.h"),
    ("__SCK__", "struct static_call_key", "DEFINE_STATIC_CALL, include/linux/static_call.h"),
    ("__bpf_trace_tp_map_", "struct bpf_raw_event_map", "include/trace/bpf_probe.h"),
    ("__event_", "struct trace_event_call *", "include/trace/trace_events.h"),
    ("__ksymtab_", "struct kernel_symbol", "include/linux/export-internal.h"),
    ("__syscall_meta__", "struct syscall_metadata", "include/linux/syscalls.h"),
    ("__p_syscall_meta__", "struct syscall_metadata *", "include/linux/syscalls.h"),
    ("__setup_str_", "const char[]", "include/linux/init.h"),
    ("__setup_", "struct obs_kernel_param", "include/linux/init.h"),
    ("__param_str_", "const char[]", "include/linux/moduleparam.h"),
    ("__initcall__", "initcall_entry_t", "include/linux/init.h"),
)

# alias -> (target symbol, index enum constant, C type of one element, the kernel's definition)
ALIASES: Dict[str, Tuple[str, str, str, str]] = {
    "tk_core": ("timekeeper_data", "TIMEKEEPER_CORE", "struct tk_data",
                "#define tk_core (timekeeper_data[TIMEKEEPER_CORE]), kernel/time/timekeeping.c"),
}

_SPEC = re.compile(r"^(?:const\s+|volatile\s+)*((?:struct|union|enum)\s+\w+|[A-Za-z_][\w ]*?)\s*"
                   r"(\**)\s*((?:\[\d*\])*)$")


class TypeSpec:
    """A C type written as in a declaration: ``struct ftrace_ops *``, ``const u8[]``,
    ``gate_desc[]``, ``struct list_head[][]``."""

    def __init__(self, text: str):
        m = _SPEC.match(text.strip())
        if not m:
            raise ValueError(f"cannot read the C type {text!r}")
        self.base = m.group(1).strip()
        self.pointers = len(m.group(2))
        self.dims = [d.strip("[]") for d in re.findall(r"\[\d*\]", m.group(3))]

    @property
    def is_array(self) -> bool:
        return bool(self.dims)


class SymbolTyper:
    """Descriptors for C type specs against one IsfGenerator (its BTF and ISF types)."""

    def __init__(self, gen):
        self.gen = gen
        self.btf = gen.btf
        self._typedefs = None

    def _typedef(self, name):
        if self._typedefs is None:
            self._typedefs = {}
            for t in self.gen._all_types():
                if t.kind == Kind.TYPEDEF:
                    self._typedefs.setdefault(t.name, t.id)
        return self._typedefs.get(name)

    def base(self, name: str) -> Optional[Tuple[dict, int]]:
        """(descriptor, size) of a base C type name, or None when BTF lacks it."""
        gen = self.gen
        kind, _, tag = name.partition(" ")
        if kind in ("struct", "union") and tag:
            ut = gen.user_types.get(tag)
            if ut is None or ut["kind"] != kind or (ut["size"] == 0 and not ut["fields"]):
                return None
            return {"kind": kind, "name": tag}, ut["size"]
        if kind == "enum" and tag:
            e = gen.enums.get(tag)
            return ({"kind": "enum", "name": tag}, e["size"]) if e else None
        bt = gen.base_types.get(name)
        if bt is not None and bt["kind"] != "void":
            return {"kind": "base", "name": name}, bt["size"]
        tid = self._typedef(name)
        if tid is None:
            return None
        desc = gen.descriptor(tid)
        if desc.get("kind") == "base" and desc.get("name") == "void":
            return None
        return desc, self.btf.size_of(tid)

    def resolve(self, spec: TypeSpec) -> Optional[Tuple[dict, int]]:
        """(descriptor, size of one element) of ``spec`` without its array dimensions."""
        found = self.base(spec.base)
        if found is None:
            return None
        desc, size = found
        for _ in range(spec.pointers):
            desc, size = {"kind": "pointer", "subtype": desc}, self.btf.pointer_size
        return desc, size

    def descriptor(self, text: str, extent: Optional[int]) -> Optional[dict]:
        """The descriptor of a symbol of C type ``text`` that has ``extent`` bytes before the
        next symbol (None: unknown), or None when BTF lacks the type or it does not fit."""
        spec = TypeSpec(text)
        found = self.resolve(spec)
        if found is None:
            return None
        desc, size = found
        if not spec.is_array:
            return desc if extent is None or size <= extent else None
        # Inner dimensions need their count written; only the outermost comes from the extent.
        for dim in reversed(spec.dims[1:]):
            if not dim:
                return None
            desc, size = {"kind": "array", "count": int(dim), "subtype": desc}, size * int(dim)
        outer = spec.dims[0]
        if outer:
            count = int(outer)
        elif extent is None or size == 0:
            count = 0
        else:
            count = extent // size
        if extent is not None and count * size > extent:
            return None
        return {"kind": "array", "count": count, "subtype": desc}

    def element_size(self, text: str) -> Optional[int]:
        found = self.resolve(TypeSpec(text))
        return found[1] if found else None


def extents(symbols) -> Dict[str, int]:
    """name -> bytes up to the next symbol at a higher address (absent for the last)."""
    ordered = sorted((addr, name) for name, (addr, _k) in symbols.items())
    out = {}
    group_addr = next_greater = None
    for addr, name in reversed(ordered):
        if addr != group_addr:
            next_greater, group_addr = group_addr, addr
        if next_greater is not None:
            out[name] = next_greater - addr
    return out


def btf_vars(gen) -> Iterator[Tuple[str, str, int, int, dict]]:
    """(name, section, offset in section, size, descriptor) of every BTF VAR in a DATASEC."""
    btf = gen.btf
    for t in gen._all_types():
        if t.kind != Kind.DATASEC:
            continue
        for var_id, offset, size in t.vars:
            var = btf.type(var_id)
            if var is not None and var.kind == Kind.VAR and var.name:
                yield var.name, t.name, offset, size, gen.descriptor(var.type)


def _section_base(name, placed, symbols):
    """Link-time address of a DATASEC: per-CPU variables are offsets from __per_cpu_start;
    other sections are placed by their variables that the symbol file has (the most common
    address - offset among them)."""
    if name == ".data..percpu":
        return symbols.get("__per_cpu_start", (0, ""))[0]
    votes = {}
    for var, offset in placed:
        if var in symbols:
            base = symbols[var][0] - offset
            votes[base] = votes.get(base, 0) + 1
    return max(votes, key=votes.get) if votes else None


def type_symbols(gen, symbols, out_symbols, sources) -> None:
    """Give ``out_symbols`` (name -> ISF symbol entry) the types this module can know, and
    ``sources`` (name -> tag) where each came from. Entries that have a type keep it."""
    typer = SymbolTyper(gen)
    extent = extents(symbols)

    def give(name, desc, tag):
        entry = out_symbols.get(name)
        if entry is None or "type" in entry or desc is None:
            return
        entry["type"] = desc
        sources[name] = tag

    # BTF variables: exact declared types.
    by_section = {}
    for name, section, offset, size, desc in btf_vars(gen):
        by_section.setdefault(section, []).append((name, offset, desc))
    for section, variables in by_section.items():
        base = _section_base(section, [(n, o) for n, o, _d in variables], symbols)
        for name, offset, desc in variables:
            if base is None:
                continue
            if name not in out_symbols:
                out_symbols[name] = {"address": base + offset}
            elif section != ".data..percpu" and out_symbols[name]["address"] != base + offset:
                continue    # the symbol file's object of this name is another one (a static)
            give(name, desc, f"btf-var {section}")

    for name, (text, _where) in DECLARED.items():
        if name in out_symbols:
            give(name, typer.descriptor(text, extent.get(name)), "table")

    for section, (text, _where) in SECTION_ELEMENTS.items():
        start, stop = f"__start_{section}", f"__stop_{section}"
        if start not in symbols:
            continue
        size = typer.element_size(text)
        if not size:
            continue
        tag = f"section {section}"
        if stop in symbols and symbols[stop][0] >= symbols[start][0]:
            span = symbols[stop][0] - symbols[start][0]
            give(start, typer.descriptor(text + "[]", span - span % size), tag)
            give(stop, typer.descriptor(text + "[]", 0), tag)
        else:
            give(start, typer.descriptor(text + "[]", 0), tag)

    patterns = sorted(NAME_PATTERNS, key=lambda p: -len(p[0]))
    resolved = {}
    for name, entry in out_symbols.items():
        if "type" in entry or not name.startswith("__"):
            continue
        for prefix, text, _where in patterns:
            if name.startswith(prefix) and len(name) > len(prefix):
                if prefix not in resolved:
                    resolved[prefix] = typer.resolve(TypeSpec(text)) is not None
                if resolved[prefix]:
                    give(name, typer.descriptor(text, extent.get(name)), f"pattern {prefix}*")
                break

    for alias, (target, index_name, text, _where) in ALIASES.items():
        if alias in out_symbols or target not in out_symbols:
            continue
        index = _enum_constant(gen, index_name)
        found = typer.resolve(TypeSpec(text))
        if index is None or found is None:
            continue
        desc, size = found
        out_symbols[alias] = {"address": out_symbols[target]["address"] + index * size}
        give(alias, desc, f"alias {target}[{index_name}]")


def _enum_constant(gen, name) -> Optional[int]:
    for enum in gen.enums.values():
        if name in enum["constants"]:
            return enum["constants"][name]
    return None
