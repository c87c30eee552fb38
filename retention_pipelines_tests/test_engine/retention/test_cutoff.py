"""The cutoff is the database's now (or the window's end, if earlier), and a deadline at the cutoff is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
import sqlalchemy as sa

from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.app_rows import insert_quiz_at, insert_quiz_rows, remaining_ids
from retention_pipelines_tests.support.engines import engine_for, whole_second


def raw_now(database: AppDatabase) -> datetime:
    """The database's clock read directly, without AppDatabase.now()."""
    with database.engine.connect() as connection:
        if database.is_sqlite:
            value = connection.exec_driver_sql("SELECT CURRENT_TIMESTAMP").scalar_one()
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        return connection.exec_driver_sql("SELECT now()").scalar_one().astimezone(UTC)


def test_cutoff_is_the_database_now(any_database, policies, quiz_policy, local_archive_url):
    engine = engine_for(quiz_policy, policies, any_database, local_archive_url)
    before = raw_now(any_database)
    found = engine.find()
    after = raw_now(any_database)

    assert before <= found.database_now <= after
    assert found.cutoff == found.database_now
    assert found.clock_cutoff == found.cutoff - quiz_policy.retain_for


def test_a_skewed_database_clock_decides_what_is_due(postgres_server, pg_url, policies, quiz_policy,
                                                     local_archive_url):
    """The database's clock runs 10 days behind the worker's: only rows old by the database's clock
    are due; rows old by the worker's clock alone are not."""
    name = sa.engine.make_url(pg_url).database
    connection = psycopg2.connect(postgres_server.dsn(name))
    connection.autocommit = True
    with connection.cursor() as cursor:
        # public.now() shadows pg_catalog.now() for every new session of this database.
        cursor.execute("CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql STABLE "
                       "AS $$ SELECT pg_catalog.now() - interval '10 days' $$")
        cursor.execute(f'ALTER DATABASE "{name}" SET search_path = public, pg_catalog')
    connection.close()
    database = AppDatabase(pg_url)
    try:
        assert raw_now(database) < datetime.now(UTC) - timedelta(days=9), "the clock skew is not in place"
        due_by_database = insert_quiz_rows(database, [timedelta(hours=25)])
        young_by_database = insert_quiz_rows(database, [timedelta(hours=23)])
        due_by_worker_only = insert_quiz_at(database, [datetime.now(UTC) - timedelta(hours=25)])

        engine = engine_for(quiz_policy, policies, database, local_archive_url)
        report = engine.run("skewed-clock")

        assert abs(report.found.database_now - raw_now(database)) < timedelta(minutes=1)
        assert report.found.rows == 1
        assert report.acted.acted_on == 1
        assert remaining_ids(database) == set(young_by_database) | set(due_by_worker_only)
        assert set(due_by_database).isdisjoint(remaining_ids(database))
    finally:
        database.dispose()


def test_a_row_exactly_at_the_cutoff_is_due_one_second_younger_is_not(any_database, policies, quiz_policy,
                                                                      local_archive_url):
    window_end = whole_second(any_database.now() - timedelta(hours=1))
    at_cutoff = window_end - quiz_policy.retain_for
    older, exact, younger = insert_quiz_at(
        any_database, [at_cutoff - timedelta(seconds=1), at_cutoff, at_cutoff + timedelta(seconds=1)])
    engine = engine_for(quiz_policy, policies, any_database, local_archive_url)

    found = engine.find(window_end=window_end)
    assert found.cutoff == window_end
    assert found.clock_cutoff == at_cutoff
    assert found.rows == 2

    report = engine.run("boundary", window_end=window_end)
    assert report.acted.acted_on == 2
    assert remaining_ids(any_database) == {younger}


def test_window_partitions_due_rows_and_leaves_later_deadlines(any_database, policies, quiz_policy,
                                                                local_archive_url):
    retain = quiz_policy.retain_for
    now = whole_second(any_database.now())
    window_end = now - timedelta(hours=2)
    window_start = window_end - timedelta(hours=1)
    second = timedelta(seconds=1)
    deadlines = {
        "long_overdue": window_start - timedelta(days=5),
        "at_window_start": window_start,  # windows are (start, end]: this one is the previous window's
        "after_window_start": window_start + second,
        "at_window_end": window_end,
        "after_window_end": window_end + second,
        "recent": now - timedelta(minutes=1),
        "future": now + timedelta(hours=1),
    }
    ids = dict(zip(deadlines, insert_quiz_at(any_database, [d - retain for d in deadlines.values()])))
    engine = engine_for(quiz_policy, policies, any_database, local_archive_url)

    found = engine.find(window_start, window_end)
    assert (found.due_in_window, found.overdue) == (2, 2)
    assert found.cutoff == window_end

    report = engine.run("window-1", window_start, window_end)
    assert report.acted.acted_on == 4
    assert report.audited.consistent
    assert remaining_ids(any_database) == {ids["after_window_end"], ids["recent"], ids["future"]}

    # The latest window reaches into the future: its cutoff is the database's now, not its end.
    latest_end = now + timedelta(days=1)
    found = engine.find(window_end, latest_end)
    assert found.cutoff == found.database_now < latest_end
    assert (found.due_in_window, found.overdue) == (2, 0)
    report = engine.run("window-2", window_end, latest_end)
    assert report.acted.acted_on == 2
    assert remaining_ids(any_database) == {ids["future"]}
    assert engine.count_remaining(any_database.now()) == 0
