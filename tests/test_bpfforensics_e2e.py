"""BPF forensics plugins on the real dumps, checked against truth.json.

- links: every link of truth ``links`` (id, type, program, and each type's attach-target fields:
  tracing target BTF ids, kprobe/kprobe_multi addresses and symbols, uprobe/uprobe_multi path and
  offsets, tracepoint names, perf event type/config, cgroup ids, devices, netns inode,
  netfilter hook, struct_ops/sockmap maps, iterator target), its pins and fd holders; ``Info``
  equals bpftool's ``link show -j`` entry. Dumps without the zoo: the scheduler's struct_ops link
  equals bpftool's ``link_list``.
- bpffds: every (pid, comm, fd, kind, id) of truth ``bpf_fd_holders``, and nothing else.
- bpfpins: every pin of truth ``pins`` (path, kind, id, inode).
"""

import json
import re

import pytest

import dumps
import volrun

DUMPS = dumps.list_dumps()
PLUGIN_DIRS = ("-p", str(volrun.REPO / "volatility3_ktstr" / "plugins"))
ZOO = "x86_64/scx_sdt_zoo"
pytestmark = pytest.mark.skipif(not DUMPS, reason="KTSTR_DUMPS is unset or holds no dumps")

_cache = {}


def rows(name, plugin, *args):
    key = (name, plugin, args)
    if key not in _cache:
        try:
            dumps.dump_path(name)
        except FileNotFoundError as e:
            pytest.skip(str(e))
        for _ in range(3):
            res = volrun.run_vol(name, plugin, *args, extra_global=PLUGIN_DIRS)
            # concurrent runs updating the shared symbol cache: retry those only
            if res.rc == 0 or "symbol_table_name" not in res.stdout + res.stderr:
                break
        _cache[key] = res.check().rows
    return _cache[key]


def zoo():
    if ZOO not in DUMPS:
        pytest.skip(f"no {ZOO} under KTSTR_DUMPS")
    return dumps.load_truth(ZOO)


@pytest.fixture(scope="module", params=DUMPS)
def dump(request):
    return request.param


# --- links -------------------------------------------------------------------------------------


def _links():
    return {r["ID"]: r for r in rows(ZOO, "linux.ktstr.links") if r["ID"] >= 0}


def _expected_fields(t):
    """truth link -> the Info fields that must equal it (TRUTH.md names -> bpftool names)."""
    ty = t["type_name"]
    want = {}
    if ty == "struct_ops":
        want["map_id"] = t["struct_ops_map_id"]
    elif ty == "raw_tracepoint":
        want["tp_name"] = t["tp_name"]
    elif ty == "tracing":
        want.update(attach_type=t["attach_type"], target_obj_id=t["target_obj_id"],
                    target_btf_id=t["target_btf_id"])
    elif ty == "cgroup":
        want.update(attach_type=t["attach_type"], cgroup_id=t["cgroup_id"])
    elif ty == "iter":
        want["target_name"] = t["target_name"]
    elif ty == "netns":
        want.update(attach_type=t["attach_type"], netns_ino=t["netns_ino"])
    elif ty in ("xdp", "tcx"):
        want["ifindex"] = t["ifindex"]
        if ty == "tcx":
            want["attach_type"] = t["attach_type"]
    elif ty == "netfilter":
        want.update(pf=t["pf"], hook=t["hooknum"], prio=t["priority"], flags=t["nf_flags"])
    elif ty == "sockmap":
        want.update(map_id=t["map_id"], attach_type=t["attach_type"])
    elif ty == "kprobe_multi":
        want.update(func_cnt=t["count"], missed=t["missed"])
    elif ty == "uprobe_multi":
        want.update(path=t["path"], func_cnt=t["count"], pid=t["pid"])
    elif ty == "perf_event":
        pt = t["perf_event_type"]
        if pt in ("kprobe", "kretprobe"):
            want.update(retprobe=pt == "kretprobe", func=t["func_name"], addr=t["addr"],
                        offset=t["offset"])
        elif pt in ("uprobe", "uretprobe"):
            want.update(retprobe=pt == "uretprobe", file=t["file_name"], offset=t["offset"])
        elif pt == "tracepoint":
            want["tracepoint"] = t["tp_name"]
        else:
            want.update(event_type=t["event_type"], event_config=t["event_config"])
    return want


def test_links_equal_truth():
    truth = zoo()
    got = _links()
    assert set(got) == {t["id"] for t in truth["links"]}
    assert not [r for r in rows(ZOO, "linux.ktstr.links") if r["Error"]]
    for t in truth["links"]:
        r = got[t["id"]]
        info = json.loads(r["Info"])
        assert (r["Type"], r["ProgId"]) == (t["type_name"], t["prog_id"]), t["id"]
        if t["prog_id"]:
            assert (r["ProgName"], r["ProgType"]) == (t["prog_name"], t["prog_type"])
        want = _expected_fields(t)
        assert want, f"no fields checked for link type {t['type_name']}"
        assert {k: info.get(k) for k in want} == want, (t["id"], t["type_name"])
        if t["type_name"] == "kprobe_multi":
            assert [f["addr"] for f in info["funcs"]] == t["addrs"]
            # the loader's own description names the functions
            names = t["zoo_target"].split(":", 1)[1].split(",")
            assert [f["func"] for f in info["funcs"]] == names
        if t["type_name"] == "uprobe_multi":
            assert [f["offset"] for f in info["funcs"]] == t["offsets"]
        assert sorted(r["Pinned"].split(",")) == sorted(t["pinned_at"]) or (
            not r["Pinned"] and not t["pinned_at"])
        assert [p["pid"] for p in info.get("pids", [])] == sorted({h["pid"] for h in t["fd_holders"]})


def test_links_targets_name_what_the_loader_attached():
    """The human target names what bpf_zoo says it attached (function, tracepoint, device...)."""
    truth = zoo()
    got = _links()
    for t in truth["links"]:
        target = got[t["id"]]["Target"]
        zt = t["zoo_target"] or ""
        if t["type_name"] == "tracing":       # fentry:hrtimer_nanosleep, lsm:file_open
            func = zt.split(":", 1)[1]
            assert target.endswith(func), (target, zt)
        elif t["type_name"] in ("cgroup",):
            assert target == t["target"], (target, t["target"])
        elif t["type_name"] in ("raw_tracepoint", "xdp", "tcx", "netfilter", "sockmap", "iter"):
            assert target == t["target"], (target, t["target"])
        elif t["type_name"] == "perf_event" and t["perf_event_type"] != "event":
            assert target.startswith(t["target"]), (target, t["target"])


def test_links_info_equals_bpftool():
    """Info is shaped like bpftool's `link show -j` (ids that moved and counters aside)."""
    truth = zoo()
    got = _links()
    for b in truth["bpftool_objects"]["link_show"]:
        info = json.loads(got[b["id"]]["Info"])
        for key, value in b.items():
            if key == "pids":
                continue        # taken before the collector; checked against fd holders above
            if key == "bpf_cookie":
                continue        # bpftool's duplicate of "cookie"
            if key == "funcs":
                assert [{k: f[k] for k in ("addr", "func", "offset", "ref_ctr_offset", "cookie") if k in f}
                        for f in info[key]] == [
                    {k: f[k] for k in ("addr", "func", "offset", "ref_ctr_offset", "cookie") if k in f}
                    for f in value]
                continue
            assert info.get(key) == value, (b["id"], key, info.get(key), value)


def scheduler_ops_name(truth):
    """The ops name of the dump's scheduler: sysfs `root/ops` while it runs; after an exit (the
    loader frozen, its struct_ops link alive) the name the kernel logged when disabling it."""
    live = (truth.get("sched_ext") or {}).get("root/ops")
    if live:
        return live.strip()
    return truth["exit"]["kernel_log"]["disabled_ops_name"]


def scheduler_ops_struct(dump, truth):
    """The struct_ops type the scheduler registered: `sched_ext_ops`, unless the kernel's exit
    backtrace names the trampolines of another one (`bpf__sched_ext_ops_cid_enqueue`: scx_qmap on
    7.2 registers `struct sched_ext_ops_cid`). A trampoline is `bpf__<struct>_<member>`: the
    struct is the kernel BTF struct whose member completes the name."""
    symbols = set(re.findall(r"bpf__(sched_ext_ops\w*)\+", json.dumps(truth.get("exit") or {})))
    if not symbols:
        return "sched_ext_ops"
    from volatility3_ktstr import btf

    kbtf = btf.load(dumps.kernel_dir(dump) / "btf.raw")
    found = set()
    for sym in symbols:
        parts = sym.split("_")
        for i in range(len(parts) - 1, 2, -1):
            name, member = "_".join(parts[:i]), "_".join(parts[i:])
            try:
                if member in {m.name for m in kbtf.struct(name).members}:
                    found.add(name)
                    break
            except KeyError:
                continue
    assert len(found) == 1, (symbols, found)
    return found.pop()


def test_struct_ops_link_on_every_dump(dump):
    truth = dumps.load_truth(dump)
    got = {r["ID"]: r for r in rows(dump, "linux.ktstr.links") if r["ID"] >= 0}
    for b in truth["bpftool"].get("link_list") or []:
        if b["id"] not in got and b["id"] in (truth.get("bpftool_objects") or {}).get("bpftool_only_ids", {}).get("link", []):
            continue
        info = json.loads(got[b["id"]]["Info"])
        assert {k: info.get(k) for k in ("id", "type", "prog_id", "map_id") if k in b} == \
            {k: b[k] for k in ("id", "type", "prog_id", "map_id") if k in b}
        if "pids" in b:
            assert [p["comm"] for p in info["pids"]] == [p["comm"] for p in b["pids"]]
        if b["type"] == "struct_ops":   # the scheduler the struct_ops map carries
            assert (info["struct_ops"], info["ops_name"]) == (scheduler_ops_struct(dump, truth),
                                                              scheduler_ops_name(truth))


# --- fd holders and pins -------------------------------------------------------------------


def test_bpffds_equal_truth():
    truth = zoo()
    got = rows(ZOO, "linux.ktstr.bpffds")
    assert not [r for r in got if r["Error"]]
    have = {(r["PID"], r["Comm"], r["FD"], r["Kind"], r["ID"]) for r in got}
    want = {(h["pid"], h["comm"], h["fd"], h["obj"], h["id"]) for h in truth["bpf_fd_holders"]}
    assert have == want
    names = {("map", m["id"]): m["name"] for m in truth["maps"]}
    names.update({("prog", p["id"]): p["name"] for p in truth["progs"]})
    for r in got:
        if (r["Kind"], r["ID"]) in names:
            assert r["Name"] == names[(r["Kind"], r["ID"])]


def test_bpfpins_equal_truth():
    truth = zoo()
    got = rows(ZOO, "linux.ktstr.bpfpins")
    assert not [r for r in got if r["Error"]]
    have = {(r["Path"], r["Kind"], r["ID"], r["Inode"]) for r in got}
    want = {(p["path"], p["obj"], p["id"], p["inode"]) for p in truth["pins"]}
    assert have == want


def test_fd_holders_on_every_dump(dump):
    """Dumps without zoo truth: the scheduler's process holds its maps, programs and link."""
    truth = dumps.load_truth(dump)
    got = rows(dump, "linux.ktstr.bpffds")
    assert not [r for r in got if r["Error"]]
    sched = [t for t in truth["tasks"] if t["comm"] == truth["scheduler"]["name"] and t["tid"] == t["tgid"]]
    assert sched
    pid = sched[0]["tgid"]
    mine = {(r["Kind"], r["ID"]) for r in got if r["PID"] == pid}
    assert {("prog", p["id"]) for p in truth["progs"] if p["type_name"] == "struct_ops"} <= mine
    assert ("link", 1) in mine


# --- hooks ---------------------------------------------------------------------------------------


def _hooks(name=ZOO):
    return [r for r in rows(name, "linux.ktstr.bpfhooks") if r["ProgId"] >= 0]


def test_bpfhooks_legacy_attachments_equal_truth():
    truth = zoo()
    got = _hooks()
    assert not [r for r in rows(ZOO, "linux.ktstr.bpfhooks") if r["Error"]]
    legacy = {(r["ProgId"], r["AttachType"]) for r in got if r["Source"] == "no link"}
    assert legacy == {(a["prog_id"], a["attach_type"]) for a in truth["legacy_attachments"]}
    for a in truth["legacy_attachments"]:
        r = next(r for r in got if r["ProgId"] == a["prog_id"] and r["Source"] == "no link")
        assert r["LinkId"] == 0
        if a["target"].startswith("cgroup:"):
            assert a["target"].endswith(r["Target"].split(":", 1)[1]), (r["Target"], a["target"])
        else:     # "ifindex:1(lo)"
            assert r["Target"] == "dev:" + a["target"].split("(")[1].rstrip(")")


def test_bpfhooks_attribute_every_program():
    """Every program of truth is on a hook (with the link truth names) or 'loaded, not attached'."""
    truth = zoo()
    got = _hooks()
    by_prog = {}
    for r in got:
        by_prog.setdefault(r["ProgId"], []).append(r)
    assert set(by_prog) == {p["id"] for p in truth["progs"]}
    for t in truth["links"]:
        if t["prog_id"]:
            assert t["id"] in {r["LinkId"] for r in by_prog[t["prog_id"]]}, t["id"]
    # struct_ops programs run as the scheduler's callbacks, through its struct_ops link
    so_link = next(t["id"] for t in truth["links"] if t["type_name"] == "struct_ops")
    for p in truth["progs"]:
        if p["type_name"] == "struct_ops":
            assert any(r["Hook"] == "struct_ops" and r["LinkId"] == so_link
                       and r["Target"].startswith("sched_ext_ops.") for r in by_prog[p["id"]])
    # the tail-call target is reached through zoo_jmp slot 0 only
    tail = next(p["id"] for p in truth["progs"] if p["name"] == "zoo_tail")
    assert [(r["Hook"], r["Target"]) for r in by_prog[tail]] == [("tail_call", "zoo_jmp[0]")]
    assert not [r for r in got if r["Source"] == "link not in link_idr"]


def test_bpfhooks_on_every_dump(dump):
    truth = dumps.load_truth(dump)
    got = rows(dump, "linux.ktstr.bpfhooks")
    assert not [r for r in got if r["Error"]]
    assert {r["ProgId"] for r in got} == {p["id"] for p in truth["progs"]}
    # Every program is attached somewhere, but for BPF_PROG_TYPE_SYSCALL ones: they are run with
    # BPF_PROG_TEST_RUN (the scx library's arena setup in x86_64/scx_sdt_alloc), never attached.
    syscall_type = _kernel_enum_value(dump, "bpf_prog_type", "BPF_PROG_TYPE_SYSCALL")
    truth_type = {p["id"]: p["type"] for p in truth["progs"]}
    unattached = [r for r in got if r["Hook"] == "none"]
    assert all(truth_type[r["ProgId"]] == syscall_type and r["Target"] == "loaded, not attached"
               for r in unattached), unattached


def _kernel_enum_value(dump, enum, name):
    from volatility3_ktstr import btf

    kbtf = btf.load(dumps.kernel_dir(dump) / "btf.raw")
    for t in kbtf.find(enum):
        for vname, value in t.values:
            if vname == name:
                return value
    raise AssertionError(f"{enum}.{name} not in the kernel BTF of {dump}")


# --- progs: the added columns -------------------------------------------------------------------


def test_progs_new_columns_equal_bpftool():
    truth = zoo()
    got = {r["ID"]: r for r in rows(ZOO, "linux.ktstr.progs") if r["ID"] >= 0}
    holders = {}
    for h in truth["bpf_fd_holders"]:
        if h["obj"] == "prog":
            holders.setdefault(h["id"], []).append(h["pid"])
    for b in truth["bpftool_objects"]["prog_show"]:
        if b["id"] not in got:
            continue
        r = got[b["id"]]
        assert (r["Uid"], bool(r["Gpl"])) == (b["uid"], b["gpl_compatible"]), b["id"]
        assert [int(p.split(":")[0]) for p in r["Pids"].split(",") if p] == sorted(set(holders.get(b["id"], [])))
        assert r["RunCnt"] >= 0 and r["RunTimeNs"] >= 0 and r["Misses"] >= 0


def test_progs_calls_and_tail_calls():
    truth = zoo()
    got = {r["Name"]: r for r in rows(ZOO, "linux.ktstr.progs") if r["ID"] >= 0}
    tail = next(p for p in truth["progs"] if p["name"] == "zoo_tail")
    jmp = next(m for m in truth["maps"] if m["name"] == "zoo_jmp")
    callers = [r for r in got.values() if r["TailCalls"]]
    assert callers and all(r["TailCalls"] == f"zoo_jmp[0]->zoo_tail#{tail['id']}" for r in callers)
    assert all(jmp["id"] in [int(x) for x in r["MapIds"].split(",")] for r in callers)
    assert all("tail_call#12" in r["Helpers"].split(",") for r in callers)
    # zoo_tp writes openat events into the ring buffer; zoo_kprobe counts in zoo_lru
    assert {"ringbuf_reserve#131", "ringbuf_submit#132"} <= set(got["zoo_tp"]["Helpers"].split(","))
    assert {"map_lookup_elem#1", "map_update_elem#2"} <= set(got["zoo_kprobe"]["Helpers"].split(","))
    # the scheduler's kfuncs are named, each with its kernel BTF id
    sched = [r for r in got.values() if r["Type"] == "struct_ops"]
    kfuncs = {k for r in sched for k in r["Kfuncs"].split(",") if k}
    assert kfuncs and all("#" in k and k.split("#")[1].isdigit() for k in kfuncs)
    assert any(k.startswith("scx_bpf_") for k in kfuncs)


# --- hidden objects -------------------------------------------------------------------------------


def _minimized(dump):
    """The dumps that hold only the pages yesterday's plugins read (README of the dumps): the
    PID registry, btf_idr and css_set lists read as zeros there."""
    return dump in ("x86_64/scx_qmap_exit_error", "x86_64/scx_sdt_alloc")


def test_bpfhidden_reports_nothing_on_every_dump(dump):
    got = rows(dump, "linux.ktstr.bpfhidden")
    truth = dumps.load_truth(dump)
    s = got[-1]
    assert s["Kind"] == "summary" and s["ID"] == 0
    assert not [r for r in got if r["Verdict"] == "hidden"], got
    if _minimized(dump):
        # zero pages are never a witness: what they would decide is unverifiable, with the reason
        checked = [r for r in got if r["Verdict"] == "unverifiable"]
        assert checked and all(r["Error"] for r in checked)
        assert all(r["Kind"] in ("?", "summary") or r["Verdict"] == "unverifiable" for r in got)
        assert s["Name"].startswith("no hidden objects; ")
    else:
        assert [r["Kind"] for r in got] == ["summary"], got
        assert (s["Name"], s["Error"]) == ("no hidden objects", "")
    # everything in the registries was reached some other way too
    assert f"registries: {len(truth['progs'])} progs, {len(truth['maps'])} maps" in s["FoundVia"]
    assert s["FoundVia"].startswith(f"{len(truth['progs'])} progs, {len(truth['maps'])} maps")
    # no rc_core on these guests: lirc had nothing to walk, and the summary says why
    assert "lirc: module rc_core is not loaded" in s["FoundVia"]
