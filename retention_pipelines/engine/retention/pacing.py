"""How big each batch is and how fast batches follow each other, so that a run never holds the
app's rows or cores for long (the way pt-archiver's --sleep-coef and pt-online-schema-change's
--chunk-time do it for MySQL; nothing of theirs works on PostgreSQL, hence this small module).

- Batch size adapts to a target time per batch transaction: after each batch, the next size is
  what the rows/s just seen would do in the target time, moved at most ×2 or ÷2 at a time, within
  [min_batch_size (or batch_size, if smaller), batch_size × 4]; no target: always batch_size.
- Throttle: while the database is busy with others' work (at least `busy_sessions` of the app's
  sessions at work in the last second), each worker sleeps `sleep_coefficient` × its batch's time
  after each batch, and batches go one at a time: the app keeps the rest of the cores and WAL.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import sqlalchemy as sa

from retention_pipelines.policies import DomainPolicy
from retention_pipelines.stores import Dialect
from retention_pipelines.stores.database import APPLICATION_NAME

LOAD_SAMPLE_SECONDS = 0.2  # pg_stat_activity read at most five times a second


class BatchPacer:
    """One run's batch sizes and pauses; safe to share between the run's worker threads."""

    def __init__(self, policy: DomainPolicy, engine: sa.Engine, fixed_size: bool = False):
        pacing = policy.pacing
        self.target_seconds = None if pacing.batch_target_ms is None else pacing.batch_target_ms / 1000
        self.min_size, self.max_size = min(pacing.min_batch_size, policy.batch_size), policy.batch_size * 4
        self.size = policy.batch_size
        self.fixed_size = fixed_size or self.target_seconds is None
        self.sleep_coefficient, self.busy_sessions = pacing.sleep_coefficient, pacing.busy_sessions
        throttles = self.sleep_coefficient and Dialect.of(engine).shows_sessions_at_work
        self.load = DatabaseLoad(engine) if throttles else None
        self.slept_seconds = 0.0
        self.busy = False  # as last seen after a batch
        self._lock, self._one_at_a_time = threading.Lock(), threading.Lock()

    def next_size(self) -> int:
        with self._lock:
            return self.size

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Around one batch: while the database is busy, batches go one at a time (the workers
        take turns), so that the run holds at most one core of the app's."""
        if self.load is None or not self.busy:
            yield
            return
        with self._one_at_a_time:
            yield

    def after_batch(self, rows: int, seconds: float) -> None:
        """Learn from one finished batch; then pause the calling worker if the database is busy."""
        with self._lock:
            if not self.fixed_size and rows and seconds > 0:
                wanted = rows / seconds * self.target_seconds
                self.size = int(min(self.max_size, max(self.min_size, min(self.size * 2, max(self.size / 2, wanted)))))
        if self.load is None:
            return
        self.busy = self.load.others_at_work() >= self.busy_sessions
        if self.busy:
            pause = self.sleep_coefficient * seconds
            with self._lock:
                self.slept_seconds += pause
            time.sleep(pause)


class DatabaseLoad:
    """How many of the app's sessions (any but this project's) were at work in the last second:
    running a statement, in a transaction, or finished one within that second. pg_stat_activity
    shows it at once, where pg_stat_database's counters arrive about once a second."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self._lock = threading.Lock()
        self._sampled_at, self._sessions = 0.0, 0

    def others_at_work(self) -> int:
        with self._lock:
            now = time.monotonic()
            if now - self._sampled_at >= LOAD_SAMPLE_SECONDS:
                with self.engine.connect() as connection:
                    self._sessions = int(connection.execute(sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                        "AND pid <> pg_backend_pid() AND datname = current_database() "
                        "AND application_name IS DISTINCT FROM :ours "
                        "AND (state <> 'idle' OR state_change > now() - interval '1 second')"),
                        {"ours": APPLICATION_NAME}).scalar_one())
                self._sampled_at = now
            return self._sessions
