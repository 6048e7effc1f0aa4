"""What truth.json says, shaped the way plugin output is compared with it."""


def expected_processes(truth):
    """(pid, comm) of every thread-group leader; comm as task_struct.comm holds it."""
    return sorted((t["tgid"], t["task_comm"]) for t in truth["tasks"]
                  if t.get("kind", "task") == "task" and t["tid"] == t["tgid"])


def listed_processes(result):
    result.check()
    return sorted((row["PID"], row["COMM"]) for row in result.rows)
