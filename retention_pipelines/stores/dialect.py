"""What differs between the two databases the project runs on: PostgreSQL in production, a SQLite
file for the demo. Everything above the stores asks a `Dialect` what it needs, by what it does,
and never names a database: one place to read what the demo does differently, and the one place to
change when a third database comes.

    dialect = Dialect.of(connection)        # or Dialect.of(engine), or AppDatabase.dialect

Capabilities (attributes) say where the engine runs another algorithm; methods hand back the
spelling of one thing in this database's SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


class Dialect:
    """One database's ways. Obtained with `Dialect.of`; one instance per database kind."""

    name: str  # SQLAlchemy's name of the dialect

    # Capabilities ----------------------------------------------------------------------------------
    # Choose rows, DELETE or UPDATE them … RETURNING, and INSERT their audit entries, all in one
    # statement (data-modifying CTEs), the rows named by one array parameter.
    acts_in_one_statement: bool
    # A list of values bound as one array parameter (`= ANY(:values)`, `unnest(:values)`), where
    # otherwise it travels as one bound parameter per value.
    binds_arrays: bool
    # Values are of their column's type, converted and checked by the database (a uuid, a
    # timestamp with or without time zone; casts from text). Without it (SQLite) a column keeps
    # whatever it is given: uuids as text, timestamps as naive UTC text, integers as integers, and
    # what a value of a type looks like is decided in Python.
    has_column_types: bool
    # Writers take turns: a transaction that writes holds the whole database until it ends. Without
    # it writers run side by side and the engine orders them itself (settled ids, advisory locks).
    one_writer_at_a_time: bool
    # The database shows which of its sessions are at work right now (pg_stat_activity), for pacing.
    shows_sessions_at_work: bool

    @staticmethod
    def of(bind: sa.Connection | sa.Engine) -> Dialect:
        """The dialect of a connection or an engine."""
        name = bind.dialect.name
        if name not in _DIALECTS:
            raise ValueError(f"retention_pipelines runs on PostgreSQL or SQLite, not on {name}")
        return _DIALECTS[name]

    # SQL --------------------------------------------------------------------------------------------
    def upsert(self, table: sa.Table) -> Any:
        """INSERT into `table` that can go on with .on_conflict_do_nothing() / .on_conflict_do_update():
        PostgreSQL and SQLite spell ON CONFLICT alike, but each has its own construct."""
        raise NotImplementedError

    def param(self, name: str) -> str:
        """The placeholder of the named parameter `name` in raw SQL run on the driver's own cursor."""
        raise NotImplementedError

    def server_cursor(self, raw_connection: Any, name: str, rows: int) -> Any:
        """A driver cursor that streams a large result, `rows` rows per round trip, instead of
        fetching it whole; `name` names it on the server. Close it inside the transaction."""
        raise NotImplementedError

    def read_in_one_snapshot(self, connection: sa.Connection) -> None:
        """From here until the connection rolls back, every read of the connection sees one snapshot
        of the database: nothing committed in the meantime."""
        raise NotImplementedError

    def utc_text(self, column_sql: str) -> str:
        """Raw SQL reading a timestamp column (`column_sql`) as UTC text. PostgreSQL formats it as
        'YYYY-MM-DDTHH:MM:SS.ffffffZ', so that no datetime object is made per row on the client;
        without column types the column is read as kept: naive UTC text, in the spelling it was
        written with ('YYYY-MM-DD HH:MM:SS' or with a fraction), which the caller respells."""
        raise NotImplementedError

    def utc_day(self, column: sa.ColumnElement) -> sa.ColumnElement:
        """The UTC calendar day of a timestamp column, whatever the session's time zone: a date on
        PostgreSQL, 'YYYY-MM-DD' text on SQLite."""
        raise NotImplementedError

    def time_bound(self, moment: datetime) -> Any:
        """A UTC instant as a bound of a range over stored timestamps (`column >= bound`)."""
        raise NotImplementedError

    def ordered_agg(self, name: str, value: sa.ColumnElement, order_by: sa.ColumnElement,
                    *arguments: sa.ColumnElement) -> sa.ColumnElement:
        """The aggregate `name` (array_agg, string_agg) of `value` and `arguments` over a group's
        rows, in `order_by` order (only where acts_in_one_statement: the others compute such
        things in Python)."""
        raise NotImplementedError

    def next_id(self, table: str, column: str) -> sa.ColumnElement:
        """The next value of the sequence behind `table`.`column`, drawn where it is evaluated."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Dialect({self.name!r})"


class _PostgreSQL(Dialect):
    name = "postgresql"
    acts_in_one_statement = True
    binds_arrays = True
    has_column_types = True
    one_writer_at_a_time = False
    shows_sessions_at_work = True

    def upsert(self, table: sa.Table) -> postgresql.Insert:
        return postgresql.insert(table)

    def param(self, name: str) -> str:
        return f"%({name})s"

    def server_cursor(self, raw_connection: Any, name: str, rows: int) -> Any:
        cursor = raw_connection.cursor(name)
        cursor.itersize = rows
        return cursor

    def read_in_one_snapshot(self, connection: sa.Connection) -> None:
        connection.execution_options(isolation_level="REPEATABLE READ")

    def utc_text(self, column_sql: str) -> str:
        return f"""to_char({column_sql} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""

    def utc_day(self, column: sa.ColumnElement) -> sa.ColumnElement:
        return sa.cast(sa.func.timezone("UTC", column), sa.Date)

    def time_bound(self, moment: datetime) -> Any:
        return moment

    def ordered_agg(self, name: str, value: sa.ColumnElement, order_by: sa.ColumnElement,
                    *arguments: sa.ColumnElement) -> sa.ColumnElement:
        *leading, last = (value, *arguments)
        return getattr(sa.func, name)(*leading, postgresql.aggregate_order_by(last, order_by))

    def next_id(self, table: str, column: str) -> sa.ColumnElement:
        return sa.func.nextval(sa.cast(sa.func.pg_get_serial_sequence(table, column), postgresql.REGCLASS))


class _SQLite(Dialect):
    name = "sqlite"
    acts_in_one_statement = False
    binds_arrays = False
    has_column_types = False
    one_writer_at_a_time = True
    shows_sessions_at_work = False

    def upsert(self, table: sa.Table) -> sqlite.Insert:
        return sqlite.insert(table)

    def param(self, name: str) -> str:
        return f":{name}"

    def server_cursor(self, raw_connection: Any, name: str, rows: int) -> Any:
        return raw_connection.cursor()  # SQLite steps through the result as it is read: no fetching it whole

    def read_in_one_snapshot(self, connection: sa.Connection) -> None:
        # The driver begins a transaction only before a write; a read one, begun here, holds one snapshot.
        connection.exec_driver_sql("BEGIN")

    def utc_text(self, column_sql: str) -> str:
        return column_sql

    def utc_day(self, column: sa.ColumnElement) -> sa.ColumnElement:
        return sa.type_coerce(sa.func.substr(column, 1, 10), sa.String)  # the day begins the UTC text

    def time_bound(self, moment: datetime) -> Any:
        # Timestamps are text, in two spellings: with microseconds (written by SQLAlchemy) and without
        # (CURRENT_TIMESTAMP, the audit log's default). A bound spelt without microseconds when it has
        # none compares right with both; '… 00:00:00.000000' would put an entry stamped '… 00:00:00'
        # before midnight.
        spelling = "%Y-%m-%d %H:%M:%S" + (".%f" if moment.microsecond else "")
        return sa.literal(moment.astimezone(UTC).strftime(spelling), sa.String)


_DIALECTS: dict[str, Dialect] = {dialect.name: dialect for dialect in (_PostgreSQL(), _SQLite())}

__all__ = ["Dialect"]
