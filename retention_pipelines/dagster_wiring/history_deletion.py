"""Runs deleted with their event logs a chunk at a time, set-based, through Dagster's own storages.

`instance.delete_run` takes about ten statements and four commits per run; a year's backlog is
100,000 runs. Here a chunk of runs costs a handful of `DELETE … WHERE run_id IN (…)` statements,
each its own short transaction, on the storages' own tables and connections. The rows removed are
exactly those `delete_run` removes (`SqlRunStorage.delete_run`, `SqliteRunStorage.delete_run` and
`SqlEventLogStorage.delete_events`): the run, its tags, its event log, the tags of its asset events
and any concurrency slot it still holds. What `delete_run` leaves (the asset keys' rows, asset check
executions, dynamic partitions) is left too, so the instance answers as if each run had gone through
`delete_run`. A storage whose deletion is not one of those (another plugin, a wrapper, a per-run
sharded event log other than SQLite's) goes through `instance.delete_run`, one run at a time.

The event log goes first: a purge stopped between the two leaves runs without events, which the next
purge finds and finishes, never events of a run no longer listed."""

from __future__ import annotations

import os
from collections.abc import Sequence

import dagster as dg
import sqlalchemy as sa
from dagster._core.events import DagsterEventType
from dagster._core.storage.event_log.schema import (
    AssetEventTagsTable,
    ConcurrencySlotsTable,
    PendingStepsTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

# A few hundred runs (about 34 event rows each at today's cadence) per statement: each DELETE is a
# transaction of a fraction of a second, so runs launched meanwhile write their events beside it.
RUNS_PER_CHUNK = 200
# The event types whose rows have tags in asset_event_tags (SqlEventLogStorage.delete_events_for_run).
TAGGED_EVENT_TYPES = (DagsterEventType.ASSET_MATERIALIZATION.value, DagsterEventType.ASSET_OBSERVATION.value)


def deletes_in_bulk(instance: dg.DagsterInstance) -> bool:
    """Whether the instance's storages delete runs as this module knows: Dagster's SQL storages with
    their deletion unchanged, the event log in one database or in SQLite's per-run files."""
    runs, events = instance.run_storage, instance.event_log_storage
    return (isinstance(runs, SqlRunStorage)
            and type(runs).delete_run in (SqlRunStorage.delete_run, SqliteRunStorage.delete_run)
            and isinstance(events, SqlEventLogStorage)
            and type(events).delete_events is SqlEventLogStorage.delete_events
            and type(events).delete_events_for_run is SqlEventLogStorage.delete_events_for_run
            and (not events.is_run_sharded or type(events) is SqliteEventLogStorage))


def delete_runs(instance: dg.DagsterInstance, run_ids: Sequence[str]) -> None:
    """The runs and everything `delete_run` deletes with them, RUNS_PER_CHUNK runs a statement."""
    if not deletes_in_bulk(instance):
        for run_id in run_ids:
            instance.delete_run(run_id)
        return
    for start in range(0, len(run_ids), RUNS_PER_CHUNK):
        chunk = list(run_ids[start:start + RUNS_PER_CHUNK])
        _delete_events(instance.event_log_storage, chunk)
        _delete_run_rows(instance.run_storage, chunk)


def _delete_events(storage: SqlEventLogStorage, run_ids: list[str]) -> None:
    if storage.is_run_sharded:
        # SQLite keeps each run's events in a file of its own, and copies its asset events to the
        # index file; a file that is not there holds nothing (opening it would create it).
        for run_id in run_ids:
            if os.path.exists(storage.path_for_shard(run_id)):
                with storage.run_connection(run_id) as connection:
                    _delete_event_rows(connection, run_ids=[run_id])
    with storage.index_connection() as connection:
        _delete_event_rows(connection, run_ids)
    if storage.supports_global_concurrency_limits:
        # A finished run has given its slots back; one that has not gets Dagster's own release,
        # which also hands the slots to the steps waiting for them.
        with storage.index_connection() as connection:
            holding = set(connection.execute(
                sa.select(ConcurrencySlotsTable.c.run_id).where(ConcurrencySlotsTable.c.run_id.in_(run_ids))
                .union(sa.select(PendingStepsTable.c.run_id).where(PendingStepsTable.c.run_id.in_(run_ids)))
            ).scalars())
        for run_id in sorted(holding):
            storage.free_concurrency_slots_for_run(run_id)


def _delete_event_rows(connection: sa.Connection, run_ids: list[str]) -> None:
    # Tags first: their event ids are found through the events, which go next.
    tagged = sa.select(SqlEventLogStorageTable.c.id).where(
        SqlEventLogStorageTable.c.run_id.in_(run_ids),
        SqlEventLogStorageTable.c.dagster_event_type.in_(TAGGED_EVENT_TYPES))
    connection.execute(AssetEventTagsTable.delete().where(AssetEventTagsTable.c.event_id.in_(tagged)))
    connection.execute(SqlEventLogStorageTable.delete().where(SqlEventLogStorageTable.c.run_id.in_(run_ids)))


def _delete_run_rows(storage: SqlRunStorage, run_ids: list[str]) -> None:
    # The tags explicitly: SQLite does not cascade the foreign key unless asked to.
    with storage.connect() as connection:
        connection.execute(RunTagsTable.delete().where(RunTagsTable.c.run_id.in_(run_ids)))
        connection.execute(RunsTable.delete().where(RunsTable.c.run_id.in_(run_ids)))
