"""The app database: connection, the database's own clock, and the app tables as policies name them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime

import sqlalchemy as sa

from retention_pipelines.errors import PolicyMismatch, StoreUnavailable, first_line
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.redaction import display_url
from retention_pipelines.stores.dialect import Dialect


class AppDatabase:
    """PostgreSQL in production, a SQLite file for the demo; both through SQLAlchemy Core."""

    def __init__(self, url: str):
        try:
            self.engine = sa.create_engine(driver_url(url), pool_pre_ping=True, **_engine_options(url))
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreUnavailable(f"RETENTION_DATABASE_URL is not a usable database URL: {exc}") from None
        self.display_url = display_url(url)
        self._tables: dict[str, sa.Table] = {}
        if not self.is_sqlite:
            sa.event.listen(self.engine, "connect", _session_in_utc, insert=True)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def dialect(self) -> Dialect:
        """What this database does differently from the other one the project runs on."""
        return Dialect.of(self.engine)

    def connect_error(self, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"database {self.display_url} is unreachable: {first_line(exc)}")

    def now(self) -> datetime:
        """The database's clock, in UTC: every cutoff is computed from it, never from the worker's."""
        query = "SELECT CURRENT_TIMESTAMP" if self.is_sqlite else "SELECT now()"
        try:
            with self.engine.connect() as connection:
                value = connection.exec_driver_sql(query).scalar_one()
        except sa.exc.OperationalError as exc:
            raise self.connect_error(exc) from None
        if isinstance(value, str):  # SQLite: 'YYYY-MM-DD HH:MM:SS', in UTC
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_time(self, moment: datetime) -> datetime:
        """A UTC instant as this database compares it: SQLite stores naive UTC text."""
        moment = moment.astimezone(UTC)
        return moment.replace(tzinfo=None) if self.is_sqlite else moment

    def read_time(self, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def app_table(self, policy: DomainPolicy) -> sa.Table:
        """The domain's table, reflected once, refused (PolicyMismatch, a line per problem naming
        domain and field) unless it is what the policy requires (table_problems)."""
        if policy.name not in self._tables:
            table = self._reflect(policy)
            problems = table_problems(policy, table, self.is_sqlite)
            if problems:
                raise PolicyMismatch("\n".join(problems))
            self._tables[policy.name] = table
        return self._tables[policy.name]

    def clock_zone(self, policy: DomainPolicy) -> str | None:
        """The zone the domain's clock values are wall times of: the policy's clock_timezone for a
        `timestamp without time zone` column; None where they are instants (timestamptz, or
        SQLite's UTC text)."""
        clock = self.app_table(policy).c[policy.clock_column]
        return None if self.is_sqlite or clock.type.timezone else policy.clock_timezone

    def policy_problems(self, policy: DomainPolicy) -> list[str]:
        """Every way the live table falls short of the policy, one line each (none: it is fit):
        what app_table refuses, plus what makes runs slow or fail at their first query (no index
        led by the clock column; a zone the database does not know). For `retention policies
        validate --database` and `retention health`."""
        try:
            table = self._reflect(policy)
        except PolicyMismatch as exc:
            return [str(exc)]
        problems = table_problems(policy, table, self.is_sqlite)
        where = f"{policy.source}: domain {policy.name}"
        if policy.clock_column in table.c:
            indexes = sa.inspect(self.engine).get_indexes(policy.table)
            if not any(index["column_names"] and index["column_names"][0] == policy.clock_column for index in indexes):
                problems.append(f"{where}, field clock_column: table {policy.table} has no index on "
                                f"{policy.clock_column} (none whose first column it is): every run would scan "
                                "the whole table")
        if policy.clock_timezone and not self.is_sqlite:
            with self.connect() as connection:
                known = connection.execute(sa.text("SELECT count(*) FROM pg_timezone_names WHERE name = :zone"),
                                           {"zone": policy.clock_timezone}).scalar_one()
            if not known:
                problems.append(f"{where}, field clock_timezone: {self.display_url} does not know the time zone "
                                f"{policy.clock_timezone!r}")
        return problems

    def _reflect(self, policy: DomainPolicy) -> sa.Table:
        try:
            return sa.Table(policy.table, sa.MetaData(), autoload_with=self.engine,
                            listeners=[("column_reflect", _uuids_as_text)])
        except sa.exc.NoSuchTableError:
            raise PolicyMismatch(f"{policy.source}: domain {policy.name}, field table: table {policy.table!r} "
                                 f"does not exist in {self.display_url}") from None
        except sa.exc.OperationalError as exc:
            raise self.connect_error(exc) from None

    @contextlib.contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A connection whose failure to connect names the database, not a driver traceback."""
        with self._opened(self.engine.connect) as connection:
            yield connection

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A transaction, committed on success, rolled back on any error."""
        with self._opened(self.engine.begin) as connection:
            yield connection

    @contextlib.contextmanager
    def _opened(self, opener):
        try:
            context = opener()
            connection = context.__enter__()
        except sa.exc.OperationalError as exc:
            raise self.connect_error(exc) from None
        with contextlib.ExitStack() as stack:
            stack.push(context)
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()


def table_problems(policy: DomainPolicy, table: sa.Table, sqlite: bool) -> list[str]:
    """What a policy requires of its table, decided here alone (for the engine, `retention
    policies validate --database` and `retention health`): every column it names, of a type it
    can use; a clock whose values are instants or in a declared zone, never guessed; a nullable
    clock only with a declared meaning of NULL. One line per problem, naming domain and field."""
    where = f"{policy.source}: domain {policy.name}"
    problems = []
    for field, column in _named_columns(policy):
        if column not in table.c:
            problems.append(f"{where}, field {field}: table {policy.table} has no column {column!r}")
    for field, column, kind, types in _typed_columns(policy):
        if column in table.c and not isinstance(table.c[column].type, types):
            problems.append(f"{where}, field {field}: column {policy.table}.{column} is "
                            f"{table.c[column].type}, not {kind}")
    clock = table.c.get(policy.clock_column)
    if clock is None or not isinstance(clock.type, sa.DateTime):
        return problems
    if sqlite:
        if policy.clock_timezone not in (None, "UTC"):
            problems.append(f"{where}, field clock_timezone: SQLite keeps no zones; its clock column "
                            f"{policy.clock_column} holds UTC text: write UTC or leave the field out")
    elif not clock.type.timezone and policy.clock_timezone is None:
        problems.append(f"{where}, field clock_timezone: column {policy.table}.{policy.clock_column} is a "
                        "timestamp without time zone: declare the zone its values are in (e.g. clock_timezone: "
                        "UTC); it is never guessed from the session's")
    if clock.nullable and policy.clock_nulls is None:
        problems.append(f"{where}, field clock_nulls: column {policy.table}.{policy.clock_column} may be NULL: "
                        "declare what a NULL clock means (clock_nulls: keep: such rows are never due, and counted)")
    return problems


def _session_in_utc(dbapi_connection, connection_record) -> None:
    """Every session of this project in UTC: SQL that reads a wall time without a zone reads UTC.
    What is due never depends on it (DomainTable.clock_utc names the clock's zone), but nothing
    else that this project writes or reads should depend on a server's or database's TimeZone."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True  # a SET inside a transaction rolled back would be undone
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.autocommit = autocommit


def _uuids_as_text(inspector, table, column_info) -> None:
    """Ids are compared and bound as text, as the audit log keeps them."""
    if isinstance(column_info["type"], sa.Uuid):
        column_info["type"] = sa.Uuid(as_uuid=False)


APPLICATION_NAME = "retention_pipelines"


def driver_url(url: str) -> str | sa.URL:
    """The URL with the driver this project installs: hosts hand out `postgresql://…` or
    `postgres://…`, which SQLAlchemy 2.1 maps to psycopg 3 (not installed) or does not know at all;
    both mean psycopg2. An explicit driver is kept as written."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return url  # refused by create_engine, with its own message
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg2")
    return url


def _engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        # The demo shares one file between the CLI, Dagster's steps and the webserver.
        return {"connect_args": {"timeout": 30}}
    # Named, so that a DBA sees the runs in pg_stat_activity and a run's pacing (engine/retention/pacing.py)
    # tells the app's sessions from its own.
    named = {} if "application_name=" in url else {"application_name": APPLICATION_NAME}
    return {"connect_args": {"connect_timeout": 10, **named}}


def _typed_columns(policy: DomainPolicy):
    """(field, column, what it must be, the types that are) of the columns whose type matters."""
    yield "clock_column", policy.clock_column, "a timestamp", sa.DateTime
    if policy.subject_column:
        yield "subject_column", policy.subject_column, "text", sa.String
    if policy.blob_key_column:
        yield "blob_key_column", policy.blob_key_column, "text", sa.String
    if policy.redact:
        yield "action.redact.stamp_column", policy.redact.stamp_column, "a timestamp", sa.DateTime


def _named_columns(policy: DomainPolicy):
    yield "primary_key", policy.primary_key
    yield "clock_column", policy.clock_column
    for column in policy.archive.exclude_columns:
        yield "archive.exclude_columns", column
    if policy.blob_key_column:
        yield "blob_key_column", policy.blob_key_column
    if policy.subject_column:
        yield "subject_column", policy.subject_column
    if policy.redact:
        for column in policy.redact.null_columns:
            yield "action.redact.null_columns", column
        yield "action.redact.stamp_column", policy.redact.stamp_column
