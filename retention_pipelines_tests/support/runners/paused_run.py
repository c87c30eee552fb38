"""retention_run.py's run of quiz_responses, which stops its own process (SIGSTOP) at a known
instant, for the lock-expiry faults; the test resumes it with SIGCONT.

    python -m retention_pipelines_tests.support.runners.paused_run '<json config>'

Config as retention_run.py's, plus "pause_before_batch": n (stop before the nth batch's transaction
begins) or "pause_before_commit": n (stop inside the nth batch's transaction, after its lock
check passed, before its commit). Emits a "paused" event just before stopping, and a "failed"
event with the operator's message (operator_errors) if the run fails.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

from retention_pipelines.engine.retention.run import RetentionEngine
from retention_pipelines_tests.support.runners import retention_run

CONFIG = json.loads(sys.argv[1]) if __name__ == "__main__" else {}
_batches, _guard = [0], threading.Lock()


def _stop_here(batch: int) -> None:
    retention_run.emit(event="paused", batch=batch)
    os.kill(os.getpid(), signal.SIGSTOP)  # the whole process, its lock renewer too, as a long GC pause or a frozen VM


class _StopsAfterItsCheck:
    """The run's lock, whose check in the nth batch passes and then stops the process."""

    def __init__(self, held, batch: int):
        self.held, self.batch, self.domain = held, batch, held.domain

    def ensure_held(self) -> None:
        self.held.ensure_held()
        _stop_here(self.batch)

    def release(self) -> None:
        self.held.release()


_act_on_batch = RetentionEngine._act_on_batch


def _pausing_act_on_batch(self, batch, clock_cutoff, selection, stamp, lock, fence=None):
    with _guard:
        _batches[0] += 1
        number = _batches[0]
    if CONFIG.get("pause_before_batch") == number:
        _stop_here(number)
    if CONFIG.get("pause_before_commit") == number and lock is not None:
        lock = _StopsAfterItsCheck(lock, number)
    return _act_on_batch(self, batch, clock_cutoff, selection, stamp, lock, fence)


def main() -> int:
    import dagster as dg

    from retention_pipelines.dagster_wiring.common import operator_errors

    RetentionEngine._act_on_batch = _pausing_act_on_batch
    try:
        with operator_errors():
            return retention_run.main()
    except dg.Failure as failure:
        retention_run.emit(event="failed", message=failure.description)
        return 1


if __name__ == "__main__":
    sys.exit(main())
