"""Dagster history of a given age for the purge's tests: a run's creation moved back in the run
storage (Dagster stamps a run with the moment it is created), and requests for erasure in a given
state, written as the erasure run leaves them; instances on SQLite or PostgreSQL, copied, and
compared row by row."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from dagster._core.storage.runs.schema import RunsTable

from retention_pipelines.schema import erasure_requests
from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.databases import new_database
from retention_pipelines_tests.support.servers import PostgresServer


@dg.op
def fail() -> None:
    raise RuntimeError("stands for a run that failed")


@dg.job
def failing_job():
    """A run that failed: the purge and the trimming keep everything of it."""
    fail()


def backdate_run(instance: dg.DagsterInstance, run_id: str, days: float) -> None:
    """The run as if it had been created `days` ago."""
    created = (datetime.now(UTC) - timedelta(days=days)).replace(tzinfo=None)  # stored naive, in UTC
    with instance.run_storage.connect() as connection:
        connection.execute(RunsTable.update().where(RunsTable.c.run_id == run_id)
                           .values(create_timestamp=created, update_timestamp=created))


def erasure_request(database: AppDatabase, status: str, completed_at: datetime | None) -> int:
    """A request in the given state (its address already replaced, as a completed one has it)."""
    received = (completed_at or datetime.now(UTC)) - timedelta(days=1)
    with database.begin() as connection:
        return connection.execute(erasure_requests.insert().values(
            email=None if completed_at else "history.purge@example.org",
            subject_hash="0" * 64 if completed_at else None,
            received_at=received, due_at=received + timedelta(days=30), status=status,
            completed_at=completed_at).returning(erasure_requests.c.id)).scalar_one()


@contextmanager
def instance_at(folder: Path, storage_url: str | None = None) -> Iterator[dg.DagsterInstance]:
    """An instance in `folder`: its storage in the PostgreSQL database `storage_url`, or without
    one in SQLite files under the folder (a file per run's event log, as the demo keeps them)."""
    overrides = {"storage": {"postgres": {"postgres_url": storage_url}}} if storage_url else None
    with dg.instance_for_test(temp_dir=str(folder), overrides=overrides) as instance:
        yield instance


def copy_instance(folder: Path, storage_url: str | None, server: PostgresServer | None,
                  into: Path) -> str | None:
    """A copy of a closed instance: its folder, and its database as a new one made from it (the
    copy's storage_url). Run ids, storage ids and timestamps are the original's."""
    shutil.copytree(folder, into)
    if storage_url is None:
        return None
    return new_database(server, template=storage_url.rsplit("/", 1)[1])


def stored_rows(folder: Path, storage_url: str | None) -> dict[tuple[str, str], list[tuple]]:
    """Every row the instance's storage holds, per file (SQLite) and table, sorted; tables without
    rows left out, so an empty file and no file compare equal."""
    def rows_of(engine: sa.Engine, place: str) -> dict[tuple[str, str], list[tuple]]:
        found = {}
        with engine.connect() as connection:
            for table in sa.inspect(connection).get_table_names():
                rows = sorted(tuple(repr(bytes(value) if isinstance(value, memoryview) else value) for value in row)
                              for row in connection.execute(sa.text(f'SELECT * FROM "{table}"')))
                if rows:
                    found[(place, table)] = rows
        engine.dispose()
        return found

    if storage_url:
        return rows_of(sa.create_engine(storage_url, poolclass=sa.NullPool), "postgresql")
    found = {}
    for path in sorted(folder.rglob("*.db")):
        found |= rows_of(sa.create_engine(f"sqlite:///{path}", poolclass=sa.NullPool), str(path.relative_to(folder)))
    return found
