"""Batch sizes that follow the time batches take, and rests while the app is at work (engine/retention/pacing.py)."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest
import sqlalchemy as sa

from retention_pipelines.engine.retention.pacing import BatchPacer
from retention_pipelines.policies.model import Pacing
from retention_pipelines_tests.support.app_rows import bulk_insert_pg, remaining_ids
from retention_pipelines_tests.support.engines import engine_for
from retention_pipelines_tests.support.invariants import assert_each_deleted_audited_once


def paced(policy, **pacing):
    return policy.model_copy(update={"batch_size": 1000, "pacing": Pacing(**pacing)})


@pytest.fixture
def sqlite_engine():
    engine = sa.create_engine("sqlite://")
    yield engine
    engine.dispose()


def test_the_next_batch_is_sized_for_the_target_time_moving_at_most_twofold(quiz_policy, sqlite_engine):
    pacer = BatchPacer(paced(quiz_policy, batch_target_ms=100, min_batch_size=100), sqlite_engine)
    assert pacer.next_size() == 1000
    pacer.after_batch(1000, 0.4)  # 2,500 rows/s: 250 rows would take 100 ms, but at most halved
    assert pacer.next_size() == 500
    pacer.after_batch(500, 0.2)
    assert pacer.next_size() == 250
    pacer.after_batch(250, 0.1)  # on target: stays
    assert pacer.next_size() == 250
    pacer.after_batch(250, 0.001)  # far faster: at most doubled
    assert pacer.next_size() == 500


def test_sizes_stay_within_the_minimum_and_four_times_the_policys_batch(quiz_policy, sqlite_engine):
    pacer = BatchPacer(paced(quiz_policy, batch_target_ms=100, min_batch_size=300), sqlite_engine)
    for _ in range(10):
        pacer.after_batch(pacer.next_size(), 10.0)
    assert pacer.next_size() == 300
    for _ in range(10):
        pacer.after_batch(pacer.next_size(), 0.0001)
    assert pacer.next_size() == 4000


def test_an_archives_objects_keep_the_policys_size(quiz_policy, sqlite_engine):
    pacer = BatchPacer(paced(quiz_policy), sqlite_engine, fixed_size=True)
    pacer.after_batch(1000, 5.0)
    assert pacer.next_size() == 1000


@pytest.fixture
def app_session(pg_url):
    """A session of the app's (not named retention_pipelines) inside a transaction: at work."""
    dsn = sa.engine.make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = psycopg2.connect(dsn)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")  # psycopg2 opened a transaction: the session is 'idle in transaction'
    yield connection
    connection.close()


def test_the_run_rests_while_the_app_is_at_work_and_not_for_its_own_sessions(quiz_policy, pg_database, app_session):
    pacer = BatchPacer(paced(quiz_policy, sleep_coefficient=2.0), pg_database.engine)
    pacer.after_batch(1000, 0.05)
    assert pacer.busy and pacer.slept_seconds == pytest.approx(0.1)
    app_session.rollback()  # the app goes quiet: idle, and more than a second since its last statement
    time.sleep(1.3)
    with pg_database.engine.connect() as own:  # the run's own sessions do not count
        own.execute(sa.text("SELECT 1"))
        pacer.after_batch(1000, 0.05)
    assert not pacer.busy and pacer.slept_seconds == pytest.approx(0.1)


def test_while_busy_batches_take_turns(quiz_policy, pg_database, app_session):
    pacer = BatchPacer(paced(quiz_policy, sleep_coefficient=0.1), pg_database.engine)
    pacer.after_batch(1000, 0.01)
    assert pacer.busy
    inside, most = [0], [0]
    guard = threading.Lock()

    def batch():
        with pacer.turn():
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with guard:
                inside[0] -= 1

    workers = [threading.Thread(target=batch) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert most[0] == 1


def test_a_run_beside_a_busy_app_rests_and_still_deletes_each_row_once(quiz_policy, policies, pg_database,
                                                                      local_archive_url, app_session):
    bulk_insert_pg(pg_database, 50, "1 hour")
    fresh = remaining_ids(pg_database)
    bulk_insert_pg(pg_database, 3000, "2 days")
    inserted = remaining_ids(pg_database)
    policy = paced(quiz_policy, sleep_coefficient=1.0, min_batch_size=200).model_copy(update={"batch_size": 500})
    report = engine_for(policy, policies, pg_database, local_archive_url).run("beside-the-app")
    assert report.acted.acted_on == 3000 and report.audited.consistent
    assert report.acted.paused_seconds > 0
    assert remaining_ids(pg_database) == fresh
    assert_each_deleted_audited_once(pg_database, inserted, fresh)
