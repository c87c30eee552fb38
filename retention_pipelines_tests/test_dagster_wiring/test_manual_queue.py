"""The manual-resolution queue in Dagster (dagster_wiring/manual_queue.py, the run-failure sensor): the retry
job, the escalation sensor tick by tick with alerts to a real webhook on loopback, the health asset
and its check, against real PostgreSQL (and SQLite where the demo runs) and a real Dagster instance.

The escalation sensor judges items at the database's own clock (its ManualQueue takes no clock), so
these tests move an item past its due date by moving its created_at/due_at back in SQL."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import dagster as dg
import pytest

from retention_pipelines.dagster_wiring.common import DOMAIN_TAG, domain_partitions, job_name
from retention_pipelines.dagster_wiring.domain_factory import build_domain_defs
from retention_pipelines.dagster_wiring.manual_queue import (
    HEALTH_KEY,
    NO_OVERDUE_ITEMS_CHECK,
    QUEUE_ITEM,
    QUEUE_OVERDUE,
    RETRY_JOB,
    build_manual_queue_defs,
)
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.sla_sensors import build_run_sensors
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.engine.oversight.sla import Breaches
from retention_pipelines_tests.support.app_rows import audit_entries, insert_quiz_rows, remaining_ids
from retention_pipelines_tests.support.engines import engine_for
from retention_pipelines_tests.support.queue_rows import (
    age_item,
    create_notes_table,
    drop_notes,
    place_hold,
    queue_audit,
    queue_rows,
    refer_to,
    set_item,
)

DAY = timedelta(days=1)
SENSOR = "manual_queue_escalation_sensor"


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


@pytest.fixture
def enabled(policies):
    return [policy for policy in policies.domains.values() if policy.enabled]


def queue_definitions(policies, domains, stores) -> dg.Definitions:
    return dg.Definitions.merge(build_manual_queue_defs(domains, policies.policy_version),
                                dg.Definitions(resources={"retention_stores": stores}))


def retry(definitions, instance, item_ids, by="ops-bob"):
    job = definitions.resolve_job_def(RETRY_JOB)
    return job.execute_in_process(instance=instance, raise_on_error=False, run_config={
        "ops": {"retry_queue_items": {"config": {"item_ids": item_ids, "by": by}}}})


def failure_description(result) -> str:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.step_failure_data.user_failure_data.description


class Ticks:
    """The escalation sensor evaluated tick after tick, its cursor carried over as the daemon does."""

    def __init__(self, definitions, instance, stores):
        self.definitions, self.instance, self.stores = definitions, instance, stores
        self.sensor = definitions.resolve_sensor_def(SENSOR)
        self.cursor: str | None = None

    def __call__(self, times: int = 1) -> None:
        for _ in range(times):
            with dg.build_sensor_context(instance=self.instance, resources={"retention_stores": self.stores},
                                         definitions=self.definitions, cursor=self.cursor) as context:
                result = self.sensor.evaluate_tick(context)
            assert list(result.run_requests or []) == []
            self.cursor = result.cursor


def alerts(receiver) -> list[tuple]:
    return [(a["domain"], a["kind"], a["event"], a["level"], a["subject"]) for a in receiver.received]


# The retry job ---------------------------------------------------------------------------------------
@pytest.fixture
def blocked_items(pg_database, policies, quiz_policy, local_archive_url):
    """Three due quiz responses, two of them referred to by another table: two delete_blocked items."""
    create_notes_table(pg_database)
    rows = insert_quiz_rows(pg_database, [timedelta(hours=30, minutes=i) for i in range(3)])
    refer_to(pg_database, rows[0])
    refer_to(pg_database, rows[1])
    engine_for(quiz_policy, policies, pg_database, local_archive_url).run("scheduled-run")
    items = {i.record_id: i for i in ManualQueue(pg_database).list()}
    assert set(items) == {rows[0], rows[1]} and {i.reason for i in items.values()} == {"delete_blocked"}
    return rows, items[rows[0]], items[rows[1]]


@pytest.fixture
def stores(pg_url, redis_url, local_archive_url):
    return RetentionStores(database_url=pg_url, archive_url=local_archive_url, redis_url=redis_url)


def test_the_retry_job_resolves_what_it_can_and_fails_naming_the_item_that_stays_open(
        policies, enabled, pg_database, stores, instance, blocked_items):
    rows, fixed, stuck = blocked_items
    drop_notes(pg_database, rows[0])  # the first reference is gone; the second stays
    definitions = queue_definitions(policies, enabled, stores)

    result = retry(definitions, instance, [fixed.id, stuck.id, fixed.id])

    assert not result.success
    description = failure_description(result)
    assert f"item {stuck.id}: 1 rows could not be deleted yet" in description
    assert f"item {fixed.id}" not in description
    queue = ManualQueue(pg_database, policies.policy_version)
    assert queue.get(fixed.id).status == "resolved" and queue.get(fixed.id).resolved_by == "ops-bob"
    assert queue.get(stuck.id).status == "open" and queue.get(stuck.id).attempts == 2
    assert remaining_ids(pg_database) == {rows[1]}
    [deleted] = [e for e in audit_entries(pg_database) if e["record_id"] == rows[0] and e["action"] == "deleted"]
    assert deleted["run_id"] == result.run_id
    [resolved] = [e for e in queue.history(fixed.id) if e["action"] == "queue_resolved"]
    assert (resolved["actor"], resolved["run_id"]) == ("ops-bob", result.run_id)
    [failed] = [e for e in queue.history(stuck.id) if e["action"] == "queue_retry_failed"]
    assert (failed["actor"], failed["run_id"]) == ("ops-bob", result.run_id)
    assert len(queue_rows(pg_database)) == 2  # the retry added no item
    assert [e["action"] for e in queue.history(fixed.id)].count("queue_resolved") == 1  # the repeated id ran once

    # The reference goes too: the next retry resolves the last item and succeeds.
    drop_notes(pg_database)
    again = retry(definitions, instance, [stuck.id], by="ops-carol")
    assert again.success
    outcomes = again.output_for_node("retry_queue_items")
    assert outcomes == [{"item": stuck.id, "resolved": True, "message": "1 rows deleted"}]
    [output] = [e for e in again.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert output.event_specific_data.metadata["items_resolved"].value == 1
    assert queue.get(stuck.id).status == "resolved" and queue.get(stuck.id).resolved_by == "ops-carol"
    assert remaining_ids(pg_database) == set()

    # A closed item is refused by name; nothing about it changes.
    before = queue.get(fixed.id)
    refused = retry(definitions, instance, [fixed.id])
    assert not refused.success
    assert (f"item {fixed.id}: queue item {fixed.id} is resolved: there is nothing to retry"
            in failure_description(refused))
    assert queue.get(fixed.id) == before


def test_the_retry_job_refuses_a_hold_conflict_an_unknown_item_and_a_domain_it_does_not_run(
        policies, quiz_policy, pg_database, stores, instance):
    queue = ManualQueue(pg_database, policies.policy_version)
    hold = queue.add("quiz_responses", "rec-h", "legal_hold_conflict", "held", DAY).item
    place_hold(pg_database, "quiz_responses", "rec-h")
    elsewhere = queue.add("meal_plans", str(uuid.uuid4()), "blob_delete_failed", "AccessDenied", DAY).item
    definitions = queue_definitions(policies, [quiz_policy], stores)  # only quiz_responses runs here

    result = retry(definitions, instance, [hold.id, elsewhere.id, 99999])

    assert not result.success
    description = failure_description(result)
    assert f"item {hold.id}: queue item {hold.id} is a legal-hold conflict" in description
    assert f"item {elsewhere.id}: queue item {elsewhere.id} belongs to meal_plans, which is not an enabled domain" \
        in description
    assert "item 99999: no queue item 99999" in description
    assert queue.get(hold.id) == hold and queue.get(elsewhere.id) == elsewhere  # refused, not attempted
    assert [e["action"] for e in queue_audit(pg_database)] == ["queue_opened", "queue_opened"]


# The escalation sensor -------------------------------------------------------------------------------
def test_an_overdue_item_alerts_once_per_level_and_once_when_it_is_closed(
        policies, enabled, pg_url, pg_database, local_archive_url, instance, receiver):
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, alert_webhook_url=receiver.url)
    quiz = policies.domains["quiz_responses"]
    assert quiz.sla.resolve_within == DAY and quiz.sla.escalate_at == [2.0, 4.0]
    tick = Ticks(queue_definitions(policies, enabled, stores), instance, stores)
    queue = ManualQueue(pg_database, policies.policy_version)
    item = queue.add("quiz_responses", "rec-1", "delete_blocked", "the database refused: some_fk", DAY, "run-1").item
    subject = str(item.id)

    tick(3)  # due in a day: nothing to say
    assert receiver.received == [] and Breaches(pg_database).all() == []

    age_item(pg_database, item.id, DAY + timedelta(minutes=10), DAY)  # ten minutes past due
    tick(4)
    assert alerts(receiver) == [("quiz_responses", QUEUE_ITEM, "opened", 1, subject),
                                ("quiz_responses", QUEUE_OVERDUE, "opened", 1, "")]
    opened = receiver.received[0]
    assert opened["details"]["item_id"] == item.id and opened["details"]["reason"] == "delete_blocked"
    assert 590 <= opened["details"]["overdue_seconds"] < 900
    assert "past due: level 1" in opened["text"]
    [breach] = Breaches(pg_database).all()
    assert (breach["domain"], breach["kind"], breach["closed_at"], breach["escalation_level"]) == (
        "quiz_responses", QUEUE_OVERDUE, None, 1)

    age_item(pg_database, item.id, 2 * DAY + timedelta(minutes=10), DAY)  # twice the day it was given
    tick(4)
    assert alerts(receiver)[2:] == [("quiz_responses", QUEUE_ITEM, "escalated", 2, subject),
                                    ("quiz_responses", QUEUE_OVERDUE, "escalated", 2, "")]
    age_item(pg_database, item.id, 4 * DAY + timedelta(minutes=10), DAY)
    tick(4)
    assert alerts(receiver)[4:] == [("quiz_responses", QUEUE_ITEM, "escalated", 3, subject),
                                    ("quiz_responses", QUEUE_OVERDUE, "escalated", 3, "")]
    assert "(level 3)" in receiver.received[4]["text"]
    assert queue.get(item.id).escalation_level == 3
    assert [e["detail"].split(": ")[-1] for e in queue_audit(pg_database) if e["action"] == "queue_escalated"] == [
        "level 0 → 1", "level 1 → 2", "level 2 → 3"]

    queue.resolve(item.id, "alice", "removed the note by hand")
    tick(4)
    assert alerts(receiver)[6:] == [("quiz_responses", QUEUE_ITEM, "closed", 3, subject),
                                    ("quiz_responses", QUEUE_OVERDUE, "closed", 1, "")]
    assert "resolved by alice" in receiver.received[6]["text"]
    assert len(receiver.received) == 8
    [breach] = Breaches(pg_database).all()
    assert breach["closed_at"] is not None and breach["escalation_level"] == 3
    assert "@" not in json.dumps(receiver.received)


def test_items_of_each_domain_alert_on_their_own_and_quiet_closures_stay_quiet(
        policies, enabled, pg_url, pg_database, local_archive_url, instance, receiver):
    stores = RetentionStores(database_url=pg_url, archive_url=local_archive_url, alert_webhook_url=receiver.url)
    tick = Ticks(queue_definitions(policies, enabled, stores), instance, stores)
    queue = ManualQueue(pg_database, policies.policy_version)
    late_quiz = queue.add("quiz_responses", "q-1", "delete_blocked", "fk", DAY).item
    late_plan = queue.add("meal_plans", "m-1", "blob_delete_failed", "AccessDenied", 2 * DAY).item
    on_time = queue.add("quiz_responses", "q-2", "delete_blocked", "fk", DAY).item
    age_item(pg_database, late_quiz.id, DAY + timedelta(hours=1), DAY)
    age_item(pg_database, late_plan.id, 2 * DAY + timedelta(hours=1), 2 * DAY)

    tick(2)
    assert sorted(alerts(receiver)) == sorted([
        ("quiz_responses", QUEUE_ITEM, "opened", 1, str(late_quiz.id)),
        ("quiz_responses", QUEUE_OVERDUE, "opened", 1, ""),
        ("meal_plans", QUEUE_ITEM, "opened", 1, str(late_plan.id)),
        ("meal_plans", QUEUE_OVERDUE, "opened", 1, "")])
    assert {(b["domain"], b["kind"]) for b in Breaches(pg_database).all()} == {
        ("quiz_responses", QUEUE_OVERDUE), ("meal_plans", QUEUE_OVERDUE)}
    assert queue.get(on_time.id).escalation_level == 0

    queue.resolve(on_time.id, "bob", "never alerted")  # closes without a word
    queue.dismiss(late_plan.id, "bob", "the PDF had been removed by support")
    receiver.received.clear()
    tick(3)
    assert alerts(receiver) == [("meal_plans", QUEUE_ITEM, "closed", 1, str(late_plan.id)),
                                ("meal_plans", QUEUE_OVERDUE, "closed", 1, "")]
    assert "dismissed by bob" in receiver.received[0]["text"]
    open_breaches = [(b["domain"], b["kind"]) for b in Breaches(pg_database).all() if b["closed_at"] is None]
    assert open_breaches == [("quiz_responses", QUEUE_OVERDUE)]


def test_two_items_closed_within_the_same_second_each_alert_closed(
        policies, enabled, sqlite_database, local_archive_url, instance, receiver):
    """SQLite (the demo) keeps time to the second: a second item closed in the same second as one
    the sensor already alerted about must still get its "closed" alert."""
    url = sqlite_database.engine.url.render_as_string(hide_password=False)
    stores = RetentionStores(database_url=url, archive_url=local_archive_url, alert_webhook_url=receiver.url)
    tick = Ticks(queue_definitions(policies, enabled, stores), instance, stores)
    queue = ManualQueue(sqlite_database, policies.policy_version)
    first = queue.add("quiz_responses", "q-1", "delete_blocked", "fk", DAY).item
    second = queue.add("quiz_responses", "q-2", "delete_blocked", "fk", DAY).item
    for item in (first, second):
        age_item(sqlite_database, item.id, DAY + timedelta(hours=1), DAY)
    tick()
    assert [a[1:3] for a in alerts(receiver)].count((QUEUE_ITEM, "opened")) == 2

    queue.resolve(first.id, "alice", "done")
    tick()
    closed_first = queue.get(first.id).closed_at
    assert closed_first.microsecond == 0  # SQLite's clock: whole seconds
    queue.resolve(second.id, "alice", "done")
    # Resolved within the same second as the first, as SQLite's CURRENT_TIMESTAMP records it.
    set_item(sqlite_database, second.id, closed_at=closed_first)
    tick(2)

    closed = [a[4] for a in alerts(receiver) if a[1] == QUEUE_ITEM and a[2] == "closed"]
    assert closed == [str(first.id), str(second.id)]


# The health asset and its check ---------------------------------------------------------------------
def materialize_health(policies, enabled, stores, instance):
    [health] = [a for a in build_manual_queue_defs(enabled, policies.policy_version).assets if a.key == HEALTH_KEY]
    result = dg.materialize([health], instance=instance,
                            resources={"retention_stores": stores}, raise_on_error=False)
    assert result.success
    [event] = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == NO_OVERDUE_ITEMS_CHECK
    return metadata, check


def test_the_health_asset_measures_the_queue_and_its_check_warns_then_errs(
        policies, enabled, pg_database, stores, instance):
    queue = ManualQueue(pg_database, policies.policy_version)
    late = queue.add("quiz_responses", "q-late", "delete_blocked", "fk", DAY).item
    claimed = queue.add("meal_plans", "m-1", "blob_delete_failed", "AccessDenied", 2 * DAY).item
    queue.claim(claimed.id, "alice")
    fresh = queue.add("quiz_responses", "q-fresh", "delete_blocked", "fk", DAY).item
    age_item(pg_database, late.id, DAY + timedelta(hours=5), DAY)  # 29 h old, 5 h past due
    age_item(pg_database, claimed.id, timedelta(hours=3), 2 * DAY)
    age_item(pg_database, fresh.id, timedelta(hours=1), DAY)
    set_item(pg_database, late.id, escalation_level=1)

    metadata, check = materialize_health(policies, enabled, stores, instance)

    depth = {k: v for k, v in metadata.items() if k.startswith("depth/")}
    assert depth == {f"depth/{p.name}/{s}": {("quiz_responses", "open"): 2, ("meal_plans", "claimed"): 1}.get(
        (p.name, s), 0) for p in enabled for s in ("open", "claimed")}
    assert metadata["active"] == 3 and metadata["overdue"] == 1 and metadata["escalated"] == 0
    assert metadata["resolved_last_24h"] == 0
    assert 29 * 3600 <= metadata["oldest_age_seconds"] < 29 * 3600 + 120
    assert 3 * 3600 <= metadata["p50_age_seconds"] < 3 * 3600 + 120  # the middle of 1 h, 3 h, 29 h
    assert metadata["p95_age_seconds"] == metadata["oldest_age_seconds"]
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metadata.values()), metadata
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert {k: v.value for k, v in check.metadata.items()} == {"overdue": 1, "escalated": 0}

    # Further past due: escalated, and the check is an error.
    set_item(pg_database, late.id, escalation_level=2)
    metadata, check = materialize_health(policies, enabled, stores, instance)
    assert metadata["escalated"] == 1
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR

    # Resolved: nothing overdue, one resolution in the last day.
    queue.resolve(late.id, "bob", "done")
    metadata, check = materialize_health(policies, enabled, stores, instance)
    assert check.passed
    assert metadata["overdue"] == 0 and metadata["escalated"] == 0 and metadata["active"] == 2
    assert metadata["resolved_last_24h"] == 1 and metadata["depth/quiz_responses/open"] == 1
    assert 3 * 3600 <= metadata["oldest_age_seconds"] < 3 * 3600 + 120


# The run-failure sensor --------------------------------------------------------------------------------
def run_domain_job(policy, policies, stores, instance, partition_key):
    domain = build_domain_defs(policy, policies.policy_version)
    definitions = dg.Definitions.merge(domain, dg.Definitions(resources={"retention_stores": stores}))
    return definitions.resolve_job_def(job_name(policy.name)).execute_in_process(
        instance=instance, partition_key=partition_key, raise_on_error=False)


def failure_sensor_after(sensor, result, instance, stores) -> None:
    with dg.build_run_status_sensor_context(sensor_name=sensor.name, dagster_event=result.get_run_failure_event(),
                                            dagster_instance=instance, dagster_run=result.dagster_run,
                                            resources={"retention_stores": stores}) as context:
        sensor(context.for_run_failure())


@pytest.fixture
def failing_runs(policies, postgres_server, pg_database, stores, local_archive_url, redis_url, instance):
    """quiz_responses runs that fail (their database has no tables), each seen by a run-failure
    sensor: by default one built as the code location builds it."""
    policy = policies.domains["quiz_responses"]
    _, built = build_run_sensors([policy], list(build_domain_defs(policy, policies.policy_version).jobs),
                                 policies.policy_version)
    broken = RetentionStores(database_url=postgres_server.create_database(f"empty_{uuid.uuid4().hex[:6]}"),
                             archive_url=local_archive_url, redis_url=redis_url)
    partition = domain_partitions(policy).get_last_partition_key()  # one window for every run of the test

    def fail_once(sensor=built):
        result = run_domain_job(policy, policies, broken, instance, partition)
        assert not result.success and result.dagster_run.tags[DOMAIN_TAG] == "quiz_responses"
        failure_sensor_after(sensor, result, instance, stores)
        return result

    return policy, partition, fail_once


def test_failed_runs_in_a_row_put_their_window_in_the_queue_and_a_retry_reruns_the_domain(
        policies, enabled, pg_database, stores, instance, failing_runs):
    policy, partition, fail_once = failing_runs
    due = insert_quiz_rows(pg_database, [timedelta(hours=30)] * 3)
    limit = policy.sla.max_consecutive_failures
    for _ in range(limit - 1):
        fail_once()
        assert queue_rows(pg_database) == []  # automation still tries
    last = fail_once()

    [item] = ManualQueue(pg_database).list()
    assert (item.domain, item.record_id, item.reason, item.attempts) == ("quiz_responses", partition, "run_failed", 1)
    assert item.detail.startswith(f"{limit} runs failed in a row; last: ")
    assert item.due_at - item.created_at == policy.sla.resolve_within
    [opened] = queue_audit(pg_database)
    assert opened["action"] == "queue_opened" and opened["run_id"] == last.run_id

    fail_once()
    [item] = ManualQueue(pg_database).list()
    assert item.attempts == 2 and item.detail.startswith(f"{limit + 1} runs failed in a row")
    assert len(queue_audit(pg_database)) == 1

    # The database is back: the retry runs the whole domain and resolves the item.
    result = retry(queue_definitions(policies, enabled, stores), instance, [item.id])
    assert result.success
    assert remaining_ids(pg_database) == set()
    assert {e["run_id"] for e in audit_entries(pg_database) if e["action"] == "deleted"} == {result.run_id}
    assert {e["record_id"] for e in audit_entries(pg_database) if e["action"] == "deleted"} == set(due)
    assert ManualQueue(pg_database).get(item.id).status == "resolved"


def test_a_failed_run_item_is_audited_under_the_policy_files_version(policies, pg_database, failing_runs):
    """Every audit row carries the version of the policy file it was written under: also the item
    that the code location's own run-failure sensor opens."""
    from retention_pipelines.definitions import defs

    policy, _, fail_once = failing_runs
    sensor = defs.resolve_sensor_def("retention_run_failure_sensor")
    for _ in range(policy.sla.max_consecutive_failures):
        fail_once(sensor)
    [opened] = queue_audit(pg_database)
    assert opened["action"] == "queue_opened"
    assert opened["policy_version"] == policies.policy_version
