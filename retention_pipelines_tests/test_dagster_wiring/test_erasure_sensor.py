"""erasure_request_sensor on a real Dagster instance whose runs are real: each batch run the sensor
asks for is executed in process on that instance (config and tags as requested) and fails Ann's
request for a real reason — the S3 server (moto) refuses to delete her PDF (a bucket policy), so
her request cannot be completed. The sensor relaunches a failed request as its attempt 2, then 3;
asks for nothing while a run is in flight, after a run succeeded, or after MAX_ATTEMPTS failed runs;
a dry run (a run of the dry-run job), finished or in flight, counts for nothing; and in one batch
Bob's request is completed, audited and recorded in its partition although Ann's fails beside it."""

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
    ERASURE_BATCH_JOB,
    ERASURE_BATCH_OP,
    ERASURE_DRY_RUN_JOB,
    ERASURE_PARTITIONS,
    MAX_ATTEMPTS,
    OUTCOME_KEY,
    SUBJECT_ERASED_CHECK,
    ErasureRoundConfig,
    build_erasure_run_defs,
    domain_key,
)
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.gdpr.requests import ErasureRequests
from retention_pipelines.stores import domain_locks
from retention_pipelines_tests.support import erasure_rows
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
        self.job = resolved.resolve_job_def(ERASURE_BATCH_JOB)
        self.dry_job = resolved.resolve_job_def(ERASURE_DRY_RUN_JOB)
        self.requests = ErasureRequests(database, stores.settings().resolved_erasure_hash_key())

    def tick(self) -> list[dg.RunRequest]:
        """One evaluation, as the daemon does it: its new partitions added, its run requests returned."""
        with dg.build_sensor_context(instance=self.instance, resources={"retention_stores": self.stores}) as context:
            result = self.sensor(context)
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        assert "@" not in repr(result)
        return list(result.run_requests or [])

    def launch(self, run_request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """The requested run, executed in process on the instance with the config and tags the sensor gave it."""
        return self.job.execute_in_process(instance=self.instance, run_config=run_request.run_config,
                                           tags=run_request.tags, raise_on_error=False)

    def dry_run(self, request_id: int) -> dg.ExecuteInProcessResult:
        """The dry-run job for the request's partition, on the instance."""
        return self.dry_job.execute_in_process(instance=self.instance, partition_key=str(request_id),
                                               raise_on_error=False)

    def asked(self) -> list[tuple[int, int]]:
        """What one tick asks for: (request, attempt) of each round in its one batch run."""
        return [(r.request_id, r.attempt) for r in rounds(self.tick())]


def rounds(run_requests: list[dg.RunRequest]):
    """The rounds of the tick's batch run (none without one); a tick asks for one run at most."""
    assert len(run_requests) <= 1
    if not run_requests:
        return []
    listed = run_requests[0].run_config["ops"][ERASURE_BATCH_OP]["config"]["requests"]
    return [ErasureRoundConfig(**item) for item in listed]


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
    assert first.tags["retention/erasure_requests"] == "1"
    assert [(r.request_id, r.recheck, r.attempt) for r in rounds([first])] == [(request.id, "", 1)]
    # A successful dry run is no erasure: the request still needs its first real run.
    dry = sensing.dry_run(request.id)
    assert dry.success
    assert sensing.asked() == [(request.id, 1)]

    failed = sensing.launch(first)
    assert not failed.success
    assert f"{key}: erasure request {key}: 1 records wait in the manual queue" in failure_of(failed)
    assert sensing.requests.get(request.id).status == "received"

    [second] = sensing.tick()
    assert [(r.request_id, r.attempt) for r in rounds([second])] == [(request.id, 2)]
    assert second.run_key != first.run_key
    assert not sensing.launch(second).success
    assert sensing.asked() == [(request.id, 3)]
    assert not sensing.launch(sensing.tick()[0]).success

    # MAX_ATTEMPTS real runs failed: no fourth (the request's deadline breach calls a person) ...
    assert MAX_ATTEMPTS == 3
    assert sensing.tick() == []
    # ... and a dry run launched since changes nothing about that.
    assert sensing.dry_run(request.id).success
    assert sensing.tick() == []
    runs = sensing.instance.get_runs()
    assert sorted((r.job_name, r.status.value) for r in runs) == [
        (ERASURE_BATCH_JOB, "FAILURE")] * 3 + [(ERASURE_DRY_RUN_JOB, "SUCCESS")] * 2


def test_a_dry_run_in_flight_does_not_hold_the_requests_run_back(sensing, pg_database):
    """The dry run in flight is real: it waits to read quiz_responses, which another transaction
    has locked, while the sensor ticks; then it goes on and succeeds."""
    request = sensing.requests.request(ANN)
    assert sensing.asked() == [(request.id, 1)]
    results = []
    with pg_database.engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(sa.text("LOCK TABLE quiz_responses IN ACCESS EXCLUSIVE MODE"))
        running = threading.Thread(target=lambda: results.append(sensing.dry_run(request.id)))
        running.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not in_flight(sensing.instance, ERASURE_DRY_RUN_JOB):
                time.sleep(0.05)
            assert in_flight(sensing.instance, ERASURE_DRY_RUN_JOB), "the dry run never started"
            time.sleep(0.5)
            assert not results  # still waiting for the table
            assert sensing.asked() == [(request.id, 1)]
        finally:
            transaction.rollback()
            running.join(120)
    [dry] = results
    assert dry.success
    assert sensing.asked() == [(request.id, 1)]
    assert sensing.requests.get(request.id).status == "received"


def test_nothing_is_launched_for_a_request_in_flight_nor_after_it_succeeded(sensing, redis_url, tmp_path,
                                                                            monkeypatch, hot_bucket, pg_database):
    """The run in flight is real: it waits in its quiz_responses step for the domain's lock, held by
    another run, while the sensor ticks; then it goes on and succeeds. Bob's request, received
    meanwhile, gets a batch of its own, without Ann's."""
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
        bob = sensing.requests.request(BOB)
        assert sensing.asked() == [(bob.id, 1)]
    finally:
        other.release()
        running.join(120)
    [result] = results
    assert result.success
    assert sensing.requests.get(request.id).status == "completed"
    assert sensing.asked() == [(bob.id, 1)]  # Ann's succeeded: nothing more to do for her


def test_one_failing_request_does_not_fail_the_others_of_its_batch(sensing, pg_database, hot_bucket):
    """Ann's erasure fails in the batch (S3 keeps her PDF); Bob's, beside it, is completed, audited
    and recorded in his partition; the run fails naming Ann's request alone, and the sensor
    relaunches hers, not his."""
    ann = sensing.requests.request(ANN)
    buy_meal_plan(pg_database, hot_bucket, BOB, "plans/bob.pdf")
    bob = sensing.requests.request(BOB)
    [batch] = sensing.tick()
    assert sorted(sensing.instance.get_dynamic_partitions(ERASURE_PARTITIONS.name)) == sorted([str(ann.id),
                                                                                               str(bob.id)])
    assert sorted((r.request_id, r.attempt) for r in rounds([batch])) == sorted([(ann.id, 1), (bob.id, 1)])

    result = sensing.launch(batch)
    assert not result.success
    message = failure_of(result)
    assert f"1 of 2 requests for erasure failed ({ann.id}: erasure request {ann.id}: 1 records wait" in message
    assert "1 done" in message and "@" not in message
    assert sensing.requests.get(bob.id).status == "completed"
    assert sensing.requests.get(ann.id).status == "received"
    erased = {e["record_id"] for e in erasure_rows.audit(pg_database, "erased") if e["detail"] == f"erasure request "
              f"{bob.id}"}
    assert len(erased) == 1  # his meal plan, redacted
    assert any(e["detail"] == f"erasure request {bob.id}" for e in erasure_rows.audit(pg_database, "key_destroyed"))

    # Each request's evidence in its own partition: Bob's domains, outcome and check; Ann's domains
    # (her PDF waiting in the manual queue) and her failed check, no outcome.
    instance = sensing.instance
    assert instance.get_materialized_partitions(OUTCOME_KEY) == {str(bob.id)}
    for domain in erasure_rows.DOMAINS:
        assert instance.get_materialized_partitions(domain_key(domain)) == {str(ann.id), str(bob.id)}
    [ann_plans] = [e for e in result.get_asset_materialization_events()
                   if e.asset_key == domain_key("meal_plans") and e.partition == str(ann.id)]
    assert ann_plans.materialization.metadata["rows_waiting_in_manual_queue"].value == 1
    outcome = instance.get_latest_materialization_event(OUTCOME_KEY).asset_materialization
    assert outcome.partition == str(bob.id) and outcome.metadata["status"].value == "completed"
    checks = {e.partition: e.passed for e in result.get_asset_check_evaluations()
              if e.check_name == SUBJECT_ERASED_CHECK}
    assert checks == {str(ann.id): False, str(bob.id): True}

    assert sensing.asked() == [(ann.id, 2)]


def test_an_error_that_is_no_requests_own_stops_the_batch_and_each_request_is_relaunched(
        sensing, pg_database, hot_bucket, redis_url, tmp_path, monkeypatch):
    """quiz_responses' lock is held by another run past the erasure's wait: the first request fails on
    it and the batch stops there (the next would wait for the same lock), the second not tried; the
    next tick asks for both again, each as its second attempt, and once the lock is free the batch
    completes both."""
    allow_deletes(hot_bucket)
    ann = sensing.requests.request(ANN)
    buy_meal_plan(pg_database, hot_bucket, BOB, "plans/bob.pdf")
    bob = sensing.requests.request(BOB)
    monkeypatch.setenv("RETENTION_ERASURE_LOCK_WAIT_SECONDS", "0")
    [batch] = sensing.tick()
    first, second = (r.request_id for r in rounds([batch]))
    other = domain_locks(redis_url, tmp_path / "locks", 30).acquire("quiz_responses")
    try:
        result = sensing.launch(batch)
    finally:
        other.release()
    assert not result.success
    message = failure_of(result)
    assert f"1 of 2 requests for erasure failed ({first}: " in message and "quiz_responses" in message
    assert "the batch stopped there, 1 requests not tried" in message and "0 done" in message
    assert {e.partition: e.passed for e in result.get_asset_check_evaluations()} == {str(first): False}
    assert sorted(sensing.asked()) == sorted([(ann.id, 2), (bob.id, 2)])
    assert sensing.launch(sensing.tick()[0]).success
    assert {sensing.requests.get(r).status for r in (first, second)} == {"completed"}
    assert sensing.tick() == []


def in_flight(instance, job: str = ERASURE_BATCH_JOB) -> bool:
    runs = instance.get_runs(dg.RunsFilter(job_name=job))
    return any(r.status == dg.DagsterRunStatus.STARTED for r in runs)
