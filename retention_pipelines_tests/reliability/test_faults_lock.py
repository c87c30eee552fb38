"""Faults: a run's Redis lock expires while its process is stopped (SIGSTOP, as a
long GC pause or a frozen VM would stop it); another run takes the lock and finishes the domain;
then the stale holder is resumed (SIGCONT).

Stopped between two batches, the stale holder must commit nothing more: its next batch's lock
check, inside the batch's transaction, finds the lock gone and rolls the batch back. Stopped between
a batch's lock check and its commit, it commits nothing either: the other run raised the domain's
fencing token before its first batch (engine/retention/fence.py), and the stale batch's last act, reading the
token, finds another run's and rolls back; meanwhile the row locks made the other run wait for it.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import redis

from retention_pipelines.stores.lock import RedisDomainLocks
from retention_pipelines_tests.support.app_rows import bulk_insert_pg, remaining_ids
from retention_pipelines_tests.support.audit_rows import audit_rows
from retention_pipelines_tests.support.engines import engine_for
from retention_pipelines_tests.support.faults import clear_failure, fixed_batches, loss, outcome, rerun_outcome
from retention_pipelines_tests.support.figures import record
from retention_pipelines_tests.support.runners.process import RunnerProcess

DUE, LATE, BATCH, PAUSE_AT, TTL = 1000, 100, 50, 5, 2.0
KEY = "retention:lock:quiz_responses"


class PausedRunner(RunnerProcess):
    MODULE = "retention_pipelines_tests.support.runners.paused_run"


def stale_run(pg_url: str, redis_url: str, archive_url: str, **pause) -> PausedRunner:
    return PausedRunner(database_url=pg_url, archive_url=archive_url, batch_size=BATCH, parallel_batches=1,
                        redis_url=redis_url, lock_ttl=TTL, run_id="stale", **pause)


def audited_by(database, run_id: str) -> int:
    return sum(1 for row in audit_rows(database, "deleted") if row["run_id"] == run_id)


def wait_until_expired(redis_url: str) -> None:
    """Until the stopped holder's lock key is gone (its TTL ran out with no renewal)."""
    client, deadline = redis.Redis.from_url(redis_url), time.monotonic() + 10 * TTL
    while client.exists(KEY):
        assert time.monotonic() < deadline, "the stopped run's lock never expired"
        time.sleep(0.05)


def holder_run(engine, redis_url: str):
    """The other run, under the lock it takes once the stale one's expired."""
    held = RedisDomainLocks(redis_url, ttl_seconds=30).acquire("quiz_responses")
    try:
        return engine.run("holder", lock=held)
    finally:
        held.release()


def test_stale_holder_stopped_between_batches_commits_nothing(pg_url, pg_database, redis_url, policies, quiz_policy,
                                                               local_archive_url):
    bulk_insert_pg(pg_database, DUE, "2 days")
    inserted = remaining_ids(pg_database)
    engine = engine_for(fixed_batches(quiz_policy, BATCH), policies, pg_database, local_archive_url)
    stale = stale_run(pg_url, redis_url, local_archive_url, pause_before_batch=PAUSE_AT)
    try:
        stale.wait_for("paused")
        before = audited_by(pg_database, "stale")
        wait_until_expired(redis_url)
        holder = holder_run(engine, redis_url)
        # Due rows after the stale run's place in its walk: what its next batch would delete.
        bulk_insert_pg(pg_database, LATE, "1 day 1 hour")
        late = remaining_ids(pg_database)
        os.kill(stale.process.pid, signal.SIGCONT)
        message = stale.wait_for("failed")["message"]
        stale.finish(60)
    finally:
        stale.close()
    after = audited_by(pg_database, "stale")
    lost = loss(pg_database, inserted | late, None)
    clear = clear_failure(message, "quiz_responses", "lock")
    rerun = rerun_outcome(engine, pg_database, inserted | late, None)
    record("faults: lock expired while its holder was stopped between batches", "stale holder commits 0, 0 lost",
           f"stale holder committed {after - before} rows after resuming; other run {holder.acted.acted_on} rows; "
           f"{'0 lost' if lost is None else 'LOSS'}; failed: {message[:70]}",
           after == before and lost is None and clear and rerun is None)
    assert before == (PAUSE_AT - 1) * BATCH
    assert holder.acted.acted_on == DUE - before
    assert after == before, f"the stale holder committed {after - before} rows after its lock expired"
    assert remaining_ids(pg_database) == set() and lost is None, lost
    assert clear, f"the stale holder's failure does not say it lost the domain's lock: {message!r}"
    assert rerun is None, rerun


def test_stale_holder_stopped_between_check_and_commit_does_nothing_twice(postgres_server, pg_url, pg_database,
                                                                         redis_url, policies, quiz_policy,
                                                                         local_archive_url):
    bulk_insert_pg(pg_database, DUE, "2 days")
    inserted = remaining_ids(pg_database)
    engine = engine_for(fixed_batches(quiz_policy, BATCH), policies, pg_database, local_archive_url)
    stale = stale_run(pg_url, redis_url, local_archive_url, pause_before_commit=PAUSE_AT)
    holder: dict = {}
    other = threading.Thread(target=lambda: holder.update(failure=outcome(
        lambda: holder.update(report=holder_run(engine, redis_url)))))
    try:
        stale.wait_for("paused")
        before = audited_by(pg_database, "stale")
        wait_until_expired(redis_url)
        other.start()
        waiting_on_the_stale_batch(pg_database)
        os.kill(stale.process.pid, signal.SIGCONT)
        message = stale.wait_for("failed")["message"]
        stale.finish(60)
        other.join(60)
    finally:
        stale.close()
    stale_rows = audited_by(pg_database, "stale") - before
    lost = loss(pg_database, inserted, None)
    record("faults: lock expired while its holder was stopped between a batch's check and commit",
           "stale holder commits 0 (fencing token), 0 lost",
           f"stale holder committed {stale_rows} rows after the other run took the lock; "
           f"{'0 lost, each row once' if lost is None else 'LOSS'}; failed: {message[:60]}",
           lost is None and stale_rows == 0 and not holder.get("failure"))
    assert before == (PAUSE_AT - 1) * BATCH
    assert not holder.get("failure"), holder.get("failure")
    assert lost is None, lost
    assert stale_rows == 0, f"the stale holder committed {stale_rows} rows after another run took the domain over"
    assert holder["report"].acted.acted_on == DUE - before - stale_rows
    assert remaining_ids(pg_database) == set()
    assert clear_failure(message, "quiz_responses", "lock"), message


def waiting_on_the_stale_batch(database) -> None:
    """Until the other run's DELETE waits on the rows of the stopped run's open transaction."""
    deadline = time.monotonic() + 30
    with database.engine.connect() as connection:
        while time.monotonic() < deadline:
            waiting = connection.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()").scalar_one()
            connection.rollback()
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the other run never waited on the stopped run's batch")
