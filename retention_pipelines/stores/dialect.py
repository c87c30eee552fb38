"""What differs between the two databases the project runs on: PostgreSQL in production, a SQLite
file for the demo. Everything above the stores asks a `Dialect` what it needs, by what it does,
and never names a database: one place to read what the demo does differently, and the one place to
change when a third database comes.

    dialect = Dialect.of(connection)        # or Dialect.of(engine), or AppDatabase.dialect

Capabilities (attributes) say where the engine runs another algorithm; methods hand back the
spelling of one thing in this database's SQL.
"""

from __future__ import annotations

import json
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
    # The database shows the plan it would run a query with (EXPLAIN (FORMAT JSON)): which index it reads.
    shows_plans: bool

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

    def outside_printable_ascii(self, text: sa.ColumnElement) -> sa.ColumnElement:
        """Whether the text holds a character outside printable ASCII (U+0020–U+007E): NULL for NULL.
        Constants are written into the SQL, so that an index on an expression of it matches the query."""
        raise NotImplementedError

    def ascii_lower(self, text: sa.ColumnElement) -> sa.ColumnElement:
        """The text with A–Z in lower case and every other character as it is, whatever the collation
        (a Turkish one makes I a dotless ı)."""
        raise NotImplementedError

    def inline_sql(self, expression: sa.ClauseElement) -> str:
        """The expression in this database's SQL with its values written in: for DDL, and for a
        statement that must show the planner constants (EXPLAIN)."""
        engine = sa.create_mock_engine(sa.make_url(f"{self.name}://"), executor=None)
        return str(expression.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))

    def indexes_read(self, connection: sa.Connection, query: sa.Select, table: str) -> list[str]:
        """The indexes of `table` that the plan of `query` reads by a condition on their key (not a
        walk of a whole index), the planner told to scan a table only where no index serves: whether
        an index can serve the query, whatever the table's size today. Only where `shows_plans`."""
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
    shows_plans = True

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

    def outside_printable_ascii(self, text: sa.ColumnElement) -> sa.ColumnElement:
        # The regular expression's range is one of code points, whatever the collation.
        return text.op("~", return_type=sa.Boolean)(sa.literal_column("'[^ -~]'"))

    def ascii_lower(self, text: sa.ColumnElement) -> sa.ColumnElement:
        return sa.func.lower(text.collate("C"), type_=sa.Text)

    def indexes_read(self, connection: sa.Connection, query: sa.Select, table: str) -> list[str]:
        sql = self.inline_sql(query)
        own = set(connection.execute(sa.text("SELECT indexname FROM pg_indexes WHERE tablename = :table "
                                              "AND schemaname = ANY (current_schemas(false))"),
                                     {"table": table}).scalars())
        # A small table is read whole by choice; what matters is whether an index can serve the query.
        # The setting is the transaction's, put back as it was for what the caller runs after.
        was = connection.exec_driver_sql("SELECT current_setting('enable_seqscan')").scalar_one()
        connection.exec_driver_sql("SELECT set_config('enable_seqscan', 'off', true)")
        try:
            plan = connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql).scalar_one()
        finally:
            connection.execute(sa.text("SELECT set_config('enable_seqscan', :was, true)"), {"was": was})
        if isinstance(plan, str):
            plan = json.loads(plan)
        read = []
        nodes = [plan[0]["Plan"]]
        while nodes:
            node = nodes.pop()
            nodes.extend(node.get("Plans", []))
            if (node.get("Node Type") in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
                    and node.get("Index Cond") and node.get("Index Name") in own):
                read.append(node["Index Name"])
        return read


class _SQLite(Dialect):
    name = "sqlite"
    acts_in_one_statement = False
    binds_arrays = False
    has_column_types = False
    one_writer_at_a_time = True
    shows_sessions_at_work = False
    shows_plans = False

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

    def outside_printable_ascii(self, text: sa.ColumnElement) -> sa.ColumnElement:
        # GLOB compares code points, and its range is one of code points.
        return text.op("GLOB", return_type=sa.Boolean)(sa.literal_column("'*[^ -~]*'"))

    def ascii_lower(self, text: sa.ColumnElement) -> sa.ColumnElement:
        return sa.func.lower(text, type_=sa.Text)  # SQLite's lower() changes A–Z only (without ICU)


_DIALECTS: dict[str, Dialect] = {dialect.name: dialect for dialect in (_PostgreSQL(), _SQLite())}

__all__ = ["Dialect"]
