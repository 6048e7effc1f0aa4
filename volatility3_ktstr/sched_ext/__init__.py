"""sched_ext state from kernel memory: schedulers, their state and exit, DSQs, tasks, event
counters, struct_ops callbacks, and the post-mortem model the scx plugins format.

Kernel layout (kernel/sched/ext*.c, kernel/sched/ext/); which variant a kernel has is decided by
the symbols and types present, never by version numbers. Every module takes a :class:`Reader`,
a :class:`Layout` and plain values; :class:`SchedExt` resolves those once from the kernel object.
Structs are read with :class:`Record`, lists and tables with :mod:`volatility3_ktstr.kds`, and
what cannot be read is a :class:`kds.Damage` (in a ``DamageLog``, or a record's ``damage``),
never raised past the caller. No Volatility import; sits above ``bpf/`` and ``walkers/``, and
only ``views/`` and plugins import it.

    symbols      symbol names, globals (widths from the layout), enum and flag decoding
    state        one scheduler's state and the global state (SchedState)
    exit         scx_exit_info, user_exit_info (the scheduler's own copy)
    exitlog      exits in the kernel log
    discovery    every scx_sched (scx_root, scx_sched_all, children, struct_ops ops.priv)
    struct_ops   the kernel copy of the ops, each callback's BPF program
    dsq          DSQs and per-CPU run queues (local, global, user, bypass)
    tasks        scx_tasks, a task's sched_ext fields, runnable lists, the watchdog's test
    events       SCX_EV_* counters
    domain       SchedExt: the above over one kernel object
    postmortem   inventory, exit verdict, watchdog arithmetic, each scheduler's DSQs
    cpuctx       the scheduler's own per-CPU context (per-CPU maps, CPU-indexed arrays in its
                 globals and arena globals), found by shape in its BTF
"""

from .discovery import MAX_SCHEDS, SchedOpsMap, SchedRef, find_scheds, sched_ops_maps, sub_scheds
from .domain import KernelLog, SchedExt
from .dsq import (MAX_DSQ_TASKS, MAX_NODES, CpuState, Dsq, DsqOffsets, DsqWalk, TaskListWalk,
                  TaskWalk, bypass_dsq_addrs, global_dsq_addrs, pcpu_base, read_cpus, read_dsq,
                  user_dsq_addrs, walk_dsq_list)
from .events import EventStats, read_events
from .exit import (ExitInfo, UserExitInfo, find_user_exit_infos, is_error_kind, kind_text,
                   read_exit_info, read_text, scheduler_maps)
from .exitlog import LogExit, log_exits, sched_ext_records
from .state import MAX_SUB_DEPTH, SchedState, ops_callbacks, read_sched_state, sched_ops_addr, sched_parent
from .struct_ops import (SCX_VALUE_STRUCT, StructOpsCallback, struct_ops_callbacks, struct_ops_kdata,
                         struct_ops_sched)
from .symbols import (MASK64, SLICE_INF, SYMBOLS, class_names, decode_flags, enum_name, global_field,
                      ops_state_text, read_global, resolve_symbols)
from .tasks import (MAX_RUNNABLE, MAX_TASKS, ScxTask, is_starved, read_task, runnable_for,
                    runnable_list, walk_scx_tasks)

__all__ = [
    "MAX_SCHEDS", "SchedOpsMap", "SchedRef", "find_scheds", "sched_ops_maps", "sub_scheds",
    "KernelLog", "SchedExt",
    "MAX_DSQ_TASKS", "MAX_NODES", "CpuState", "Dsq", "DsqOffsets", "DsqWalk", "TaskListWalk",
    "TaskWalk", "bypass_dsq_addrs", "global_dsq_addrs", "pcpu_base", "read_cpus", "read_dsq",
    "user_dsq_addrs", "walk_dsq_list",
    "EventStats", "read_events",
    "ExitInfo", "UserExitInfo", "find_user_exit_infos", "is_error_kind", "kind_text",
    "read_exit_info", "read_text", "scheduler_maps",
    "LogExit", "log_exits", "sched_ext_records",
    "MAX_SUB_DEPTH", "SchedState", "ops_callbacks", "read_sched_state", "sched_ops_addr", "sched_parent",
    "SCX_VALUE_STRUCT", "StructOpsCallback", "struct_ops_callbacks", "struct_ops_kdata",
    "struct_ops_sched",
    "MASK64", "SLICE_INF", "SYMBOLS", "class_names", "decode_flags", "enum_name", "global_field",
    "ops_state_text", "read_global", "resolve_symbols",
    "MAX_RUNNABLE", "MAX_TASKS", "ScxTask", "is_starved", "read_task", "runnable_for",
    "runnable_list", "walk_scx_tasks",
]
