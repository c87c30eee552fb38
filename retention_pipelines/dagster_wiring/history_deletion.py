"""Runs deleted with their event logs a chunk at a time, set-based, through Dagster's own storages;
and the event logs of older successful runs trimmed to what they are read for.

`instance.delete_run` takes about ten statements and four commits per run; a year's backlog is
100,000 runs. Here a chunk of runs costs a handful of `DELETE … WHERE run_id IN (…)` statements,
each its own short transaction, on the storages' own tables and connections. The rows removed are
those `delete_run` removes (`SqlRunStorage.delete_run`, `SqliteRunStorage.delete_run` and
`SqlEventLogStorage.delete_events`): the run, its tags, its event log, the tags of its asset events
and any concurrency slot it still holds; and one more: the run's asset check executions, but the
latest of each check. `delete_run` leaves those rows for ever, each with a copy of its evaluation,
and at today's cadence (a health probe with nine checks every 15 minutes) they grow by about 2 MB
a day; the latest stays, so each check's state in the UI is what it was. What else `delete_run`
leaves (the asset keys' rows, dynamic partitions) is left too, so the instance answers as if each
run had gone through `delete_run`. A storage whose deletion is not one of those (another plugin, a
wrapper, another database, a per-run sharded event log other than SQLite's) goes through
`instance.delete_run`, one run at a time, and is not trimmed.

The event log goes first: a purge stopped between the two leaves runs without events, which the next
purge finds and finishes, never events of a run no longer listed."""

from __future__ import annotations

import os
from collections.abc import Sequence

import dagster as dg
import sqlalchemy as sa
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
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
from dagster._serdes import deserialize_value

# A few hundred runs (about 34 event rows each at today's cadence) per statement: each DELETE is a
# transaction of a fraction of a second, so runs launched meanwhile write their events beside it.
RUNS_PER_CHUNK = 200
# The event types whose rows have tags in asset_event_tags (SqlEventLogStorage.delete_events_for_run).
TAGGED_EVENT_TYPES = (DagsterEventType.ASSET_MATERIALIZATION.value, DagsterEventType.ASSET_OBSERVATION.value)
# What trimming takes from a successful run: how the engine ran it (process and resource start and
# stop), and the outputs of steps that materialized an asset or evaluated a check, whose metadata the
# materialization and the evaluation keep. Kept: the run's and steps' start and end, materializations,
# observations, check evaluations and what was planned, log lines, captured-log links, and the
# outputs of op steps (an op job's record is its outputs' metadata). A failed run keeps everything.
MECHANICS = (DagsterEventType.ENGINE_EVENT.value, DagsterEventType.RESOURCE_INIT_STARTED.value,
             DagsterEventType.RESOURCE_INIT_SUCCESS.value)
OUTPUTS = (DagsterEventType.STEP_OUTPUT.value, DagsterEventType.HANDLED_OUTPUT.value)
CHECK_EVENT_TYPES = (DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value,
                     DagsterEventType.ASSET_CHECK_EVALUATION.value)
ASSET_RESULTS = (DagsterEventType.ASSET_MATERIALIZATION.value, DagsterEventType.ASSET_CHECK_EVALUATION.value)
DIALECTS = ("postgresql", "sqlite")  # whose DELETE may read the table it deletes from


def deletes_in_bulk(instance: dg.DagsterInstance) -> bool:
    """Whether the instance's storages delete runs as this module knows: Dagster's SQL storages with
    their deletion unchanged, the event log in one database or in SQLite's per-run files."""
    runs, events = instance.run_storage, instance.event_log_storage
    return (isinstance(runs, SqlRunStorage)
            and type(runs).delete_run in (SqlRunStorage.delete_run, SqliteRunStorage.delete_run)
            and isinstance(events, SqlEventLogStorage)
            and type(events).delete_events is SqlEventLogStorage.delete_events
            and type(events).delete_events_for_run is SqlEventLogStorage.delete_events_for_run
            and (not events.is_run_sharded or type(events) is SqliteEventLogStorage)
            and _dialect(events) in DIALECTS)


def _dialect(storage: SqlEventLogStorage) -> str:
    with storage.index_connection() as connection:
        return connection.dialect.name


def delete_runs(instance: dg.DagsterInstance, run_ids: Sequence[str]) -> None:
    """The runs, everything `delete_run` deletes with them and their asset check executions but the
    latest of each check, RUNS_PER_CHUNK runs a statement."""
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
        _delete_check_executions(connection, run_ids, keyed=not storage.is_run_sharded)
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


def _delete_check_executions(connection: sa.Connection, run_ids: list[str], keyed: bool) -> None:
    """The runs' check executions but the latest of each check. Keyed: the checks named first, from
    the runs' check events in the same database, so that the table's one index (check, then run)
    finds the rows; it has none on the run alone, and a year of executions read for every chunk
    would cost seconds each."""
    executions, later = AssetCheckExecutionsTable, AssetCheckExecutionsTable.alias("later")
    of_the_runs = executions.c.run_id.in_(run_ids)
    if keyed:
        checks = set()
        for text in connection.execute(sa.select(SqlEventLogStorageTable.c.event).where(
                SqlEventLogStorageTable.c.run_id.in_(run_ids),
                SqlEventLogStorageTable.c.dagster_event_type.in_(CHECK_EVENT_TYPES))).scalars():
            data = deserialize_value(text, EventLogEntry).get_dagster_event().event_specific_data
            checks.add((data.asset_key.to_string(), data.check_name))
        if not checks:
            return
        of_the_runs = sa.and_(executions.c.asset_key.in_({key for key, _ in checks}),
                              executions.c.check_name.in_({name for _, name in checks}), of_the_runs)
    connection.execute(executions.delete().where(of_the_runs, sa.exists().where(
        later.c.asset_key == executions.c.asset_key, later.c.check_name == executions.c.check_name,
        later.c.id > executions.c.id)))


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


def trim_run_details(instance: dg.DagsterInstance, run_ids: Sequence[str]) -> int:
    """The event rows of MECHANICS and OUTPUTS (of asset steps) of these runs deleted, for those
    that succeeded; how many. A run trimmed already loses nothing more."""
    if not deletes_in_bulk(instance):
        return 0
    storage = instance.event_log_storage
    trimmed = 0
    for start in range(0, len(run_ids), RUNS_PER_CHUNK):
        chunk = [record.dagster_run.run_id for record in instance.get_run_records(dg.RunsFilter(
            run_ids=list(run_ids[start:start + RUNS_PER_CHUNK]), statuses=[dg.DagsterRunStatus.SUCCESS]))]
        if storage.is_run_sharded:
            for run_id in chunk:
                if os.path.exists(storage.path_for_shard(run_id)):
                    with storage.run_connection(run_id) as connection:
                        trimmed += _trim_event_rows(connection, [run_id])
        if chunk:
            with storage.index_connection() as connection:
                trimmed += _trim_event_rows(connection, chunk)
    return trimmed


def _trim_event_rows(connection: sa.Connection, run_ids: list[str]) -> int:
    events, results = SqlEventLogStorageTable, SqlEventLogStorageTable.alias("results")
    of_an_asset_step = sa.exists().where(results.c.run_id == events.c.run_id,
                                         results.c.step_key == events.c.step_key,
                                         results.c.dagster_event_type.in_(ASSET_RESULTS))
    return connection.execute(events.delete().where(
        events.c.run_id.in_(run_ids),
        sa.or_(events.c.dagster_event_type.in_(MECHANICS),
               sa.and_(events.c.dagster_event_type.in_(OUTPUTS), of_an_asset_step)))).rowcount
