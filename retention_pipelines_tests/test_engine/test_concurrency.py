"""Two runs of one domain at once, each in its own process: with the Redis lock the second waits or
stops with DomainLocked; with no lock at all, DELETE … RETURNING still acts on each row once."""

from __future__ import annotations

import time

import pytest

from retention_pipelines_tests.conftest import remaining_ids
from retention_pipelines_tests.test_engine.helpers import (
    RunnerProcess, assert_each_deleted_audited_once, audit_rows, bulk_insert_pg,
)

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
