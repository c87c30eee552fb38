"""A run killed by SIGKILL, between batches or inside one, leaves every deleted row audited (and
archived where the policy archives), and a rerun converges."""

from __future__ import annotations

import time

import psycopg2
import pytest
import sqlalchemy as sa

from retention_pipelines_tests.support.app_rows import bulk_insert_pg, remaining_ids
from retention_pipelines_tests.support.audit_rows import audit_rows
from retention_pipelines_tests.support.engines import archiving, engine_for
from retention_pipelines_tests.support.invariants import assert_invariant
from retention_pipelines_tests.support.runners.process import RunnerProcess

DUE, BATCH = 5000, 50
VARIANTS = [pytest.param(None, id="no-archive"), pytest.param("local", id="archive-local"),
            pytest.param("s3", id="archive-s3")]


@pytest.fixture
def archive_kind(request):
    return request.param


@pytest.fixture
def archive_url(request, archive_kind) -> str:
    return request.getfixturevalue("s3_archive_url" if archive_kind == "s3" else "local_archive_url")


def dsn(postgres_server, url: str) -> str:
    return postgres_server.dsn(sa.engine.make_url(url).database)


def rerun_converges(policy, policies, database, archive_url, inserted: set[str]) -> None:
    report = engine_for(policy, policies, database, archive_url).run("rerun")
    assert report.audited.consistent
    assert remaining_ids(database) == set()
    assert_invariant(database, inserted, archive_url if policy.archive.enabled else None)
    assert len(audit_rows(database, "deleted")) == len(inserted)


def start_runner(pg_url: str, archive_url: str, archived: bool, **extra) -> RunnerProcess:
    return RunnerProcess(database_url=pg_url, archive_url=archive_url, batch_size=BATCH, archive=archived,
                         run_id="killed", **extra)


@pytest.mark.parametrize("archive_kind", VARIANTS, indirect=True)
def test_killed_between_batches(postgres_server, pg_url, pg_database, policies, quiz_policy, archive_url,
                                archive_kind):
    bulk_insert_pg(pg_database, DUE, "2 days")
    inserted = remaining_ids(pg_database)
    archived = archive_kind is not None
    watcher = psycopg2.connect(dsn(postgres_server, pg_url))
    watcher.autocommit = True
    runner = start_runner(pg_url, archive_url, archived)
    try:
        runner.wait_for("ready")
        # Killed once the first batch has committed. That takes well under a second on a quiet
        # machine, and far longer on a busy one (the other pytest-xdist worker, other work): the wait
        # ends at the first audit row, so a long limit costs nothing, and a kill before any commit
        # would prove nothing.
        committed, deadline = False, time.monotonic() + 300
        with watcher.cursor() as cursor:
            while not committed and time.monotonic() < deadline:
                cursor.execute("SELECT count(*) FROM retention_audit_log")
                committed = cursor.fetchone()[0] > 0
                time.sleep(0 if committed else 0.002)
        assert committed, f"no batch committed in 300 s; events {runner.seen}"
        runner.kill()
    finally:
        runner.close()
        watcher.close()
    assert runner.process.returncode == -9, "the run ended before it could be killed"

    remaining = assert_invariant(pg_database, inserted, archive_url if archived else None)
    assert 0 < len(inserted - remaining) < DUE

    policy = archiving(quiz_policy, batch_size=BATCH) if archived else quiz_policy.model_copy(
        update={"batch_size": BATCH})
    rerun_converges(policy, policies, pg_database, archive_url, inserted)


@pytest.mark.parametrize("archive_kind", VARIANTS[:2], indirect=True)
def test_killed_inside_a_batch(postgres_server, pg_url, pg_database, policies, quiz_policy, archive_url,
                               archive_kind):
    bulk_insert_pg(pg_database, DUE, "2 days")
    inserted = remaining_ids(pg_database)
    archived = archive_kind is not None
    locker = psycopg2.connect(dsn(postgres_server, pg_url))
    watcher = psycopg2.connect(dsn(postgres_server, pg_url))
    watcher.autocommit = True
    with locker.cursor() as cursor:  # the first row of the 50th batch, locked: that batch's DELETE waits
        cursor.execute("SELECT id::text FROM quiz_responses ORDER BY created_at, id OFFSET %s LIMIT %s",
                       (49 * BATCH, BATCH))
        locked_batch = [record_id for (record_id,) in cursor.fetchall()]
        locked_id = locked_batch[0]
        cursor.execute("SELECT id FROM quiz_responses WHERE id = %s FOR UPDATE", (locked_id,))
    # One lane: the batches are the consecutive runs of BATCH rows counted above (with two lanes the
    # second lane's batches start at its edge instead).
    runner = start_runner(f"{pg_url}?application_name=retention-killed", archive_url, archived, parallel_batches=1)
    try:
        waiting = []
        deadline = time.monotonic() + 60
        with watcher.cursor() as cursor:
            while not waiting and time.monotonic() < deadline:
                cursor.execute("SELECT pid FROM pg_stat_activity "
                               "WHERE application_name = 'retention-killed' AND wait_event_type = 'Lock'")
                waiting = [pid for (pid,) in cursor.fetchall()]
                time.sleep(0.02)
        assert waiting, f"the run never waited on the locked row; events {runner.seen}"
        runner.kill()
        assert runner.process.returncode == -9
    finally:
        runner.close()
        locker.rollback()  # the held row lock goes; the killed run's statement may now finish
        locker.close()
    with watcher.cursor() as cursor:  # its backend notices the client is gone and rolls back
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'retention-killed'")
            if cursor.fetchone()[0] == 0:
                break
            time.sleep(0.05)
    watcher.close()

    remaining = assert_invariant(pg_database, inserted, archive_url if archived else None)
    # Each batch is whole or untouched: the one killed while waiting on the lock is untouched.
    assert set(locked_batch) <= remaining, "the batch in flight was not rolled back as a whole"
    assert len(inserted - remaining) % BATCH == 0
    # The run got that far: the batches before the locked one are done, but for those still in
    # flight beside it when it was killed (parallel_batches work side by side, as many queued).
    assert len(inserted - remaining) >= (49 - 2 * quiz_policy.parallel_batches) * BATCH

    policy = archiving(quiz_policy, batch_size=BATCH) if archived else quiz_policy.model_copy(
        update={"batch_size": BATCH})
    rerun_converges(policy, policies, pg_database, archive_url, inserted)
