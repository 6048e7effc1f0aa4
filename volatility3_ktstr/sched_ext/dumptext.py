"""The kernel's sched_ext debug dump (``scx_dump_state`` in kernel/sched/ext.c) parsed back into
per-CPU and per-task fields: the state of the machine at the moment of the exit.

The text is what ``scx_exit_info.dump`` (and the scheduler's ``<uei>_dump`` copy) holds. Its
shape changed between kernels, so the parser goes by line shapes and ``key=value`` pairs rather
than by one format string:

- header: ``<comm>[<pid>] triggered exit kind <n>[ on CPU <c>]:`` then ``  <reason> (<msg>)``
  (7.x starts with a ``<ops name>: <sched id>`` line; ``Debug dump triggered by ...`` for a
  dump without an exit), then ``Backtrace:`` and indented frames;
- the scheduler's ``ops.dump`` lines, up to ``Runqueue states`` (6.12) / ``CPU states`` (later);
- one block per CPU: ``CPU <n> : nr_run=.. flags=.. cpu_rel=.. ops_qseq=.. pnt_seq|ksync=..``,
  ``curr=<comm>[<pid>] class=<sym>``, the ``cpus_to_kick``/``_if_idle``/``_preempt``/``_wait``
  (``_sync``) masks (``%*pb`` hex bitmaps), the scheduler's ``ops.dump_cpu`` lines, then its
  tasks: `` <*| ><state> <comm>[<pid>] [<own marker><sched id>] <+-N>ms`` followed by
  ``scx_state/flags=``, ``dsq_flags=``, ``ops_state/qseq=``, ``sticky/holding_cpu=``,
  ``dsq_id=``, ``dsq_vtime=``, ``slice=``, ``weight=``, ``cpus=``, ``no_mig=`` (which of these a
  kernel prints varies), the scheduler's ``ops.dump_task`` lines and the task's stack;
- ``Event counters`` (``SCX_EV_*: value``), and ``~~~~ TRUNCATED ~~~~`` when the buffer filled.

``a/b=x/y`` pairs are split into ``a=x`` and ``b=y``. Lines the parser does not place are kept
in ``other`` with their line numbers, so nothing of the text is lost. No Volatility import.
"""

import re
from dataclasses import dataclass, field

MAX_LINES = 1 << 16          # lines parsed (SCX_EXIT_DUMP_DFL_LEN is 32 KiB; 1 MiB read at most)

_EXIT_RE = re.compile(r"^(?P<comm>.*)\[(?P<pid>-?\d+)\] triggered exit kind (?P<kind>-?\d+)"
                      r"(?: on CPU (?P<cpu>-?\d+))?:\s*$")
_REASON_RE = re.compile(r"^  (?P<reason>.*?) \((?P<msg>.*)\)\s*$")
_CPU_RE = re.compile(r"^CPU\s+(?P<cpu>\d+)\s*:\s*(?P<rest>.*)$")
_CURR_RE = re.compile(r"^\s+curr=(?P<comm>.*)\[(?P<pid>-?\d+)\] class=(?P<cls>\S+)\s*$")
_MASK_RE = re.compile(r"^\s+(?P<name>cpus_to_\w+|idle_to_kick\w*)\s*:\s*(?P<mask>[0-9a-fA-F,]+)\s*$")
_TASK_RE = re.compile(r"^ (?P<marker>[ *])(?P<state>\S) (?P<comm>.*)\[(?P<pid>-?\d+)\]"
                      r"(?P<own>.*?) (?P<ms>[+-]\d+)ms\s*$")
_FRAME_RE = re.compile(r"^\s+(?:\S+\+0x[0-9a-fA-F]+/0x[0-9a-fA-F]+(?: \[.*\])?|0x[0-9a-fA-F]+|\?.*)\s*$")
_KV_RE = re.compile(r"(?P<k>[\w/]+)=(?P<v>\S+)")
_EVENT_RE = re.compile(r"^\s*(?P<name>SCX_EV_\w+)\s*:\s*(?P<value>-?\d+)\s*$")
_SECTION_CPUS = ("CPU states", "Runqueue states")
TRUNC_MARKER = "~~~~ TRUNCATED ~~~~"


def cpumask_list(mask: str) -> str:
    """``%*pb`` text (hex words, most significant first, comma-separated) -> ``0-2,5``."""
    try:
        value = int(mask.replace(",", ""), 16)
    except ValueError:
        return mask
    return cpu_list(value)


def cpu_list(value: int) -> str:
    """A CPU bitmap as ranges (``0-2,5``), ``-`` when empty."""
    out, cpu, start = [], 0, None
    while value >> cpu or start is not None:
        bit = (value >> cpu) & 1
        if bit and start is None:
            start = cpu
        elif not bit and start is not None:
            out.append(f"{start}" if start == cpu - 1 else f"{start}-{cpu - 1}")
            start = None
        cpu += 1
    return ",".join(out) or "-"


def _pairs(text: str) -> dict:
    """``a=1 b/c=2/3`` -> {a: 1, b: 2, c: 3} (values as text)."""
    out = {}
    for m in _KV_RE.finditer(text):
        keys, vals = m["k"].split("/"), m["v"].split("/")
        if len(keys) == len(vals):
            out.update(zip(keys, vals))
        else:
            out[m["k"]] = m["v"]
    return out


@dataclass
class DumpTask:
    """One task of the debug dump: ``marker`` ``*`` = the CPU's current task, else on its
    runnable list (in list order); ``wait_ms`` = ``runnable_at`` against the dump's jiffies."""

    cpu: int
    pos: int                      # position on the CPU's runnable_list (0 for its current task)
    marker: str
    state: str                    # task_state_to_char
    comm: str
    pid: int
    wait_ms: int
    owner: str = ""               # 7.x: "*root" / sched id the task belongs to
    fields: dict = field(default_factory=dict)   # scx_state, flags, dsq_flags, ops_state, ...
    ops_lines: list = field(default_factory=list)  # the scheduler's ops.dump_task lines
    stack: list = field(default_factory=list)
    line: int = 0                 # line number of the task's first line

    @property
    def cpus(self) -> str | None:
        m = self.fields.get("cpus")
        return None if m is None else cpumask_list(m)


@dataclass
class DumpCpu:
    cpu: int
    fields: dict = field(default_factory=dict)   # nr_run, flags, cpu_rel, ops_qseq, ksync|pnt_seq
    curr_comm: str = None
    curr_pid: int = None
    curr_class: str = None
    masks: dict = field(default_factory=dict)    # cpus_to_kick... -> CPU list
    ops_lines: list = field(default_factory=list)  # the scheduler's ops.dump_cpu lines
    tasks: list = field(default_factory=list)
    line: int = 0


@dataclass
class DebugDump:
    """The parsed text; ``lines`` the text itself (for the rows that show it)."""

    lines: list
    sched: str = None             # 7.x first line "<ops name>: <sched id>"
    trigger_comm: str = None
    trigger_pid: int = None
    kind: int = None
    exit_cpu: int = None
    reason: str = None
    msg: str = None
    backtrace: list = field(default_factory=list)
    ops_lines: list = field(default_factory=list)   # the scheduler's ops.dump lines
    cpus: list = field(default_factory=list)
    events: list = field(default_factory=list)      # [(name, value)]
    truncated: bool = False
    other: list = field(default_factory=list)       # [(line number, text)] placed nowhere

    @property
    def tasks(self) -> list:
        return [t for c in self.cpus for t in c.tasks]


def parse_debug_dump(text: str, max_lines: int = MAX_LINES) -> DebugDump:
    """The debug dump ``text`` as a :class:`DebugDump` (tolerant: unknown lines go to ``other``)."""
    lines = text.rstrip("\n").split("\n") if text else []
    d = DebugDump(lines=lines)
    part = "head"                 # head, bt, ops, cpus, events
    cpu: DumpCpu | None = None
    task: DumpTask | None = None
    for i, line in enumerate(lines[:max_lines]):
        stripped = line.strip()
        if stripped == TRUNC_MARKER:
            d.truncated = True
            continue
        if part in ("head", "bt", "ops"):
            if stripped in _SECTION_CPUS:
                part = "cpus"
                continue
        if stripped == "Event counters":
            part, cpu, task = "events", None, None
            continue
        if not stripped or set(stripped) == {"-"}:
            continue
        if part == "head":
            m = _EXIT_RE.match(line)
            if m:
                d.trigger_comm, d.trigger_pid = m["comm"], int(m["pid"])
                d.kind = int(m["kind"])
                d.exit_cpu = int(m["cpu"]) if m["cpu"] is not None else None
                continue
            m = _REASON_RE.match(line)
            if m and d.kind is not None and d.reason is None:
                d.reason, d.msg = m["reason"], m["msg"]
                continue
            if stripped == "Backtrace:":
                part = "bt"
                continue
            if d.kind is None and d.sched is None and ": " in line and not line.startswith(" "):
                d.sched = line
                continue
            if line.startswith("Debug dump triggered by "):
                d.reason = line[len("Debug dump triggered by "):]
                continue
            d.other.append((i, line))
            continue
        if part == "bt":
            if line.startswith(" ") and _FRAME_RE.match(line):
                d.backtrace.append(stripped)
                continue
            part = "ops"
        if part == "ops":
            d.ops_lines.append(line)
            continue
        if part == "events":
            m = _EVENT_RE.match(line)
            if m:
                d.events.append((m["name"], int(m["value"])))
            else:
                d.other.append((i, line))
            continue
        # part == "cpus"
        m = _CPU_RE.match(line)
        if m:
            cpu = DumpCpu(cpu=int(m["cpu"]), fields=_pairs(m["rest"]), line=i)
            d.cpus.append(cpu)
            task = None
            continue
        if cpu is None:
            d.other.append((i, line))
            continue
        m = _TASK_RE.match(line)
        if m:
            pos = sum(1 for x in cpu.tasks if x.marker != "*") if m["marker"] != "*" else 0
            task = DumpTask(cpu=cpu.cpu, pos=pos, marker=m["marker"], state=m["state"],
                            comm=m["comm"], pid=int(m["pid"]), wait_ms=int(m["ms"]),
                            owner=m["own"].strip(), line=i)
            cpu.tasks.append(task)
            continue
        if task is None:
            m = _CURR_RE.match(line)
            if m and cpu.curr_comm is None:
                cpu.curr_comm, cpu.curr_pid, cpu.curr_class = m["comm"], int(m["pid"]), m["cls"]
                continue
            m = _MASK_RE.match(line)
            if m:
                cpu.masks[m["name"]] = cpumask_list(m["mask"])
                continue
            cpu.ops_lines.append(line)
            continue
        if line.startswith("      ") and _KV_RE.search(line) and not task.ops_lines and not task.stack:
            task.fields.update(_pairs(line))
            continue
        if _FRAME_RE.match(line):
            task.stack.append(stripped)
            continue
        task.ops_lines.append(line)
    if len(lines) > max_lines:
        d.other.append((max_lines, f"... {len(lines) - max_lines} more lines not parsed"))
    return d


def int_field(fields: dict, key: str, base: int = 0) -> int | None:
    """A field as a number (``0x..`` hex, else decimal), None when absent or not a number."""
    v = fields.get(key)
    if v is None:
        return None
    try:
        return int(v, base)
    except ValueError:
        return None
