"""Restore of meal plans redacted by a real run (PostgreSQL, PDFs and archive on moto's S3): each
PDF written back with the bytes it had and its row's redacted columns back, with one `restored`
audit entry; refused for an erased subject; a blob store that will not take the PDF leaves the row
redacted and no entry; a second restore restores nothing. Copies are read a chunk at a time (a
200 MB PDF too), a damaged copy is refused with nothing written back, and copies archived whole
by version 2 of the format still restore."""

from __future__ import annotations

import tracemalloc
from datetime import timedelta

import boto3
import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError

from retention_pipelines import schema
from retention_pipelines.engine.archive.chunked import key_id_of
from retention_pipelines.engine.archive.keys import DataKey
from retention_pipelines.engine.gdpr.erasure_run import SubjectErasure
from retention_pipelines.engine.gdpr.requests import ErasureRequests
from retention_pipelines.engine.retention.restore import RestoreRefused
from retention_pipelines.engine.retention.restore_redacted import DAMAGED, RedactionRestorer
from retention_pipelines.stores import StoreUnavailable
from retention_pipelines.stores.blob import S3BlobStore
from retention_pipelines_tests.support.app_rows import _insert, insert_meal_plans_at, meal_plan_rows
from retention_pipelines_tests.support.archives import (
    TAMPERINGS,
    chunk_records,
    configured_keys,
    replace_copy,
    sealed_whole,
    tampered,
)
from retention_pipelines_tests.support.engines import meal_plans_engine
from retention_pipelines_tests.support.hot_bucket import hot_keys, put_large_pdf, stored_sha256

ANN, BOB, CARL = "ann@example.com", "bob@example.com", "carl@example.com"


class RefusingPutsS3:
    """A real boto3 client (on moto's server) whose PutObject is refused, as a bucket policy
    without s3:PutObject refuses it."""

    def __init__(self):
        self.client = boto3.client("s3")

    def __getattr__(self, name):
        return getattr(self.client, name)

    def put_object(self, **kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject")


def pdf_bytes(bucket: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in hot_keys(bucket)}


def entries(database, action: str) -> list[dict]:
    with database.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(
            sa.select(schema.audit_log).where(schema.audit_log.c.action == action))]


@pytest.fixture
def redacted(pg_database, policies, s3_archive_url, hot_bucket):
    """Three meal plans (Ann, Bob, Carl), each with its own PDF, and one young one; redacted by run
    `wrong-run` in batches of two (so two archived batches): the engine, {email: id}, the PDFs and
    the rows as they were."""
    now = pg_database.now()
    s3 = boto3.client("s3")
    keys = [f"plans/{name}.pdf" for name in ("ann", "bob", "carl", "young")]
    for index, key in enumerate(keys):
        s3.put_object(Bucket=hot_bucket, Key=key, Body=b"%PDF-1.4\n" + bytes(range(256)) * (index + 1))
    ages = [timedelta(days=95), timedelta(days=93, hours=5), timedelta(days=91), timedelta(days=10)]
    ids = _insert(pg_database, "meal_plans", [
        {"payment_id": f"pay_{index}", "email": email, "pdf_blob_key": key,
         "created_at": now - age} for index, (email, key, age) in
        enumerate(zip((ANN, BOB, CARL, "dora@example.com"), keys, ages))])
    pdfs, rows = pdf_bytes(hot_bucket), meal_plan_rows(pg_database)
    engine = meal_plans_engine(policies, pg_database, s3_archive_url, S3BlobStore(hot_bucket, ""), batch_size=2)
    assert engine.run("wrong-run").acted.acted_on == 3
    assert hot_keys(hot_bucket) == {keys[3]}
    return engine, dict(zip((ANN, BOB, CARL), ids)), pdfs, rows


def test_every_redacted_plan_gets_its_pdf_and_its_row_back_once(pg_database, redacted, hot_bucket):
    engine, ids, pdfs, rows = redacted
    report = RedactionRestorer(engine).restore("wrong-run", None, "ops-ines", "restore-1")

    assert sorted(report.restored) == sorted(ids.values()) and report.refused == {}
    assert report.deleted_in_run == 3 and report.verb == "redacted" and report.still_due == 3
    assert pdf_bytes(hot_bucket) == pdfs  # byte for byte
    assert meal_plan_rows(pg_database) == rows
    restored = entries(pg_database, "restored")
    assert sorted(e["record_id"] for e in restored) == sorted(ids.values())
    assert {(e["actor"], e["run_id"], e["detail"]) for e in restored} == {
        ("ops-ines", "restore-1", "restored: redacted by run wrong-run")}
    redactions = {e["record_id"]: e["archive_uri"] for e in entries(pg_database, "redacted")}
    assert {e["record_id"]: e["archive_uri"] for e in restored} == redactions

    again = RedactionRestorer(engine).restore("wrong-run", None, "ops-ines", "restore-2")
    assert again.restored == []
    assert set(again.refused.values()) == {"it is not redacted (restored already?)"}
    assert len(entries(pg_database, "restored")) == 3
    assert pdf_bytes(hot_bucket) == pdfs and meal_plan_rows(pg_database) == rows

    # The next run redacts them again (they are past their deadline); that run is the one to restore from.
    assert engine.run("second-run").acted.acted_on == 3
    stale = RedactionRestorer(engine).restore("wrong-run", None, "ops", "restore-3")
    assert stale.restored == [] and set(stale.refused.values()) == {
        "redacted again by run second-run: restore from that run"}
    assert sorted(RedactionRestorer(engine).restore("second-run", None, "ops", "restore-4").restored) == \
        sorted(ids.values())
    assert pdf_bytes(hot_bucket) == pdfs and meal_plan_rows(pg_database) == rows


def test_an_erased_subjects_plan_is_never_restored(pg_database, redacted, policies, hot_bucket):
    engine, ids, pdfs, rows = redacted
    keys = configured_keys(pg_database)
    requests = ErasureRequests(pg_database, keys.hash_key)
    request = requests.request(ANN)
    erasure = SubjectErasure(requests, keys, engine.archive_store, policies.policy_version, [engine.policy])
    part = erasure.erase_domain(engine, request.id, "erasure-run")
    erasure.complete(request.id, [part], "erasure-run")

    report = RedactionRestorer(engine).restore("wrong-run", None, "ops", "restore-1")
    assert sorted(report.restored) == sorted([ids[BOB], ids[CARL]])
    assert report.refused == {ids[ANN]: "its subject was erased on request: never restored"}
    back = meal_plan_rows(pg_database)
    assert back[ids[ANN]][0] is None and back[ids[ANN]][1] is not None  # still redacted
    assert "plans/ann.pdf" not in hot_keys(hot_bucket)
    assert {e["record_id"] for e in entries(pg_database, "restored")} == {ids[BOB], ids[CARL]}


def test_a_destroyed_key_alone_refuses_the_restore(pg_database, redacted, hot_bucket):
    """Even where neither the audit log nor the row says so, a subject whose archive key is destroyed
    cannot be restored: the archived PDF and row can no longer be read."""
    engine, ids, _, _ = redacted
    keys = configured_keys(pg_database)
    with pg_database.engine.begin() as connection:
        keys.destroy_subject(connection, keys.subject_hash(BOB), "shred-run", "test", "destroyed by the test")

    report = RedactionRestorer(engine).restore("wrong-run", [ids[BOB]], "ops", "restore-1")
    assert report.restored == []
    assert report.refused == {ids[BOB]: "its subject was erased (the archive key is destroyed)"}
    assert "plans/bob.pdf" not in hot_keys(hot_bucket) and entries(pg_database, "restored") == []


def test_a_pdf_that_cannot_be_written_back_leaves_its_row_redacted_and_no_entry(pg_database, redacted, hot_bucket,
                                                                                policies, s3_archive_url):
    engine, ids, pdfs, rows = redacted
    refusing = meal_plans_engine(policies, pg_database, s3_archive_url,
                                 S3BlobStore(hot_bucket, "", client=RefusingPutsS3()))
    redacted_rows = meal_plan_rows(pg_database)
    with pytest.raises(StoreUnavailable, match="AccessDenied"):
        RedactionRestorer(refusing).restore("wrong-run", None, "ops", "restore-1")
    assert meal_plan_rows(pg_database) == redacted_rows
    assert entries(pg_database, "restored") == []
    assert hot_keys(hot_bucket) == {"plans/young.pdf"}

    # Once the store takes it, the restore finishes.
    report = RedactionRestorer(engine).restore("wrong-run", None, "ops", "restore-2")
    assert sorted(report.restored) == sorted(ids.values())
    assert meal_plan_rows(pg_database) == rows and pdf_bytes(hot_bucket) == pdfs


def test_another_object_at_the_key_is_never_overwritten(pg_database, redacted, hot_bucket):
    engine, ids, _, _ = redacted
    boto3.client("s3").put_object(Bucket=hot_bucket, Key="plans/carl.pdf", Body=b"a new plan, another purchase")
    report = RedactionRestorer(engine).restore("wrong-run", None, "ops", "restore-1")
    assert sorted(report.restored) == sorted([ids[ANN], ids[BOB]])
    assert report.refused == {ids[CARL]: "another object is at its PDF's key now: nothing was overwritten"}
    assert pdf_bytes(hot_bucket)["plans/carl.pdf"] == b"a new plan, another purchase"
    assert meal_plan_rows(pg_database)[ids[CARL]][0] is None


def test_a_dry_run_writes_nothing_and_a_run_that_redacted_nothing_is_refused(pg_database, redacted, hot_bucket):
    engine, ids, _, _ = redacted
    before, objects = meal_plan_rows(pg_database), hot_keys(hot_bucket)
    report = RedactionRestorer(engine).restore("wrong-run", None, "ops", "restore-1", dry_run=True)
    assert sorted(report.restored) == sorted(ids.values()) and report.dry_run
    assert meal_plan_rows(pg_database) == before and hot_keys(hot_bucket) == objects
    assert entries(pg_database, "restored") == []
    with pytest.raises(RestoreRefused, match="run no-such-run redacted nothing in meal_plans"):
        RedactionRestorer(engine).restore("no-such-run", None, "ops", "r")


def test_a_copy_archived_whole_by_version_2_still_restores(pg_database, redacted, hot_bucket):
    engine, ids, pdfs, rows = redacted
    store = engine.archive_store
    copy = store.get(f"meal_plans/blobs/{ids[BOB]}")
    key_id = key_id_of(copy)
    key = configured_keys(pg_database).unwrap({key_id})[key_id]
    # Bob's PDF as version 2 archived it: encrypted whole, its digest in its batch's manifest.
    replace_copy(store, ids[BOB], sealed_whole(pdfs["plans/bob.pdf"], DataKey(key_id, key)))

    report = RedactionRestorer(engine).restore("wrong-run", None, "ops", "restore-1")
    assert sorted(report.restored) == sorted(ids.values()) and report.refused == {}
    assert pdf_bytes(hot_bucket) == pdfs and meal_plan_rows(pg_database) == rows


@pytest.mark.parametrize("how", [*TAMPERINGS, "flipped byte, manifest as it was"])
def test_a_damaged_copy_is_refused_and_nothing_is_written_back(pg_database, policies, s3_archive_url, hot_bucket,
                                                              how):
    """A copy changed in the archive after it was verified: refused by the restore, dry run or
    not, before anything is written (where the manifests name the damaged bytes too, only the
    copy's authenticated chunks can tell); the other plan of the run is restored."""
    now = pg_database.now()
    keys = ["plans/damaged.pdf", "plans/intact.pdf"]
    digests = [put_large_pdf(hot_bucket, key, 3 * 1024 * 1024 + 17, seed=index) for index, key in enumerate(keys)]
    damaged, intact = insert_meal_plans_at(pg_database, [now - timedelta(days=95)] * 2, keys)
    engine = meal_plans_engine(policies, pg_database, s3_archive_url, S3BlobStore(hot_bucket, ""))
    assert engine.run("redacting").acted.acted_on == 2 and hot_keys(hot_bucket) == set()
    header, records = chunk_records(engine.archive_store.get(f"meal_plans/blobs/{damaged}"))
    replace_copy(engine.archive_store, damaged, b"".join(tampered([header, *records], how.split(",")[0])),
                 in_manifests="manifest as it was" not in how)
    redacted_rows = meal_plan_rows(pg_database)

    for dry_run in (True, False):
        report = RedactionRestorer(engine).restore("redacting", None, "ops", f"restore-{dry_run}", dry_run=dry_run)
        assert report.restored == [intact]
        why = report.refused[damaged]
        assert why.startswith(DAMAGED) if "manifest" not in how else "no archived batch lists" in why
    assert hot_keys(hot_bucket) == {"plans/intact.pdf"} and stored_sha256(hot_bucket, keys[1]) == digests[1]
    assert meal_plan_rows(pg_database)[damaged] == redacted_rows[damaged]
    assert {e["record_id"] for e in entries(pg_database, "restored")} == {intact}


def test_a_200_mb_pdf_is_archived_verified_and_restored_byte_for_byte_a_chunk_at_a_time(
        pg_database, policies, s3_archive_url, hot_bucket):
    size = 200 * 1024 * 1024
    digest = put_large_pdf(hot_bucket, "plans/large.pdf", size, seed=200)
    [record_id] = insert_meal_plans_at(pg_database, [pg_database.now() - timedelta(days=95)], ["plans/large.pdf"])
    engine = meal_plans_engine(policies, pg_database, s3_archive_url, S3BlobStore(hot_bucket, ""))
    # What Python allocates while the run and the restore stream it: parts and chunks, never the PDF.
    tracemalloc.start()
    try:
        report = engine.run("large")
        _, run_peak = tracemalloc.get_traced_memory()
        assert report.acted.acted_on == 1 and hot_keys(hot_bucket) == set()
        tracemalloc.reset_peak()
        restored = RedactionRestorer(engine).restore("large", None, "ops", "restore-large")
        _, restore_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert restored.restored == [record_id] and restored.refused == {}
    assert stored_sha256(hot_bucket, "plans/large.pdf") == digest
    assert run_peak < 64 * 1024 * 1024 and restore_peak < 64 * 1024 * 1024, (run_peak, restore_peak)
