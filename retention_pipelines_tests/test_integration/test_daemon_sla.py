"""The SLA loop end to end, with the real Dagster daemon on a PostgreSQL instance.

With every schedule stopped and data aged past its SLA in every enabled domain of the shipped
policy file, `retention_lag_sensor` opens one `retention_lag` breach per domain and launches one
catch-up run per domain; the runs clear the overdue data (audited, archived where the policy
asks, PDFs out of hot storage), and the sensor then closes each breach: no second run, no
second breach.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import boto3
import dagster as dg

from retention_pipelines.dagster_wiring.common import DOMAIN_TAG, job_name
from retention_pipelines.dagster_wiring.sla_sensors import CATCH_UP_TAG
from retention_pipelines.engine.oversight.sla import RETENTION_LAG, Breaches
from retention_pipelines.policies import DomainPolicy, load_policies
from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.app_rows import (
    audit_entries,
    insert_blacklist_at,
    insert_meal_plans_at,
    insert_quiz_at,
    insert_token_expiring_at,
    meal_plan_rows,
    remaining_ids,
)
from retention_pipelines_tests.support.dagster_deployment import (
    BLOB_PREFIX,
    SENSOR_INTERVAL_SECONDS,
    Daemon,
    dagster,
    instigator_states,
)

SENSOR = "retention_lag_sensor"
WAIT_SECONDS = 300
SETTLE_SECONDS = 60
PDF = b"%PDF-1.4\n% a meal plan\n%%EOF\n"
INSERTERS = {
    "quiz_responses": insert_quiz_at,
    "magic_link_tokens": insert_token_expiring_at,
    "email_blacklist": insert_blacklist_at,
}
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def deadlines(now: datetime, policy: DomainPolicy) -> tuple[list[datetime], list[datetime]]:
    """Deadlines (clock + retain_for) of rows past due — well past the SLA's allowed lag, one from
    weeks before, one only just due — and of rows not due until after the test has ended."""
    lag = policy.sla.max_lag
    due = [now - 3 * lag - timedelta(minutes=1), now - 3 * lag - timedelta(days=40), now - lag / 2]
    not_due = [now + timedelta(hours=2), now + timedelta(days=5)]
    return due, not_due


def seed_domain(database: AppDatabase, policy: DomainPolicy, hot_bucket: str) -> dict:
    """Rows of the domain's table, their clock column set from the policy's own retain_for."""
    due, not_due = deadlines(database.now(), policy)
    due_clocks = [deadline - policy.retain_for for deadline in due]
    not_due_clocks = [deadline - policy.retain_for for deadline in not_due]
    if policy.name in INSERTERS:
        insert = INSERTERS[policy.name]
        return {"due": set(insert(database, due_clocks)), "not_due": set(insert(database, not_due_clocks)),
                "due_keys": set(), "not_due_keys": set()}
    if policy.name == "meal_plans":
        s3 = boto3.client("s3")
        keys = {"due": [f"plans/due-{uuid.uuid4().hex}.pdf" for _ in due_clocks],
                "not_due": [f"plans/young-{uuid.uuid4().hex}.pdf" for _ in not_due_clocks]}
        for key in keys["due"] + keys["not_due"]:
            s3.put_object(Bucket=hot_bucket, Key=f"{BLOB_PREFIX}/{key}", Body=PDF + key.encode())
        return {"due": set(insert_meal_plans_at(database, due_clocks, keys["due"])),
                "not_due": set(insert_meal_plans_at(database, not_due_clocks, keys["not_due"])),
                "due_keys": set(keys["due"]), "not_due_keys": set(keys["not_due"])}
    raise AssertionError(f"enabled domain {policy.name!r} has no seeding here: add its table's rows to this test")


def hot_keys(bucket: str) -> set[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"{BLOB_PREFIX}/").get("Contents", [])
    return {o["Key"].removeprefix(f"{BLOB_PREFIX}/") for o in listed}


def catch_up_runs(instance: dg.DagsterInstance, domain: str) -> list[dg.DagsterRun]:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={DOMAIN_TAG: domain}))
    return [run for run in runs if CATCH_UP_TAG in run.tags]


def failure_messages(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.all_logs(run_id)
    return "\n".join(f"{r.dagster_event.event_type_value}: {r.message}" for r in records
                     if r.dagster_event and r.dagster_event.is_failure) or "(no failure events)"


def stop_schedules_keep_sensor(env: dict[str, str]) -> None:
    """Every schedule stopped (they default to RUNNING; this Dagster has no `schedule stop --all`),
    the lag sensor running, the all-domains sensor left stopped: only the lag sensor launches runs."""
    running = [name for name, state in instigator_states(env, "schedule").items() if state != "STOPPED"]
    with ThreadPoolExecutor(max_workers=4) as pool:  # each call loads the code location: side by side
        list(pool.map(lambda name: dagster(env, "schedule", "stop", name), running))
    schedules = instigator_states(env, "schedule")
    assert set(schedules.values()) == {"STOPPED"}, schedules
    sensors = instigator_states(env, "sensor")
    if sensors.get(SENSOR) != "RUNNING":
        dagster(env, "sensor", "start", SENSOR)
        sensors = instigator_states(env, "sensor")
    assert sensors.get(SENSOR) == "RUNNING", sensors
    assert sensors.get("retention_all_domains_sensor") == "STOPPED", sensors


def test_lag_sensor_opens_one_breach_per_domain_and_its_catch_up_run_closes_it(deployment, tmp_path):
    env, database, hot_bucket = deployment["env"], deployment["database"], deployment["hot_bucket"]
    policies = load_policies()
    enabled = {name: policy for name, policy in policies.domains.items() if policy.enabled}
    assert enabled, "the shipped policy file enables no domain"
    seeded = {name: seed_domain(database, policy, hot_bucket) for name, policy in enabled.items()}

    stop_schedules_keep_sensor(env)
    daemon = Daemon(env, tmp_path / "daemon.log")
    with dg.DagsterInstance.from_config(str(deployment["home"])) as instance:
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.get_runs() == [], "runs before the daemon started"
        try:
            daemon.start()
            runs = wait_for_catch_up(instance, database, enabled, daemon)

            # A few more sensor ticks with the lag back under every SLA (and time for the run-status
            # sensors to see the runs end): nothing new may be launched meanwhile.
            settle(database, daemon)
            all_runs = instance.get_runs()
            assert sorted(r.run_id for r in all_runs) == sorted(r.run_id for r in runs.values()), (
                "runs other than one catch-up run per domain (a schedule, a second catch-up): "
                f"{[(r.job_name, r.status, dict(r.tags)) for r in all_runs]}")
            for name in enabled:
                assert len(catch_up_runs(instance, name)) == 1, f"{name}: more than one catch-up run"

            for name, run in runs.items():
                assert run.job_name == job_name(name) and run.tags[DOMAIN_TAG] == name
                assert run.tags.get("dagster/sensor_name") == SENSOR, dict(run.tags)
                assert run.status == dg.DagsterRunStatus.SUCCESS
                # Launched through the queue, where dagster.yaml's one-run-per-domain limit applies.
                assert instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED), run.run_id
        finally:
            daemon.stop()
        assert not daemon.alive()

    # Each run's stdout and stderr went to the compute-log bucket, where the webserver reads them.
    logged = {o["Key"] for o in boto3.client("s3").list_objects_v2(
        Bucket=deployment["compute_log_bucket"], Prefix="compute-logs/").get("Contents", [])}
    for name, run in runs.items():
        assert any(run.run_id in key for key in logged), f"{name}: no compute log of run {run.run_id} in {logged}"

    breaches = Breaches(database).all()
    named = {}
    for name, policy in enabled.items():
        rows, run = seeded[name], runs[name]
        assert_rows_cleared(database, policy, rows, hot_bucket)
        assert_audited(database, policy, rows, run, deployment["archive_bucket"])
        mine = [b for b in breaches if b["domain"] == name]
        assert len(mine) == 1, f"{name}: expected one breach, found {mine}"
        [breach] = mine
        assert breach["kind"] == RETENTION_LAG
        assert breach["closed_at"] is not None and breach["duration_seconds"] >= 0, breach
        assert str(breach["id"]) == run.tags[CATCH_UP_TAG], (breach, dict(run.tags))
        assert breach["threshold"] == policy.sla.max_lag.total_seconds()
        assert breach["observed"] > policy.sla.max_lag.total_seconds(), breach
        named[name] = (breach["run_id"], run.run_id)
    # Last, so that a failure here means everything above held: the breach book names the run
    # that cleared each breach, however quickly that run finished.
    assert all(on_breach == catch_up for on_breach, catch_up in named.values()), (
        f"breaches not naming their catch-up run ({{domain: (breach run_id, catch-up run)}}): {named}")


def wait_for_catch_up(instance: dg.DagsterInstance, database: AppDatabase, enabled: dict[str, DomainPolicy],
                      daemon: Daemon) -> dict[str, dg.DagsterRun]:
    """Until every domain has a successful catch-up run and no open breach; fails at once on a
    failed run or a dead daemon, and after WAIT_SECONDS with where each domain got to."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        assert daemon.alive(), f"dagster-daemon exited ({daemon.process.returncode}):\n{daemon.tail()}"
        progress, done = {}, {}
        breaches = Breaches(database).all()
        for name in enabled:
            runs = catch_up_runs(instance, name)
            for run in runs:
                assert run.status not in FINISHED - {dg.DagsterRunStatus.SUCCESS}, (
                    f"{name}: catch-up run {run.run_id} ended {run.status}:\n"
                    f"{failure_messages(instance, run.run_id)}\n--- daemon log ---\n{daemon.tail()}")
            mine = [b for b in breaches if b["domain"] == name and b["kind"] == RETENTION_LAG]
            progress[name] = {"runs": [r.status.value for r in runs],
                              "breaches": [("open" if b["closed_at"] is None else "closed") for b in mine]}
            succeeded = [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]
            if succeeded and mine and all(b["closed_at"] is not None for b in mine):
                done[name] = succeeded[0]
        if len(done) == len(enabled):
            return done
        if time.monotonic() > deadline:
            raise AssertionError(f"after {WAIT_SECONDS} s not every domain was caught up: {progress}\n"
                                 f"--- daemon log ---\n{daemon.tail()}")
        time.sleep(2)


def settle(database: AppDatabase, daemon: Daemon) -> None:
    """At least three lag-sensor intervals; up to SETTLE_SECONDS for every breach to name a run."""
    started = time.monotonic()
    while True:
        time.sleep(2)
        assert daemon.alive(), f"dagster-daemon exited ({daemon.process.returncode}):\n{daemon.tail()}"
        waited = time.monotonic() - started
        if waited >= 3 * SENSOR_INTERVAL_SECONDS + 2 and (
                waited >= SETTLE_SECONDS or all(b["run_id"] for b in Breaches(database).all())):
            return


def assert_rows_cleared(database: AppDatabase, policy: DomainPolicy, rows: dict, hot_bucket: str) -> None:
    if policy.redact:  # meal_plans: the purchase rows stay, the overdue ones redacted, their PDFs gone
        plans = meal_plan_rows(database)
        assert set(plans) == rows["due"] | rows["not_due"]
        for rid in rows["due"]:
            key, deleted_at = plans[rid]
            assert key is None and deleted_at is not None, f"{policy.name}: {rid} not redacted: {plans[rid]}"
        for rid in rows["not_due"]:
            assert plans[rid][0] in rows["not_due_keys"] and plans[rid][1] is None, plans[rid]
        assert hot_keys(hot_bucket) == rows["not_due_keys"], "hot storage: overdue PDFs left or young ones gone"
    else:
        left = remaining_ids(database, policy.table)
        assert left == rows["not_due"], (f"{policy.name}: overdue left {left & rows['due']}, "
                                         f"not yet due gone {rows['not_due'] - left}")


def assert_audited(database: AppDatabase, policy: DomainPolicy, rows: dict, run: dg.DagsterRun,
                   archive_bucket: str) -> None:
    entries = [e for e in audit_entries(database) if e["domain"] == policy.name]
    assert sorted(e["record_id"] for e in entries) == sorted(rows["due"]), (
        f"{policy.name}: not one audit entry per row acted on: {entries}")
    for entry in entries:
        assert entry["action"] == policy.action_name and entry["run_id"] == run.run_id, entry
        assert entry["deadline"] <= entry["occurred_at"], entry
    if policy.archive.enabled:
        s3 = boto3.client("s3")
        for uri in {e["archive_uri"] for e in entries}:
            assert uri and uri.startswith(f"s3://{archive_bucket}/"), (policy.name, uri)
            s3.head_object(Bucket=archive_bucket, Key=uri.removeprefix(f"s3://{archive_bucket}/"))
