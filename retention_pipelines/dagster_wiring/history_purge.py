"""Dagster's own history has a retention policy: runs, their event logs and finished requests'
erasure partitions are deleted once old enough, daily, by `dagster_history_purge_job`.

What may go is decided by one pure function, `decide`, over small facts about each run:
- a run still queued or running stays;
- a routine run goes once `RETENTION_PURGE_RUNS_AFTER_DAYS` old (90);
- an erasure run (a run of `gdpr_erasure_job`, of the sensor's `gdpr_erasure_batch_job`, of the
  dry run, or of an erasure asset materialized on its own) goes once
  `RETENTION_PURGE_ERASURE_RUNS_AFTER_DAYS` old (400), and only when every request it erased is
  completed and the compliance report of the month it was completed in is materialized: that
  report, from the audit log, is then the evidence of record of the request;
- a run that holds the latest materialization of any asset or asset partition (what auditors read in
  the UI) stays until `RETENTION_PURGE_LATEST_MATERIALIZATIONS_AFTER_DAYS` old (90: by then the
  month's report and the audit log hold the same facts);
- a run that holds the latest materialization of a month's compliance report stays as long as it
  does: it links the report, the evidence of record, and there are twelve a year.
A request's dynamic partition goes with its last run (its own or a batch that named it), once its
request is completed and reported.

The job is ops only: its counts are its run's metadata, and it never becomes a materialization that
a purge would have to keep. Its record is that metadata and a log line, not the audit log, whose
entries are about the app's records, chained per domain and counted by the monthly report."""


import enum
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import FINISHED_STATUSES

from retention_pipelines.dagster_wiring.common import RUN_TAGS, operator_errors
from retention_pipelines.dagster_wiring.erasure_run import (
    ERASURE_BATCH_JOB,
    ERASURE_DRY_RUN_JOB,
    ERASURE_JOB,
    ERASURE_PARTITIONS,
    OUTCOME_KEY,
    rounds_of,
)
from retention_pipelines.dagster_wiring.history_deletion import delete_runs, trim_run_details
from retention_pipelines.dagster_wiring.report import REPORT_KEY
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.gdpr.requests import COMPLETED, ErasureRequests

PURGE_JOB = "dagster_history_purge_job"
PURGE_SCHEDULE = "dagster_history_purge_schedule"
# Runs read and deleted a chunk at a time: each delete is its own short transaction, so the runs
# the instance is launching meanwhile never wait long behind the purge.
CHUNK = 500
PARTITION_TAG = "dagster/partition"
# Daily, after the nightly retention runs (02:20, 02:30), the orphans report (03:45), the archive
# expiry (04:15) and before the monthly report (06:00 on the 1st).
PURGE_CRON = "0 5 * * *"


class Decision(enum.StrEnum):
    """What the purge does with a run, and why it keeps one."""

    PURGE = "purge"
    UNFINISHED = "kept_unfinished"
    TOO_RECENT = "kept_too_recent"
    LATEST_MATERIALIZATION = "kept_latest_materialization"
    ERASURE_NOT_REPORTED = "kept_erasure_not_reported"


@dataclass(frozen=True)
class RunFacts:
    run_id: str
    created_at: datetime
    finished: bool
    holds_latest: bool  # holds the latest materialization of an asset or of an asset partition
    holds_report: bool  # holds the latest materialization of a month's compliance report
    erasure: bool  # a run of requests for erasure
    request_ids: tuple[int, ...] = ()  # those requests: its partition's, or the batch's


@dataclass(frozen=True)
class HistoryAges:
    runs: timedelta
    erasure_runs: timedelta
    latest_materializations: timedelta


def decide(run: RunFacts, now: datetime, ages: HistoryAges, reported_requests: frozenset[int]) -> Decision:
    """Whether the run may go now. `reported_requests`: the completed requests whose month's
    compliance report is made."""
    age = now - run.created_at
    if not run.finished:
        return Decision.UNFINISHED
    if run.holds_report:
        return Decision.LATEST_MATERIALIZATION
    if age < (ages.erasure_runs if run.erasure else ages.runs):
        return Decision.TOO_RECENT
    if run.holds_latest and age < ages.latest_materializations:
        return Decision.LATEST_MATERIALIZATION
    if run.erasure and (not run.request_ids or not set(run.request_ids) <= reported_requests):
        return Decision.ERASURE_NOT_REPORTED
    return Decision.PURGE


def partitions_to_delete(known: Iterable[str], reported_requests: frozenset[int],
                         partitions_with_runs_left: set[str]) -> list[str]:
    """The erasure partitions that go: their request completed and reported, and no run of theirs left."""
    return sorted(key for key in known if key.isdigit() and int(key) in reported_requests
                  and key not in partitions_with_runs_left)


class PurgeConfig(dg.Config):
    # A run launched by hand counts what it would delete unless told otherwise; the schedule deletes.
    dry_run: bool = True


def build_history_purge_defs() -> dg.Definitions:
    @dg.op(name="dagster_history_purge", out=dg.Out(dg.Nothing), description=(
        "Deletes finished runs (with their event logs) older than RETENTION_PURGE_RUNS_AFTER_DAYS, erasure runs "
        "older than RETENTION_PURGE_ERASURE_RUNS_AFTER_DAYS once their request is completed and its month's "
        "compliance report is made, and the dynamic partitions of such requests once no run of theirs is left. "
        "A run holding the latest materialization of an asset partition stays until "
        "RETENTION_PURGE_LATEST_MATERIALIZATIONS_AFTER_DAYS. Deletes 500 runs at a time. Trims the event logs of "
        "successful runs older than RETENTION_PURGE_RUN_DETAILS_AFTER_DAYS to what they are read for. With "
        "dry_run, counts and deletes nothing."))
    def dagster_history_purge(context: dg.OpExecutionContext, config: PurgeConfig,
                              retention_stores: RetentionStores):
        started = time.monotonic()
        instance = context.instance
        with operator_errors():
            settings = retention_stores.settings()
            requests = ErasureRequests(retention_stores.database).list()
        ages = HistoryAges(runs=timedelta(days=settings.purge_runs_after_days),
                           erasure_runs=timedelta(days=settings.purge_erasure_runs_after_days),
                           latest_materializations=timedelta(days=settings.purge_latest_materializations_after_days))
        now = datetime.now(UTC)  # Dagster stamps its runs with its own processes' clocks
        reported = reported_requests(instance, requests)
        holding_latest = runs_holding_latest(instance)
        holding_reports = runs_holding_latest(instance, [REPORT_KEY])
        decisions: Counter[Decision] = Counter()
        doomed: list[str] = []
        for run in old_runs(instance, now - min(ages.runs, ages.erasure_runs), holding_latest, holding_reports):
            decision = decide(run, now, ages, reported)
            decisions[decision] += 1
            if decision is Decision.PURGE:
                doomed.append(run.run_id)
        known = instance.get_dynamic_partitions(ERASURE_PARTITIONS.name)
        going = set(doomed)
        batches = batch_runs_by_request(instance)
        # Only the partitions of reported requests are looked at, each by its tag (an indexed query),
        # and by the batch runs that named it.
        left = {key for key in known if key.isdigit() and int(key) in reported
                and not (set(instance.get_run_ids(dg.RunsFilter(tags={PARTITION_TAG: key})))
                         | batches.get(int(key), set())) <= going}
        partitions = partitions_to_delete(known, reported, left)
        trimmed = 0
        if not config.dry_run:
            for chunk in chunks(doomed, CHUNK):
                delete_runs(instance, chunk)
                context.log.debug(f"history purge: {len(chunk)} runs deleted")
            for key in partitions:
                instance.delete_dynamic_partition(ERASURE_PARTITIONS.name, key)
            trimmed = trim_run_details(instance, instance.get_run_ids(dg.RunsFilter(
                statuses=[dg.DagsterRunStatus.SUCCESS],
                created_before=now - timedelta(days=settings.purge_run_details_after_days))))
        figures = {
            "dry_run": config.dry_run, "runs_examined": sum(decisions.values()),
            "runs_deleted": 0 if config.dry_run else len(doomed),
            "runs_would_delete": len(doomed) if config.dry_run else 0,
            **{decision.value: decisions[decision] for decision in Decision if decision is not Decision.PURGE},
            "erasure_partitions_deleted": 0 if config.dry_run else len(partitions),
            "erasure_partitions_would_delete": len(partitions) if config.dry_run else 0,
            "event_rows_trimmed": trimmed,
            "runs_after_days": settings.purge_runs_after_days,
            "erasure_runs_after_days": settings.purge_erasure_runs_after_days,
            "latest_materializations_after_days": settings.purge_latest_materializations_after_days,
            "run_details_after_days": settings.purge_run_details_after_days,
            "duration_seconds": round(time.monotonic() - started, 3),
        }
        context.log.info("history purge: " + ", ".join(f"{name}={value}" for name, value in figures.items()))
        yield dg.Output(None, metadata=figures)

    @dg.job(name=PURGE_JOB, tags=RUN_TAGS, executor_def=dg.in_process_executor, description=(
        "Delete Dagster's own history past its age: old runs with their event logs, and finished requests' "
        "erasure partitions; keeps what auditors read. Launched by hand it is a dry run unless "
        "`dry_run: false`; the daily schedule deletes."))
    def history_purge_job():
        dagster_history_purge()

    # Running by default: the rules keep every run auditors read (latest materializations, erasure runs
    # until their month's report), and an instance whose purge waits for someone to turn it on grows for
    # ever. The job's dry run shows beforehand what a tick would delete.
    schedule = dg.ScheduleDefinition(
        name=PURGE_SCHEDULE, job=history_purge_job, cron_schedule=PURGE_CRON,
        run_config=dg.RunConfig(ops={"dagster_history_purge": PurgeConfig(dry_run=False)}),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily: Dagster's runs, event logs and erasure partitions past their age deleted.")
    return dg.Definitions(jobs=[history_purge_job], schedules=[schedule])


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def is_erasure_run(job_name: str, asset_selection: Iterable[dg.AssetKey] | None) -> bool:
    keys = asset_selection or ()
    return job_name in (ERASURE_JOB, ERASURE_BATCH_JOB, ERASURE_DRY_RUN_JOB) or any(
        key == OUTCOME_KEY or key.path[:2] == ["gdpr", "erasure"] for key in keys)


def erasure_request_ids(job_name: str, tags: dict, run_config: dict | None) -> tuple[int, ...]:
    """The requests an erasure run erased: a batch run's from its config, any other's from its partition."""
    if job_name == ERASURE_BATCH_JOB:
        return tuple(sorted({round_.request_id for round_ in rounds_of(job_name, tags, run_config)}))
    partition = tags.get(PARTITION_TAG, "")
    return (int(partition),) if partition.isdigit() else ()


def batch_runs_by_request(instance: dg.DagsterInstance) -> dict[int, set[str]]:
    """Each request's batch runs (one query: a batch run erases hundreds of requests, so they are few)."""
    named: dict[int, set[str]] = {}
    for run in instance.get_runs(dg.RunsFilter(job_name=ERASURE_BATCH_JOB)):
        for request_id in erasure_request_ids(run.job_name, run.tags, run.run_config):
            named.setdefault(request_id, set()).add(run.run_id)
    return named


def old_runs(instance: dg.DagsterInstance, created_before: datetime,
             holding_latest: set[str], holding_reports: set[str]) -> Iterator[RunFacts]:
    """Every run created before the moment, oldest first, read a chunk at a time."""
    cursor = None
    while True:
        records = instance.get_run_records(dg.RunsFilter(created_before=created_before), limit=CHUNK,
                                           ascending=True, cursor=cursor)
        for record in records:
            run = record.dagster_run
            erasure = is_erasure_run(run.job_name, run.asset_selection)
            requests = erasure_request_ids(run.job_name, run.tags, run.run_config) if erasure else ()
            yield RunFacts(run.run_id, record.create_timestamp, run.status in FINISHED_STATUSES,
                           run.run_id in holding_latest, run.run_id in holding_reports, erasure, requests)
        if len(records) < CHUNK:
            return
        cursor = records[-1].dagster_run.run_id


def runs_holding_latest(instance: dg.DagsterInstance, keys: list[dg.AssetKey] | None = None) -> set[str]:
    """The runs that hold the latest materialization of an asset (of `keys`; all if None), or of one
    of its partitions."""
    held = set()
    for record in instance.get_asset_records(keys):
        latest = record.asset_entry.last_materialization_record
        if latest is not None:
            held.add(latest.run_id)
        key = record.asset_entry.asset_key
        storage_ids = sorted(instance.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION).values())
        for start in range(0, len(storage_ids), CHUNK):
            part = storage_ids[start:start + CHUNK]
            found = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, storage_ids=part),
                                                    limit=len(part))
            held.update(event.run_id for event in found.records)
    return held


def reported_requests(instance: dg.DagsterInstance, requests) -> frozenset[int]:
    """The completed requests whose month (of completion, UTC) has its compliance report materialized."""
    months = instance.get_materialized_partitions(REPORT_KEY)
    return frozenset(request.id for request in requests if request.status == COMPLETED and request.completed_at
                     and f"{request.completed_at.astimezone(UTC):%Y-%m}-01" in months)
