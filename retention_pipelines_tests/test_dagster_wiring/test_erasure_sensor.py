"""erasure_request_sensor on a real Dagster instance whose runs are real: each run the sensor asks
for is executed in process on that instance (tags and partition as requested) and fails for a real
reason — the S3 server (moto) refuses to delete the subject's PDF (a bucket policy), so the request
cannot be completed. The sensor relaunches a failed request as `erasure-<id>-2`, then `-3`; asks
for nothing while a run is in flight, after a run succeeded, or after MAX_ATTEMPTS failed runs;
and a dry run (a run of the dry-run job), finished or in flight, counts for nothing."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import boto3
import dagster as dg
import pytest
import sqlalchemy as sa

from retention_pipelines.dagster_wiring.erasure_run import (
    ERASURE_DRY_RUN_JOB,
    ERASURE_JOB,
    MAX_ATTEMPTS,
    build_erasure_run_defs,
)
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.gdpr.requests import ErasureRequests
from retention_pipelines.stores import domain_locks
from retention_pipelines_tests.support.app_rows import _insert
from retention_pipelines_tests.support.queue_rows import allow_deletes, deny_deletes

ANN, BOB = "Ann.Subject@Example.org", "bob.other@example.net"


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance


class Sensing:
    """The sensor, the job it launches (and the dry-run job) and the instance, with the runs the
    sensor asks for executed."""

    def __init__(self, database, stores: RetentionStores, instance, policies):
        self.database, self.stores, self.instance = database, stores, instance
        defs = build_erasure_run_defs([p for p in policies.domains.values() if p.enabled], policies.policy_version)
        [self.sensor] = defs.sensors
        resolved = dg.Definitions(assets=defs.assets, jobs=defs.jobs, resources={"retention_stores": stores})
        self.job, self.dry_job = resolved.resolve_job_def(ERASURE_JOB), resolved.resolve_job_def(ERASURE_DRY_RUN_JOB)
        self.requests = ErasureRequests(database, stores.settings().resolved_erasure_hash_key())

    def tick(self) -> list[dg.RunRequest]:
        """One evaluation, as the daemon does it: its new partitions added, its run requests returned."""
        with dg.build_sensor_context(instance=self.instance, resources={"retention_stores": self.stores}) as context:
            result = self.sensor(context)
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        assert "@" not in repr(result)
        return list(result.run_requests or [])

    def launch(self, run_request: dg.RunRequest, **extra_tags) -> dg.ExecuteInProcessResult:
        """The requested run, executed in process on the instance with the tags the sensor gave it."""
        return self.job.execute_in_process(instance=self.instance, partition_key=run_request.partition_key,
                                           tags={**run_request.tags, **extra_tags}, raise_on_error=False)

    def dry_run(self, run_request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """The dry-run job for the requested run's partition, on the instance."""
        return self.dry_job.execute_in_process(instance=self.instance, partition_key=run_request.partition_key,
                                               raise_on_error=False)

    def run_keys(self) -> list[str]:
        return [r.run_key for r in self.tick()]


def put_pdf(bucket: str, key: str) -> None:
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"%PDF-1.7 " + key.encode())


def buy_meal_plan(database, bucket: str, email: str, key: str) -> str:
    put_pdf(bucket, key)
    [plan] = _insert(database, "meal_plans", [{
        "payment_id": f"pay_{uuid.uuid4().hex[:12]}", "email": email, "pdf_blob_key": key,
        "created_at": database.bind_time(database.now() - timedelta(days=3))}])
    return plan


@pytest.fixture
def sensing(pg_database, pg_url, redis_url, tmp_path, hot_bucket, instance, policies) -> Sensing:
    stores = RetentionStores(database_url=pg_url, archive_url=(tmp_path / "archive").as_uri(), redis_url=redis_url,
                             blob_url=f"s3://{hot_bucket}")
    buy_meal_plan(pg_database, hot_bucket, ANN, "plans/ann.pdf")
    deny_deletes(hot_bucket, ["plans/ann.pdf"])  # the fault every run of Ann's request fails on
    return Sensing(pg_database, stores, instance, policies)


def failure_of(result) -> str:
    return " ".join(e.step_failure_data.user_failure_data.description for e in result.all_events
                    if e.event_type_value == "STEP_FAILURE" and e.step_failure_data.user_failure_data)


def test_a_failed_request_is_relaunched_until_max_attempts_and_dry_runs_do_not_count(sensing):
    request = sensing.requests.request(ANN)
    key = str(request.id)

    [first] = sensing.tick()
    assert (first.partition_key, first.run_key, first.tags["retention/erasure_request"]) == (
        key, f"erasure-{key}-1", key)
    # A successful dry run is no erasure: the request still needs its first real run.
    dry = sensing.dry_run(first)
    assert dry.success
    assert sensing.run_keys() == [f"erasure-{key}-1"]

    failed = sensing.launch(first)
    assert not failed.success
    assert f"erasure request {key}: 1 records wait in the manual queue" in failure_of(failed)
    assert sensing.requests.get(request.id).status == "received"

    [second] = sensing.tick()
    assert second.run_key == f"erasure-{key}-2" and second.partition_key == key
    assert not sensing.launch(second).success
    assert sensing.run_keys() == [f"erasure-{key}-3"]
    assert not sensing.launch(sensing.tick()[0]).success

    # MAX_ATTEMPTS real runs failed: no fourth (the request's deadline breach calls a person) ...
    assert MAX_ATTEMPTS == 3
    assert sensing.tick() == []
    # ... and a dry run launched since changes nothing about that.
    assert sensing.dry_run(first).success
    assert sensing.tick() == []
    runs = sensing.instance.get_runs(dg.RunsFilter(tags={"dagster/partition": key}))
    assert sorted((r.job_name, r.status.value) for r in runs) == [
        (ERASURE_DRY_RUN_JOB, "SUCCESS")] * 2 + [(ERASURE_JOB, "FAILURE")] * 3


def test_a_dry_run_in_flight_does_not_hold_the_requests_run_back(sensing, pg_database):
    """The dry run in flight is real: it waits to read quiz_responses, which another transaction
    has locked, while the sensor ticks; then it goes on and succeeds."""
    request = sensing.requests.request(ANN)
    [first] = sensing.tick()
    results = []
    with pg_database.engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(sa.text("LOCK TABLE quiz_responses IN ACCESS EXCLUSIVE MODE"))
        running = threading.Thread(target=lambda: results.append(sensing.dry_run(first)))
        running.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not in_flight(sensing.instance, ERASURE_DRY_RUN_JOB):
                time.sleep(0.05)
            assert in_flight(sensing.instance, ERASURE_DRY_RUN_JOB), "the dry run never started"
            time.sleep(0.5)
            assert not results  # still waiting for the table
            assert sensing.run_keys() == [f"erasure-{request.id}-1"]
        finally:
            transaction.rollback()
            running.join(120)
    [dry] = results
    assert dry.success
    assert sensing.run_keys() == [f"erasure-{request.id}-1"]
    assert sensing.requests.get(request.id).status == "received"


def test_nothing_is_launched_while_a_run_is_in_flight_nor_after_one_succeeded(sensing, redis_url, tmp_path,
                                                                              monkeypatch, hot_bucket):
    """The run in flight is real: it waits in its quiz_responses step for the domain's lock, held by
    another run, while the sensor ticks; then it goes on and succeeds."""
    allow_deletes(hot_bucket)
    request = sensing.requests.request(ANN)
    monkeypatch.setenv("RETENTION_ERASURE_LOCK_WAIT_SECONDS", "120")
    other = domain_locks(redis_url, tmp_path / "locks", 30).acquire("quiz_responses")
    [run_request] = sensing.tick()
    results = []
    running = threading.Thread(target=lambda: results.append(sensing.launch(run_request)))
    running.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not in_flight(sensing.instance):
            time.sleep(0.05)
        assert in_flight(sensing.instance), "the run never started"
        assert sensing.tick() == []  # in flight: no second run
        time.sleep(0.5)
        assert sensing.tick() == [] and not results
    finally:
        other.release()
        running.join(120)
    [result] = results
    assert result.success
    assert sensing.requests.get(request.id).status == "completed"
    assert sensing.tick() == []  # succeeded: nothing more to do


def test_each_request_is_counted_on_its_own(sensing, pg_database, hot_bucket):
    """Ann's runs fail; Bob's succeeds: Bob's success does not stop Ann's relaunch, nor her failures his run."""
    ann = sensing.requests.request(ANN)
    buy_meal_plan(pg_database, hot_bucket, BOB, "plans/bob.pdf")
    bob = sensing.requests.request(BOB)
    requested = {r.partition_key: r for r in sensing.tick()}
    assert {k: r.run_key for k, r in requested.items()} == {str(ann.id): f"erasure-{ann.id}-1",
                                                           str(bob.id): f"erasure-{bob.id}-1"}
    assert not sensing.launch(requested[str(ann.id)]).success
    assert sensing.launch(requested[str(bob.id)]).success
    assert sensing.run_keys() == [f"erasure-{ann.id}-2"]
    assert sensing.requests.get(bob.id).status == "completed"


def in_flight(instance, job: str = ERASURE_JOB) -> bool:
    runs = instance.get_runs(dg.RunsFilter(job_name=job))
    return any(r.status == dg.DagsterRunStatus.STARTED for r in runs)
