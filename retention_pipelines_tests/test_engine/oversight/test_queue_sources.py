"""What the engine hands to a person: objects that refuse deletion, rows another table still refers
to, archives that do not verify; and a retry of each item (engine/resolution/retry.py), which resolves it once
the fault is gone and counts one more attempt while it is not."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from retention_pipelines.engine import DUE, ArchiveVerificationFailed, RetentionEngine
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.engine.resolution.retry import retry_item
from retention_pipelines.stores.archive import LocalArchiveStore
from retention_pipelines.stores.blob import S3BlobStore
from retention_pipelines_tests.support.app_rows import (
    archive_root,
    audit_entries,
    insert_meal_plans_at,
    insert_quiz_rows,
    meal_plan_rows,
    remaining_ids,
)
from retention_pipelines_tests.support.archives import CorruptingStore, configured_keys
from retention_pipelines_tests.support.engines import archiving, engine_for, meal_plans_engine
from retention_pipelines_tests.support.hot_bucket import hot_keys, put_pdfs
from retention_pipelines_tests.support.queue_rows import (
    NOTES_FK,
    allow_deletes,
    create_notes_table,
    deny_deletes,
    drop_notes,
    queue_audit,
    queue_rows,
    refer_to,
)
from retention_pipelines_tests.support.s3 import FlakyS3

DENIED = "the object store refused the delete: AccessDenied"
FK = NOTES_FK


@pytest.fixture
def failing_pdfs(pg_database, hot_bucket):
    """Six due meal plans whose PDFs are in hot storage; two of them refuse deletion for good
    (a real boto3 client on moto's S3 whose DeleteObjects reports AccessDenied for them)."""
    now = pg_database.now()
    keys = [f"plans/{i}.pdf" for i in range(6)]
    put_pdfs(hot_bucket, keys)
    ids = insert_meal_plans_at(pg_database, [now - timedelta(days=100, minutes=i) for i in range(6)], keys)
    client = FlakyS3(forever={"plans/1.pdf", "plans/4.pdf"})
    store = S3BlobStore(hot_bucket, "", client=client, attempts=2, wait_max_seconds=0.05)
    return ids, keys, client, store


def actions_of(database, record_id: str) -> list[str]:
    return [e["action"] for e in audit_entries(database) if e["record_id"] == record_id]


# Objects that refuse deletion ------------------------------------------------------------------------
def test_each_object_that_refuses_deletion_becomes_one_item_and_a_rerun_counts_an_attempt(
        pg_database, policies, local_archive_url, failing_pdfs):
    ids, keys, client, store = failing_pdfs
    engine = meal_plans_engine(policies, pg_database, local_archive_url, store)
    stuck = {ids[1], ids[4]}

    report = engine.run("run-1")

    assert report.acted.failed == 2 and report.acted.acted_on == 4
    items = ManualQueue(pg_database).list()
    assert {i.record_id for i in items} == stuck
    assert {(i.domain, i.reason, i.status, i.attempts, i.detail) for i in items} == {
        ("meal_plans", "blob_delete_failed", "open", 1, DENIED)}
    assert all(i.due_at - i.created_at == policies.domains["meal_plans"].sla.resolve_within for i in items)
    for record in stuck:
        # The row stays with its object; the refusal is audited, then (after the batch committed) queued.
        assert actions_of(pg_database, record) == ["blob_delete_failed", "queue_opened"]
        [opened] = queue_audit(pg_database, record)
        assert opened["run_id"] == "run-1" and opened["policy_version"] == policies.policy_version
    rows = meal_plan_rows(pg_database)
    assert {rid for rid, (key, _) in rows.items() if key is not None} == stuck
    assert hot_keys(store.bucket) == {"plans/1.pdf", "plans/4.pdf"}

    again = engine.run("run-2")

    assert again.acted.failed == 2 and again.acted.acted_on == 0
    items = ManualQueue(pg_database).list()
    assert len(items) == 2 and {i.attempts for i in items} == {2}
    assert len(queue_rows(pg_database)) == 2
    assert [e["action"] for e in queue_audit(pg_database)] == ["queue_opened", "queue_opened"]
    for record in stuck:
        assert actions_of(pg_database, record) == ["blob_delete_failed", "queue_opened", "blob_delete_failed"]


def test_a_retry_of_an_object_item_fails_while_the_fault_lasts_and_resolves_once_it_is_gone(
        pg_database, policies, local_archive_url, failing_pdfs):
    ids, keys, client, store = failing_pdfs
    engine = meal_plans_engine(policies, pg_database, local_archive_url, store)
    engine.run("run-1")
    queue = ManualQueue(pg_database, policies.policy_version)
    item = next(i for i in queue.list() if i.record_id == ids[1])
    other = next(i for i in queue.list() if i.record_id == ids[4])

    outcome = retry_item(queue, queue.retryable(item.id), engine, "retry-1", "alice")

    assert not outcome.resolved and outcome.item_id == item.id
    after = queue.get(item.id)
    assert after.status == "open" and after.attempts == 2
    assert len(queue_rows(pg_database)) == 2  # no duplicate: the retry counts its own attempt only
    [failed] = [e for e in queue_audit(pg_database, ids[1]) if e["action"] == "queue_retry_failed"]
    assert failed["actor"] == "alice" and failed["run_id"] == "retry-1"
    assert failed["detail"].startswith(f"queue item {item.id}: retry failed (") and "stays open" in failed["detail"]
    assert meal_plan_rows(pg_database)[ids[1]][0] == "plans/1.pdf"

    client.forever.clear()  # the bucket lets go
    outcome = retry_item(queue, queue.retryable(item.id), engine, "retry-2", "alice")

    assert outcome.resolved, outcome.message
    done = queue.get(item.id)
    assert done.status == "resolved" and done.resolved_by == "alice" and done.closed_at is not None
    assert "retry-2" in done.resolution_note
    # Only that record was acted on: the other stuck PDF is still there, its item untouched.
    assert hot_keys(store.bucket) == {"plans/4.pdf"}
    rows = meal_plan_rows(pg_database)
    assert rows[ids[1]][0] is None and rows[ids[1]][1] is not None
    assert rows[ids[4]] == ("plans/4.pdf", None)
    assert queue.get(other.id) == other
    [redacted] = [e for e in audit_entries(pg_database) if e["record_id"] == ids[1] and e["action"] == "redacted"]
    assert redacted["run_id"] == "retry-2" and redacted["archive_uri"]
    assert [(e["action"], e["run_id"]) for e in queue.history(item.id)] == [
        ("queue_opened", "run-1"), ("queue_retry_failed", "retry-1"), ("queue_resolved", "retry-2")]
    resolved = queue.history(item.id)[-1]
    assert resolved["actor"] == "alice"
    assert resolved["detail"] == f"queue item {item.id} (blob_delete_failed): open → resolved"
    # The retry added nothing to the queue.
    assert [e["action"] for e in queue_audit(pg_database)].count("queue_opened") == 2


# Rows another table refers to -------------------------------------------------------------------------
@pytest.fixture
def notes_table(pg_database):
    """quiz_response_notes refers to quiz responses: a row it names cannot be deleted."""
    create_notes_table(pg_database)
    return lambda record_id: refer_to(pg_database, record_id)


@pytest.mark.parametrize("batch_size", [10_000, 3])
def test_a_row_another_table_refers_to_stays_and_the_rest_of_its_batch_goes(
        pg_database, policies, quiz_policy, local_archive_url, notes_table, batch_size):
    due = insert_quiz_rows(pg_database, [timedelta(hours=30, minutes=i) for i in range(7)])
    young = insert_quiz_rows(pg_database, [timedelta(hours=1)])
    blocked = due[3]
    notes_table(blocked)
    policy = quiz_policy.model_copy(update={"batch_size": batch_size})
    engine = engine_for(policy, policies, pg_database, local_archive_url)

    report = engine.run("fk-run")

    assert remaining_ids(pg_database) == {blocked, *young}
    assert report.acted.acted_on == 6 and report.acted.failed == 1
    assert report.audited.consistent
    deleted = [e["record_id"] for e in audit_entries(pg_database) if e["action"] == "deleted"]
    assert sorted(deleted) == sorted(set(due) - {blocked})  # each once
    [item] = ManualQueue(pg_database).list()
    assert (item.domain, item.record_id, item.reason, item.status) == ("quiz_responses", blocked, "delete_blocked",
                                                                      "open")
    assert item.detail == f"the database refused: {FK}"
    assert actions_of(pg_database, blocked) == ["queue_opened"]

    # Run again: the same item, one more attempt.
    engine.run("fk-run-2")
    [item] = ManualQueue(pg_database).list()
    assert item.attempts == 2 and len(queue_rows(pg_database)) == 1
    assert actions_of(pg_database, blocked) == ["queue_opened"]


def test_a_retry_of_a_blocked_row_resolves_once_the_reference_is_gone(
        pg_database, policies, quiz_policy, local_archive_url, notes_table):
    due = insert_quiz_rows(pg_database, [timedelta(hours=30)] * 4)
    notes_table(due[0])
    notes_table(due[2])
    engine = engine_for(quiz_policy, policies, pg_database, local_archive_url)
    engine.run("fk-run")
    queue = ManualQueue(pg_database, policies.policy_version)
    items = {i.record_id: i for i in queue.list()}
    assert set(items) == {due[0], due[2]}

    failed = retry_item(queue, queue.retryable(items[due[0]].id), engine, "retry-1", "bob")
    assert not failed.resolved and "could not be deleted" in failed.message
    assert queue.get(items[due[0]].id).attempts == 2 and queue.get(items[due[0]].id).status == "open"
    assert len(queue_rows(pg_database)) == 2
    assert [e["action"] for e in queue.history(items[due[0]].id)] == ["queue_opened", "queue_retry_failed"]

    drop_notes(pg_database)
    resolved = retry_item(queue, queue.retryable(items[due[0]].id), engine, "retry-2", "bob")

    assert resolved.resolved and resolved.message == "1 rows deleted"
    assert queue.get(items[due[0]].id).status == "resolved"
    assert remaining_ids(pg_database) == {due[2]}  # the retry acted on its record alone
    [deleted] = [e for e in audit_entries(pg_database) if e["record_id"] == due[0] and e["action"] == "deleted"]
    assert deleted["run_id"] == "retry-2"
    last = queue.history(items[due[0]].id)[-1]
    assert (last["action"], last["actor"], last["run_id"]) == ("queue_resolved", "bob", "retry-2")
    assert queue.get(items[due[2]].id) == items[due[2]]


def test_a_retry_of_a_record_already_gone_resolves_with_nothing_to_do(
        pg_database, policies, quiz_policy, local_archive_url, notes_table):
    [record] = insert_quiz_rows(pg_database, [timedelta(hours=30)])
    notes_table(record)
    engine = engine_for(quiz_policy, policies, pg_database, local_archive_url)
    engine.run("fk-run")
    queue = ManualQueue(pg_database, policies.policy_version)
    [item] = queue.list()
    drop_notes(pg_database)
    with pg_database.engine.begin() as connection:  # someone deleted it by hand
        connection.exec_driver_sql("DELETE FROM quiz_responses")
    outcome = retry_item(queue, queue.retryable(item.id), engine, "retry-1", "bob")
    assert outcome.resolved and outcome.message == "nothing was left to do"
    assert queue.get(item.id).status == "resolved"


# Archives that do not verify ---------------------------------------------------------------------
def test_an_archive_that_does_not_verify_becomes_one_item_and_its_retry_reruns_the_domain(
        pg_database, policies, quiz_policy, local_archive_url):
    due = insert_quiz_rows(pg_database, [timedelta(days=2, minutes=i) for i in range(4)])
    policy = archiving(quiz_policy, batch_size=10)
    root = archive_root(local_archive_url)
    broken = RetentionEngine(policy, policies.policy_version, pg_database, CorruptingStore(root),
                             keys=configured_keys(pg_database))

    for attempt in (1, 2):
        with pytest.raises(ArchiveVerificationFailed):
            broken.run(f"corrupt-{attempt}")
        [item] = ManualQueue(pg_database).list()
        assert item.reason == "archive_verification_failed" and item.attempts == attempt
        assert item.record_id.startswith(local_archive_url) and item.record_id.endswith(".jsonl.enc")
        assert "sha256" in item.detail and item.domain == "quiz_responses"
    assert remaining_ids(pg_database) == set(due)
    [opened] = queue_audit(pg_database)
    assert opened["action"] == "queue_opened" and opened["run_id"] == "corrupt-1"
    assert opened["record_id"] == item.record_id

    queue = ManualQueue(pg_database, policies.policy_version)
    still = retry_item(queue, queue.retryable(item.id), broken, "retry-1", "carol")
    assert not still.resolved and "sha256" in still.message
    assert queue.get(item.id).attempts == 3 and len(queue_rows(pg_database)) == 1

    healthy = RetentionEngine(policy, policies.policy_version, pg_database, LocalArchiveStore(root),
                              keys=configured_keys(pg_database))
    done = retry_item(queue, queue.retryable(item.id), healthy, "retry-2", "carol")
    assert done.resolved and done.message == "4 rows deleted"
    assert remaining_ids(pg_database) == set()
    assert {e["run_id"] for e in audit_entries(pg_database) if e["action"] == "deleted"} == {"retry-2"}
    assert [e["action"] for e in queue.history(item.id)] == ["queue_opened", "queue_retry_failed", "queue_resolved"]


# Dry runs ------------------------------------------------------------------------------------------
def test_a_dry_run_adds_nothing_to_the_queue(pg_database, policies, quiz_policy, local_archive_url, failing_pdfs,
                                             notes_table):
    ids, keys, client, store = failing_pdfs
    [blocked] = insert_quiz_rows(pg_database, [timedelta(hours=30)])
    notes_table(blocked)
    meal_plans_engine(policies, pg_database, local_archive_url, store).run("dry-1", dry_run=True)
    engine_for(quiz_policy, policies, pg_database, local_archive_url).run("dry-2", dry_run=True)
    assert queue_rows(pg_database) == [] and audit_entries(pg_database) == []
    assert hot_keys(store.bucket) == set(keys)

    # The same faults, for real: both reach the queue (the dry run was quiet, not blind).
    meal_plans_engine(policies, pg_database, local_archive_url, store).run("real-1")
    engine_for(quiz_policy, policies, pg_database, local_archive_url).run("real-2")
    assert sorted(r["reason"] for r in queue_rows(pg_database)) == ["blob_delete_failed"] * 2 + ["delete_blocked"]


def test_a_retry_selection_adds_nothing_to_the_queue(pg_database, policies, quiz_policy, local_archive_url,
                                                    notes_table):
    rows = insert_quiz_rows(pg_database, [timedelta(hours=30)] * 3)
    notes_table(rows[1])
    engine = engine_for(quiz_policy, policies, pg_database, local_archive_url)
    report = engine.run("narrow", selection=DUE.retry([rows[1], rows[2]]))
    assert report.acted.acted_on == 1 and report.acted.failed == 1
    assert remaining_ids(pg_database) == {rows[0], rows[1]}  # rows[0] was not among the records
    assert queue_rows(pg_database) == []
    # The engine keeps no trace of it: the next run works on every due row.
    engine.run("full")
    assert [r["record_id"] for r in queue_rows(pg_database)] == [rows[1]]
    assert remaining_ids(pg_database) == {rows[1]}
    with pg_database.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM quiz_response_notes")).scalar_one() == 1


def test_a_bucket_policy_denying_the_delete_queues_the_record_until_it_is_lifted(
        pg_database, policies, local_archive_url, hot_bucket):
    """The same fault made by the S3 server itself: a bucket policy denying s3:DeleteObject on one key."""
    now = pg_database.now()
    keys = ["plans/kept.pdf", "plans/free.pdf"]
    put_pdfs(hot_bucket, keys)
    kept, free = insert_meal_plans_at(pg_database, [now - timedelta(days=91)] * 2, keys)
    deny_deletes(hot_bucket, ["plans/kept.pdf"])
    engine = meal_plans_engine(policies, pg_database, local_archive_url, S3BlobStore(hot_bucket, ""))

    report = engine.run("policy-1")

    assert report.acted.failed == 1 and report.acted.acted_on == 1
    assert hot_keys(hot_bucket) == {"plans/kept.pdf"}
    queue = ManualQueue(pg_database, policies.policy_version)
    [item] = queue.list()
    assert (item.record_id, item.reason, item.detail) == (kept, "blob_delete_failed", DENIED)
    assert actions_of(pg_database, free) == ["redacted"]

    allow_deletes(hot_bucket)
    outcome = retry_item(queue, queue.retryable(item.id), engine, "policy-retry", "dana")
    assert outcome.resolved and outcome.message == "1 rows redacted"
    assert hot_keys(hot_bucket) == set()
    assert actions_of(pg_database, kept) == ["blob_delete_failed", "queue_opened", "redacted", "queue_resolved"]
