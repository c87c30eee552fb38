"""The app database: its clock in UTC, the policy's table and columns checked, clear failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
import sqlalchemy as sa

from retention_pipelines.engine import RetentionEngine
from retention_pipelines.stores import AppDatabase, PolicyMismatch, StoreUnavailable, archive_store_from_url
from retention_pipelines_tests.support.databases import in_session_time_zone
from retention_pipelines_tests.support.servers import free_port


def test_now_is_timezone_aware_utc(any_database):
    now = any_database.now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(minutes=1)


def test_sessions_are_in_utc_whatever_the_databases_time_zone(postgres_server, pg_url):
    name = sa.engine.make_url(pg_url).database
    connection = psycopg2.connect(postgres_server.dsn(name))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER DATABASE "{name}" SET timezone = \'Pacific/Kiritimati\'')  # UTC+14
    connection.close()
    database = AppDatabase(pg_url)
    try:
        with psycopg2.connect(postgres_server.dsn(name)) as other, other.cursor() as cursor:
            cursor.execute("SHOW timezone")
            assert cursor.fetchone()[0] == "Pacific/Kiritimati"  # the database's own sessions
        with database.engine.connect() as session:
            assert session.exec_driver_sql("SHOW timezone").scalar_one() == "UTC"
        with database.engine.begin() as session:  # the pin outlives a transaction rolled back or committed
            assert session.exec_driver_sql("SHOW timezone").scalar_one() == "UTC"
        now = database.now()
        assert now.utcoffset() == timedelta(0)
        assert abs(now - datetime.now(UTC)) < timedelta(minutes=1)
    finally:
        database.dispose()


def test_now_is_utc_whatever_the_sessions_time_zone(pg_url):
    database = in_session_time_zone(AppDatabase(pg_url), "Pacific/Kiritimati")
    try:
        for _ in range(2):  # and still after the connection went back to the pool
            with database.engine.connect() as session:
                assert session.exec_driver_sql("SHOW timezone").scalar_one() == "Pacific/Kiritimati"
        now = database.now()
        assert now.utcoffset() == timedelta(0)
        assert abs(now - datetime.now(UTC)) < timedelta(minutes=1)
    finally:
        database.dispose()


@pytest.mark.parametrize("update, field, name", [
    ({"table": "no_such_table"}, "table", "no_such_table"),
    ({"clock_column": "answered_at"}, "clock_column", "answered_at"),
    ({"primary_key": "uuid"}, "primary_key", "uuid"),
    ({"subject_column": "customer_email"}, "subject_column", "customer_email"),
], ids=["table", "clock_column", "primary_key", "subject_column"])
def test_policy_naming_what_the_database_lacks(any_database, quiz_policy, update, field, name):
    policy = quiz_policy.model_copy(update=update)
    with pytest.raises(PolicyMismatch) as mismatch:
        any_database.app_table(policy)
    message = str(mismatch.value)
    assert "domain quiz_responses" in message
    assert f"field {field}" in message
    assert repr(name) in message


def test_excluded_archive_column_missing(any_database, quiz_policy):
    policy = quiz_policy.model_copy(update={"archive": quiz_policy.archive.model_copy(
        update={"enabled": True, "exclude_columns": ["phone_number"], "keep_for": timedelta(days=365)})})
    with pytest.raises(PolicyMismatch, match=r"domain quiz_responses, field archive\.exclude_columns.*'phone_number'"):
        any_database.app_table(policy)


def test_app_table_of_a_matching_policy(any_database, quiz_policy):
    table = any_database.app_table(quiz_policy)
    assert table.name == "quiz_responses"
    assert {"id", "created_at", "email"} <= set(table.c.keys())


def unreachable_url() -> tuple[str, int]:
    port = free_port()
    return f"postgresql+psycopg2://u:secret@127.0.0.1:{port}/x", port


def assert_names_the_database(exc: StoreUnavailable, port: int) -> None:
    message = str(exc)
    assert "database" in message
    assert f"postgresql+psycopg2://127.0.0.1:{port}/…" in message
    assert "secret" not in message and "u@" not in message


@pytest.mark.parametrize("operation", ["now", "app_table"])
def test_unreachable_database_raises_store_unavailable_without_the_password(quiz_policy, operation):
    url, port = unreachable_url()
    database = AppDatabase(url)
    try:
        with pytest.raises(StoreUnavailable) as unavailable:
            database.now() if operation == "now" else database.app_table(quiz_policy)
        assert_names_the_database(unavailable.value, port)
    finally:
        database.dispose()


def test_engine_on_an_unreachable_database_raises_store_unavailable(policies, quiz_policy, tmp_path):
    """The engine's first touch of the database (its schema check) fails like every other one."""
    url, port = unreachable_url()
    database = AppDatabase(url)
    try:
        with pytest.raises(StoreUnavailable) as unavailable:
            RetentionEngine(quiz_policy, policies.policy_version, database,
                            archive_store_from_url((tmp_path / "archive").as_uri()))
        assert_names_the_database(unavailable.value, port)
    finally:
        database.dispose()


def test_a_url_that_is_not_a_database_url():
    with pytest.raises(StoreUnavailable, match="RETENTION_DATABASE_URL"):
        AppDatabase("nosuchdialect://u:secret@host/x")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg2"])
def test_the_url_forms_hosts_hand_out_reach_the_database_through_psycopg2(pg_url, scheme):
    """`postgresql://` (which SQLAlchemy 2.1 maps to psycopg 3, not installed) and Heroku's and
    Render's `postgres://` mean the same database as the explicit driver."""
    url = scheme + "://" + pg_url.split("://", 1)[1]
    database = AppDatabase(url)
    try:
        assert database.engine.dialect.driver == "psycopg2"
        assert database.now().tzinfo is UTC
        assert database.display_url.startswith(f"{scheme}://")  # shown as the operator wrote it
    finally:
        database.dispose()


def test_a_url_with_another_driver_keeps_it():
    with pytest.raises(StoreUnavailable, match="RETENTION_DATABASE_URL") as refused:
        AppDatabase("postgresql+nosuchdriver://u:secret@127.0.0.1/x")
    assert "secret" not in str(refused.value)
