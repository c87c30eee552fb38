"""What archive retention needs of the archive stores: listing with the store's own timestamps,
storage classes, S3 Object Lock on put, deletes that remove every version (or are refused by a
lock), and the settings that configure them. Against a folder and moto's S3 server."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from retention_pipelines.stores import ConfigurationError, archive_store_from_url, load_settings
from retention_pipelines.stores.archive import DeleteRefused, LocalArchiveStore, ObjectLock

BATCH = "email_blacklist/2026/11/29/" + "a" * 40 + ".jsonl.gz"
MANIFEST = BATCH + ".manifest.json"
PDF = "meal_plans/blobs/1234"


def bucket_of(url: str) -> str:
    return url.removeprefix("s3://").split("/", 1)[0]


@pytest.fixture
def lock_bucket_url(s3_env) -> str:
    """A bucket created with Object Lock enabled (which turns versioning on), as production's must be."""
    bucket = f"locked-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return f"s3://{bucket}/retention"


def versions(url: str, key: str) -> list[str]:
    """Every version and delete marker of the store key in the bucket."""
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    listing = boto3.client("s3").list_object_versions(Bucket=bucket, Prefix=f"{prefix}/{key}")
    return [v["VersionId"] for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])
            if v["Key"] == f"{prefix}/{key}"]


def head(url: str, key: str) -> dict:
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    return boto3.client("s3").head_object(Bucket=bucket, Key=f"{prefix}/{key}")


# listing ------------------------------------------------------------------------------------------
def test_local_listing_gives_keys_in_order_with_the_files_mtime(tmp_path):
    store = LocalArchiveStore(tmp_path / "archive")
    for key in (MANIFEST, BATCH, PDF, "reports/2026-11.html", "email_blacklist_old/x"):
        store.put(key, b"x")
    written = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    os.utime(tmp_path / "archive" / BATCH, (written.timestamp(), written.timestamp()))

    listed = dict(store.objects("email_blacklist/"))
    assert list(listed) == [BATCH, MANIFEST]  # the manifest right after its object; no other prefix
    assert listed[BATCH] == written
    assert abs(listed[MANIFEST] - datetime.now(UTC)) < timedelta(minutes=1)
    assert [key for key, _ in store.objects("meal_plans/")] == [PDF]
    assert list(store.objects("nothing_here/")) == []
    assert list(LocalArchiveStore(tmp_path / "no-folder").objects("email_blacklist/")) == []


def test_s3_listing_gives_keys_relative_to_the_prefix_with_last_modified(s3_archive_url):
    store = archive_store_from_url(s3_archive_url)
    before = datetime.now(UTC).replace(microsecond=0)
    for key in (BATCH, MANIFEST, PDF, "reports/2026-11.html"):
        store.put(key, b"x")
    listed = dict(store.objects("email_blacklist/"))
    assert list(listed) == [BATCH, MANIFEST]
    for written in listed.values():
        assert written.tzinfo is not None and written.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= written <= datetime.now(UTC) + timedelta(seconds=1)
    assert [key for key, _ in store.objects("meal_plans/")] == [PDF]


# storage classes and Object Lock on put ---------------------------------------------------------
def test_each_put_gets_its_storage_class(s3_archive_url):
    store = archive_store_from_url(s3_archive_url, "GLACIER", batch_storage_class="STANDARD_IA")
    store.put(BATCH, b"rows")
    store.put(MANIFEST, b"{}")
    store.put_cold(PDF, b"%PDF")
    assert head(s3_archive_url, BATCH)["StorageClass"] == "STANDARD_IA"
    assert head(s3_archive_url, MANIFEST)["StorageClass"] == "STANDARD_IA"
    assert head(s3_archive_url, PDF)["StorageClass"] == "GLACIER"
    # A batch must be read back at once, which its class allows.
    assert store.get(BATCH) == b"rows"


def test_a_put_with_retain_until_sets_the_object_lock(lock_bucket_url):
    store = archive_store_from_url(lock_bucket_url, "GLACIER", batch_storage_class="GLACIER_IR",
                                   object_lock_mode="COMPLIANCE")
    until = (datetime.now(UTC) + timedelta(days=3650)).replace(microsecond=0)
    store.put(BATCH, b"rows", retain_until=until)
    store.put_cold(PDF, b"%PDF", retain_until=until)
    for key, storage_class in ((BATCH, "GLACIER_IR"), (PDF, "GLACIER")):
        found = head(lock_bucket_url, key)
        assert found["ObjectLockMode"] == "COMPLIANCE"
        assert found["ObjectLockRetainUntilDate"] == until
        assert found["StorageClass"] == storage_class
    assert store.lock(BATCH) == ObjectLock("COMPLIANCE", until, False)
    assert store.lock(BATCH).in_force(datetime.now(UTC))
    assert not store.lock(BATCH).in_force(until + timedelta(seconds=1))
    assert store.holds(PDF, b"%PDF")  # verified by its checksum, in a class that cannot be read


def test_no_lock_without_a_lock_mode(lock_bucket_url):
    store = archive_store_from_url(lock_bucket_url)
    store.put(BATCH, b"rows", retain_until=datetime.now(UTC) + timedelta(days=1))
    assert "ObjectLockMode" not in head(lock_bucket_url, BATCH)
    assert store.lock(BATCH) is None
    assert store.lock("email_blacklist/never-written") is None


def test_retain_until_is_the_clock_plus_keep_for_and_reads_no_clock_without_a_lock(s3_archive_url, tmp_path):
    def no_clock() -> datetime:
        raise AssertionError("the clock was read although no Object Lock is configured")

    assert archive_store_from_url(s3_archive_url).retain_until(no_clock, timedelta(days=365)) is None
    assert LocalArchiveStore(tmp_path).retain_until(no_clock, timedelta(days=365)) is None
    locking = archive_store_from_url(s3_archive_url, object_lock_mode="GOVERNANCE")
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert locking.retain_until(lambda: now, timedelta(days=365)) == now + timedelta(days=365)


# deletes --------------------------------------------------------------------------------------------
def test_delete_in_a_versioned_bucket_removes_every_version(lock_bucket_url):
    store = archive_store_from_url(lock_bucket_url)
    store.put(BATCH, b"first")
    store.put(BATCH, b"second")  # content-addressed keys are written again by a rerun
    store.put(MANIFEST, b"{}")
    assert len(versions(lock_bucket_url, BATCH)) == 2
    store.delete(BATCH)
    assert versions(lock_bucket_url, BATCH) == []  # no version kept behind a delete marker
    assert not store.exists(BATCH)
    assert store.exists(MANIFEST)  # a key that starts with the deleted one is another object
    store.delete(BATCH)  # already gone: no error


def test_delete_in_an_unversioned_bucket(s3_archive_url):
    store = archive_store_from_url(s3_archive_url)
    store.put(PDF, b"%PDF")
    store.delete(PDF)
    assert not store.exists(PDF) and versions(s3_archive_url, PDF) == []


def test_a_locked_version_is_refused_and_the_current_version_stays_listed(lock_bucket_url):
    store = archive_store_from_url(lock_bucket_url, object_lock_mode="GOVERNANCE")
    store.put(BATCH, b"rows", retain_until=datetime.now(UTC) + timedelta(days=1))
    store.put(BATCH, b"rows")  # a later version without a lock: the lock is on the older one
    assert store.lock(BATCH) is None
    with pytest.raises(DeleteRefused) as refused:
        store.delete(BATCH)
    assert "AccessDenied" in str(refused.value) and store.uri(BATCH) in str(refused.value)
    # The older, locked version was tried first: the current one is still there for the next run.
    assert [key for key, _ in store.objects("email_blacklist/")] == [BATCH]
    assert len(versions(lock_bucket_url, BATCH)) == 2


def test_a_legal_hold_shows_in_the_lock_and_refuses_the_delete(lock_bucket_url):
    store = archive_store_from_url(lock_bucket_url)
    store.put(PDF, b"%PDF")
    bucket, prefix = lock_bucket_url.removeprefix("s3://").split("/", 1)
    boto3.client("s3").put_object_legal_hold(Bucket=bucket, Key=f"{prefix}/{PDF}", LegalHold={"Status": "ON"})
    lock = store.lock(PDF)
    assert lock.legal_hold and lock.retain_until is None and lock.in_force(datetime.now(UTC))
    with pytest.raises(DeleteRefused):
        store.delete(PDF)
    assert store.exists(PDF)


# settings ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["GLACIER", "DEEP_ARCHIVE", "REDUCED_REDUNDANCY", "cold"])
def test_batch_storage_class_must_be_readable_at_once(monkeypatch, value):
    monkeypatch.setenv("RETENTION_ARCHIVE_BATCH_STORAGE_CLASS", value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    message = str(refused.value)
    assert "RETENTION_ARCHIVE_BATCH_STORAGE_CLASS" in message
    assert "STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR" in message


@pytest.mark.parametrize("value", ["STANDARD", "standard_ia", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"])
def test_batch_storage_classes_accepted(monkeypatch, value):
    monkeypatch.setenv("RETENTION_ARCHIVE_BATCH_STORAGE_CLASS", value)
    assert load_settings().archive_batch_storage_class == value.upper()


def test_object_lock_mode_is_governance_or_compliance_on_s3(monkeypatch):
    monkeypatch.setenv("RETENTION_ARCHIVE_URL", "s3://archive-bucket/retention")
    monkeypatch.setenv("RETENTION_ARCHIVE_OBJECT_LOCK_MODE", "forever")
    with pytest.raises(ConfigurationError, match="_OBJECT_LOCK_MODE: must be GOVERNANCE or COMPLIANCE"):
        load_settings()
    monkeypatch.setenv("RETENTION_ARCHIVE_OBJECT_LOCK_MODE", "compliance")
    assert load_settings().archive_object_lock_mode == "COMPLIANCE"
    monkeypatch.delenv("RETENTION_ARCHIVE_OBJECT_LOCK_MODE")
    assert load_settings().archive_object_lock_mode is None


def test_object_lock_mode_needs_an_s3_archive(monkeypatch, tmp_path):
    monkeypatch.setenv("RETENTION_ARCHIVE_OBJECT_LOCK_MODE", "GOVERNANCE")
    monkeypatch.setenv("RETENTION_ARCHIVE_URL", (tmp_path / "archive").as_uri())
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert "RETENTION_ARCHIVE_OBJECT_LOCK_MODE" in str(refused.value) and "s3://" in str(refused.value)
    monkeypatch.delenv("RETENTION_ARCHIVE_URL")  # the embedded default is a folder too
    with pytest.raises(ConfigurationError, match="RETENTION_ARCHIVE_URL is not an s3:// URL"):
        load_settings()


def test_the_resource_builds_the_store_from_the_settings(monkeypatch, s3_env):
    from retention_pipelines.dagster_wiring.resources import RetentionStores

    monkeypatch.setenv("RETENTION_ARCHIVE_BATCH_STORAGE_CLASS", "ONEZONE_IA")
    monkeypatch.setenv("RETENTION_ARCHIVE_STORAGE_CLASS", "DEEP_ARCHIVE")
    monkeypatch.setenv("RETENTION_ARCHIVE_OBJECT_LOCK_MODE", "GOVERNANCE")
    store = RetentionStores(archive_url="s3://archive-bucket/retention").archive_store
    assert (store.batch_storage_class, store.storage_class, store.object_lock_mode) == (
        "ONEZONE_IA", "DEEP_ARCHIVE", "GOVERNANCE")
