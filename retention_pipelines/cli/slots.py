"""A domain's pool slot left behind by a `retention run` that was killed.

A run executed in this process holds its domain's pool slot (dagster_wiring/common.domain_pool)
while its step runs. Killed outright (SIGKILL, a closed laptop), it can neither free the slot nor
end its run: the run stays STARTED and the next run of the domain would wait for the slot for ever.
No daemon watches a run executed in process, so the CLI does, before each run: a run that this
host's CLI started, whose process is gone, is marked failed and its slots freed; so are the slots of
a run that has ended. A run started anywhere else is left to the daemon's run monitoring
(run_monitoring.free_slots_after_run_end_seconds in dagster.yaml).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST_TAG = "retention/cli_host"
PID_TAG = "retention/cli_pid"


def this_process_tags() -> dict[str, str]:
    """The tags that let a later CLI tell whether this process still runs the run."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def release_slots_of_dead_runs(instance, pool: str) -> list[str]:
    """Free `pool`'s slots held by runs that can no longer free them; the ids of those runs."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    released = []
    for run_id in {slot.run_id for slot in storage.get_concurrency_info(pool).claimed_slots}:
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            if run.tags.get(HOST_TAG) != socket.gethostname() or _alive(run.tags.get(PID_TAG, "")):
                continue  # running, or not ours to judge
            instance.report_run_failed(run, message="the `retention run` process running it ended without "
                                                    "finishing it; a later run freed its pool slot")
        storage.free_concurrency_slots_for_run(run_id)
        released.append(run_id)
    return released


def _alive(pid: str) -> bool:
    """Whether the process runs: a zombie (ended, not yet reaped) does not."""
    if not pid.isdigit():
        return False
    if not Path("/proc/self").exists():  # no procfs (macOS): a signal 0 says whether the pid exists
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
