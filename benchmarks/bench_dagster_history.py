"""Benchmark: a year of Dagster history in a PostgreSQL instance, then `dagster_history_purge_job`
on the whole backlog: the instance database's size before and after, the purge's time, and how long
runs launched during the purge waited to be written.

    python benchmarks/bench_dagster_history.py [--days 365] [--runs-per-day 366] [--events-per-run 34]
                                               [--event-bytes 1500] [--erasures-per-day 1]
                                               [--hourly-runs-per-day 48] [--json FILE]

On a fresh PostgreSQL started here, each simulated day has --runs-per-day runs, backdated to their
day: --hourly-runs-per-day runs of the hourly domains (48) and 2 of the daily ones, each
materializing its window's partition, and --erasures-per-day erasure runs with their request's
dynamic partition (the request completed that day, each past month's compliance report
materialized); the rest routine runs that materialize nothing. Each run has --events-per-run event
rows of about --event-bytes of random text (today's cadence: 366 runs and 12,300 event rows a day,
8.6 GB a year). The purge runs with the shipped ages (routine runs and latest materializations 90
days, erasure runs 400) while a thread creates a run with an event every 100 ms.

Sizes: `pg_database_size` before; after the purge and a plain VACUUM (the space PostgreSQL reuses
for the next runs, what a daily purge keeps the database at); and of the live rows alone after
VACUUM FULL. Target: the last two under 1.5 GB for a full year.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable  # noqa: E402
from dagster._core.storage.runs.schema import RunsTable  # noqa: E402
from dagster._core.test_utils import create_run_for_test, instance_for_test  # noqa: E402
from dagster._serdes import serialize_value  # noqa: E402

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
TARGET_BYTES = 1.5 * 1024**3


def engine_events(run_id: str, job: str, moment: float, count: int, size: int) -> list[dict]:
    """The run's log lines, as the event log stores them (one row each, its serialized event)."""
    rows = []
    for n in range(count):
        # Random text: PostgreSQL compresses a repeated one to nothing, which no log line is.
        entry = EventLogEntry(error_info=None, level=20, user_message=secrets.token_urlsafe(size * 3 // 4),
                              run_id=run_id,
                              timestamp=moment + n, job_name=job, dagster_event=DagsterEvent(
                                  DagsterEventType.ENGINE_EVENT.value, job, message=f"step {n}",
                                  event_specific_data=EngineEventData()))
        rows.append({"run_id": run_id, "event": serialize_value(entry), "dagster_event_type": "ENGINE_EVENT",
                     "timestamp": datetime.fromtimestamp(moment + n, UTC).replace(tzinfo=None)})
    return rows


def materialization(run_id: str, job: str, key: dg.AssetKey, partition: str, moment: float) -> EventLogEntry:
    return EventLogEntry(error_info=None, level=10, user_message="", run_id=run_id, timestamp=moment, job_name=job,
                         dagster_event=DagsterEvent(
                             DagsterEventType.ASSET_MATERIALIZATION.value, job,
                             event_specific_data=StepMaterializationData(
                                 dg.AssetMaterialization(key, partition=partition, metadata={"rows": 1}))))


def simulate(instance: dg.DagsterInstance, app: AppDatabase, args) -> dict:
    now = datetime.now(UTC)
    storage = instance.event_log_storage
    runs = events = 0
    for age in range(args.days, 0, -1):
        day = now - timedelta(days=age)
        moment = day.timestamp()
        batch_runs, rows = [], []
        plan = [(f"{domain}_retention_job", dg.AssetKey([domain, "deletion"]), f"{day:%Y-%m-%d}-{hour:02d}:00")
                for domain in HOURLY_DOMAINS for hour in range(args.hourly_runs_per_day // len(HOURLY_DOMAINS))]
        plan += [(f"{domain}_retention_job", dg.AssetKey([domain, "deletion"]), f"{day:%Y-%m-%d}")
                 for domain in DAILY_DOMAINS]
        for _ in range(args.erasures_per_day):
            with app.begin() as connection:
                request = connection.execute(erasure_requests.insert().values(
                    subject_hash="0" * 64, received_at=day - timedelta(days=1), due_at=day + timedelta(days=29),
                    status=COMPLETED, completed_at=day).returning(erasure_requests.c.id)).scalar_one()
            instance.add_dynamic_partitions(ERASURE_PARTITIONS.name, [str(request)])
            plan.append((ERASURE_JOB, OUTCOME_KEY, str(request)))
        plan += [("audit_seal_job", None, None)] * max(0, args.runs_per_day - len(plan))
        for job, key, partition in plan:
            tags = {"dagster/partition": partition} if partition else {}
            run = create_run_for_test(instance, job_name=job, status=DagsterRunStatus.SUCCESS, tags=tags,
                                      asset_selection=frozenset({key}) if key else None)
            batch_runs.append(run.run_id)
            rows += engine_events(run.run_id, job, moment, args.events_per_run - (1 if key else 0), args.event_bytes)
            if key:
                storage.store_event(materialization(run.run_id, job, key, partition, moment))
        with storage.index_connection() as connection:
            connection.execute(SqlEventLogStorageTable.insert(), rows)
        with instance.run_storage.connect() as connection:
            stamp = day.replace(tzinfo=None)
            connection.execute(RunsTable.update().where(RunsTable.c.run_id.in_(batch_runs))
                               .values(create_timestamp=stamp, update_timestamp=stamp))
        runs += len(batch_runs)
        events += len(rows) + sum(1 for _, key, _ in plan if key)
        if day.month != (day + timedelta(days=1)).month:  # the month's report, made on the 1st
            instance.report_runless_asset_event(dg.AssetMaterialization(REPORT_KEY, partition=f"{day:%Y-%m}-01"))
    return {"runs": runs, "event_rows": events}


def database_size(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        size = connection.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one()
    engine.dispose()
    return int(size)


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs-per-day", type=int, default=366)
    parser.add_argument("--events-per-run", type=int, default=34)
    parser.add_argument("--event-bytes", type=int, default=1500)
    parser.add_argument("--erasures-per-day", type=int, default=1)
    parser.add_argument("--hourly-runs-per-day", type=int, default=48, help="of the hourly domains, each its window")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "dagster_history.json")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-history-"))
    (home / "dagster").mkdir()
    os.environ.update(RETENTION_ENV="demo", RETENTION_HOME=str(home / "retention"))
    server = PostgresServer({"fsync": "on", "synchronous_commit": "on"}).start()
    try:
        app_url = server.create_app_database("bench_history_app")
        instance_url = server.create_database("bench_history_dagster")
        app = AppDatabase(app_url)
        with instance_for_test(temp_dir=str(home / "dagster"),
                               overrides={"storage": {"postgres": {"postgres_url": instance_url}}}) as instance:
            started = time.perf_counter()
            made = simulate(instance, app, args)
            print(f"{made['runs']:,} runs, {made['event_rows']:,} event rows written in "
                  f"{time.perf_counter() - started:.0f} s")
            vacuum(instance_url, full=False)
            before = database_size(instance_url)
            stop, waits = threading.Event(), []
            beside = threading.Thread(target=launches_meanwhile, args=(instance, stop, waits))
            beside.start()
            started = time.perf_counter()
            defs = dg.Definitions.merge(build_history_purge_defs(), dg.Definitions(
                resources={"retention_stores": RetentionStores(database_url=app_url)}))
            result = defs.resolve_job_def(PURGE_JOB).execute_in_process(
                instance=instance, run_config={"ops": {"dagster_history_purge": {"config": {"dry_run": False}}}})
            purge_seconds = time.perf_counter() - started
            stop.set()
            beside.join()
            figures = {e.step_output_data.output_name: {k: v.value for k, v in e.step_output_data.metadata.items()}
                       for e in result.all_events if e.event_type_value == "STEP_OUTPUT"}["result"]
            vacuum(instance_url, full=False)
            after = database_size(instance_url)
            vacuum(instance_url, full=True)
            live = database_size(instance_url)
        app.dispose()
    finally:
        server.stop()
    waits.sort()
    report = {
        "simulated": {**vars(args), "json": str(args.json), **made},
        "size_before_bytes": before, "size_after_purge_bytes": after, "size_live_after_purge_bytes": live,
        "purge_seconds": round(purge_seconds, 1), "purge": figures,
        "launch_wait_ms": {"count": len(waits),
                           "median": round(statistics.median(waits) * 1000, 1) if waits else None,
                           "p99": round(waits[int(0.99 * (len(waits) - 1))] * 1000, 1) if waits else None,
                           "max": round(waits[-1] * 1000, 1) if waits else None},
        "target_bytes": TARGET_BYTES, "target_met": max(after, live) < TARGET_BYTES,
    }
    mb = 1024**2
    print(f"instance database: {before / mb:,.0f} MB before; {after / mb:,.0f} MB after the purge (vacuumed); "
          f"{live / mb:,.0f} MB of live rows (VACUUM FULL); target < {TARGET_BYTES / mb:,.0f} MB")
    print(f"purge: {purge_seconds:.0f} s, {figures['runs_deleted']:,} runs deleted, "
          f"{figures['erasure_partitions_deleted']:,} erasure partitions; runs launched meanwhile waited "
          f"median {report['launch_wait_ms']['median']} ms, p99 {report['launch_wait_ms']['p99']} ms, "
          f"max {report['launch_wait_ms']['max']} ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
