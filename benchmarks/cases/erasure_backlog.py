"""Case 12: a backlog of requests for erasure drains through the daemon, and the erasure sensor's tick.

    python benchmarks/run_all.py --only erasure_backlog [--size full|quick|smoke]

The production instance as shipped (deploy/dagster.yaml: PostgreSQL storage, the queued run
coordinator, the `app_database` pool of one slot, run monitoring), without its S3 compute logs; the
app database on the same PostgreSQL server (fsync on), Redis for the domains' locks, local archive
and blob folders. `dagster-daemon run` on the repository's workspace.yaml launches and runs
everything; every sensor and schedule but the erasure sensor is stopped, so that nothing else
takes the cores or a domain's lock. Each subject has a row in each of the four tables.

  12 baseline         one run of gdpr_erasure_job per request, queued all at once (what the
  (reported)          erasure sensor launched before it batched), drained by the daemon: requests
                      per second from the first run's start to the last request completed
  12 backlog drain    the backlog's requests open, the daemon started: the erasure sensor
                      launches gdpr_erasure_batch_job runs of RETENTION_ERASURE_BATCH_SIZE (as
                      shipped) until every request is done; seconds from the daemon's start
                      (target: 5 minutes for 1,000, the same rate for a smaller backlog)
  12 backlog rate     the drain's requests per second (first run's start to the last request
                      completed) ÷ the baseline's; target ≥ 10×
  12 sensor tick      the erasure sensor's evaluation with the backlog open (before the drain),
                      median of several; target ≤ 1 s
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dagster as dg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import yaml  # noqa: E402

from benchmarks.cases.app_tables import fill_app_tables  # noqa: E402
from benchmarks.cases.erasure import address, insert_subjects  # noqa: E402
from benchmarks.harness import SERVER_SETTINGS, Result, engine_logs_discarded, run_alone  # noqa: E402
from retention_pipelines import schema  # noqa: E402
from retention_pipelines.stores import AppDatabase  # noqa: E402
from retention_pipelines_tests.support.dagster_deployment import PRODUCTION_DAGSTER_YAML, WORKSPACE, Daemon  # noqa: E402
from retention_pipelines_tests.support.servers import PostgresServer, RedisServer  # noqa: E402

CASE = "12 erasure backlog"
ROWS = {"full": 200_000, "quick": 20_000, "smoke": 2_000}  # rows a table beside the subjects'
BACKLOG = {"full": 1_000, "quick": 300, "smoke": 6}
BASELINE = {"full": 30, "quick": 10, "smoke": 2}  # requests drained one run each
TICKS = 7
SENSOR = "erasure_request_sensor"
DRAIN_TARGET_S_PER_1000 = 300.0
RATE_TARGET, TICK_TARGET_S = 10.0, 1.0
DRAIN_TIMEOUT_S = 3_600


def instance_home(folder: Path) -> Path:
    """DAGSTER_HOME with deploy/dagster.yaml as shipped, but the runs' stdout and stderr kept on the
    local disk (no S3 here)."""
    config = yaml.safe_load(PRODUCTION_DAGSTER_YAML.read_text())
    config.pop("compute_logs", None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
    return folder


def environment(postgres: PostgresServer, redis: RedisServer, home: Path, folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETENTION_", "DAGSTER_"))}
    env.update({
        "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres.port),
        "DAGSTER_PG_DB": "dagster", "DAGSTER_PG_USERNAME": "postgres", "DAGSTER_PG_PASSWORD": "trusted-on-loopback",
        "RETENTION_ENV": "production", "RETENTION_HOME": str(folder / "retention_home"),
        "RETENTION_DATABASE_URL": postgres.url("bench_app"), "RETENTION_REDIS_URL": redis.url,
        "RETENTION_ARCHIVE_URL": (folder / "archive").as_uri(), "RETENTION_BLOB_URL": (folder / "blobs").as_uri(),
        "RETENTION_ARCHIVE_MASTER_KEY": "5a" * 32, "RETENTION_ERASURE_HASH_KEY": "hash-key-of-the-benchmark",
        "RETENTION_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
    })
    return env


@contextlib.contextmanager
def workspace_of(instance: dg.DagsterInstance):
    """The code location as the daemon loads it (workspace.yaml, a code server of its own)."""
    from dagster._cli.workspace.cli_target import (
        WorkspaceOpts,
        get_code_location_from_workspace,
        get_remote_repository_from_code_location,
        get_workspace_from_cli_opts,
    )

    with contextlib.chdir(ROOT), get_workspace_from_cli_opts(
            instance, version=dg.__version__, workspace_opts=WorkspaceOpts(workspace=[str(WORKSPACE)])) as workspace:
        location = get_code_location_from_workspace(workspace, "retention_pipelines")
        yield workspace, location, get_remote_repository_from_code_location(location, None)


def only_the_erasure_sensor(instance: dg.DagsterInstance, repository, running: bool) -> None:
    """Every schedule and sensor stopped; the erasure sensor running or not."""
    for schedule in repository.get_schedules():
        instance.stop_schedule(schedule.get_remote_origin_id(), schedule.selector_id, schedule)
    for sensor in repository.get_sensors():
        if sensor.name == SENSOR and running:
            instance.start_sensor(sensor)
        else:
            instance.stop_sensor(sensor.get_remote_origin_id(), sensor.selector_id, sensor)


def queue_one_run_per_request(instance: dg.DagsterInstance, request_ids: list[int]) -> None:
    """Each request's run of gdpr_erasure_job submitted to the run queue, as the sensor did before it
    batched them, and as the launchpad does (its partition's tag)."""
    from dagster._cli.job import _create_run
    from dagster._cli.workspace.cli_target import get_remote_job_from_remote_repo

    from retention_pipelines.dagster_wiring.erasure_run import ERASURE_JOB, ERASURE_PARTITIONS

    instance.add_dynamic_partitions(ERASURE_PARTITIONS.name, [str(i) for i in request_ids])
    with workspace_of(instance) as (workspace, location, repository):
        only_the_erasure_sensor(instance, repository, running=False)
        job = get_remote_job_from_remote_repo(repository, ERASURE_JOB)
        for request_id in request_ids:
            run = _create_run(instance=instance, code_location=location, remote_repo=repository, remote_job=job,
                              run_config={}, tags={"dagster/partition": str(request_id),
                                                   "retention/erasure_request": str(request_id)},
                              op_selection=None, run_id=None)
            instance.submit_run(run.run_id, workspace)


def open_requests(database: AppDatabase, count: int, first: int) -> list[int]:
    from retention_pipelines.engine.gdpr.requests import ErasureRequests

    insert_subjects(database, count, first)
    requests = ErasureRequests(database, b"hash-key-of-the-benchmark")
    return [requests.request(address(index)).id for index in range(first, first + count)]


def still_open(database: AppDatabase, request_ids: list[int]) -> int:
    with database.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(schema.erasure_requests).where(
            schema.erasure_requests.c.id.in_(request_ids),
            schema.erasure_requests.c.status == "received")).scalar_one()


def drain(env: dict, folder: Path, name: str, database: AppDatabase, request_ids: list[int],
          instance: dg.DagsterInstance, jobs: tuple[str, ...]) -> dict:
    """The daemon started; seconds until every request is done (from the daemon's start, and from
    the first run's start), and the runs it took. A run that fails stops the case."""
    daemon = Daemon(env, folder / f"daemon-{name}.log")
    started = time.monotonic()
    daemon.start()
    try:
        while still_open(database, request_ids):
            if not daemon.alive():
                raise RuntimeError(f"dagster-daemon exited:\n{daemon.tail()}")
            if time.monotonic() - started > DRAIN_TIMEOUT_S:
                raise RuntimeError(f"{still_open(database, request_ids)} requests still open after "
                                   f"{DRAIN_TIMEOUT_S} s\n{daemon.tail()}")
            time.sleep(0.5)
        done = time.monotonic()
        wall_done = time.time()
        records = []
        while time.monotonic() - done < 300:  # the last run records its end a moment after its requests
            records = [r for job in jobs for r in instance.get_run_records(dg.RunsFilter(job_name=job))]
            if records and all(r.dagster_run.is_finished for r in records):
                break
            time.sleep(1)
    finally:
        daemon.stop()
    failed = [r.dagster_run.run_id for r in records if not r.dagster_run.is_success]
    if failed:
        raise RuntimeError(f"{len(failed)} {name} runs failed, e.g. {failed[0]}")
    first_start = min(r.start_time for r in records if r.start_time)
    return {"requests": len(request_ids), "runs": len(records),
            "seconds_from_daemon_start": done - started,
            "seconds_from_first_run_start": wall_done - first_start}


def sensor_ticks(env: dict, instance: dg.DagsterInstance, backlog: int) -> list[float]:
    """The erasure sensor evaluated in process, as the daemon's tick does, with the backlog open."""
    from retention_pipelines.dagster_wiring.erasure_run import ERASURE_BATCH_OP, build_erasure_run_defs
    from retention_pipelines.dagster_wiring.resources import RetentionStores
    from retention_pipelines.policies import load_policies
    from retention_pipelines.stores import load_settings

    policies = load_policies()
    [sensor] = build_erasure_run_defs([p for p in policies.domains.values() if p.enabled],
                                      policies.policy_version).sensors
    stores = RetentionStores()
    wanted = min(backlog, load_settings().erasure_batch_size)
    times = []
    for _ in range(TICKS):
        with dg.build_sensor_context(instance=instance, resources={"retention_stores": stores}) as context:
            started = time.perf_counter()
            result = sensor(context)
            times.append(time.perf_counter() - started)
        [run] = result.run_requests
        asked = len(run.run_config["ops"][ERASURE_BATCH_OP]["config"]["requests"])
        if asked != wanted:
            raise RuntimeError(f"the tick asked for {asked} requests, not {wanted}")
    return times


def measure(rows: int, backlog: int, baseline: int) -> list[Result]:
    from retention_pipelines.dagster_wiring.erasure_run import ERASURE_BATCH_JOB, ERASURE_JOB

    postgres = PostgresServer(SERVER_SETTINGS).start()
    redis = database = None
    try:
        redis = RedisServer().start()
        postgres.create_app_database("bench_app")
        postgres.create_database("dagster")
        print(f"   filling the four tables with {rows:,} rows each", flush=True)
        shape = fill_app_tables(postgres.dsn("bench_app"), rows)
        with tempfile.TemporaryDirectory(prefix="bench-erasure-backlog-") as tmp, engine_logs_discarded():
            folder = Path(tmp)
            env = environment(postgres, redis, instance_home(folder / "dagster_home"), folder)
            with mock.patch.dict(os.environ, env, clear=True):
                database = AppDatabase(env["RETENTION_DATABASE_URL"])
                with dg.DagsterInstance.get() as instance:
                    print(f"   baseline: {baseline} requests, one queued run each", flush=True)
                    one_each = open_requests(database, baseline, 0)
                    queue_one_run_per_request(instance, one_each)
                    single = drain(env, folder, "baseline", database, one_each, instance, (ERASURE_JOB,))
                    print(f"   {baseline} requests drained in {single['seconds_from_first_run_start']:.0f} s "
                          f"from the first run's start", flush=True)

                    print(f"   backlog: {backlog} requests, the erasure sensor's batches", flush=True)
                    batched = open_requests(database, backlog, baseline)
                    ticks = sensor_ticks(env, instance, backlog)
                    with workspace_of(instance) as (_, _, repository):
                        only_the_erasure_sensor(instance, repository, running=True)
                    drained = drain(env, folder, "backlog", database, batched, instance, (ERASURE_BATCH_JOB,))
                    print(f"   {backlog} requests drained in {drained['seconds_from_daemon_start']:.0f} s from the "
                          f"daemon's start, {drained['runs']} runs", flush=True)
    finally:
        if database is not None:
            database.dispose()
        if redis is not None:
            redis.stop()
        postgres.stop()

    single_rate = single["requests"] / single["seconds_from_first_run_start"]
    batch_rate = drained["requests"] / drained["seconds_from_first_run_start"]
    drain_target = DRAIN_TARGET_S_PER_1000 * backlog / 1000
    details = {**shape, "baseline": {k: round(v, 2) if isinstance(v, float) else v for k, v in single.items()},
               "backlog": {k: round(v, 2) if isinstance(v, float) else v for k, v in drained.items()},
               "baseline_requests_per_s": round(single_rate, 3), "backlog_requests_per_s": round(batch_rate, 3),
               "baseline_extrapolated_to_backlog_s": round(backlog / single_rate, 1)}
    return [
        Result(CASE, f"baseline: {baseline} requests, one queued run each, requests/s", single_rate, "≥", 0,
               "/s", details=details, reported_only=True),
        Result(CASE, f"{backlog:,} requests drained by the daemon (sensor's batches), s from its start",
               drained["seconds_from_daemon_start"], "≤", drain_target, "s", details=details),
        Result(CASE, "requests/s drained in batches ÷ one run per request", batch_rate / single_rate, "≥",
               RATE_TARGET, details=details),
        Result(CASE, f"erasure sensor tick, {backlog:,} open requests, median of {TICKS}", statistics.median(ticks),
               "≤", TICK_TARGET_S, "s", details={"ticks_s": [round(t, 3) for t in ticks]}),
    ]


def run(size: str) -> list[Result]:
    """The case at one of the harness's sizes: full (1,000 requests), quick (300), smoke (seconds, no figure meant)."""
    return measure(ROWS[size], BACKLOG[size], BASELINE[size])


if __name__ == "__main__":
    run_alone(__doc__.splitlines()[0], run, ROWS)
