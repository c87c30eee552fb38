"""A scheduled retention run that finds its domain's Redis lock held by another holder (an erasure, a
queue retry, a restore) waits for it up to RETENTION_LOCK_WAIT_SECONDS, saying so once in the run's
log: a lock given back within the wait lets the run go on and finish the job; past the wait the run
fails with the clear "being cleaned by another run" message naming the domain and the wait, and
changes nothing. The run is the one the domain's schedule asks for, executed on a Dagster instance
against PostgreSQL and Redis. A run that takes several domains' locks takes them in policy order."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import dagster as dg
import pytest

from retention_pipelines.dagster_wiring.common import job_name
from retention_pipelines.dagster_wiring.domain_factory import build_domain_defs
from retention_pipelines.dagster_wiring.manual_queue import RETRY_JOB, build_manual_queue_defs
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.stores import DomainLocked, domain_locks
from retention_pipelines_tests.support.app_rows import audit_entries, insert_quiz_rows, remaining_ids

DOMAIN = "quiz_responses"
STEP = f"{DOMAIN}_retention"


@pytest.fixture
def instance(tmp_path):
    # The package's loggers handed to Dagster, as both dagster.yaml do: the run's log lines are in its event log.
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster"), overrides={"python_logs": {
            "python_log_level": "INFO", "managed_python_loggers": ["retention_pipelines"]}}) as instance:
        yield instance


@pytest.fixture
def stores(pg_url, redis_url, local_archive_url) -> RetentionStores:
    return RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url)


@pytest.fixture
def another_holder(redis_url, tmp_path):
    """The domain's lock, held as an erasure run holds it while it erases the domain."""
    held = domain_locks(redis_url, tmp_path / "locks", 30).acquire(DOMAIN)
    yield held
    held.release()


def scheduled_run(policies, stores, instance, database, run_id: str) -> dg.ExecuteInProcessResult:
    """The run the domain's schedule asks for at the database's now, executed with the request's
    partition and tags."""
    domain = build_domain_defs(policies.domains[DOMAIN], policies.policy_version)
    defs = dg.Definitions(assets=domain.assets, jobs=domain.jobs, schedules=domain.schedules,
                          resources={"retention_stores": stores})
    [schedule] = domain.schedules
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=database.now(),
                                   repository_def=defs.get_repository_def()) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    job = defs.resolve_job_def(job_name(DOMAIN))
    return job.execute_in_process(instance=instance, partition_key=request.partition_key, tags=request.tags,
                                  run_id=run_id, raise_on_error=False)


def waiting_lines(instance, run_id: str) -> list[str]:
    """The run's log lines that say it waits for a busy domain."""
    return [entry.user_message for entry in instance.all_logs(run_id)
            if entry.dagster_event is None and " is busy " in entry.user_message]


def test_a_scheduled_run_waits_for_the_held_lock_and_finishes_once_it_is_given_back(
        policies, pg_database, stores, instance, monkeypatch, another_holder):
    monkeypatch.setenv("RETENTION_LOCK_WAIT_SECONDS", "60")
    due = insert_quiz_rows(pg_database, [timedelta(hours=30)] * 5)
    young = insert_quiz_rows(pg_database, [timedelta(hours=1)] * 2)
    run_id = str(uuid.uuid4())
    while_waiting: dict = {}

    def release_once_the_run_waits() -> None:
        """Give the lock back a second after the run has said it waits; note what the run had done by then."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not waiting_lines(instance, run_id):
            time.sleep(0.05)
        time.sleep(1.0)
        while_waiting.update(rows=remaining_ids(pg_database), audit=audit_entries(pg_database))
        another_holder.release()

    releaser = threading.Thread(target=release_once_the_run_waits)
    releaser.start()
    try:
        result = scheduled_run(policies, stores, instance, pg_database, run_id)
    finally:
        releaser.join(150)

    assert result.success
    assert waiting_lines(instance, run_id) == [
        f"domain {DOMAIN} is busy (another run holds its lock): waiting up to 60s for it"]
    # While it waited, nothing: every row there, no audit entry.
    assert while_waiting == {"rows": set(due) | set(young), "audit": []}
    # Then the job, once the lock was its own.
    assert remaining_ids(pg_database) == set(young)
    assert sorted(entry["record_id"] for entry in audit_entries(pg_database)) == sorted(due)
    assert all(check.passed for check in result.get_asset_check_evaluations())


def test_past_the_wait_a_scheduled_run_fails_naming_the_domain_and_the_wait_and_changes_nothing(
        policies, pg_database, stores, instance, monkeypatch, another_holder):
    monkeypatch.setenv("RETENTION_LOCK_WAIT_SECONDS", "2")
    insert_quiz_rows(pg_database, [timedelta(hours=30)] * 5)
    before = remaining_ids(pg_database)
    run_id = str(uuid.uuid4())
    started = time.monotonic()
    result = scheduled_run(policies, stores, instance, pg_database, run_id)
    took = time.monotonic() - started

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == STEP
    assert failure.step_failure_data.user_failure_data.description == (
        f"domain {DOMAIN} is being cleaned by another run (its lock is held) after waiting 2s; nothing was done")
    assert took >= 2.0
    assert waiting_lines(instance, run_id) == [
        f"domain {DOMAIN} is busy (another run holds its lock): waiting up to 2s for it"]
    assert remaining_ids(pg_database) == before
    assert audit_entries(pg_database) == []
    assert result.get_asset_materialization_events() == [] and result.get_asset_check_evaluations() == []
    another_holder.ensure_held()  # the holder's lock is still its own


def test_a_queue_retry_over_two_domains_takes_their_locks_in_policy_order_as_an_erasure_does(
        policies, pg_database, stores, instance, monkeypatch, redis_url, tmp_path):
    """An erasure run takes the domains' locks in policy order and keeps each until it ends. A retry
    of items in two domains, asked for in the other order, waits for the first domain's lock holding
    nothing: the erasure then takes the second domain's lock at once, where, the other way round,
    each would wait out its time for the lock the other holds, and one would fail."""
    monkeypatch.setenv("RETENTION_LOCK_WAIT_SECONDS", "60")
    enabled = [policy for policy in policies.domains.values() if policy.enabled]
    first, second = enabled[0], enabled[1]
    queue = ManualQueue(pg_database, policies.policy_version)
    window = "2026-01-01-00:00"
    asked_first = queue.add(second.name, window, "run_failed", "runs failed in a row", timedelta(days=1)).item
    asked_second = queue.add(first.name, window, "run_failed", "runs failed in a row", timedelta(days=1)).item
    erasure_locks = domain_locks(redis_url, tmp_path / "locks", 30)
    erasure_first = erasure_locks.acquire(first.name)
    run_id = str(uuid.uuid4())
    erasure_side: dict = {}

    def erase_on_once_the_retry_waits() -> None:
        """The erasure, holding the first domain's lock, asks for the second once the retry waits."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not waiting_lines(instance, run_id):
            time.sleep(0.05)
        try:
            erasure_side["second"] = erasure_locks.acquire(second.name, 0)
            erasure_side["second"].release()
        except DomainLocked as exc:
            erasure_side["refused"] = str(exc)
        finally:
            erasure_first.release()

    definitions = dg.Definitions.merge(build_manual_queue_defs(enabled, policies.policy_version),
                                       dg.Definitions(resources={"retention_stores": stores}))
    erasure = threading.Thread(target=erase_on_once_the_retry_waits)
    erasure.start()
    try:
        result = definitions.resolve_job_def(RETRY_JOB).execute_in_process(
            instance=instance, run_id=run_id, raise_on_error=False,
            run_config={"ops": {"retry_queue_items": {"config": {"item_ids": [asked_first.id, asked_second.id]}}}})
    finally:
        erasure.join(150)

    assert "refused" not in erasure_side and "second" in erasure_side
    assert waiting_lines(instance, run_id) == [
        f"domain {first.name} is busy (another run holds its lock): waiting up to 60s for it"]
    assert result.success
    assert [outcome["item"] for outcome in result.output_for_node("retry_queue_items")] == [
        asked_second.id, asked_first.id]
    assert {queue.get(item.id).status for item in (asked_first, asked_second)} == {"resolved"}
