"""Faults: the lock service (Redis) down before a run, and stopped in the middle
of one. Each test stops its own Redis server (the session's is shared), then starts it again on
the same port for the rerun."""

from __future__ import annotations

import threading

import pytest

from retention_pipelines.stores import HeldLock, domain_locks
from retention_pipelines.stores.lock import RedisDomainLocks
from retention_pipelines_tests.support.app_rows import bulk_insert_pg, remaining_ids
from retention_pipelines_tests.support.audit_rows import audit_rows
from retention_pipelines_tests.support.engines import engine_for
from retention_pipelines_tests.support.faults import clear_failure, fixed_batches, loss, outcome, rerun_outcome
from retention_pipelines_tests.support.figures import record
from retention_pipelines_tests.support.servers import RedisServer

DUE, BATCH = 2000, 50


@pytest.fixture
def own_redis():
    server = RedisServer().start()
    yield server
    server.stop()


class StopsRedisAtCheck(HeldLock):
    """The run's real Redis lock; its `at`-th lock check (one per batch, inside the batch's
    transaction) first stops the Redis server: Redis goes down between two batches."""

    def __init__(self, held: HeldLock, server: RedisServer, at: int):
        self.held, self.server, self.at, self.domain = held, server, at, held.domain
        self.checks, self._guard = 0, threading.Lock()

    def ensure_held(self) -> None:
        with self._guard:
            self.checks += 1
            if self.checks == self.at:
                self.server.stop_process()
        self.held.ensure_held()

    def release(self) -> None:
        self.held.release()


def run_locked(engine, redis_url: str, run_id: str, lock_wrapper=None) -> None:
    """A run as a domain step makes it: the domain's lock first, the engine under it."""
    held = domain_locks(redis_url, None, 30.0).acquire("quiz_responses")
    lock = lock_wrapper(held) if lock_wrapper else held
    try:
        engine.run(run_id, lock=lock)
    finally:
        lock.release()


def rerun_with_redis_back(engine, database, redis: RedisServer, inserted: set[str]) -> str | None:
    """Redis started again on its port; a run under its lock finishes the job, each row once."""
    redis.start()
    return rerun_outcome(engine, database, inserted, None, rerun=lambda: run_locked(engine, redis.url, "rerun"))


def test_redis_down_before_the_run(pg_database, policies, quiz_policy, local_archive_url, own_redis):
    """The lock cannot be taken: the run fails naming the lock service and does nothing."""
    bulk_insert_pg(pg_database, DUE, "2 days")
    inserted = remaining_ids(pg_database)
    engine = engine_for(fixed_batches(quiz_policy, BATCH), policies, pg_database, local_archive_url)
    own_redis.stop_process()

    message = outcome(lambda: run_locked(engine, own_redis.url, "redis-down"))
    untouched = remaining_ids(pg_database) == inserted and not audit_rows(pg_database)
    clear = clear_failure(message, "lock service", "redis://")
    rerun = rerun_with_redis_back(engine, pg_database, own_redis, inserted)
    record("faults: Redis down before the run", "0 lost, failure names Redis",
           f"{'nothing done' if untouched else 'ROWS TOUCHED'}; failed: {(message or 'no failure')[:80]}; "
           f"rerun {'finished' if rerun is None else 'FAILED'}", untouched and clear and rerun is None)
    assert untouched, "a run without its lock changed something"
    assert clear, f"the failure does not name the lock service in one clean line: {message!r}"
    assert rerun is None, rerun


def test_redis_down_during_the_run(pg_database, policies, quiz_policy, local_archive_url, own_redis):
    """Redis stops between two batches: the run stops before committing another batch, failing
    with a message that names the lock service; nothing is lost, and a rerun finishes the job."""
    bulk_insert_pg(pg_database, DUE, "2 days")
    inserted = remaining_ids(pg_database)
    policy = fixed_batches(quiz_policy, BATCH)
    engine = engine_for(policy, policies, pg_database, local_archive_url)
    stopping: list[StopsRedisAtCheck] = []

    def stops_redis(held: HeldLock) -> HeldLock:
        stopping.append(StopsRedisAtCheck(held, own_redis, at=5))
        return stopping[0]

    message = outcome(lambda: run_locked(engine, own_redis.url, "redis-stops", stops_redis))
    deleted = len(inserted - remaining_ids(pg_database))
    lost = loss(pg_database, inserted, None)
    # The 5th check saw Redis gone: 4 batches committed, and at most one more per lane beside them
    # (a lane's batch whose check came before the 5th).
    stopped_in_time = deleted <= (4 + policy.parallel_batches) * BATCH
    clear = clear_failure(message, "lock service", "redis://")
    rerun = rerun_with_redis_back(engine, pg_database, own_redis, inserted)
    record("faults: Redis down during the run", "0 lost, failure names Redis",
           f"{'0 lost' if lost is None else 'LOSS'} ({deleted} deleted before); "
           f"failed: {(message or 'no failure')[:80]}; rerun {'finished' if rerun is None else 'FAILED'}",
           lost is None and stopped_in_time and clear and rerun is None)
    assert stopping and stopping[0].checks >= 5, "Redis was never stopped: the run had fewer batches"
    assert lost is None, lost
    assert stopped_in_time, f"{deleted} rows deleted: the run went on after Redis was gone"
    assert clear, f"the failure does not name the lock service in one clean line: {message!r}"
    assert rerun is None, rerun


def test_lock_service_url_password_stays_out_of_the_message(own_redis):
    """The message names the lock service by its URL without its password."""
    own_redis.stop_process()
    message = outcome(lambda: RedisDomainLocks(f"redis://:s3cret@127.0.0.1:{own_redis.port}/0").acquire("x"))
    assert clear_failure(message, "lock service", "redis://") and "s3cret" not in message, message
