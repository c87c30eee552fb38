"""An erasure run's step at a domain whose Redis lock another holder has: it waits up to
RETENTION_ERASURE_LOCK_WAIT_SECONDS, then fails with the clear "being cleaned by another run"
message and changes nothing in that domain, nor completes the request; a lock given back within
the wait lets the step go on. Through Dagster, against PostgreSQL, Redis and a Dagster instance."""

from __future__ import annotations

import threading
import time

import dagster as dg
import pytest

from retention_pipelines.dagster_wiring.erasure_run import (
    ERASURE_JOB,
    ERASURE_PARTITIONS,
    ERASURE_STEP,
    OUTCOME_KEY,
    build_erasure_run_defs,
)
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.gdpr.requests import ErasureRequests
from retention_pipelines.stores import domain_locks
from retention_pipelines_tests.support.erasure_rows import ANN, DOMAINS, audit, insert_subject_rows, table_rows


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance


@pytest.fixture
def stores(pg_url, redis_url, tmp_path) -> RetentionStores:
    return RetentionStores(database_url=pg_url, archive_url=(tmp_path / "archive").as_uri(), redis_url=redis_url,
                           blob_url=(tmp_path / "blobs").as_uri())


@pytest.fixture
def erasure_job(stores, policies):
    defs = build_erasure_run_defs([p for p in policies.domains.values() if p.enabled], policies.policy_version)
    return dg.Definitions(assets=defs.assets, jobs=defs.jobs,
                          resources={"retention_stores": stores}).resolve_job_def(ERASURE_JOB)


@pytest.fixture
def request_id(pg_database, stores, instance) -> int:
    insert_subject_rows(pg_database, stores.blob_store, ann_recently_blacklisted=False)
    request = ErasureRequests(pg_database, stores.settings().resolved_erasure_hash_key()).request(ANN)
    instance.add_dynamic_partitions(ERASURE_PARTITIONS.name, [str(request.id)])
    return request.id


def step_times(instance, run_id: str, step_key: str) -> dict[str, float]:
    """When the step started and ended (success or failure), from the run's event log."""
    times = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is not None and event.step_key == step_key and event.event_type_value in (
                "STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
            times[event.event_type_value] = entry.timestamp
    return times


def test_a_held_domain_lock_makes_the_step_wait_then_fail_clearly_changing_nothing(
        pg_database, redis_url, tmp_path, monkeypatch, instance, erasure_job, request_id):
    monkeypatch.setenv("RETENTION_ERASURE_LOCK_WAIT_SECONDS", "2")
    before = table_rows(pg_database, "quiz_responses")
    other = domain_locks(redis_url, tmp_path / "locks", 30).acquire("quiz_responses")
    started = time.monotonic()
    try:
        result = erasure_job.execute_in_process(instance=instance, partition_key=str(request_id), raise_on_error=False)
    finally:
        other.release()
    took = time.monotonic() - started

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == ERASURE_STEP
    message = failure.step_failure_data.user_failure_data.description
    assert message == ("domain quiz_responses is being cleaned by another run (its lock is held) after waiting 2s; "
                       "nothing was done")
    times = step_times(instance, result.run_id, ERASURE_STEP)
    # It waited the time it was given, in the run's step (the event log's clock is coarser than the run's).
    assert took >= 2.0 and 1.9 <= times["STEP_FAILURE"] - times["STEP_START"] < 15.0

    # Nothing of that domain changed; the request is not completed and no key destroyed.
    assert table_rows(pg_database, "quiz_responses") == before
    assert audit(pg_database, domain="quiz_responses") == []
    assert audit(pg_database, "erased") == []  # quiz_responses comes first in policy order: nothing erased before
    assert audit(pg_database, "key_destroyed") == []
    assert ErasureRequests(pg_database).get(request_id).status == "received"
    assert OUTCOME_KEY not in {e.asset_key for e in result.get_asset_materialization_events()}
    logs = " ".join(str(entry.user_message) for entry in instance.all_logs(result.run_id))
    assert "@" not in message and ANN.lower() not in logs.lower()


def test_a_lock_given_back_within_the_wait_lets_the_step_go_on(
        pg_database, redis_url, tmp_path, monkeypatch, instance, erasure_job, request_id):
    monkeypatch.setenv("RETENTION_ERASURE_LOCK_WAIT_SECONDS", "60")
    other = domain_locks(redis_url, tmp_path / "locks", 30).acquire("quiz_responses")
    released: list[float] = []

    def release_once_the_step_waits() -> None:
        """Give the lock back a second after the step has started (and so is waiting for it: quiz_responses
        is the first domain in policy order)."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = instance.get_runs(limit=1)
            if runs and "STEP_START" in step_times(instance, runs[0].run_id, ERASURE_STEP):
                time.sleep(1.0)
                break
            time.sleep(0.05)
        released.append(time.time())
        other.release()

    releaser = threading.Thread(target=release_once_the_step_waits)
    releaser.start()
    try:
        result = erasure_job.execute_in_process(instance=instance, partition_key=str(request_id), raise_on_error=False)
    finally:
        releaser.join(150)
        other.release()
    assert result.success
    times = step_times(instance, result.run_id, ERASURE_STEP)
    assert times["STEP_START"] < released[0] <= times["STEP_SUCCESS"]
    assert ErasureRequests(pg_database).get(request_id).status == "completed"
    assert {e["domain"] for e in audit(pg_database, "erased")} == set(DOMAINS)
