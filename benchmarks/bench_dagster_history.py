"""Benchmark: a year of Dagster history in a PostgreSQL instance, then `dagster_history_purge_job`
on the whole backlog: the instance database's size before and after, what the kept history is made
of, the purge's speed against `instance.delete_run` one run at a time, and how long runs launched
during the purge waited to be written.

    python benchmarks/bench_dagster_history.py [--days 365] [--scale 1.0] [--baseline-runs 300] [--json FILE]

The runs are copies of real ones: the code location's frequent jobs (the health probe, the manual
queue's health, the evidence index, the erasure deadlines, a domain's retention run) are first run
once in process on the instance, logging as production does (`python_logs` of deploy/dagster.yaml),
and their event log rows and asset check executions are copied for every simulated run with its
own run id and time. Each simulated day has today's schedules times --scale: 96 health, 96 queue,
96 index and 24 deadline runs, 48 runs of the hourly domains and 2 of the daily ones (each
materializing its window's partition of the domain's four assets), one erasure run with its
request's dynamic partition (completed that day, each past month's compliance report
materialized). A run launched by the daemon also stores its queueing and launch events (not in an
in-process run): LAUNCH_EVENTS rows of about LAUNCH_EVENT_BYTES each are added per run.

Then, while a thread creates a run with an event every 100 ms: first --baseline-runs of the oldest
runs deleted with `instance.delete_run` (the former purge, the rate to compare with), then the job
with the shipped ages on the rest. Sizes: `pg_database_size` before; after the purge and a plain
VACUUM (the space PostgreSQL reuses for the next runs, what a daily purge keeps the database at);
and of the live rows alone after VACUUM FULL, per table. At a --scale below 1 the figures of a
full year at today's cadence are extrapolated: the history's bytes and the backlog's runs divided
by --scale (every kind of run is scaled alike), the backlog's time at the measured rate. Target:
the live rows of a full year's kept history under 1.5 GB. The database's files after the first
purge of a backlog stay at the backlog's size (plain VACUUM frees space for reuse, not to the disk)
until a VACUUM FULL or pg_repack, once; from then on a daily purge keeps them at the live rows and
a day's turnover. --delete-run-only runs the job with Dagster's API
alone (`instance.delete_run` per run, no trimming, asset check executions left): what the same
decisions keep without history_deletion.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from dagster._core.events import (  # noqa: E402
    DagsterEvent,
    DagsterEventType,
    EngineEventData,
    StepMaterializationData,
)
from dagster._core.events.log import EventLogEntry  # noqa: E402
from dagster._core.storage.dagster_run import DagsterRunStatus  # noqa: E402
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable  # noqa: E402
from dagster._core.storage.runs.schema import RunsTable  # noqa: E402
from dagster._core.test_utils import create_run_for_test, instance_for_test  # noqa: E402
from dagster._core.utils import make_new_run_id as make_uuid  # noqa: E402
from dagster._serdes import deserialize_value, serialize_value  # noqa: E402

from retention_pipelines.dagster_wiring import history_purge  # noqa: E402
from retention_pipelines.dagster_wiring.erasure_run import ERASURE_JOB, ERASURE_PARTITIONS, OUTCOME_KEY  # noqa: E402
from retention_pipelines.dagster_wiring.history_purge import PURGE_JOB, build_history_purge_defs  # noqa: E402
from retention_pipelines.dagster_wiring.report import REPORT_KEY  # noqa: E402
from retention_pipelines.dagster_wiring.resources import RetentionStores  # noqa: E402
from retention_pipelines.engine.gdpr.requests import COMPLETED  # noqa: E402
from retention_pipelines.schema import erasure_requests  # noqa: E402
from retention_pipelines.stores import AppDatabase  # noqa: E402
from retention_pipelines_tests.support.servers import PostgresServer  # noqa: E402

HOURLY_DOMAINS = ("quiz_responses", "magic_link_tokens")
DAILY_DOMAINS = ("meal_plans", "email_blacklist")
# Today's schedules: runs a day of each frequent job (every 15 minutes, and hourly for the deadlines).
ROUTINE_PER_DAY = {"retention_health_job": 96, "manual_queue_health_job": 96, "audit_index_job": 96,
                   "erasure_requests_job": 24}
DOMAIN_JOB = "quiz_responses_retention_job"  # the shape of every domain's and erasure's run
HOURLY_RUNS_PER_DAY, ERASURES_PER_DAY = 48, 1  # and one run a day of each daily domain
LAUNCH_EVENTS, LAUNCH_EVENT_BYTES = 5, 800  # enqueued, dequeued, starting, process started and exited
TARGET_BYTES = 1.5 * 1024**3
PRODUCTION_LOGS = {"python_log_level": "INFO", "managed_python_loggers": ["retention_pipelines"]}


@dataclass
class Template:
    """A real run's rows, copied for each simulated run of its job."""

    run_id: str
    events: list[dict]  # event_logs rows but its materializations, without ids
    materializations: list[EventLogEntry]
    checks: list[dict]  # asset_check_executions rows, without ids


def record_templates(instance: dg.DagsterInstance, app_url: str) -> dict[str, Template]:
    """Each frequent job run once, in process, on the instance; its rows kept as the template."""
    from retention_pipelines.definitions import build_definitions

    # The stores read the app's database from the environment when the definitions load and when a run starts.
    with mock.patch.dict(os.environ, {"RETENTION_DATABASE_URL": app_url}):
        defs = build_definitions()
        runs = {}
        for name in [*ROUTINE_PER_DAY, DOMAIN_JOB]:
            job = defs.resolve_job_def(name)
            partition = None
            if job.partitions_def is not None:
                partition = job.partitions_def.get_partition_keys(dynamic_partitions_store=instance)[-1]
            result = job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=False)
            if not result.success:
                raise RuntimeError(f"the template run of {name} failed: see its events above")
            runs[name] = result.run_id
    templates = {}
    for name, run_id in runs.items():
        storage = instance.event_log_storage
        with storage.index_connection() as connection:
            rows = [dict(row._mapping) for row in connection.execute(
                sa.select(SqlEventLogStorageTable).where(SqlEventLogStorageTable.c.run_id == run_id))]
            checks = [dict(row._mapping) for row in connection.execute(
                sa.select(AssetCheckExecutionsTable).where(AssetCheckExecutionsTable.c.run_id == run_id))]
        for row in rows + checks:
            row.pop("id")
        materialized = DagsterEventType.ASSET_MATERIALIZATION.value
        templates[name] = Template(
            run_id, [row for row in rows if row["dagster_event_type"] != materialized],
            [deserialize_value(row["event"], EventLogEntry) for row in rows
             if row["dagster_event_type"] == materialized], checks)
    return templates


def launch_events(run_id: str, job: str, moment: float) -> list[dict]:
    return [{"run_id": run_id, "dagster_event_type": "ENGINE_EVENT", "step_key": None, "asset_key": None,
             "partition": None, "timestamp": datetime.fromtimestamp(moment, UTC).replace(tzinfo=None),
             "event": serialize_value(EventLogEntry(
                 error_info=None, level=20, user_message="x" * (LAUNCH_EVENT_BYTES - 600), run_id=run_id,
                 timestamp=moment, job_name=job, dagster_event=DagsterEvent(
                     DagsterEventType.ENGINE_EVENT.value, job, event_specific_data=EngineEventData())))}
            for _ in range(LAUNCH_EVENTS)]


def copied(template: Template, run_id: str, moment: float) -> tuple[list[dict], list[dict]]:
    stamp = datetime.fromtimestamp(moment, UTC).replace(tzinfo=None)
    events = [{**row, "run_id": run_id, "event": row["event"].replace(template.run_id, run_id), "timestamp": stamp}
              for row in template.events]
    checks = [{**row, "run_id": run_id, "evaluation_event": (row["evaluation_event"] or "").replace(
        template.run_id, run_id), "evaluation_event_timestamp": stamp, "create_timestamp": stamp}
              for row in template.checks]
    return events, checks


def materialization(template: EventLogEntry, run_id: str, key: dg.AssetKey | None, partition: str,
                    moment: float) -> EventLogEntry:
    """The template's materialization (its metadata) for the simulated run's asset partition."""
    data = template.dagster_event.step_materialization_data.materialization
    return EventLogEntry(error_info=None, level=10, user_message="", run_id=run_id, timestamp=moment,
                         job_name=template.job_name, step_key=template.step_key, dagster_event=DagsterEvent(
                             DagsterEventType.ASSET_MATERIALIZATION.value, template.job_name,
                             step_key=template.step_key, event_specific_data=StepMaterializationData(
                                 dg.AssetMaterialization(key or data.asset_key, partition=partition,
                                                         metadata=data.metadata))))


def day_plan(day: datetime, number: int, scale: float, app: AppDatabase, instance: dg.DagsterInstance) -> list[tuple]:
    """(job, template, asset prefix, partition) of each run of the `number`th day. Each kind's runs
    are its day's count × scale, the fractions carried over to the next days (a run every 20th day at
    0.05 for a daily one), so that the year holds each kind in today's proportions."""
    def share(per_day: int) -> int:
        return int((number + 1) * per_day * scale) - int(number * per_day * scale)

    plan = []
    for domain in HOURLY_DOMAINS:
        count = share(HOURLY_RUNS_PER_DAY // len(HOURLY_DOMAINS))
        plan += [(f"{domain}_retention_job", DOMAIN_JOB, domain, f"{day:%Y-%m-%d}-{hour * 24 // count:02d}:00")
                 for hour in range(count)]
    for domain in DAILY_DOMAINS:
        plan += [(f"{domain}_retention_job", DOMAIN_JOB, domain, f"{day:%Y-%m-%d}")] * share(1)
    for _ in range(share(ERASURES_PER_DAY)):
        with app.begin() as connection:
            request = connection.execute(erasure_requests.insert().values(
                subject_hash="0" * 64, received_at=day - timedelta(days=1), due_at=day + timedelta(days=29),
                status=COMPLETED, completed_at=day).returning(erasure_requests.c.id)).scalar_one()
        instance.add_dynamic_partitions(ERASURE_PARTITIONS.name, [str(request)])
        plan.append((ERASURE_JOB, DOMAIN_JOB, None, str(request)))
    for job, per_day in ROUTINE_PER_DAY.items():
        plan += [(job, job, None, None)] * share(per_day)
    return plan


def simulate(instance: dg.DagsterInstance, app: AppDatabase, templates: dict[str, Template], args) -> dict:
    now = datetime.now(UTC)
    storage = instance.event_log_storage
    runs = events = 0
    for age in range(args.days, 0, -1):
        day = now - timedelta(days=age)
        moment = day.timestamp()
        batch_runs, rows, checks = [], [], []
        for job, kind, domain, partition in day_plan(day, args.days - age, args.scale, app, instance):
            template = templates[kind]
            run_id = make_uuid()
            if domain:  # the domain's four assets, for the run's window
                stored = [materialization(m, run_id, dg.AssetKey([domain, *m.dagster_event.asset_key.path[1:]]),
                                          partition, moment) for m in template.materializations]
            elif job == ERASURE_JOB:
                stored = [materialization(template.materializations[0], run_id, OUTCOME_KEY, partition, moment)]
            else:  # the routine job's own unpartitioned assets
                stored = [materialization(m, run_id, None, None, moment) for m in template.materializations]
            tags = {"dagster/partition": partition} if partition else {}
            create_run_for_test(instance, run_id=run_id, job_name=job, status=DagsterRunStatus.SUCCESS, tags=tags,
                                asset_selection=frozenset(e.dagster_event.asset_key for e in stored) or None)
            batch_runs.append(run_id)
            copied_events, copied_checks = copied(template, run_id, moment)
            rows += copied_events + launch_events(run_id, job, moment)
            checks += copied_checks
            for entry in stored:
                storage.store_event(entry)
            events += len(copied_events) + LAUNCH_EVENTS + len(stored)
        with storage.index_connection() as connection:
            if rows:  # a day without runs at a small scale
                connection.execute(SqlEventLogStorageTable.insert(), rows)
            if checks:
                connection.execute(AssetCheckExecutionsTable.insert(), checks)
        with instance.run_storage.connect() as connection:
            stamp = day.replace(tzinfo=None)
            connection.execute(RunsTable.update().where(RunsTable.c.run_id.in_(batch_runs))
                               .values(create_timestamp=stamp, update_timestamp=stamp))
        runs += len(batch_runs)
        if day.month != (day + timedelta(days=1)).month:  # the month's report, made on the 1st
            instance.report_runless_asset_event(dg.AssetMaterialization(REPORT_KEY, partition=f"{day:%Y-%m}-01"))
    return {"runs": runs, "event_rows": events}


def database_size(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        size = connection.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
    engine.dispose()
    return int(size)


def table_sizes(url: str) -> dict[str, int]:
    """Each table's bytes with its indexes and TOAST, largest first (the ten largest)."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        sizes = connection.exec_driver_sql(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relkind = 'r' "
            "AND relnamespace = 'public'::regnamespace ORDER BY 2 DESC LIMIT 10").all()
    engine.dispose()
    return {name: int(size) for name, size in sizes}


def vacuum(url: str, full: bool) -> None:
    engine = sa.create_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM FULL" if full else "VACUUM")
    engine.dispose()


def launches_meanwhile(instance: dg.DagsterInstance, stop: threading.Event, waits: list[float]) -> None:
    """A run and an event every 100 ms, as the daemon launches runs while the purge works."""
    while not stop.is_set():
        started = time.perf_counter()
        run = create_run_for_test(instance, job_name="audit_seal_job", status=DagsterRunStatus.STARTED)
        instance.store_event(EventLogEntry(error_info=None, level=20, user_message="meanwhile", run_id=run.run_id,
                                           timestamp=time.time(), job_name="audit_seal_job", dagster_event=DagsterEvent(
                                               DagsterEventType.ENGINE_EVENT.value, "audit_seal_job",
                                               event_specific_data=EngineEventData())))
        waits.append(time.perf_counter() - started)
        stop.wait(0.1)


class Launches:
    """Runs launched beside whatever the block does; their waits in ms."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance, self.waits = instance, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=launches_meanwhile, args=(instance, self.stop, self.waits))

    def __enter__(self) -> Launches:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def figures(self) -> dict:
        waits = sorted(self.waits)
        return {"count": len(waits),
                "median": round(statistics.median(waits) * 1000, 1) if waits else None,
                "p99": round(waits[int(0.99 * (len(waits) - 1))] * 1000, 1) if waits else None,
                "max": round(waits[-1] * 1000, 1) if waits else None}


@contextlib.contextmanager
def api_only(enabled: bool):
    """The purge job with `instance.delete_run` per run and no trimming, when enabled."""
    if not enabled:
        yield
        return

    def delete_runs(instance: dg.DagsterInstance, run_ids: list[str]) -> None:
        for run_id in run_ids:
            instance.delete_run(run_id)

    with mock.patch.object(history_purge, "delete_runs", delete_runs), \
            mock.patch.object(history_purge, "trim_run_details", lambda instance, run_ids: 0):
        yield


def measure(args) -> dict:
    home = Path(tempfile.mkdtemp(prefix="bench-history-"))
    (home / "dagster").mkdir()
    os.environ.update(RETENTION_ENV="demo", RETENTION_HOME=str(home / "retention"))
    server = PostgresServer({"fsync": "on", "synchronous_commit": "on"}).start()
    try:
        app_url = server.create_app_database("bench_history_app")
        instance_url = server.create_database("bench_history_dagster")
        app = AppDatabase(app_url)
        with instance_for_test(temp_dir=str(home / "dagster"), overrides={
                "storage": {"postgres": {"postgres_url": instance_url}}, "python_logs": PRODUCTION_LOGS}) as instance:
            empty = database_size(instance_url)
            templates = record_templates(instance, app_url)
            started = time.perf_counter()
            made = simulate(instance, app, templates, args)
            print(f"{made['runs']:,} runs, {made['event_rows']:,} event rows written in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            vacuum(instance_url, full=False)
            before = database_size(instance_url)
            with Launches(instance) as alone:
                time.sleep(5)
            oldest = [r.dagster_run.run_id for r in instance.get_run_records(
                dg.RunsFilter(job_name="audit_index_job"), limit=args.baseline_runs, ascending=True)]
            with Launches(instance) as beside_baseline:
                started = time.perf_counter()
                for run_id in oldest:
                    instance.delete_run(run_id)
                baseline_seconds = time.perf_counter() - started
            defs = dg.Definitions.merge(build_history_purge_defs(), dg.Definitions(
                resources={"retention_stores": RetentionStores(database_url=app_url)}))
            with Launches(instance) as beside_purge, api_only(args.delete_run_only):
                started = time.perf_counter()
                result = defs.resolve_job_def(PURGE_JOB).execute_in_process(
                    instance=instance, run_config={"ops": {"dagster_history_purge": {"config": {"dry_run": False}}}})
                purge_seconds = time.perf_counter() - started
            figures = {e.step_output_data.output_name: {k: v.value for k, v in e.step_output_data.metadata.items()}
                       for e in result.all_events if e.event_type_value == "STEP_OUTPUT"}["result"]
            vacuum(instance_url, full=False)
            after = database_size(instance_url)
            vacuum(instance_url, full=True)
            live = database_size(instance_url)
            tables = table_sizes(instance_url)
        app.dispose()
    finally:
        server.stop()
    deleted = figures["runs_deleted"]
    bulk_rate = deleted / purge_seconds if deleted and purge_seconds else float("nan")
    baseline_rate = len(oldest) / baseline_seconds if oldest and baseline_seconds else float("nan")
    year_backlog = (deleted + len(oldest)) / args.scale * 365 / args.days

    def year(size: int) -> int:
        return int(empty + (size - empty) / args.scale)

    return {
        "simulated": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, **made},
        "template_rows_per_run": {name: {"events": len(t.events) + len(t.materializations) + LAUNCH_EVENTS,
                                         "check_executions": len(t.checks)} for name, t in templates.items()},
        "size_empty_bytes": empty, "size_before_bytes": before, "size_after_purge_bytes": after,
        "size_live_after_purge_bytes": live, "live_tables_bytes": tables,
        "year_size_after_purge_bytes": year(after), "year_size_live_bytes": year(live),
        "purge_seconds": round(purge_seconds, 1), "purge": figures,
        "runs_per_second": round(bulk_rate, 1),
        "baseline_delete_run": {"runs": len(oldest), "seconds": round(baseline_seconds, 1),
                                "runs_per_second": round(baseline_rate, 1)},
        "speedup": round(bulk_rate / baseline_rate, 1),
        "year_backlog_runs": int(year_backlog),
        "year_backlog_seconds": round(year_backlog / bulk_rate, 1),
        "year_backlog_seconds_delete_run": round(year_backlog / baseline_rate, 1),
        "launch_wait_ms": {"alone": alone.figures(), "during_delete_run": beside_baseline.figures(),
                           "during_purge": beside_purge.figures()},
        "target_bytes": TARGET_BYTES, "target_met": year(live) < TARGET_BYTES,
    }


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parse.add_argument("--days", type=int, default=365)
    parse.add_argument("--scale", type=float, default=1.0, help="of today's runs a day, every kind alike")
    parse.add_argument("--baseline-runs", type=int, default=300, help="deleted with delete_run, for its rate")
    parse.add_argument("--delete-run-only", action="store_true",
                       help="the job with instance.delete_run per run and no trimming")
    parse.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "dagster_history.json")
    return parse


def main() -> int:
    args = parser().parse_args()
    report = measure(args)
    mb = 1024**2
    waits = report["launch_wait_ms"]
    print(f"instance database: {report['size_before_bytes'] / mb:,.0f} MB before; "
          f"{report['size_after_purge_bytes'] / mb:,.0f} MB after the purge (vacuumed); "
          f"{report['size_live_after_purge_bytes'] / mb:,.0f} MB of live rows (VACUUM FULL); a full year at "
          f"today's cadence: {report['year_size_after_purge_bytes'] / mb:,.0f} MB, "
          f"{report['year_size_live_bytes'] / mb:,.0f} MB live; target < {TARGET_BYTES / mb:,.0f} MB")
    print("live tables (MB): " + ", ".join(f"{name} {size / mb:,.1f}"
                                           for name, size in report["live_tables_bytes"].items()))
    print(f"purge: {report['purge_seconds']:.0f} s, {report['purge']['runs_deleted']:,} runs deleted "
          f"({report['runs_per_second']:,.0f} runs/s; delete_run: "
          f"{report['baseline_delete_run']['runs_per_second']:,.1f} runs/s, {report['speedup']}×); a year's "
          f"backlog of {report['year_backlog_runs']:,} runs: {report['year_backlog_seconds'] / 60:,.1f} min "
          f"(delete_run: {report['year_backlog_seconds_delete_run'] / 60:,.0f} min)")
    print(f"runs launched meanwhile waited (ms): alone {waits['alone']}, during delete_run "
          f"{waits['during_delete_run']}, during the purge {waits['during_purge']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
