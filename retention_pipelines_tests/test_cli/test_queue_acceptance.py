"""The manual-resolution queue's promises, end to end through the operator's command line, on PostgreSQL and S3
(moto's server on loopback): a meal-plan PDF that will not delete leaves exactly one queue item; the
item escalates once overdue; the fault is removed; `retention queue retry` resolves it; the PDF is
gone, the row redacted, and the audit log shows every step in order.

The fault is the S3 server's own: a bucket policy denying s3:DeleteObject on that one PDF (moto
enforces bucket policies per key in DeleteObjects, as AWS does); removing the policy removes it.
The escalation sensor of the code location judges items at the database's clock and takes no
other, so the item is made overdue by moving its created_at/due_at back in SQL."""

from __future__ import annotations

import json
from datetime import timedelta

import boto3
import dagster as dg
import pytest

from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.engine.oversight.sla import Breaches
from retention_pipelines.policies import load_policies
from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.app_rows import audit_entries, insert_meal_plans_at, meal_plan_rows
from retention_pipelines_tests.support.archives import archived_pdf
from retention_pipelines_tests.support.cli import EMAIL, dagster_home, parse_items, with_password
from retention_pipelines_tests.support.hot_bucket import PDF, hot_keys, put_pdfs
from retention_pipelines_tests.support.queue_rows import age_item, allow_deletes, deny_deletes

STUCK, FINE, YOUNG = "plans/stuck.pdf", "plans/fine.pdf", "plans/young.pdf"


@pytest.fixture
def production_like(pg_url, s3_archive_url, hot_bucket, receiver, tmp_path, monkeypatch):
    """The CLI's environment as in production: PostgreSQL, S3 archive and hot bucket, a webhook."""
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home(tmp_path / "dagster_home")))
    monkeypatch.setenv("RETENTION_DATABASE_URL", with_password(pg_url))
    monkeypatch.setenv("RETENTION_ARCHIVE_URL", s3_archive_url)
    monkeypatch.setenv("RETENTION_BLOB_URL", f"s3://{hot_bucket}")
    monkeypatch.setenv("RETENTION_HOME", str(tmp_path / "retention_home"))
    monkeypatch.setenv("RETENTION_ALERT_WEBHOOK_URL", receiver.url)
    database = AppDatabase(pg_url)
    yield database
    database.dispose()


def escalation_tick(cursor: str | None) -> str | None:
    """One tick of the code location's own escalation sensor, on the DAGSTER_HOME instance, with
    the stores the environment describes (as the daemon runs it)."""
    from retention_pipelines.definitions import defs

    sensor = defs.resolve_sensor_def("manual_queue_escalation_sensor")
    with dg.DagsterInstance.get() as instance, dg.build_sensor_context(
            instance=instance, definitions=defs, cursor=cursor,
            resources={"retention_stores": RetentionStores()}) as context:
        result = sensor.evaluate_tick(context)
    assert not result.run_requests
    return result.cursor


def runs_of(job_name: str) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.get() as instance:
        return list(instance.get_runs(filters=dg.RunsFilter(job_name=job_name)))


def test_a_pdf_that_will_not_delete_is_queued_escalated_retried_and_resolved(
        cli, production_like, hot_bucket, s3_archive_url, receiver):
    database = production_like
    policy = load_policies().domains["meal_plans"]
    now = database.now()
    put_pdfs(hot_bucket, [STUCK, FINE, YOUNG])
    stuck, fine = insert_meal_plans_at(database, [now - timedelta(days=100)] * 2, [STUCK, FINE])
    [young] = insert_meal_plans_at(database, [now - timedelta(days=10)], [YOUNG])
    deny_deletes(hot_bucket, [STUCK])  # the fault

    # 1. The scheduled work, run by an operator: one PDF will not go.
    ran = cli("run", "meal_plans")
    assert ran.code == 1, ran.text  # the every_object_deleted check fails the run rather than pretend
    assert "every_object_deleted" in ran.err
    [run] = runs_of("meal_plans_retention_job")
    assert hot_keys(hot_bucket) == {STUCK, YOUNG}
    rows = meal_plan_rows(database)
    assert rows[stuck] == (STUCK, None) and rows[fine][0] is None and rows[young] == (YOUNG, None)

    queue = ManualQueue(database)
    [item] = queue.list()  # exactly one item
    assert (item.domain, item.record_id, item.reason, item.status, item.attempts) == (
        "meal_plans", stuck, "blob_delete_failed", "open", 1)
    assert "AccessDenied" in item.detail
    listed = parse_items(cli("queue", "list").out)
    assert [(int(i["id"]), i["record_id"], i["status"], i["overdue"]) for i in listed] == [
        (item.id, stuck, "open", "False")]

    # 2. Nobody resolves it in time: overdue, the sensor escalates it and alerts once.
    cursor = escalation_tick(None)
    assert receiver.received == [] and queue.get(item.id).escalation_level == 0
    age_item(database, item.id, policy.sla.resolve_within + timedelta(hours=1), policy.sla.resolve_within)
    for _ in range(3):
        cursor = escalation_tick(cursor)
    assert [(a["kind"], a["event"], a["level"], a["subject"]) for a in receiver.received] == [
        ("manual_queue_item", "opened", 1, str(item.id)), ("queue_overdue", "opened", 1, "")]
    assert queue.get(item.id).escalation_level == 1
    overdue = parse_items(cli("queue", "list", "--overdue").out)
    assert [(int(i["id"]), i["overdue"], i["level"]) for i in overdue] == [(item.id, "True", "1")]

    # 3. The fault is removed; the operator retries the item.
    allow_deletes(hot_bucket)
    retried = cli("queue", "retry", str(item.id), "--by", "oncall-ana")
    assert retried.code == 0, retried.text
    [retry_run] = runs_of("manual_queue_retry")
    assert retry_run.status == dg.DagsterRunStatus.SUCCESS
    assert retried.out.strip().endswith(f"run {retry_run.run_id[:8]}: every item resolved")

    # 4. The PDF is gone from hot storage (its archived copy kept), the row redacted, the item resolved.
    assert hot_keys(hot_bucket) == {YOUNG}
    archive_bucket, prefix = s3_archive_url.removeprefix("s3://").split("/", 1)
    copy = boto3.client("s3").get_object(Bucket=archive_bucket, Key=f"{prefix}/meal_plans/blobs/{stuck}")
    assert archived_pdf(database, copy["Body"].read()) == PDF + STUCK.encode()
    pdf_key, deleted_at = meal_plan_rows(database)[stuck]
    assert pdf_key is None and deleted_at is not None
    resolved = queue.get(item.id)
    assert (resolved.status, resolved.resolved_by) == ("resolved", "oncall-ana")
    assert len(queue.list()) == 1

    # 5. The audit log tells the whole story of the record, in order.
    story = [(e["action"], e["run_id"], e["actor"]) for e in audit_entries(database) if e["record_id"] == stuck]
    assert story == [("blob_delete_failed", run.run_id, None),
                     ("queue_opened", run.run_id, "retention"),
                     ("queue_escalated", "retention", "retention"),
                     ("redacted", retry_run.run_id, None),
                     ("queue_resolved", retry_run.run_id, "oncall-ana")]
    redacted = [e for e in audit_entries(database) if e["record_id"] == stuck and e["action"] == "redacted"]
    assert redacted[0]["archive_uri"] == f"{s3_archive_url}/meal_plans/blobs/{stuck}"
    shown = cli("queue", "show", str(item.id))
    assert shown.code == 0
    history = shown.out.partition("history (audit log):")[2]
    positions = [history.index(action) for action in ("queue_opened", "queue_escalated", "queue_resolved")]
    assert positions == sorted(positions) and "level 0 → 1" in history and "open → resolved" in history

    # 6. The alert that went out is closed, and the queue's breach with it; then quiet.
    for _ in range(3):
        cursor = escalation_tick(cursor)
    assert [(a["kind"], a["event"], a["subject"]) for a in receiver.received[2:]] == [
        ("manual_queue_item", "closed", str(item.id)), ("queue_overdue", "closed", "")]
    assert all(b["closed_at"] is not None for b in Breaches(database).all())
    assert "@" not in json.dumps(receiver.received)
    for outcome in (ran, retried, shown):
        assert not EMAIL.search(outcome.text), outcome.text
