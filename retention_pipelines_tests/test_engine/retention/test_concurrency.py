"""Two runs of one domain at once, each in its own process: with the Redis lock the second waits or
stops with DomainLocked; with no lock at all, DELETE … RETURNING still acts on each row once."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest
import redis
import sqlalchemy as sa

from retention_pipelines.policies.model import Pacing
from retention_pipelines.stores import LockLost
from retention_pipelines.stores.lock import RedisDomainLocks
from retention_pipelines_tests.support.app_rows import bulk_insert_pg, remaining_ids
from retention_pipelines_tests.support.audit_rows import audit_rows
from retention_pipelines_tests.support.engines import engine_for
from retention_pipelines_tests.support.invariants import assert_each_deleted_audited_once
from retention_pipelines_tests.support.legal_holds import place_hold
from retention_pipelines_tests.support.runners.process import RunnerProcess

DUE, BATCH = 3000, 50


def runner(pg_url: str, archive_url: str, run_id: str, **extra) -> RunnerProcess:
    return RunnerProcess(database_url=pg_url, archive_url=archive_url, batch_size=BATCH, run_id=run_id, **extra)


def assert_all_deleted_once(database, inserted: set[str], fresh: set[str]) -> None:
    assert remaining_ids(database) == fresh
    assert_each_deleted_audited_once(database, inserted, fresh)
    assert len(audit_rows(database, "deleted")) == len(inserted - fresh)


@pytest.fixture
def rows(pg_database):
    bulk_insert_pg(pg_database, 100, "1 hour", email="fresh@example.invalid")
    fresh = remaining_ids(pg_database)
    bulk_insert_pg(pg_database, DUE, "2 days")
    return remaining_ids(pg_database), fresh


def test_second_run_without_waiting_stops_with_domain_locked(pg_url, pg_database, redis_url, local_archive_url,
                                                             rows):
    inserted, fresh = rows
    first = runner(pg_url, local_archive_url, "first", redis_url=redis_url, wait_for_go=True)
    second = None
    try:
        first.wait_for("acquired")
        second = runner(pg_url, local_archive_url, "second", redis_url=redis_url, lock_wait=0)
        locked = second.wait_for("locked")
        assert second.finish(30) == 3
        assert "quiz_responses" in locked["message"] and "lock" in locked["message"]
        assert "another run" in locked["message"]
        first.go()
        assert first.wait_for("done")["acted_on"] == DUE
        assert first.finish() == 0
    finally:
        first.close()
        if second is not None:
            second.close()
    assert {r["run_id"] for r in audit_rows(pg_database)} == {"first"}
    assert_all_deleted_once(pg_database, inserted, fresh)


def test_second_run_waits_for_the_lock_then_finds_nothing_left(pg_url, pg_database, redis_url, local_archive_url,
                                                               rows):
    inserted, fresh = rows
    first = runner(pg_url, local_archive_url, "first", redis_url=redis_url, wait_for_go=True)
    second = None
    try:
        first.wait_for("acquired")
        second = runner(pg_url, local_archive_url, "second", redis_url=redis_url, lock_wait=60)
        second.wait_for("ready")
        time.sleep(1.0)
        assert not second.has_seen("acquired") and not second.has_seen("locked"), second.seen
        first.go()
        first_done = first.wait_for("done")
        second_acquired = second.wait_for("acquired")
        second_done = second.wait_for("done")
        assert first.finish() == 0 and second.finish() == 0
    finally:
        first.close()
        if second is not None:
            second.close()
    assert second_acquired["at"] >= first_done["released_at"]
    assert first_done["acted_on"] == DUE
    assert second_done["acted_on"] == 0
    assert_all_deleted_once(pg_database, inserted, fresh)


@pytest.mark.parametrize("archive", [False, True], ids=["no-archive", "archive"])
def test_two_runs_without_any_lock_act_on_each_row_once(pg_url, pg_database, local_archive_url, rows, archive):
    inserted, fresh = rows
    runs = [runner(pg_url, local_archive_url, f"unlocked-{i}", archive=archive, wait_for_go=True) for i in (1, 2)]
    try:
        for run in runs:
            run.wait_for("ready")
        for run in runs:
            run.go()
        done = [run.wait_for("done", timeout=120) for run in runs]
        assert [run.finish() for run in runs] == [0, 0]
    finally:
        for run in runs:
            run.close()
    assert sum(d["acted_on"] for d in done) == DUE
    assert all(d["consistent"] for d in done)
    assert_all_deleted_once(pg_database, inserted, fresh)


def test_two_runs_without_any_lock_report_a_held_row_once_and_both_finish(postgres_server, pg_url, pg_database,
                                                                          local_archive_url, rows):
    """Both runs find the held row unreported and report it at the same moment (forced here: a
    third transaction holds the same report uncommitted, then gives it up). The audit log takes
    one report; the run whose report is refused must carry on, not fail."""
    inserted, fresh = rows
    (held,) = sorted(inserted - fresh)[:1]
    place_hold(pg_database, held)
    blocker = psycopg2.connect(postgres_server.dsn(sa.engine.make_url(pg_url).database))
    watcher = psycopg2.connect(postgres_server.dsn(sa.engine.make_url(pg_url).database))
    watcher.autocommit = True
    with blocker.cursor() as cursor:
        cursor.execute("INSERT INTO retention_audit_held_once (domain, record_id) VALUES ('quiz_responses', %s)",
                       (held,))
    url = f"{pg_url}?application_name=retention-racing"
    runs = [runner(url, local_archive_url, f"racing-{i}", wait_for_go=True) for i in (1, 2)]
    try:
        for run in runs:
            run.wait_for("ready")
        for run in runs:
            run.go()
        with watcher.cursor() as cursor:  # both reports wait on the uncommitted one
            deadline = time.monotonic() + 30
            waiting = 0
            while waiting < 2 and time.monotonic() < deadline:
                cursor.execute("SELECT count(*) FROM pg_stat_activity "
                               "WHERE application_name = 'retention-racing' AND wait_event_type = 'Lock'")
                waiting = cursor.fetchone()[0]
                time.sleep(0.02)
        assert waiting == 2, "the two runs did not both wait to report the held row"
        blocker.rollback()
        codes = [run.finish(120) for run in runs]
        errors = [run.stderr_tail()[-600:] for run in runs]
        assert codes == [0, 0], f"a run failed: {errors}"
    finally:
        for run in runs:
            run.close()
        blocker.close()
        watcher.close()
    reports = audit_rows(pg_database, "skipped_legal_hold")
    assert [r["record_id"] for r in reports] == [held]
    assert_all_deleted_once(pg_database, inserted, fresh | {held})


def test_a_run_that_loses_its_lock_stops_deleting(pg_database, redis_url, policies, quiz_policy,
                                                  local_archive_url, rows):
    """The lock's key is taken away mid-run: the run raises LockLost and commits no batch after
    the ones already past their lock check."""
    inserted, fresh = rows
    # Batches of exactly batch_size rows (no pacing), so that what one batch can add is known.
    policy = quiz_policy.model_copy(update={"batch_size": 20, "pacing": Pacing(batch_target_ms=None)})
    engine = engine_for(policy, policies, pg_database, local_archive_url)
    held = RedisDomainLocks(redis_url, ttl_seconds=30).acquire("quiz_responses")
    at_loss: dict[str, int] = {}

    def take_the_lock_away() -> None:
        with pg_database.engine.connect() as connection:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                count = connection.exec_driver_sql("SELECT count(*) FROM retention_audit_log").scalar_one()
                connection.rollback()
                if count > 0:
                    redis.Redis.from_url(redis_url).delete("retention:lock:quiz_responses")
                    # Counted after the key is gone: batches may have committed between the first
                    # count and the delete (this thread waits its turn for the GIL).
                    at_loss["audited"] = connection.exec_driver_sql(
                        "SELECT count(*) FROM retention_audit_log").scalar_one()
                    return
                time.sleep(0.002)

    thief = threading.Thread(target=take_the_lock_away)
    thief.start()
    try:
        with pytest.raises(LockLost, match="quiz_responses"):
            engine.run("loses-its-lock", lock=held)
    finally:
        thief.join()
        held.release()
    deleted = len(inserted - remaining_ids(pg_database))
    assert 0 < deleted < DUE
    assert deleted <= at_loss["audited"] + policy.parallel_batches * policy.batch_size
    assert_each_deleted_audited_once(pg_database, inserted, remaining_ids(pg_database))
