"""Dagster history of a given age for the purge's tests: a run's creation moved back in the run
storage (Dagster stamps a run with the moment it is created), and requests for erasure in a given
state, written as the erasure run leaves them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.storage.runs.schema import RunsTable

from retention_pipelines.schema import erasure_requests
from retention_pipelines.stores import AppDatabase


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
