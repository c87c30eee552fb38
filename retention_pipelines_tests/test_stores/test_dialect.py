"""What differs between PostgreSQL and SQLite (stores/dialect.py), on both: each capability is what
the database really does, and each spelling does on each database what the engine relies on."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.engine.audit.entries import write_entries
from retention_pipelines.stores import AppDatabase, Dialect
from retention_pipelines_tests.support.audit_rows import write_audit_rows
from retention_pipelines_tests.support.databases import in_session_time_zone

log, batches, records, fences = schema.audit_log, schema.audit_batches, schema.audit_records, schema.domain_fences
AUDIT_ROW = {"domain": "alpha", "record_id": "r", "action": "deleted", "run_id": "run", "policy_version": "v"}
# A plain row of a plain table, for what is about writers and not about the audit log's own writer
# (which serialises the writers of a domain on its chain's head).
RECORD_ROW = {"id": 10**6, "batch_id": 1, "record_id": "r"}


def batch_row(seq: int, occurred_at) -> dict:
    """A row of a table with a timestamp column, unchained: the dialect's handling of its time is the point."""
    return {"domain": "alpha", "seq": seq, "action": "deleted", "run_id": "run", "occurred_at": occurred_at,
            "policy_version": "v", "records": 0, "prev_link": "", "link": ""}


def impatient_engine(database: AppDatabase) -> sa.Engine:
    """Another engine on the same database, whose SQLite connections give up on a lock at once."""
    url = database.engine.url.render_as_string(hide_password=False)
    return sa.create_engine(url, connect_args={"timeout": 0.2} if database.is_sqlite else {})


def audit_count(connection: sa.Connection) -> int:
    return connection.execute(sa.select(sa.func.count()).select_from(records)).scalar_one()


def succeeds(database: AppDatabase, statement, params: dict | None = None) -> list | None:
    """The rows the statement returns, in a transaction of its own; None when the database refuses it."""
    try:
        with database.begin() as connection:
            result = connection.execute(statement, params or {})
            return result.all() if result.returns_rows else []
    except (sa.exc.DBAPIError, sa.exc.CompileError):
        return None


# which dialect -----------------------------------------------------------------------------------------
def test_the_dialect_is_the_same_asked_of_the_engine_a_connection_or_the_database(any_database):
    dialect = any_database.dialect
    with any_database.connect() as connection:
        assert Dialect.of(connection) is dialect
    assert Dialect.of(any_database.engine) is dialect
    assert dialect.name == any_database.engine.dialect.name
    assert repr(dialect) == f"Dialect({dialect.name!r})"


def test_a_database_of_another_kind_is_refused():
    with pytest.raises(ValueError, match="PostgreSQL or SQLite, not on oracle"):
        Dialect.of(SimpleNamespace(dialect=SimpleNamespace(name="oracle")))


# capabilities: each one what the database does --------------------------------------------------------
def test_acting_in_one_statement_is_a_data_modifying_cte_over_an_array_parameter(any_database):
    with any_database.begin() as connection:
        connection.execute(sa.insert(fences), [{"domain": name, "token": 1} for name in ("a", "b", "c")])
    acted = succeeds(any_database, sa.text(
        "WITH gone AS (DELETE FROM retention_domain_fences WHERE domain = ANY(:domains) RETURNING domain) "
        "INSERT INTO retention_audit_record_index (record_id, audit_id) SELECT domain, 1 FROM gone "
        "RETURNING record_id"), {"domains": ["a", "b"]})
    assert (acted is not None) == any_database.dialect.acts_in_one_statement
    with any_database.connect() as connection:
        left = sorted(connection.execute(sa.select(fences.c.domain)).scalars())
    if acted is not None:
        assert sorted(row[0] for row in acted) == ["a", "b"] and left == ["c"]
    else:
        assert left == ["a", "b", "c"]  # refused whole: nothing deleted


def test_binding_arrays_is_one_parameter_for_a_whole_list(any_database):
    values = sa.cast(sa.literal(["a", "b"], sa.ARRAY(sa.Text)), sa.ARRAY(sa.Text))
    found = succeeds(any_database, sa.select(sa.literal("b", sa.Text) == sa.any_(values)))
    assert (found is not None) == any_database.dialect.binds_arrays
    if found is not None:
        assert found == [(True,)]


def test_column_types_are_checked_by_the_database_or_not_at_all(any_database):
    stored = succeeds(any_database, sa.text(
        "INSERT INTO retention_audit_record_index (record_id, audit_id) VALUES ('r', 'not a number')"))
    assert (stored is None) == any_database.dialect.has_column_types
    with any_database.connect() as connection:
        kept = connection.exec_driver_sql("SELECT audit_id FROM retention_audit_record_index").scalars().all()
    assert kept == ([] if any_database.dialect.has_column_types else ["not a number"])


def test_with_one_writer_at_a_time_a_second_writer_waits_for_the_first(any_database):
    other = impatient_engine(any_database)
    try:
        with any_database.begin() as first:
            first.execute(sa.insert(records).values(RECORD_ROW))
            try:
                with other.begin() as second:
                    second.execute(sa.insert(records).values(RECORD_ROW))
                second_wrote = True
            except sa.exc.OperationalError:
                second_wrote = False
    finally:
        other.dispose()
    assert second_wrote == (not any_database.dialect.one_writer_at_a_time)
    with any_database.connect() as connection:
        assert audit_count(connection) == 1 + second_wrote


def test_sessions_at_work_are_shown_where_the_dialect_says_so(any_database):
    shown = succeeds(any_database, sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"))
    assert (shown is not None) == any_database.dialect.shows_sessions_at_work
    if shown is not None:
        assert shown[0][0] >= 0


# spellings --------------------------------------------------------------------------------------------
def test_upsert_does_nothing_or_updates_on_conflict(any_database):
    upsert = any_database.dialect.upsert
    with any_database.begin() as connection:
        for _ in range(2):
            connection.execute(upsert(fences).values(domain="d", token=1).on_conflict_do_nothing(
                index_elements=["domain"]))
        token = connection.execute(upsert(fences).values(domain="d", token=1).on_conflict_do_update(
            index_elements=["domain"], set_={"token": fences.c.token + 1}).returning(fences.c.token)).scalar_one()
    assert token == 2
    with any_database.connect() as connection:
        assert connection.execute(sa.select(fences.c.domain, fences.c.token)).all() == [("d", 2)]


def test_a_raw_parameter_is_bound_by_its_name(any_database):
    param = any_database.dialect.param
    with any_database.connect() as connection:
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            cursor.execute(f"SELECT {param('a')} + {param('b')}, {param('a')}", {"a": 40, "b": 2})
            assert tuple(cursor.fetchone()) == (42, 40)
        finally:
            cursor.close()


def test_a_server_cursor_reads_every_row_in_order(any_database):
    ids = write_audit_rows(any_database, 25)
    with any_database.connect() as connection:
        cursor = any_database.dialect.server_cursor(connection.connection.dbapi_connection, "every_row", 4)
        try:
            cursor.execute("SELECT id FROM retention_audit_log ORDER BY id")
            assert [row[0] for row in cursor] == ids
        finally:
            cursor.close()
        connection.rollback()


def test_on_postgresql_the_cursor_is_the_servers_and_fetches_a_few_rows_at_a_time(pg_database):
    write_audit_rows(pg_database, 10)
    with pg_database.connect() as connection:
        raw = connection.connection.dbapi_connection
        cursor = pg_database.dialect.server_cursor(raw, "every_row", 4)
        try:
            cursor.execute("SELECT id FROM retention_audit_log ORDER BY id")
            next(iter(cursor))
            with raw.cursor() as plain:
                plain.execute("SELECT name FROM pg_cursors")
                assert [row[0] for row in plain.fetchall()] == ["every_row"]
            assert cursor.itersize == 4
        finally:
            cursor.close()
        connection.rollback()


def test_reads_in_one_snapshot_see_nothing_committed_after_the_first(any_database):
    write_audit_rows(any_database, 3)
    other = impatient_engine(any_database)
    try:
        with any_database.connect() as reader:
            any_database.dialect.read_in_one_snapshot(reader)
            assert audit_count(reader) == 3
            try:
                with other.begin() as writer:
                    writer.execute(sa.insert(records).values(RECORD_ROW))
                committed = 1
            except sa.exc.OperationalError:  # one writer at a time: the snapshot holds the database
                committed = 0
            assert audit_count(reader) == 3
            reader.rollback()
            assert audit_count(reader) == 3 + committed
    finally:
        other.dispose()
    assert committed == (not any_database.dialect.one_writer_at_a_time)


def test_a_timestamp_is_read_as_utc_text(any_database):
    moment = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    with any_database.begin() as connection:
        connection.execute(sa.insert(batches).values(batch_row(1, any_database.bind_time(moment))))
        text = connection.exec_driver_sql(
            f"SELECT {any_database.dialect.utc_text('a.occurred_at')} FROM retention_audit_batches a").scalar_one()
    # Formatted by the database where it has column types; else as SQLite keeps it, for the caller to respell.
    assert text == ("2026-03-04T05:06:07.890123Z" if any_database.dialect.has_column_types
                    else "2026-03-04 05:06:07.890123")


def test_the_utc_day_of_a_timestamp(any_database):
    moments = [datetime(2026, 3, 4, 23, 30, tzinfo=UTC), datetime(2026, 3, 5, 0, 0, tzinfo=UTC)]
    with any_database.begin() as connection:
        connection.execute(sa.insert(batches), [batch_row(n, any_database.bind_time(m)) for n, m in enumerate(moments)])
        days = connection.execute(sa.select(any_database.dialect.utc_day(batches.c.occurred_at))
                                  .order_by(batches.c.id)).scalars().all()
    assert [day if isinstance(day, date) else date.fromisoformat(day) for day in days] == [
        date(2026, 3, 4), date(2026, 3, 5)]


def test_utc_text_and_day_do_not_depend_on_the_sessions_time_zone(pg_database):
    moment = datetime(2026, 3, 4, 23, 30, tzinfo=UTC)  # already 5 March in Kiritimati (UTC+14)
    database = in_session_time_zone(pg_database, "Pacific/Kiritimati")
    with database.begin() as connection:
        assert connection.exec_driver_sql("SHOW timezone").scalar_one() == "Pacific/Kiritimati"
        connection.execute(sa.insert(batches).values(batch_row(1, moment)))
        text = connection.exec_driver_sql(
            f"SELECT {database.dialect.utc_text('occurred_at')} FROM retention_audit_batches").scalar_one()
        day = connection.execute(sa.select(database.dialect.utc_day(batches.c.occurred_at))).scalar_one()
    assert (text, day) == ("2026-03-04T23:30:00.000000Z", date(2026, 3, 4))


def test_a_time_bound_compares_right_with_times_written_with_or_without_a_fraction(any_database):
    bound = any_database.dialect.time_bound
    with any_database.begin() as connection:
        # As CURRENT_TIMESTAMP writes it on SQLite (no fraction), and as SQLAlchemy does (microseconds).
        write_entries(connection, [dict(AUDIT_ROW, record_id="midnight")])
        connection.execute(sa.text("UPDATE retention_audit_batches SET occurred_at = '2026-03-01 00:00:00' "
                                   "WHERE run_id = 'run'"))
        write_entries(connection, [dict(AUDIT_ROW, run_id="last-instant")])
        connection.execute(sa.update(batches).where(batches.c.run_id == "last-instant").values(
            occurred_at=any_database.bind_time(datetime(2026, 3, 31, 23, 59, 59, 500000, tzinfo=UTC))))

    def count(*where) -> int:
        with any_database.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(log).where(*where)).scalar_one()

    march, april = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    assert count(log.c.occurred_at >= bound(march), log.c.occurred_at < bound(april)) == 2
    assert count(log.c.occurred_at < bound(march)) == 0
    assert count(log.c.occurred_at >= bound(march.replace(microsecond=1))) == 1
    assert count(log.c.occurred_at >= bound(datetime(2026, 3, 31, 23, 59, 59, 500000, tzinfo=UTC))) == 1
