"""Audit anchors that cannot be rewritten: one object per anchor, never written over, locked under
the archive's Object Lock mode, each recorded with its SHA-256; the verifier reports an anchor
missing from the store, replaced there, or slipped in, and still reads the day anchors written
before. Against a folder and moto's S3 server, on PostgreSQL and SQLite."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta

import boto3
import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError

from retention_pipelines import schema
from retention_pipelines.engine.audit import anchor as anchoring
from retention_pipelines.engine.audit.anchor import anchor
from retention_pipelines.engine.audit.anchor_check import MISSING, REPLACED, UNRECORDED
from retention_pipelines.engine.audit.verify import verify
from retention_pipelines.stores import archive_store_from_url
from retention_pipelines.stores.archive import DeleteRefused, LocalArchiveStore, ObjectExists
from retention_pipelines_tests.support.audit_rows import execute, relink, write_audit_rows


@pytest.fixture
def written(any_database):
    """Ten entries, each in its domain's chain as it is written."""
    write_audit_rows(any_database, 10)
    return any_database


@pytest.fixture
def written_pg(pg_database):
    write_audit_rows(pg_database, 10)
    return pg_database


@pytest.fixture
def lock_bucket_url(s3_env) -> str:
    bucket = f"locked-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return f"s3://{bucket}/retention"


def recorded(database) -> dict[str, str]:
    with database.connect() as connection:
        rows = connection.execute(sa.select(schema.audit_anchors.c.object_key, schema.audit_anchors.c.sha256))
        return {key: sha256 for key, sha256 in rows}


def problems(verification) -> list[tuple[str, str]]:
    return [(link.kind, link.message) for link in verification.broken]


def s3_object(url: str, key: str) -> tuple[str, str]:
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    return bucket, f"{prefix}/{key}"


# one object per anchor, recorded ---------------------------------------------------------------------
def test_each_anchor_is_an_object_of_its_own_recorded_with_its_hash(written, tmp_path):
    store = LocalArchiveStore(tmp_path / "archive")
    keys = [anchor(written, store) for _ in range(3)]  # the same second, on SQLite's clock
    assert len(set(keys)) == 3 and sorted(store.keys("audit_anchors/")) == sorted(keys)
    assert recorded(written) == {key: hashlib.sha256(store.get(key)).hexdigest() for key in keys}
    verification = verify(written, store)
    assert verification.intact, verification.broken


def test_two_anchors_the_same_day_on_s3_are_two_objects_both_kept(written_pg, s3_archive_url):
    store = archive_store_from_url(s3_archive_url)
    first = anchor(written_pg, store)
    first_bytes = store.get(first)
    write_audit_rows(written_pg, 2, start=100)
    second = anchor(written_pg, store)
    assert first[:len("audit_anchors/YYYY/MM/DD/")] == second[:len("audit_anchors/YYYY/MM/DD/")]
    assert list(store.keys("audit_anchors/")) == sorted([first, second])
    assert store.get(first) == first_bytes
    # alpha's five entries are four batches (run and archive object); the later write adds one.
    assert [json.loads(store.get(key))["heads"][0]["last_seq"] for key in (first, second)] == [4, 5]
    assert verify(written_pg, store).intact


def test_an_anchor_never_writes_over_an_object_and_leaves_no_record_when_refused(written, tmp_path, monkeypatch):
    store = LocalArchiveStore(tmp_path / "archive")
    taken = "audit_anchors/2026/01/01/000000.000000Z-000000000000.json"
    store.put_new(taken, b"already here")
    monkeypatch.setattr(anchoring, "anchor_key", lambda written_at: taken)
    with pytest.raises(ObjectExists):
        anchor(written, store)
    assert store.get(taken) == b"already here"
    assert recorded(written) == {}


@pytest.mark.parametrize("bucket", ["plain", "locked"])
def test_a_put_new_on_s3_is_refused_where_the_key_exists(bucket, s3_archive_url, request):
    url = s3_archive_url if bucket == "plain" else request.getfixturevalue("lock_bucket_url")
    store = archive_store_from_url(url)
    store.put_new("audit_anchors/a.json", b"first")
    with pytest.raises(ObjectExists) as refused:
        store.put_new("audit_anchors/a.json", b"second")
    assert store.uri("audit_anchors/a.json") in str(refused.value)
    assert store.get("audit_anchors/a.json") == b"first"
    assert store.keys_written_over("audit_anchors/") == set()


# Object Lock ---------------------------------------------------------------------------------------------
def test_an_anchor_on_an_object_lock_bucket_is_locked_until_written_plus_keep_for(written_pg, lock_bucket_url):
    store = archive_store_from_url(lock_bucket_url, object_lock_mode="COMPLIANCE")
    before = written_pg.now()
    key = anchor(written_pg, store, keep_for=timedelta(days=400))
    lock = store.lock(key)
    assert lock.mode == "COMPLIANCE" and lock.in_force(written_pg.now())
    # S3 keeps the date to the second.
    assert before + timedelta(days=400) - timedelta(seconds=1) <= lock.retain_until
    assert lock.retain_until <= written_pg.now() + timedelta(days=400)

    bucket, full_key = s3_object(lock_bucket_url, key)
    s3 = boto3.client("s3")
    [version] = s3.list_object_versions(Bucket=bucket, Prefix=full_key)["Versions"]
    with pytest.raises(ClientError) as denied:
        s3.delete_object(Bucket=bucket, Key=full_key, VersionId=version["VersionId"])
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(DeleteRefused):
        store.delete(key)
    with pytest.raises(ObjectExists):
        store.put_new(key, b"{}")
    original = store.get(key)

    # A plain put, from outside, adds a version over it; the locked version keeps what was
    # anchored, and the verifier reports the anchor replaced.
    s3.put_object(Bucket=bucket, Key=full_key, Body=original)
    assert s3.get_object(Bucket=bucket, Key=full_key, VersionId=version["VersionId"])["Body"].read() == original
    assert problems(verify(written_pg, store)) == [
        (REPLACED, f"anchor {key}, written at {json.loads(original)['written_at']}, was replaced: the store keeps "
                   "more than one version of it")]


def test_the_default_lock_is_ten_years(written_pg, lock_bucket_url):
    store = archive_store_from_url(lock_bucket_url, object_lock_mode="GOVERNANCE")
    key = anchor(written_pg, store)
    written = written_pg.now()
    assert abs(store.lock(key).retain_until - (written + timedelta(days=3653))) < timedelta(minutes=1)


def test_no_lock_without_an_object_lock_mode(written_pg, lock_bucket_url):
    store = archive_store_from_url(lock_bucket_url)
    key = anchor(written_pg, store)
    assert store.lock(key) is None


# the verifier ----------------------------------------------------------------------------------------------
def test_an_anchor_deleted_from_the_store_is_reported_missing(written_pg, s3_archive_url):
    store = archive_store_from_url(s3_archive_url)
    kept, gone = anchor(written_pg, store), anchor(written_pg, store)
    bucket, full_key = s3_object(s3_archive_url, gone)
    boto3.client("s3").delete_object(Bucket=bucket, Key=full_key)
    [(kind, message)] = problems(verify(written_pg, store))
    assert kind == MISSING and gone in message and "missing from the archive store" in message
    assert kept not in message


def test_an_anchor_whose_bytes_were_replaced_is_reported(written_pg, s3_archive_url):
    store = archive_store_from_url(s3_archive_url)
    key = anchor(written_pg, store)
    document = json.loads(store.get(key))
    document["verified_intact"] = True  # still a readable anchor that agrees with the chain
    bucket, full_key = s3_object(s3_archive_url, key)
    boto3.client("s3").put_object(Bucket=bucket, Key=full_key, Body=json.dumps(document).encode())
    verification = verify(written_pg, store)
    [(kind, message)] = problems(verification)
    assert kind == REPLACED and key in message and "no longer have the SHA-256 recorded" in message
    assert verification.anchors_checked == 2  # its heads are still checked against the chains


def test_an_anchor_the_record_does_not_know_is_reported(written, tmp_path):
    store = LocalArchiveStore(tmp_path / "archive")
    key = anchor(written, store)
    planted = key.replace(".json", "0.json")
    store.put_new(planted, store.get(key))
    [(kind, message)] = problems(verify(written, store))
    assert kind == UNRECORDED and planted in message and "not in the record of anchors written" in message

    execute(written, "DELETE FROM retention_audit_anchors")  # a record deleted: every anchor unknown
    assert [kind for kind, _ in problems(verify(written, store))] == [UNRECORDED, UNRECORDED]


def test_a_local_anchor_replaced_in_the_folder_is_reported(written, tmp_path):
    store = LocalArchiveStore(tmp_path / "archive")
    key = anchor(written, store)
    (tmp_path / "archive" / key).write_bytes(store.get(key).replace(b'"verified_intact"', b'"verified_intact" '))
    assert [kind for kind, _ in problems(verify(written, store))] == [REPLACED]
    (tmp_path / "archive" / key).unlink()
    assert [kind for kind, _ in problems(verify(written, store))] == [MISSING]


def test_a_day_anchor_of_the_earlier_format_is_read_and_asks_for_no_record(written, tmp_path):
    store = LocalArchiveStore(tmp_path / "archive")
    key = anchor(written, store)
    day_key = "audit_anchors/2025/12/31.json"
    store.put(day_key, store.get(key))
    execute(written, "DELETE FROM retention_audit_anchors WHERE object_key = :key", key=key)
    store.delete(key)
    verification = verify(written, store)
    assert verification.intact, verification.broken
    assert verification.anchors_checked == 2  # alpha's and beta's heads, from the day anchor

    # The chains are still checked against it: a chain recomputed in the database is caught.
    execute(written, "UPDATE retention_audit_batches SET action = 'kept' WHERE domain = 'alpha'")
    relink(written, "alpha")
    assert verify(written).intact
    [link] = verify(written, store).broken
    assert link.kind == "anchor_mismatch" and day_key in link.message
