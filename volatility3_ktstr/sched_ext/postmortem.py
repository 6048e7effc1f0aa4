"""The sched_ext post-mortem model: what is in memory (inventory), did a scheduler exit and why
(the verdict), is the watchdog alive and which runnable tasks waited past their timeout, and
where each scheduler's DSQs are. Views only format what this module decides.
"""

from dataclasses import dataclass

from ..core import LayoutError, ReadError
from ..kds import DamageLog
from .dsq import Dsq, global_dsq_addrs, read_dsq, user_dsq_addrs
from .exit import ExitInfo, kind_text
from .state import SchedState, ops_callbacks
from .symbols import MASK64
from .tasks import ScxTask, is_starved, read_task, runnable_for, runnable_list

NONE_OBJ = "(none)"


def sched_kind(st: SchedState) -> int | None:
    """A scheduler's exit kind: its exit info's, else the ``exit_kind`` word."""
    if st.exit is not None and st.exit.kind:
        return st.exit.kind
    return st.exit_kind


class Inventory:
    """Every scheduler in memory and its state, read once (``sx``: a :class:`SchedExt`), and a
    cache of the tasks read."""

    def __init__(self, sx) -> None:
        self.sx = sx
        self.root = sx.sched_state()
        self.damage = DamageLog()
        self.refs = sx.schedulers(self.damage)
        self.states = {ref.addr: self.root if ref.addr == self.root.sch else sx.sched_state(ref.addr)
                       for ref in self.refs}
        self.tasks = {}

    def name(self, st: SchedState, addr: int | None = None) -> str:
        if st.name:
            return st.name
        return f"@{addr:#x}" if addr else NONE_OBJ

    def loaded(self) -> bool:
        """A root scheduler is in memory: scx_root set, or (6.12) scx_ops has a name."""
        st = self.root
        return bool(st.sch) if st.sch is not None else bool(st.name)

    def task(self, addr: int) -> ScxTask:
        if addr not in self.tasks:
            self.tasks[addr] = read_task(self.sx.reader, self.sx.layout, addr)
        return self.tasks[addr]

    def all_states(self) -> list[tuple[str, SchedState]]:
        """[(name, state)]: the root (or 6.12 globals) and every other scheduler in memory."""
        out = [(self.name(self.root), self.root)] if self.loaded() else []
        for ref in self.refs:
            if ref.addr != self.root.sch:
                st = self.states[ref.addr]
                out.append((self.name(st, ref.addr), st))
        return out

    def other_tops(self) -> list[tuple]:
        """[(ref, state)] of top-level schedulers other than the root (disabled ones whose BPF
        link is still attached, reached through their struct_ops map's ops.priv)."""
        return [(ref, self.states[ref.addr]) for ref in self.refs
                if ref.addr != self.root.sch and not ref.parent]

    def subs(self) -> list[tuple]:
        """[(ref, state)] of the sub-schedulers."""
        return [(ref, self.states[ref.addr]) for ref in self.refs if ref.parent]

    def exit_sources(self) -> list[tuple[str, str, SchedState]]:
        """[(scheduler name, how it was found, state)] for every scheduler with exit info."""
        if self.refs:
            return [(self.name(self.states[r.addr], r.addr), ", ".join(r.via), self.states[r.addr])
                    for r in self.refs]
        root = self.root
        if self.loaded() or root.exit is not None or root.exit_kind:
            return [(self.name(root), "scx_root" if root.sch else "scx_exit_info (global)", root)]
        return []

    def timeouts(self) -> dict[int, int]:
        """{scx_sched address: watchdog timeout (jiffies)} of every scheduler in memory."""
        return {st.sch: st.watchdog_timeout for _, st in self.all_states() if st.sch}


# --- the verdict --------------------------------------------------------------------------------


def exit_verdict(inv: Inventory, kinds, ueis: list, log_exits: list, log_unreadable: bool) -> str:
    """One line: EXITED (with the best source), no exit (a live scheduler says so), or unknown
    (and what was looked at). Kernel exit info beats a BPF program's copy beats the log."""

    def exit_text(name, k, reason, msg):
        text = f"{name}: {kind_text(kinds, k)}"
        return text + (f" ({reason})" if reason else "") + (f": {msg}" if msg else "")

    kernel = inv.exit_sources()
    k_exits = [(exit_text(name, sched_kind(st), (st.exit or ExitInfo()).reason,
                          (st.exit or ExitInfo()).msg), f"scx_exit_info ({how})")
               for name, how, st in kernel if sched_kind(st)]
    u_exits = [(exit_text(u.var, u.kind, u.reason, u.msg), f"{u.var} in {u.map_name}")
               for u in ueis if u.kind]
    # Loaded: the root (scx_root, or 6.12's scx_ops with a name) or linked on scx_sched_all.
    live = [name for name, how, st in kernel if not sched_kind(st)
            and ((st is inv.root and inv.loaded()) or "scx_sched_all" in how)]
    if k_exits:
        text, where = k_exits[0]
        return f"EXITED: {text} [from {where}]"
    evidence = [f"scheduler {name!r} is loaded and its exit kind is "
                f"{kind_text(kinds, 0) or 0}" for name in live]
    evidence += [f"{u.var}.kind is 0 in {u.map_name}" for u in ueis if not u.kind]
    evidence += [f"earlier exit recorded in {where}: {text}" for text, where in u_exits] if live else []
    if log_unreadable:
        evidence.append("kernel log unreadable")
    elif log_exits:
        last = log_exits[-1]
        evidence.append(f"the kernel log records an {'earlier ' if live else ''}exit of "
                        f"{last.name!r} ({last.reason})")
    else:
        evidence.append("the kernel log has no 'disabled' line")
    if live:
        return "no exit: " + "; ".join(evidence)
    if u_exits:
        text, where = u_exits[0]
        return f"EXITED: {text} [from {where}; the kernel's exit info is gone]"
    if log_exits:
        last = log_exits[-1]
        return (f"EXITED: {last.name}: {last.reason}" + (f": {last.msg}" if last.msg else "")
                + " [from the kernel log only; no exit info left in memory]")
    if not inv.loaded() and inv.root.enable_seq == 0 and not ueis:
        return "no exit: no scheduler has been enabled since boot (scx_enable_seq is 0)"
    parts = ["no scheduler in memory" + (" (scx_root NULL)" if inv.root.sch == 0 else "")
             if not inv.loaded() else "the scheduler's exit state is unreadable"]
    if not ueis:
        parts.append("no user_exit_info variable in any BPF map")
    return "unknown: " + "; ".join(parts + evidence)


# --- the watchdog -------------------------------------------------------------------------------


@dataclass
class Heartbeat:
    """``jiffies - scx_watchdog_timestamp`` against the root's timeout, and what it means."""

    jiffies: int = None
    timestamp: int = None
    age: int = None               # negative: the timestamp is after jiffies
    interval: int = None
    verdict: str = None


def heartbeat(inv) -> Heartbeat:
    st = inv.root
    hb = Heartbeat(st.jiffies, st.watchdog_timestamp, interval=st.watchdog_interval)
    if hb.jiffies is not None and hb.timestamp is not None:
        age = (hb.jiffies - hb.timestamp) & MASK64
        hb.age = age if age < 1 << 63 else -((1 << 64) - age)
    timeout = st.watchdog_timeout
    if not inv.loaded() or not st.enabled:
        hb.verdict = "idle (no scheduler enabled)"
    elif hb.age is None or not timeout:
        hb.verdict = None
    elif hb.age < 0:
        hb.verdict = f"timestamp {-hb.age} jiffies after jiffies (inconsistent)"
    elif hb.age > timeout:
        hb.verdict = f"LATE: the watchdog has not run for {hb.age} jiffies (timeout {timeout})"
    else:
        hb.verdict = f"ok: ran {hb.age} jiffies ago (timeout {timeout})"
    return hb


@dataclass
class RunnableWait:
    """One task of a CPU's runnable_list: how long it waited against its scheduler's timeout."""

    addr: int
    task: object                  # ScxTask
    wait: int = None              # jiffies; None when runnable_at is after jiffies
    timeout: int = None
    stalled: bool = False


def runnable_waits(inv: Inventory, rq: int, timeouts: dict, damage: DamageLog) -> list[RunnableWait]:
    """The runnable_list of the rq at ``rq`` in the watchdog's order, each task's wait judged
    against its own scheduler's timeout (``timeouts``), else the root's."""
    sx = inv.sx
    out = []
    for addr in runnable_list(sx.reader, sx.layout, rq, damage):
        t = inv.task(addr)
        w = RunnableWait(addr, t)
        if t.damage is None:
            w.wait = runnable_for(t, inv.root.jiffies, linked=True)
            w.timeout = timeouts.get(t.sched, inv.root.watchdog_timeout)
            w.stalled = is_starved(w.wait, w.timeout)
        out.append(w)
    return out


# --- struct_ops and DSQs --------------------------------------------------------------------------


def find_ops_map(inv: Inventory, st: SchedState, damage: DamageLog):
    """The sched_ext struct_ops map of scheduler ``st``: by ``ops.priv``, else the one whose
    kernel copy of the ops holds the same function pointers."""
    sx = inv.sx
    oms = sx.ops_maps(damage)
    for om in oms:
        if st.sch and om.priv == st.sch:
            return om
    live = dict(st.callbacks)
    names = list(live)
    for om in oms:
        try:
            got = ops_callbacks(sx.reader, sx.layout, om.kdata, names)
        except (ReadError, LayoutError) as e:
            damage.add(f"struct_ops map {om.map.id}", om.kdata, str(e))
            continue
        if got and all(live.get(n) == p for n, p in got):
            return om
    return None


def sched_dsqs(inv: Inventory, sch: int | None, per_cpu: list) -> list[tuple]:
    """[(Damage, label) or (None, Dsq)] in output order: the global DSQs of ``sch``, the
    per-CPU DSQs (``per_cpu``: CpuState records, whose local and bypass DSQs are taken, or Dsq
    records), the user DSQs of ``sch`` sorted by id. A damage item sits where its DSQs would."""
    sx = inv.sx
    r, lay, offs = sx.reader, sx.layout, sx.dsq_offs
    glob, users = DamageLog(), DamageLog()
    # scx_root NULL: no scheduler, so no global or user DSQs
    addrs = [] if sch == 0 else global_dsq_addrs(r, lay, sch, sx.syms, sx.nr_nodes(), glob)
    out: list[tuple] = [(d, "global") for d in glob]
    out += [(None, read_dsq(r, lay, offs, a, "global", walk=True, node=n)) for n, a in addrs]
    out += [(None, c) for c in per_cpu if isinstance(c, Dsq)]
    cpus = [c for c in per_cpu if not isinstance(c, Dsq)]
    out += [(None, c.local_dsq) for c in cpus if c.local_dsq is not None]
    out += [(None, c.bypass_dsq) for c in cpus if c.bypass_dsq is not None]
    uaddrs = [] if sch == 0 else user_dsq_addrs(r, lay, sch, sx.syms, users)
    out += [(d, "user") for d in users]
    user = [read_dsq(r, lay, offs, a, "user", walk=True) for a in uaddrs]
    user.sort(key=lambda d: (d.id is None, d.id or 0))
    return out + [(None, d) for d in user]
