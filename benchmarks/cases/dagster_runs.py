"""Case 8: Dagster's own overhead on a run that has nothing to do, and one SLA sensor tick.

    python benchmarks/cases/dagster_runs.py [--size full|quick|smoke]

On one PostgreSQL started here, the app's four tables hold N rows each (full 2,000,000; quick
200,000; smoke 20,000; shapes in benchmarks/cases/app_tables.py): quiz_responses has nothing due,
three other domains have overdue rows past their SLA. The Dagster instance keeps its runs and event
log in PostgreSQL too (another database on the same server, fsync on), as deploy/dagster.yaml does.

  empty partition run  quiz_responses' retention job (find → archive → delete → audit and its
                       checks) for its latest partition, in process, with Redis locks: one cold run
                       (reported), then several; their median wall time ≤ 2 s. The details also
                       give the median on an in-memory (ephemeral) instance, for Dagster's storage
                       share.
  empty CLI run        `retention run --domain quiz_responses` in a process of its own, as an operator
                       or a cron job calls it, with nothing due: its wall time, median of several
                       (reported: the fixed cost of a CLI run — interpreter, imports, the code
                       location's definitions, the run — that every run through the CLI pays).
  SLA sensor tick      the retention-lag sensor over all four domains evaluated several times; the
                       median tick ≤ 1 s, the slowest in the details. Each tick must request a
                       catch-up run for each overdue domain and none for quiz_responses.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402
import yaml  # noqa: E402

from benchmarks.cases.app_tables import fill_app_tables  # noqa: E402
from benchmarks.harness import SERVER_SETTINGS, Result, engine_logs_discarded, run_alone  # noqa: E402
from retention_pipelines.dagster_wiring.common import domain_partitions, job_name  # noqa: E402
from retention_pipelines.dagster_wiring.domain_factory import build_domain_defs  # noqa: E402
from retention_pipelines.dagster_wiring.resources import RetentionStores  # noqa: E402
from retention_pipelines.dagster_wiring.sla_sensors import build_retention_lag_sensor  # noqa: E402
from retention_pipelines.policies import load_policies  # noqa: E402
from retention_pipelines_tests.support.servers import PostgresServer, RedisServer  # noqa: E402

CASE = "8 Dagster runs and sensors"
ROWS = {"full": 2_000_000, "quick": 200_000, "smoke": 20_000}
RUNS, TICKS = 5, 7  # measured after the cold run / over all ticks
RUN_TARGET_S, TICK_TARGET_S = 2.0, 1.0
EMPTY_DOMAIN = "quiz_responses"
# Only the warnings of the console logger: printing every event would be timed too. The event log
# (the instance's storage) still receives every event.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def postgres_instance(server: PostgresServer, home: str) -> dg.DagsterInstance:
    """A Dagster instance with run and event-log storage in PostgreSQL, as in production."""
    server.create_database("dagster")
    config = {"telemetry": {"enabled": False}, "storage": {"postgres": {"postgres_db": {
        "hostname": "127.0.0.1", "port": server.port, "db_name": "dagster", "username": "postgres",
        "password": "", "scheme": "postgresql+psycopg2"}}}}
    Path(home, "dagster.yaml").write_text(yaml.safe_dump(config))
    return dg.DagsterInstance.from_config(home)


def code_location(stores: RetentionStores) -> tuple[dg.Definitions, dg.SensorDefinition]:
    """Every enabled domain and the lag sensor, wired as retention_pipelines/definitions.py does."""
    policies = load_policies()
    enabled = [policy for policy in policies.domains.values() if policy.enabled]
    domains = [build_domain_defs(policy, policies.policy_version) for policy in enabled]
    jobs = [job for domain in domains for job in domain.jobs if job.name.endswith("_retention_job")]
    sensor = build_retention_lag_sensor(enabled, policies.policy_version, jobs)
    definitions = dg.Definitions.merge(*domains, dg.Definitions(sensors=[sensor],
                                                                resources={"retention_stores": stores}))
    return definitions, sensor


def empty_run(job: dg.JobDefinition, partition: str, instance: dg.DagsterInstance) -> float:
    """One run of the job for a partition with nothing due; its wall time. A run that failed or
    found work would measure something else: it stops the case."""
    started = time.perf_counter()
    result = job.execute_in_process(partition_key=partition, instance=instance, run_config=QUIET,
                                    raise_on_error=False)
    seconds = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"the {job.name} run for {partition} failed")
    found = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    rows = found["expired_records"]["rows_found"].value
    checks = [e.passed for e in result.get_asset_check_evaluations()]
    if rows != 0 or not checks or not all(checks):
        raise RuntimeError(f"the {partition} partition was not empty ({rows} rows due) or a check failed")
    return seconds


def sensor_tick(sensor: dg.SensorDefinition, definitions: dg.Definitions, stores: RetentionStores,
                instance: dg.DagsterInstance, overdue: set[str]) -> float:
    """One evaluation of the sensor; its wall time. It must ask a catch-up run of each overdue
    domain and of no other."""
    with dg.build_sensor_context(instance=instance, resources={"retention_stores": stores},
                                 definitions=definitions) as context:
        started = time.perf_counter()
        requests = list(sensor.evaluate_tick(context).run_requests)
        seconds = time.perf_counter() - started
    asked = {request.job_name for request in requests}
    if asked != {job_name(domain) for domain in overdue}:
        raise RuntimeError(f"the tick requested {sorted(asked)}, not one run of each of {sorted(overdue)}")
    return seconds


def cli_runs(database_url: str, redis_url: str, home: str, count: int) -> list[float]:
    """`retention run` of the empty domain in its own process, `count` times after one warm-up;
    each one's wall time. A run that fails stops the case."""
    dagster_home = Path(home, "cli_dagster_home")
    dagster_home.mkdir(exist_ok=True)
    (dagster_home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "RETENTION_DATABASE_URL": database_url,
           "RETENTION_REDIS_URL": redis_url, "RETENTION_ARCHIVE_URL": Path(home, "archive").as_uri(),
           "RETENTION_BLOB_URL": Path(home, "blobs").as_uri(), "RETENTION_HOME": home, "PYTHONPATH": str(ROOT),
           "RETENTION_ENV": "demo"}  # the demo's keys, made in RETENTION_HOME; every store as given
    script = Path(sys.executable).with_name("retention")
    times = []
    for _ in range(count + 1):
        started = time.perf_counter()
        done = subprocess.run([str(script), "run", "--domain", EMPTY_DOMAIN], env=env, capture_output=True, text=True,
                              timeout=300)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise RuntimeError(f"retention run exited {done.returncode}: {done.stderr[-2000:]}")
    return times[1:]


def time_runs_and_ticks(postgres: PostgresServer, stores: RetentionStores, home: str, overdue: set[str]) -> dict:
    """The cold run, the warm runs and the ticks on a PostgreSQL instance; warm runs in memory."""
    definitions, sensor = code_location(stores)
    job = definitions.resolve_job_def(job_name(EMPTY_DOMAIN))
    partition = domain_partitions(load_policies().domains[EMPTY_DOMAIN]).get_last_partition_key()
    instance = postgres_instance(postgres, home)
    try:
        cold = empty_run(job, partition, instance)
        warm = [empty_run(job, partition, instance) for _ in range(RUNS)]
        ticks = [sensor_tick(sensor, definitions, stores, instance, overdue) for _ in range(TICKS)]
    finally:
        instance.dispose()
    with dg.DagsterInstance.ephemeral() as in_memory:
        empty_run(job, partition, in_memory)  # its own warm-up
        in_memory_runs = [empty_run(job, partition, in_memory) for _ in range(RUNS)]
    return {"partition": partition, "cold": cold, "warm": warm, "ticks": ticks, "in_memory": in_memory_runs}


def measure(rows: int) -> list[Result]:
    postgres = PostgresServer(SERVER_SETTINGS).start()
    redis = None
    try:
        redis = RedisServer().start()
        postgres.create_app_database("bench_app")
        shape = fill_app_tables(postgres.dsn("bench_app"), rows)
        with tempfile.TemporaryDirectory(prefix="bench-dagster-") as home, engine_logs_discarded(), \
                mock.patch.dict(os.environ, {"RETENTION_HOME": home}):  # keys made here, not in the repository
            stores = RetentionStores(database_url=postgres.url("bench_app"), redis_url=redis.url,
                                     archive_url=Path(home, "archive").as_uri(), blob_url=Path(home, "blobs").as_uri())
            timed = time_runs_and_ticks(postgres, stores, home, set(shape["overdue_tables"]))
            timed["cli"] = cli_runs(postgres.url("bench_app"), redis.url, home, RUNS)
    finally:
        if redis is not None:
            redis.stop()
        postgres.stop()

    cold, warm, ticks = timed["cold"], timed["warm"], timed["ticks"]
    run_details = {**shape, "domain": EMPTY_DOMAIN, "partition": timed["partition"],
                   "instance": "PostgreSQL storage, fsync on", "cold_run_s": round(cold, 3),
                   "runs_s": [round(s, 3) for s in warm], "max_run_s": round(max(warm), 3),
                   "ephemeral_instance_median_s": round(statistics.median(timed["in_memory"]), 3)}
    tick_details = {**shape, "ticks_s": [round(s, 3) for s in ticks], "max_tick_s": round(max(ticks), 3),
                    "first_tick_s": round(ticks[0], 3)}
    return [
        Result(CASE, f"empty partition run of {EMPTY_DOMAIN}, first (cold) run", cold, "≤", RUN_TARGET_S, "s",
               details={"cold_run_s": round(cold, 3)}, reported_only=True),
        Result(CASE, f"empty partition run of {EMPTY_DOMAIN}, median of {RUNS} after the cold one",
               statistics.median(warm), "≤", RUN_TARGET_S, "s", details=run_details),
        Result(CASE, f"empty `retention run --domain {EMPTY_DOMAIN}` (its own process), median of {RUNS}",
               statistics.median(timed["cli"]), "≤", RUN_TARGET_S + 3, "s",
               details={"cli_runs_s": [round(s, 3) for s in timed["cli"]]}, reported_only=True),
        Result(CASE, f"SLA sensor tick, 4 domains × {rows:,} rows, median of {TICKS}",
               statistics.median(ticks), "≤", TICK_TARGET_S, "s", details=tick_details),
    ]


def run(size: str) -> list[Result]:
    """The case at one of the harness's sizes: full (the issue's 2,000,000 rows a table), quick, smoke."""
    return measure(ROWS[size])


if __name__ == "__main__":
    run_alone(__doc__.splitlines()[0], run, ROWS)
