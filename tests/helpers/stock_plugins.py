"""Volatility's own Linux plugins, as the compatibility matrix runs them (tests/test_stock_matrix.py,
README "Volatility's own plugins")."""

# The full dumps every plugin runs on (x86-64 4- and 5-level, arm64 LPA2 and VA48); the
# minimized ones (scx_qmap_exit_error, scx_sdt_alloc) read zeros outside what pslist and the
# ktstr plugins read, so they are no test of other plugins. On the zoo dump (ftrace_ops and
# BPF tracepoint probes registered) the plugins the symbol types fixed run too.
MATRIX_DUMPS = ["x86_64/scx_sdt", "x86_64/scx_sdt_la57", "arm64/scx_sdt_lpa2", "arm64/scx_sdt_va48"]
FIXED_DUMPS = ["x86_64/scx_sdt_zoo"]

# Every Linux plugin of Volatility 2.28 (its own name, not the deprecated top-level aliases such
# as linux.check_afinfo), run with no arguments on every shared dump.
RUN = [
    "linux.bash.Bash", "linux.boottime.Boottime", "linux.capabilities.Capabilities",
    "linux.ebpf.EBPF", "linux.elfs.Elfs", "linux.envars.Envars", "linux.graphics.fbdev.Fbdev",
    "linux.iomem.IOMem", "linux.ip.Addr", "linux.ip.Link", "linux.kallsyms.Kallsyms",
    "linux.kmsg.Kmsg", "linux.kthreads.Kthreads", "linux.library_list.LibraryList",
    "linux.lsmod.Lsmod", "linux.lsof.Lsof", "linux.malware.check_afinfo.Check_afinfo",
    "linux.malware.check_creds.Check_creds", "linux.malware.check_idt.Check_idt",
    "linux.malware.check_modules.Check_modules", "linux.malware.check_syscall.Check_syscall",
    "linux.malware.hidden_modules.Hidden_modules",
    "linux.malware.keyboard_notifiers.Keyboard_notifiers", "linux.malware.malfind.Malfind",
    "linux.malware.modxview.Modxview", "linux.malware.netfilter.Netfilter",
    "linux.malware.process_spoofing.ProcessSpoofing", "linux.malware.tty_check.Tty_Check",
    "linux.mountinfo.MountInfo", "linux.pagecache.Files", "linux.pidhashtable.PIDHashTable",
    "linux.proc.Maps", "linux.psaux.PsAux", "linux.pscallstack.PsCallStack",
    "linux.pslist.PsList", "linux.psscan.PsScan", "linux.pstree.PsTree", "linux.ptrace.Ptrace",
    "linux.sockscan.Sockscan", "linux.sockstat.Sockstat", "linux.tracing.ftrace.CheckFtrace",
    "linux.tracing.perf_events.PerfEvents", "linux.tracing.tracepoints.CheckTracepoints",
    "linux.vmcoreinfo.VMCoreInfo",
]

# Not run by the matrix, and why.
NOT_RUN = {
    "linux.module_extract.ModuleExtract": "needs --base of a loaded module (none on these guests)",
    "linux.pagecache.InodePages": "needs --inode or --find; reads what linux.pagecache.Files lists",
    "linux.pagecache.RecoverFs": "writes a file-system archive (file carving, not a listing)",
    "linux.vmaregexscan.VmaRegExScan": "needs --pattern; scans process memory, no kernel symbols",
    "linux.vmayarascan.VmaYaraScan": "needs yara rules (and yara-python); scans process memory",
}

# Plugins that print no rows on these guests, and what the dump holds instead (the matrix
# checks the plugin exits 0 without a traceback; README lists the reason).
EMPTY_ON_THESE_GUESTS = {
    "linux.bash.Bash": "no bash process on the guests (busybox init and static test programs)",
    "linux.graphics.fbdev.Fbdev": "needs Pillow, and says so in one line (not installed here)",
    "linux.ip.Addr": "no address configured: `lo` is the only device, down (linux.ip.Link)",
    "linux.library_list.LibraryList": "no shared libraries: the guests' programs are static (linux.elfs)",
    "linux.lsmod.Lsmod": "no module loaded on the guests",
    "linux.malware.check_creds.Check_creds": "reports processes sharing a cred: none found",
    "linux.malware.check_modules.Check_modules": "no module loaded (linux.lsmod)",
    "linux.malware.check_afinfo.Check_afinfo": "reports seq_operations pointing outside the kernel: none found",
    "linux.malware.hidden_modules.Hidden_modules": "reports hidden modules: none found",
    "linux.malware.keyboard_notifiers.Keyboard_notifiers": "reports keyboard notifiers: none found",
    "linux.malware.malfind.Malfind": "reports suspicious process mappings: none found",
    "linux.malware.modxview.Modxview": "no module loaded (linux.lsmod)",
    "linux.ptrace.Ptrace": "reports ptrace relations: none found",
    "linux.sockscan.Sockscan": "no socket: no process holds one (linux.lsof lists no socket fd)",
    "linux.sockstat.Sockstat": "no socket: no process holds one (linux.lsof lists no socket fd)",
    "linux.tracing.ftrace.CheckFtrace": "no ftrace_ops registered on these four (ftrace_ops_list "
                                        "== &ftrace_list_end in each; the test checks it); 4 rows "
                                        "on x86_64/scx_sdt_zoo (BPF trampolines, kprobes)",
    "linux.tracing.perf_events.PerfEvents": "reports perf events: none found",
}

# Plugins for one architecture: what they say on the other.
ARCH_ONLY = {
    "linux.malware.check_idt.Check_idt": "x86 only: on arm64 one line, 'Unable to determine the "
                                         "data structure type for IDT entries'",
}

# Rows these plugins must give on every shared dump (issue: kallsyms, tracepoints, ftrace where
# the kernel has ftrace_ops, pscallstack).
MUST_GIVE_ROWS = ("linux.kallsyms.Kallsyms", "linux.tracing.tracepoints.CheckTracepoints",
                  "linux.pscallstack.PsCallStack", "linux.boottime.Boottime",
                  "linux.pslist.PsList", "linux.pstree.PsTree", "linux.psaux.PsAux",
                  "linux.kmsg.Kmsg", "linux.lsof.Lsof", "linux.proc.Maps", "linux.mountinfo.MountInfo",
                  "linux.ebpf.EBPF", "linux.iomem.IOMem", "linux.kthreads.Kthreads")

# The plugins that failed with the package's ISF before it typed symbols (issue 29's table):
# quick-tier smoke on one dump for the fast ones.
FIXED = ("linux.kallsyms.Kallsyms", "linux.pscallstack.PsCallStack",
         "linux.malware.check_afinfo.Check_afinfo", "linux.tracing.ftrace.CheckFtrace",
         "linux.tracing.tracepoints.CheckTracepoints", "linux.boottime.Boottime",
         "linux.malware.hidden_modules.Hidden_modules")
QUICK = ("linux.boottime.Boottime", "linux.malware.hidden_modules.Hidden_modules")
