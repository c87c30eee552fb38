"""SubjectErasure (engine/gdpr/erasure_run.py) on PostgreSQL and SQLite: each of the four domains'
policies erases exactly the subject's rows whatever their deadline (the blacklist: none before its
deadline) and whatever the case of their address, audits each as `erased` naming the request and
its due date, keeps held records with a `legal_hold_conflict` item, changes nothing in a dry run,
keeps the request open while an object refuses to go, and completes it (destroying the key)
exactly once."""

from __future__ import annotations

import gzip
import threading
import time
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from retention_pipelines.engine.archive.chunked import key_id_of
from retention_pipelines.engine.archive.format import read_manifest, read_rows
from retention_pipelines.engine.audit.entries import AuditStamp, write_entries
from retention_pipelines.engine.gdpr.erasure_run import ErasureIncomplete
from retention_pipelines.engine.gdpr.requests import ErasureRefused
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.engine.resolution.retry import retry_item
from retention_pipelines.schema import erasure_requests
from retention_pipelines.stores.blob import S3BlobStore
from retention_pipelines_tests.support.app_rows import _insert
from retention_pipelines_tests.support.archives import encode_v1, opened_pdf
from retention_pipelines_tests.support.databases import dump_all_tables
from retention_pipelines_tests.support.erasure_rows import (
    ANN,
    DOMAINS,
    HASH_KEY,
    Erasure,
    audit,
    data_key_rows,
    insert_subject_rows,
    new_uuid,
    no_address_in_audit,
    place_hold,
    table_rows,
)
from retention_pipelines_tests.support.queue_rows import allow_deletes, deny_deletes


@pytest.fixture
def erasure(any_database, tmp_path) -> Erasure:
    return Erasure(any_database, tmp_path)


@pytest.fixture
def rows(any_database, erasure) -> dict[str, dict[str, list[str]]]:
    return insert_subject_rows(any_database, erasure.blob_store)


@pytest.fixture
def erasable_rows(any_database, erasure) -> dict[str, dict[str, list[str]]]:
    """Ann's rows, none kept by a policy past the erasure: her request can complete."""
    return insert_subject_rows(any_database, erasure.blob_store, ann_recently_blacklisted=False)


def kept_by_policy(rows, domain: str) -> list[str]:
    """Ann's records the domain keeps until their deadline on erasure: her young blacklist entry."""
    return rows[domain]["ann"][:1] if domain == "email_blacklist" else []


def folder_files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} \
        if folder.exists() else {}


def request_row(database, request_id: int) -> dict:
    with database.engine.connect() as connection:
        return dict(connection.execute(sa.select(erasure_requests).where(
            erasure_requests.c.id == request_id)).one()._mapping)


# each domain's policy -------------------------------------------------------------------------------------
@pytest.mark.parametrize("domain", DOMAINS)
def test_each_domain_erases_exactly_the_subjects_rows_whatever_their_deadline(any_database, erasure, rows, domain):
    request = erasure.requests.request(f"  {ANN.upper()} ")  # the request's spelling matters no more than the rows'
    tables_before = {name: table_rows(any_database, name) for name in DOMAINS}
    blobs_before = folder_files(erasure.folder / "blobs")
    kept = kept_by_policy(rows, domain)
    ann, others = [rid for rid in rows[domain]["ann"] if rid not in kept], rows[domain]["others"]

    part = erasure.erase(domain, request.id, "erasure-run-1")

    assert (part.domain, part.erased, part.held, part.failed, part.dry_run) == (domain, len(ann), [], 0, False)
    assert part.kept == kept
    after = table_rows(any_database, domain)
    # Everyone else's rows, and hers kept until their deadline, are exactly as they were, in this
    # domain and every other.
    assert {rid: after[rid] for rid in others + kept} == {rid: tables_before[domain][rid] for rid in others + kept}
    for name in set(DOMAINS) - {domain}:
        assert table_rows(any_database, name) == tables_before[name]
    if domain == "meal_plans":
        # The purchase rows stay, the address and the PDF go; young or old, whatever their deadline.
        for rid in ann:
            row = after[rid]
            assert row["email"] == f"erased-by-request-{request.id}@erased.invalid"
            assert row["pdf_blob_key"] is None and row["pdf_deleted_at"] is not None
            erased_columns = ("email", "pdf_blob_key", "pdf_deleted_at")
            assert {k: v for k, v in row.items() if k not in erased_columns} == {
                k: v for k, v in tables_before[domain][rid].items() if k not in erased_columns}
        assert set(folder_files(erasure.folder / "blobs")) == set(blobs_before) - {
            "plans/ann-new.pdf", "plans/ann-old.pdf"}
    else:
        assert set(after) == set(others + kept)
        assert folder_files(erasure.folder / "blobs") == blobs_before

    # One `erased` entry per record, naming the request and its due date; nothing else audited.
    entries = audit(any_database)
    assert sorted(e["record_id"] for e in entries) == sorted(ann)
    due_at = erasure.requests.get(request.id).due_at
    for entry in entries:
        assert (entry["domain"], entry["action"], entry["run_id"], entry["detail"]) == (
            domain, "erased", "erasure-run-1", f"erasure request {request.id}")
        assert entry["policy_version"] == erasure.policies.policy_version
        assert any_database.read_time(entry["deadline"]) == due_at
    no_address_in_audit(any_database)
    # Erasing a domain does not complete the request.
    assert erasure.requests.get(request.id).status == "received"

    # A rerun finds nothing of hers left: nothing is erased or audited twice.
    again = erasure.erase(domain, request.id, "erasure-run-2")
    assert again.erased == 0 and len(audit(any_database)) == len(entries)


@pytest.mark.parametrize("domain", ["email_blacklist", "meal_plans"])
def test_an_archiving_domain_archives_the_subjects_rows_under_her_key_first(any_database, erasure, rows, domain):
    request = erasure.requests.request(ANN)
    part = erasure.erase(domain, request.id, "erasure-run")
    erased = len(rows[domain]["ann"]) - len(kept_by_policy(rows, domain))
    assert part.archived == part.erased == erased
    hashed = erasure.ann_key_hash()
    [ann_key] = erasure.keys.live_subject_keys({hashed}).values()
    for entry in audit(any_database, "erased"):
        key = erasure.archive_store.key_of(entry["archive_uri"])
        if domain == "meal_plans":  # the PDF's encrypted copy, named by the audit entry
            sealed = erasure.archive_store.get(key)
            assert key_id_of(sealed) == ann_key.key_id
            assert opened_pdf(sealed, ann_key.key, domain).startswith(b"%PDF")
            continue
        manifest = read_manifest(erasure.archive_store.get(key + ".manifest.json"))
        read = dict(read_rows(erasure.archive_store.get(key), manifest, {ann_key.key_id: ann_key.key}))
        assert read[entry["record_id"]]["email"].lower() == ANN.lower()
        assert manifest["segments"] == [{"key": ann_key.key_id, "rows": erased}]


# legal holds -----------------------------------------------------------------------------------------
def test_held_records_stay_each_with_one_legal_hold_conflict_item(any_database, erasure, rows):
    request = erasure.requests.request(ANN)
    held_quiz, held_plan = rows["quiz_responses"]["ann"][1], rows["meal_plans"]["ann"][0]
    place_hold(any_database, "quiz_responses", held_quiz)
    place_hold(any_database, "meal_plans", held_plan)
    before = {name: table_rows(any_database, name) for name in DOMAINS}

    parts = {p.domain: p for p in erasure.erase_all(request.id, "erasure-run-1")}
    erasure.erase_all(request.id, "erasure-run-2")  # a rerun before completion adds no second item

    assert parts["quiz_responses"].held == [held_quiz] and parts["meal_plans"].held == [held_plan]
    assert parts["quiz_responses"].erased == 1 and parts["meal_plans"].erased == 1
    assert table_rows(any_database, "quiz_responses")[held_quiz] == before["quiz_responses"][held_quiz]
    assert table_rows(any_database, "meal_plans")[held_plan] == before["meal_plans"][held_plan]
    assert erasure.blob_store.get(before["meal_plans"][held_plan]["pdf_blob_key"]) is not None
    items = [i for i in ManualQueue(any_database).list() if i.reason == "legal_hold_conflict"]
    assert sorted((i.domain, i.record_id, i.status) for i in items) == sorted(
        [("quiz_responses", held_quiz, "open"), ("meal_plans", held_plan, "open")])
    assert all(f"erasure request {request.id}" in i.detail and "@" not in i.detail for i in items)
    assert {i.attempts for i in items} == {2}
    assert not {held_quiz, held_plan} & {e["record_id"] for e in audit(any_database, "erased")}

    outcome = erasure.subject_erasure.complete(request.id, list(parts.values()), "erasure-run-1")
    assert outcome.status == "partially_blocked" and outcome.keys_destroyed == 1 and not outcome.key_kept_for_hold
    assert "1 kept under legal hold" in outcome.outcome and "@" not in outcome.outcome
    assert erasure.requests.get(request.id).status == "partially_blocked"
    no_address_in_audit(any_database)


# dry run ------------------------------------------------------------------------------------------------
def test_a_dry_run_changes_nothing_anywhere_not_even_a_key(any_database, erasure, rows):
    request = erasure.requests.request(ANN)
    place_hold(any_database, "quiz_responses", rows["quiz_responses"]["ann"][0])
    dump = dump_all_tables(any_database)
    folders = folder_files(erasure.folder)
    assert data_key_rows(any_database) == []  # Ann was never archived: a real run would make her key

    parts = erasure.erase_all(request.id, "dry-run", dry_run=True)

    assert [(p.domain, p.erased, len(p.held), p.dry_run) for p in parts] == [
        ("quiz_responses", 1, 1, True), ("magic_link_tokens", 2, 0, True), ("meal_plans", 2, 0, True),
        ("email_blacklist", 1, 0, True)]  # the young entry is kept until its deadline
    assert dump_all_tables(any_database) == dump
    assert folder_files(erasure.folder) == folders


# an object that will not go ----------------------------------------------------------------------------
def test_a_pdf_the_store_refuses_to_delete_keeps_the_request_open_until_a_rerun_finishes(
        any_database, tmp_path, hot_bucket):
    """The S3 server itself refuses (a bucket policy denying s3:DeleteObject on Ann's PDF)."""
    erasure = Erasure(any_database, tmp_path, blob_store=S3BlobStore(hot_bucket, ""))
    rows = insert_subject_rows(any_database, erasure.blob_store, ann_recently_blacklisted=False)
    stuck = rows["meal_plans"]["ann"][0]
    deny_deletes(hot_bucket, ["plans/ann-new.pdf"])
    request = erasure.requests.request(ANN)

    parts = erasure.erase_all(request.id, "erasure-run-1")

    meal_plans = next(p for p in parts if p.domain == "meal_plans")
    assert (meal_plans.erased, meal_plans.failed) == (1, 1)
    with pytest.raises(ErasureIncomplete) as incomplete:
        erasure.subject_erasure.complete(request.id, parts, "erasure-run-1")
    assert str(incomplete.value) == (f"erasure request {request.id}: 1 records wait in the manual queue; "
                                     "the request stays open until they are done")
    assert erasure.requests.get(request.id).status == "received"
    assert request_row(any_database, request.id)["email"] is not None  # the address is still needed
    hashed = erasure.ann_key_hash()
    assert erasure.keys.live_subject_keys({hashed}), "the key was destroyed with a record still to erase"
    assert audit(any_database, "key_destroyed") == []
    assert table_rows(any_database, "meal_plans")[stuck]["email"] == ANN  # the row stays as it was
    queue = ManualQueue(any_database)
    [item] = queue.list()
    assert (item.domain, item.record_id, item.reason, item.status) == (
        "meal_plans", stuck, "blob_delete_failed", "open")

    allow_deletes(hot_bucket)
    queue.resolve(item.id, "dana", "the bucket policy was lifted")
    again = erasure.erase_all(request.id, "erasure-run-2")
    outcome = erasure.subject_erasure.complete(request.id, again, "erasure-run-2")

    assert outcome.status == "completed" and outcome.keys_destroyed == 1
    assert erasure.blob_store.get("plans/ann-new.pdf") is None
    assert table_rows(any_database, "meal_plans")[stuck]["pdf_blob_key"] is None
    erased = [e["record_id"] for e in audit(any_database, "erased")]
    everything_of_ann = [rid for domain in DOMAINS for rid in rows[domain]["ann"]]
    assert sorted(erased) == sorted(everything_of_ann)  # each record erased once, across both runs
    assert len(audit(any_database, "key_destroyed")) == 1
    assert erasure.keys.live_subject_keys({hashed}) == {}
    no_address_in_audit(any_database)


# completion --------------------------------------------------------------------------------------------
def test_completing_twice_completes_once(any_database, erasure, erasable_rows):
    request = erasure.requests.request(ANN)
    parts = erasure.erase_all(request.id, "erasure-run-1")
    first = erasure.subject_erasure.complete(request.id, parts, "erasure-run-1")
    completed = request_row(any_database, request.id)

    second = erasure.subject_erasure.complete(request.id, erasure.erase_all(request.id, "erasure-run-2"),
                                              "erasure-run-2")

    assert (first.status, first.keys_destroyed) == ("completed", 1)
    assert (second.status, second.keys_destroyed, second.outcome) == ("completed", 0, first.outcome)
    assert request_row(any_database, request.id) == completed
    assert completed["email"] is None and completed["subject_hash"] == erasure.ann_key_hash()
    [destroyed] = audit(any_database, "key_destroyed")
    assert destroyed["run_id"] == "erasure-run-1" and destroyed["detail"] == f"erasure request {request.id}"
    assert [r["destroyed_at"] is not None for r in data_key_rows(any_database) if r["subject_hash"]] == [True]


def test_two_runs_completing_the_same_request_at_once_complete_it_once(pg_database, tmp_path):
    """Two runs of one request reach their outcome step together (the CLI beside the sensor's run):
    one destroys the key and completes the request; the other reports the request as it ended."""
    erasure = Erasure(pg_database, tmp_path)
    insert_subject_rows(pg_database, erasure.blob_store, ann_recently_blacklisted=False)
    request = erasure.requests.request(ANN)
    parts = erasure.erase_all(request.id, "erasure-run")
    outcomes, errors = [], []

    def complete(run_id: str) -> None:
        try:
            outcomes.append(erasure.subject_erasure.complete(request.id, parts, run_id))
        except Exception as exc:  # reported below
            errors.append(exc)

    blocker = pg_database.engine.raw_connection()  # holds the request's row: both runs queue behind it
    try:
        with blocker.cursor() as cursor:
            cursor.execute("SELECT id FROM gdpr_erasure_requests WHERE id = %s FOR UPDATE", (request.id,))
        threads = [threading.Thread(target=complete, args=(f"run-{i}",)) for i in (1, 2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and waiting_for_the_request(pg_database) < 2:
            time.sleep(0.02)
        assert waiting_for_the_request(pg_database) == 2
    finally:
        blocker.rollback()
        blocker.close()
    for thread in threads:
        thread.join(30)

    assert len(audit(pg_database, "key_destroyed")) == 1
    assert erasure.requests.get(request.id).status == "completed"
    assert not errors, [f"{type(e).__name__}: {e}" for e in errors]
    assert sorted(o.keys_destroyed for o in outcomes) == [0, 1]
    assert {o.status for o in outcomes} == {"completed"}


def waiting_for_the_request(database) -> int:
    with database.engine.connect() as connection:
        return connection.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%%gdpr_erasure_requests%%FOR UPDATE%%'").scalar_one()


def test_a_subject_never_archived_has_no_key_to_destroy_and_the_request_still_completes(any_database, erasure, rows):
    # A scheduled run archives (and deletes) the old blacklist entries: Ann and Bob have keys now.
    assert erasure.engine("email_blacklist").run("retention-run").acted.acted_on == 2
    keys_before = data_key_rows(any_database)
    assert len([k for k in keys_before if k["subject_hash"]]) == 2
    now = any_database.now()
    carol = "Carol.Quiz@example.com"  # only in domains that archive nothing
    quiz = _insert(any_database, "quiz_responses", [{"session_id": new_uuid(any_database), "email": carol.lower(),
                                                     "answers": {"goal": "keto"},
                                                     "created_at": any_database.bind_time(now)}])
    tokens = _insert(any_database, "magic_link_tokens", [{
        "email": carol, "token_hash": "c" * 64, "created_at": any_database.bind_time(now),
        "expires_at": any_database.bind_time(now + timedelta(minutes=15))}])
    request = erasure.requests.request(carol)

    outcome = erasure.run(request.id, "erasure-run")

    assert outcome.status == "completed" and outcome.keys_destroyed == 0 and not outcome.key_kept_for_hold
    assert data_key_rows(any_database) == keys_before  # none made for her, none of the others' destroyed
    assert audit(any_database, "key_destroyed") == []
    assert {e["record_id"] for e in audit(any_database, "erased")} == {*quiz, *tokens}
    assert request_row(any_database, request.id)["email"] is None
    with pytest.raises(ErasureRefused, match="its address is gone"):
        erasure.subject_erasure.is_subject(request.id)
    no_address_in_audit(any_database)


# archives written before the encrypted format ------------------------------------------------------------
def test_copies_archived_in_clear_by_version_1_are_not_left_readable_by_a_completed_erasure(
        any_database, erasure, erasable_rows):
    """Before the encrypted archives (format v1), scheduled runs archived Ann's old blacklist entry as
    gzip'd JSON lines and copied her old PDF as it was. An erasure that completes saying "archived
    copies made unreadable" must leave no copy of hers readable, whatever format it was written in."""
    store, now, rows = erasure.archive_store, any_database.now(), erasable_rows
    listed = rows["email_blacklist"]["ann"][1]  # 95 days old: archived and deleted by a v1 run
    entry = {k: None if v is None else str(v) for k, v in table_rows(any_database, "email_blacklist")[listed].items()}
    key, data, manifest = encode_v1([entry], [listed])
    store.put(key, data)
    store.put(key + ".manifest.json", manifest)
    plan = rows["meal_plans"]["ann"][1]  # 100 days old: its PDF copied to the archive, in clear, by a v1 run
    pdf = erasure.blob_store.get("plans/ann-old.pdf")
    store.put_cold(f"meal_plans/blobs/{plan}", pdf)
    assert erasure.blob_store.delete_many(["plans/ann-old.pdf"]) == {}
    with any_database.engine.begin() as connection:
        connection.exec_driver_sql(f"DELETE FROM email_blacklist WHERE id = '{listed}'")
        connection.exec_driver_sql("UPDATE meal_plans SET pdf_blob_key = NULL, pdf_deleted_at = CURRENT_TIMESTAMP "
                                   f"WHERE id = '{plan}'")
        write_entries(connection, [
            AuditStamp("email_blacklist", "deleted", "v1-run", "2026-08-01.1", archive_uri=store.uri(key)).row(
                listed, any_database.bind_time(now)),
            AuditStamp("meal_plans", "redacted", "v1-run", "2026-08-01.1",
                       archive_uri=store.uri(f"meal_plans/blobs/{plan}")).row(plan, any_database.bind_time(now))])
    assert ANN.encode() in gzip.decompress(store.get(key))  # what version 1 left: her address, readable

    outcome = erasure.run(erasure.requests.request(ANN).id, "erasure-run")

    assert outcome.status == "completed" and "archived copies made unreadable" in outcome.outcome
    readable = [f"email_blacklist/{rid}" for rid, row in read_rows(
        store.get(key), read_manifest(store.get(key + ".manifest.json")), {}) if row is not None]
    if store.get(f"meal_plans/blobs/{plan}") == pdf:
        readable.append(f"meal_plans/{plan} (its PDF)")
    assert readable == [], "the erased subject's copies archived by version 1 still read"


def test_a_retry_of_the_erasures_queue_item_does_not_resolve_it_while_the_store_still_refuses(
        any_database, tmp_path, hot_bucket):
    """The operator's workflow for a queue item (`retention queue retry`): the record goes through the
    domain's engine again, and the item is resolved only once nothing of it is left to do. For an
    erasure's item, what is left to do is the erasure: a young meal plan whose PDF still will not
    go is not done, even though no retention deadline has passed."""
    erasure = Erasure(any_database, tmp_path, blob_store=S3BlobStore(hot_bucket, ""))
    rows = insert_subject_rows(any_database, erasure.blob_store)
    stuck = rows["meal_plans"]["ann"][0]  # bought 3 days ago: not due for the scheduled retention
    deny_deletes(hot_bucket, ["plans/ann-new.pdf"])
    request = erasure.requests.request(ANN)
    erasure.erase_all(request.id, "erasure-run-1")
    queue = ManualQueue(any_database, erasure.policies.policy_version)
    [item] = queue.list()

    outcome = retry_item(queue, queue.retryable(item.id), erasure.engine("meal_plans"), "retry-1", "dana",
                         erasure=erasure.subject_erasure)

    assert erasure.blob_store.get("plans/ann-new.pdf") is not None  # the store still refuses: nothing was done
    assert table_rows(any_database, "meal_plans")[stuck]["email"] == ANN
    assert not outcome.resolved and queue.get(item.id).status == "open", outcome.message


def test_the_outcome_counts_what_every_run_of_the_request_erased(any_database, erasure, rows):
    """A run killed after some domains (here: quiz_responses erased by a first run that never
    completed) and its rerun: the outcome counts the records of both, from the audit log."""
    request = erasure.requests.request(ANN)
    first = erasure.erase("quiz_responses", request.id, "killed-run")
    assert first.erased == len(rows["quiz_responses"]["ann"])

    outcome = erasure.run(request.id, "rerun")

    erased = {entry["domain"] for entry in audit(any_database, "erased")}
    assert erased == {"quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist"}
    assert f"quiz_responses: {len(rows['quiz_responses']['ann'])} erased" in outcome.outcome
    for domain in ("magic_link_tokens", "email_blacklist"):
        count = len([e for e in audit(any_database, "erased") if e["domain"] == domain])
        assert f"{domain}: {count} erased" in outcome.outcome


# kept until their deadline by policy, and what else is left ------------------------------------------------
def age_blacklist_entry(database, record_id: str, days: int) -> None:
    """Moves an entry's clock back: the database's own clock cannot be moved forward."""
    with database.engine.begin() as connection:
        connection.execute(sa.text("UPDATE email_blacklist SET created_at = :at WHERE id = :id"), {
            "at": database.bind_time(database.now() - timedelta(days=days)), "id": record_id})


def test_the_blacklist_keeps_the_young_entry_and_the_request_completes_once_it_has_gone(any_database, erasure, rows):
    young, old = rows["email_blacklist"]["ann"]
    listed = table_rows(any_database, "email_blacklist")[young]
    request = erasure.requests.request(ANN)

    outcome = erasure.run(request.id, "erasure-run-1")

    assert outcome.status == "partially_blocked" and outcome.keys_destroyed == 1
    [kept] = outcome.kept_by_policy
    assert (kept.domain, kept.record_ids) == ("email_blacklist", (young,))
    listed_at = listed["created_at"]  # SQLite hands text back to a plain SELECT
    listed_at = datetime.fromisoformat(listed_at) if isinstance(listed_at, str) else listed_at
    assert kept.until == any_database.read_time(listed_at) + timedelta(days=90)
    assert "email_blacklist: 1 kept until deadline by policy" in outcome.outcome and "@" not in outcome.outcome
    assert set(table_rows(any_database, "email_blacklist")) == {young, *rows["email_blacklist"]["others"]}
    assert ManualQueue(any_database).list() == []  # nothing for a person: the policy decides
    answered = erasure.requests.get(request.id)
    assert answered.details.recheck_after == kept.until and answered.kept_by_policy == (kept,)
    assert request_row(any_database, request.id)["email"] is None  # the address goes all the same

    # Run again before the deadline: by the request's hash (its address is gone), nothing goes early.
    again = erasure.run(request.id, "erasure-run-2")
    assert again.status == "partially_blocked" and table_rows(any_database, "email_blacklist")[young] == listed

    age_blacklist_entry(any_database, young, 90)  # its deadline has come
    done = erasure.run(request.id, "recheck-run")

    assert done.status == "completed" and "checked again: nothing of the subject is left" in done.outcome
    assert young not in table_rows(any_database, "email_blacklist")
    ended = erasure.requests.get(request.id)
    assert ended.completed_at == answered.completed_at and ended.details.completed_on_recheck_at is not None
    assert ended.kept_by_policy == (kept,)  # what was kept stays on record
    # Archived as it went, under a key made then, which the completion destroyed.
    assert done.keys_destroyed == 1 and erasure.keys.live_subject_keys({erasure.ann_key_hash()}) == {}
    assert sorted(e["record_id"] for e in audit(any_database, "erased", "email_blacklist")) == sorted([young, old])
    assert erasure.run(request.id, "later-run").keys_destroyed == 0  # complete: nothing more to do
    no_address_in_audit(any_database)


def test_a_row_written_in_a_new_spelling_during_the_run_keeps_the_request_open_for_a_rerun(
        any_database, erasure, erasable_rows):
    request = erasure.requests.request(ANN)
    parts = erasure.erase_all(request.id, "erasure-run-1")
    # The app writes her address again, in a spelling no row had, after the domains' steps.
    [late] = _insert(any_database, "quiz_responses", [{
        "session_id": new_uuid(any_database), "email": "\u200b" + "ＡＮＮ.subject@example.ORG ",
        "answers": {"goal": "keto"}, "created_at": any_database.bind_time(any_database.now())}])

    with pytest.raises(ErasureIncomplete, match=f"1 records still name the subject.*quiz_responses/{late}"):
        erasure.subject_erasure.complete(request.id, parts, "erasure-run-1")

    assert erasure.requests.get(request.id).status == "received"
    assert audit(any_database, "key_destroyed") == []
    outcome = erasure.run(request.id, "erasure-run-2")
    assert outcome.status == "completed" and late not in table_rows(any_database, "quiz_responses")


def test_a_held_entry_before_its_deadline_gets_its_conflict_item_from_the_check(any_database, erasure, rows):
    young = rows["email_blacklist"]["ann"][0]
    place_hold(any_database, "email_blacklist", young)
    request = erasure.requests.request(ANN)

    outcome = erasure.run(request.id, "erasure-run")

    assert outcome.status == "partially_blocked" and outcome.kept_by_policy == ()
    [item] = ManualQueue(any_database).list()
    assert (item.domain, item.record_id, item.reason) == ("email_blacklist", young, "legal_hold_conflict")
    assert "1 kept under legal hold" in outcome.outcome


def test_keys_named_by_the_legacy_hash_are_destroyed_with_the_subjects(any_database, erasure):
    """Before the one normalisation, 'Straße@Example.de' named its key by 'straße@example.de'
    (stripped, lower case); today by 'strasse@example.de'. Erasing her destroys both."""
    from retention_pipelines.engine.archive.keys import legacy_subject_hash

    stored = "Straße@Example.de"
    legacy = legacy_subject_hash(stored, HASH_KEY)
    assert legacy != erasure.keys.subject_hash(stored)
    erasure.keys.for_subjects({legacy})  # as an archive written by the earlier version left it
    _insert(any_database, "email_blacklist", [{"email": stored, "reason": "chargeback",
                                               "created_at": any_database.bind_time(
                                                   any_database.now() - timedelta(days=95))}])
    request = erasure.requests.request("STRASSE@example.de")

    outcome = erasure.run(request.id, "erasure-run")

    assert outcome.status == "completed" and outcome.keys_destroyed == 2
    assert erasure.keys.live_subject_keys({legacy, erasure.keys.subject_hash(stored)}) == {}
