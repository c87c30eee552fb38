"""The app database: connection, the database's own clock, and the app tables as policies name them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime

import sqlalchemy as sa

from retention_pipelines.policies import DomainPolicy
from retention_pipelines.redaction import display_url, without_personal_data


class StoreUnavailable(Exception):
    """A production part (database, archive store, lock service) cannot be reached or used.

    Its message often quotes what a driver or a server said, which may quote a connection string
    or a row: it is redacted here, so that every store's error is safe to show wherever it goes."""

    def __init__(self, message: str):
        super().__init__(without_personal_data(message))


class PolicyMismatch(Exception):
    """A policy names a table or column that the database does not have."""


class AppDatabase:
    """PostgreSQL in production, a SQLite file for the demo; both through SQLAlchemy Core."""

    def __init__(self, url: str):
        try:
            self.engine = sa.create_engine(url, pool_pre_ping=True, **_engine_options(url))
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreUnavailable(f"RETENTION_DATABASE_URL is not a usable database URL: {exc}") from None
        self.display_url = display_url(url)
        self._tables: dict[str, sa.Table] = {}

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def connect_error(self, exc: Exception) -> StoreUnavailable:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreUnavailable(f"database {self.display_url} is unreachable: {reason}")

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
        """The domain's table, reflected once; a missing table or column names domain and field."""
        if policy.name not in self._tables:
            try:
                table = sa.Table(policy.table, sa.MetaData(), autoload_with=self.engine,
                                 listeners=[("column_reflect", _uuids_as_text)])
            except sa.exc.NoSuchTableError:
                raise PolicyMismatch(f"{policy.source}: domain {policy.name}, field table: table {policy.table!r} "
                                     f"does not exist in {self.display_url}") from None
            except sa.exc.OperationalError as exc:
                raise self.connect_error(exc) from None
            for field, column in _named_columns(policy):
                if column not in table.c:
                    raise PolicyMismatch(f"{policy.source}: domain {policy.name}, field {field}: "
                                         f"table {policy.table} has no column {column!r}")
            self._tables[policy.name] = table
        return self._tables[policy.name]

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


def _uuids_as_text(inspector, table, column_info) -> None:
    """Ids are compared and bound as text, as the audit log keeps them."""
    if isinstance(column_info["type"], sa.Uuid):
        column_info["type"] = sa.Uuid(as_uuid=False)


APPLICATION_NAME = "retention_pipelines"


def _engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        # The demo shares one file between the CLI, Dagster's steps and the webserver.
        return {"connect_args": {"timeout": 30}}
    # Named, so that a DBA sees the runs in pg_stat_activity and a run's pacing (engine/pacing.py)
    # tells the app's sessions from its own.
    named = {} if "application_name=" in url else {"application_name": APPLICATION_NAME}
    return {"connect_args": {"connect_timeout": 10, **named}}


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
