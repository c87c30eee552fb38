"""Archive retention (engine/retention/archive_expiry.py): objects past keep_for deleted, each with one
audit entry; younger ones, other prefixes and locked objects left; crashes finished by a rerun.

How objects are made old, honestly: in a folder, the file's mtime (the store's own timestamp) is
set into the past with os.utime, as if the file had been written then. On S3 nothing can set
LastModified, so those tests give the domain a keep_for of a few seconds and wait it out: every
clock (S3's LastModified, the database's now, moto's Object Lock) is the real one.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.engine import RetentionEngine
from retention_pipelines.engine.audit.entries import Action
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.engine.resolution.retry import retry_item
from retention_pipelines.engine.retention.archive_expiry import ArchiveRetention, archive_units
from retention_pipelines.policies.model import Archive
from retention_pipelines.stores import archive_store_from_url
from retention_pipelines.stores.archive import LocalArchiveStore
from retention_pipelines_tests.support.app_rows import insert_blacklist_at
from retention_pipelines_tests.support.archives import configured_keys

DOMAIN = "email_blacklist"
KEEP_FOR = timedelta(days=365)


def batch_key(day: str, n: int) -> str:
    return f"{DOMAIN}/{day}/{n:040x}.jsonl.gz"


def manifest(key: str) -> str:
    return key + ".manifest.json"


def put_written(store: LocalArchiveStore, key: str, written: datetime) -> None:
    """An object in the folder as if written at `written` (its mtime, the store's timestamp)."""
    store.put(key, b"archived rows of " + key.encode())
    os.utime(store.root / key, (written.timestamp(), written.timestamp()))


def keys_in(store) -> set[str]:
    return {key for key, _ in store.objects("")}


def entries(database, action: str = Action.ARCHIVE_EXPIRED.value) -> list[dict]:
    query = sa.select(schema.audit_log).where(schema.audit_log.c.action == action).order_by(schema.audit_log.c.id)
    with database.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def queue_items(database) -> list[dict]:
    with database.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(sa.select(schema.manual_queue))]


def utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@pytest.fixture
def blacklist(policies):
    return policies.domains[DOMAIN]


@pytest.fixture
def store(tmp_path) -> LocalArchiveStore:
    return LocalArchiveStore(tmp_path / "archive")


def expiry_of(policy, policies, database, store) -> ArchiveRetention:
    return ArchiveRetention(policy, policies.policy_version, database, store)


# a folder, ages set by mtime ------------------------------------------------------------------------
def test_objects_past_keep_for_are_deleted_and_audited_once(any_database, policies, blacklist, store):
    now = any_database.now()
    old, young = batch_key("2025/10/01", 1), batch_key("2026/11/01", 2)
    half_old = batch_key("2025/12/31", 3)  # its object is past keep_for, its manifest (written later) not yet
    written = {old: now - timedelta(days=400), manifest(old): now - timedelta(days=400, seconds=-1),
               young: now - timedelta(days=30), manifest(young): now - timedelta(days=30),
               half_old: now - KEEP_FOR - timedelta(hours=1), manifest(half_old): now - KEEP_FOR + timedelta(hours=1)}
    # Not this domain's archive, however old: other domains, reports, anchors, the health probe.
    others = ["meal_plans/blobs/17", "reports/2025-01.html", "audit_anchors/2025/01/01.json",
              "_health/probe", "email_blacklist_old/x.jsonl.gz"]
    for key in others:
        written[key] = now - timedelta(days=4000)
    for key, moment in written.items():
        put_written(store, key, moment)

    expiry = expiry_of(blacklist, policies, any_database, store)
    result = expiry.expire("expiry-run-1")

    assert keys_in(store) == set(written) - {old, manifest(old)}
    assert (result.objects_due, result.objects_deleted, result.audit_entries) == (2, 2, 2)
    assert (result.objects_skipped_locked, result.objects_refused, result.queued) == (0, 0, 0)
    made = entries(any_database)
    assert [e["record_id"] for e in made] == [old, manifest(old)]  # the object first, its manifest last
    for entry in made:
        assert entry["domain"] == DOMAIN and entry["run_id"] == "expiry-run-1"
        assert entry["policy_version"] == policies.policy_version
        assert entry["archive_uri"] == store.uri(entry["record_id"])
        assert abs(utc(entry["deadline"]) - (written[entry["record_id"]] + KEEP_FOR)) < timedelta(milliseconds=1)
        assert utc(entry["occurred_at"]) >= utc(entry["deadline"]).replace(microsecond=0)  # never early

    again = expiry.expire("expiry-run-2")
    assert (again.objects_due, again.objects_deleted, again.audit_entries) == (0, 0, 0)
    assert len(entries(any_database)) == 2


def test_archived_pdfs_expire_like_batches(any_database, policies, store):
    plans = policies.domains["meal_plans"]
    now = any_database.now()
    put_written(store, "meal_plans/blobs/1", now - timedelta(days=3651))
    put_written(store, "meal_plans/blobs/2", now - timedelta(days=3649))
    result = expiry_of(plans, policies, any_database, store).expire("pdf-expiry")
    assert keys_in(store) == {"meal_plans/blobs/2"}
    assert result.objects_deleted == 1
    assert [(e["record_id"], e["domain"]) for e in entries(any_database)] == [("meal_plans/blobs/1", "meal_plans")]


def test_dry_run_deletes_nothing_and_counts_what_it_would(any_database, policies, blacklist, store):
    now = any_database.now()
    old = batch_key("2025/01/01", 1)
    for key in (old, manifest(old)):
        put_written(store, key, now - timedelta(days=500))
    put_written(store, batch_key("2026/11/01", 2), now - timedelta(days=1))
    before = {key: (store.root / key).stat().st_mtime_ns for key in keys_in(store)}

    result = expiry_of(blacklist, policies, any_database, store).expire("dry", dry_run=True)

    assert result.dry_run and (result.objects_due, result.objects_deleted, result.audit_entries) == (2, 2, 0)
    assert {key: (store.root / key).stat().st_mtime_ns for key in keys_in(store)} == before
    assert entries(any_database) == [] and queue_items(any_database) == []


class Crash(Exception):
    """The process dying at that instant: nothing after it runs."""


class CrashingStore(LocalArchiveStore):
    """A folder whose `at` operation (delete or lock) dies on the keys chosen."""

    def __init__(self, root, at: str, keys: set[str]):
        super().__init__(root)
        self.at, self.keys = at, keys

    def delete(self, key: str) -> None:
        if self.at == "delete" and key in self.keys:
            raise Crash(key)
        super().delete(key)

    def lock(self, key: str):
        if self.at == "lock" and key in self.keys:
            raise Crash(key)
        return super().lock(key)


def test_a_crash_after_the_entry_leaves_the_entry_and_the_rerun_deletes_without_a_second(
        any_database, policies, blacklist, store):
    now = any_database.now()
    old = batch_key("2025/01/01", 1)
    for key in (old, manifest(old)):
        put_written(store, key, now - timedelta(days=400))
    crashing = CrashingStore(store.root, "delete", {old})

    with pytest.raises(Crash):
        expiry_of(blacklist, policies, any_database, crashing).expire("killed-run")
    # The object is still there, with its entry (and its manifest's): a claim the rerun completes.
    assert keys_in(store) == {old, manifest(old)}
    assert [e["record_id"] for e in entries(any_database)] == [old, manifest(old)]

    result = expiry_of(blacklist, policies, any_database, store).expire("rerun")
    assert keys_in(store) == set()
    assert (result.objects_deleted, result.audit_entries) == (2, 0)
    assert [(e["record_id"], e["run_id"]) for e in entries(any_database)] == [(old, "killed-run"),
                                                                               (manifest(old), "killed-run")]


def test_a_crash_between_object_and_manifest_leaves_the_manifest_for_the_rerun(
        any_database, policies, blacklist, store):
    now = any_database.now()
    old = batch_key("2025/01/01", 1)
    for key in (old, manifest(old)):
        put_written(store, key, now - timedelta(days=400))

    with pytest.raises(Crash):
        expiry_of(blacklist, policies, any_database, CrashingStore(store.root, "delete", {manifest(old)})).expire("k")
    assert keys_in(store) == {manifest(old)}  # the data went first

    result = expiry_of(blacklist, policies, any_database, store).expire("rerun")
    assert keys_in(store) == set() and result.audit_entries == 0
    assert sorted(e["record_id"] for e in entries(any_database)) == sorted([old, manifest(old)])


def test_a_crash_before_the_entry_leaves_the_object_and_no_entry(any_database, policies, blacklist, store):
    now = any_database.now()
    old = batch_key("2025/01/01", 1)
    for key in (old, manifest(old)):
        put_written(store, key, now - timedelta(days=400))

    with pytest.raises(Crash):
        expiry_of(blacklist, policies, any_database, CrashingStore(store.root, "lock", {old})).expire("k")
    assert keys_in(store) == {old, manifest(old)} and entries(any_database) == []

    expiry_of(blacklist, policies, any_database, store).expire("rerun")
    assert keys_in(store) == set()
    assert [(e["record_id"], e["run_id"]) for e in entries(any_database)] == [(old, "rerun"), (manifest(old), "rerun")]


def test_the_check_counts_objects_past_keep_for_and_a_day_of_grace(any_database, policies, blacklist, store):
    now = any_database.now()
    put_written(store, batch_key("2025/01/01", 1), now - KEEP_FOR - timedelta(days=3))  # overdue
    put_written(store, batch_key("2025/01/02", 2), now - KEEP_FOR - timedelta(hours=12))  # due, within grace
    put_written(store, batch_key("2026/01/01", 3), now - timedelta(days=10))
    put_written(store, "reports/ancient.html", now - timedelta(days=9000))  # not the domain's
    expiry = expiry_of(blacklist, policies, any_database, store)

    overdue = expiry.count_overdue()
    assert (overdue.objects, overdue.overdue, overdue.overdue_under_lock) == (3, 1, 0)
    assert abs(overdue.oldest_age - (KEEP_FOR + timedelta(days=3))) < timedelta(seconds=2)
    assert expiry.count_overdue(grace=timedelta(0)).overdue == 2

    expiry.expire("expiry")
    after = expiry.count_overdue(grace=timedelta(0))
    assert (after.objects, after.overdue) == (1, 0)


def test_a_key_written_again_after_its_expiry_is_audited_again(any_database, policies, blacklist, store):
    """Content-addressed keys can come back; the earlier entry is older than the new object and
    does not count for it. Real time here: a keep_for of one second."""
    policy = blacklist.model_copy(update={"archive": Archive(enabled=True, keep_for="1s")})
    key = batch_key("2026/11/30", 9)
    expiry = expiry_of(policy, policies, any_database, store)
    store.put(key, b"rows")
    time.sleep(2.1)
    assert expiry.expire("first").objects_deleted == 1
    time.sleep(1.1)
    store.put(key, b"rows")
    time.sleep(2.1)
    second = expiry.expire("second")
    assert (second.objects_deleted, second.audit_entries) == (1, 1)
    assert [e["run_id"] for e in entries(any_database)] == ["first", "second"]


def test_units_pair_each_manifest_with_its_object():
    t = datetime(2026, 1, 1, tzinfo=UTC)
    listed = [("d/a.jsonl.gz", t), ("d/a.jsonl.gz.manifest.json", t + timedelta(seconds=1)), ("d/b.jsonl.gz", t),
              ("d/blobs/1", t), ("d/c.jsonl.gz.manifest.json", t)]
    units = list(archive_units(listed))
    assert [unit.keys for unit in units] == [["d/a.jsonl.gz", "d/a.jsonl.gz.manifest.json"], ["d/b.jsonl.gz"],
                                             ["d/blobs/1"], ["d/c.jsonl.gz.manifest.json"]]
    assert units[0].written_at == t + timedelta(seconds=1)  # a unit is as young as its youngest object


def test_a_domain_without_an_archive_has_nothing_to_expire(pg_database, policies, quiz_policy, store):
    with pytest.raises(ValueError, match="not archived"):
        ArchiveRetention(quiz_policy, policies.policy_version, pg_database, store)


# S3 (moto), real clocks, a keep_for of seconds -------------------------------------------------------
@pytest.fixture
def lock_bucket_url(s3_env) -> str:
    bucket = f"locked-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return f"s3://{bucket}/retention"


def seconds_policy(policy, seconds: int):
    return policy.model_copy(update={"archive": Archive(enabled=True, keep_for=f"{seconds}s")})


def s3_versions(url: str) -> list[str]:
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    listing = boto3.client("s3").list_object_versions(Bucket=bucket, Prefix=prefix)
    return [v["Key"] for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])]


def test_s3_objects_past_keep_for_go_with_every_version_and_one_entry_each(pg_database, policies, blacklist,
                                                                          lock_bucket_url):
    policy = seconds_policy(blacklist, 2)
    store = archive_store_from_url(lock_bucket_url, object_lock_mode="GOVERNANCE")
    old, young = batch_key("2026/11/29", 1), batch_key("2026/11/30", 2)
    for key in (old, manifest(old)):
        # Locked as the engine locks them: until the database's now + keep_for (over by then).
        store.put(key, b"rows", retain_until=store.retain_until(pg_database.now, policy.archive.keep_for))
    store.put(old, b"rows", retain_until=store.retain_until(pg_database.now, policy.archive.keep_for))  # a rerun
    store.put("reports/2026-11.html", b"<html>")
    time.sleep(3)
    for key in (young, manifest(young)):
        store.put(key, b"rows", retain_until=store.retain_until(pg_database.now, policy.archive.keep_for))

    expiry = expiry_of(policy, policies, pg_database, store)
    result = expiry.expire("s3-expiry")

    assert (result.objects_deleted, result.audit_entries, result.objects_skipped_locked) == (2, 2, 0)
    assert keys_in(store) == {young, manifest(young), "reports/2026-11.html"}
    assert not any(key.endswith(old) or key.endswith(manifest(old)) for key in s3_versions(lock_bucket_url))
    assert [(e["record_id"], e["archive_uri"]) for e in entries(pg_database)] == [
        (old, store.uri(old)), (manifest(old), store.uri(manifest(old)))]
    assert expiry.expire("s3-expiry-again").audit_entries == 0
    assert len(entries(pg_database)) == 2


def test_s3_an_object_under_a_lock_is_skipped_and_counted(pg_database, policies, blacklist, lock_bucket_url):
    policy = seconds_policy(blacklist, 1)
    store = archive_store_from_url(lock_bucket_url, object_lock_mode="COMPLIANCE")
    locked = "email_blacklist/blobs/locked"
    store.put(locked, b"rows", retain_until=datetime.now(UTC) + timedelta(days=1))
    time.sleep(2)
    expiry = expiry_of(policy, policies, pg_database, store)

    result = expiry.expire("locked-run")

    assert (result.objects_due, result.objects_skipped_locked, result.objects_deleted) == (1, 1, 0)
    assert keys_in(store) == {locked}
    # Not an error, not for a person: no entry, no queue item; tried again the next day.
    assert entries(pg_database) == [] and queue_items(pg_database) == []
    overdue = expiry.count_overdue(grace=timedelta(0))
    assert (overdue.overdue, overdue.overdue_under_lock, overdue.overdue_unlocked) == (1, 1, 0)
    assert expiry.expire("dry", dry_run=True).objects_skipped_locked == 1


def test_s3_a_legal_hold_past_keep_for_goes_to_a_person_and_the_retry_finishes(pg_database, policies, blacklist,
                                                                              lock_bucket_url):
    policy = seconds_policy(blacklist, 1)
    store = archive_store_from_url(lock_bucket_url)
    held = "email_blacklist/blobs/held"
    store.put(held, b"rows")
    bucket, prefix = lock_bucket_url.removeprefix("s3://").split("/", 1)
    s3 = boto3.client("s3")
    s3.put_object_legal_hold(Bucket=bucket, Key=f"{prefix}/{held}", LegalHold={"Status": "ON"})
    time.sleep(2)
    expiry = expiry_of(policy, policies, pg_database, store)

    first, second = expiry.expire("run-1"), expiry.expire("run-2")

    assert (first.objects_skipped_locked, first.queued, second.queued) == (1, 1, 1)
    [item] = queue_items(pg_database)
    assert (item["domain"], item["record_id"], item["reason"], item["attempts"]) == (
        DOMAIN, held, "blob_delete_failed", 2)
    assert "legal hold" in item["detail"] and entries(pg_database) == []

    s3.put_object_legal_hold(Bucket=bucket, Key=f"{prefix}/{held}", LegalHold={"Status": "OFF"})
    queue = ManualQueue(pg_database, policies.policy_version)
    engine = RetentionEngine(policy, policies.policy_version, pg_database, store, keys=configured_keys(pg_database))
    outcome = retry_item(queue, queue.get(item["id"]), engine, "retry-run", "alice")

    assert outcome.resolved, outcome.message
    assert keys_in(store) == set()
    assert [(e["record_id"], e["run_id"]) for e in entries(pg_database)] == [(held, "retry-run")]
    assert queue.get(item["id"]).status == "resolved"


def test_s3_a_delete_refused_after_the_entry_is_queued_and_finished_later_without_a_second_entry(
        pg_database, policies, blacklist, lock_bucket_url):
    policy = seconds_policy(blacklist, 1)
    store = archive_store_from_url(lock_bucket_url, object_lock_mode="GOVERNANCE")
    key = "email_blacklist/blobs/versions"
    store.put(key, b"rows", retain_until=datetime.now(UTC) + timedelta(seconds=6))  # an older, locked version
    store.put(key, b"rows")  # the current version shows no lock
    time.sleep(2)
    expiry = expiry_of(policy, policies, pg_database, store)

    refused = expiry.expire("refused-run")

    assert (refused.objects_refused, refused.objects_deleted, refused.audit_entries, refused.queued) == (1, 0, 1, 1)
    assert keys_in(store) == {key}
    [item] = queue_items(pg_database)
    assert item["record_id"] == key and "AccessDenied" in item["detail"] and item["status"] == "open"

    time.sleep(5)  # the older version's lock runs out
    done = expiry.expire("later-run")

    assert (done.objects_deleted, done.audit_entries) == (1, 0)
    assert keys_in(store) == set() and s3_versions(lock_bucket_url) == []
    assert [(e["record_id"], e["run_id"]) for e in entries(pg_database)] == [(key, "refused-run")]
    [item] = queue_items(pg_database)
    assert item["status"] == "resolved" and "later-run" in item["resolution_note"]


def test_s3_the_retention_run_locks_what_it_archives_until_now_plus_keep_for(pg_database, policies, blacklist,
                                                                             lock_bucket_url):
    store = archive_store_from_url(lock_bucket_url, object_lock_mode="GOVERNANCE", batch_storage_class="STANDARD_IA")
    now = pg_database.now()
    insert_blacklist_at(pg_database, [now - timedelta(days=91)] * 3)
    report = RetentionEngine(blacklist, policies.policy_version, pg_database, store,
                             keys=configured_keys(pg_database)).run("archiving-run")
    assert report.acted.acted_on == 3
    [batch] = report.archived.batches
    bucket, prefix = lock_bucket_url.removeprefix("s3://").split("/", 1)
    for key in (batch.key, batch.manifest_key):
        head = boto3.client("s3").head_object(Bucket=bucket, Key=f"{prefix}/{key}")
        assert head["ObjectLockMode"] == "GOVERNANCE" and head["StorageClass"] == "STANDARD_IA"
        until = head["ObjectLockRetainUntilDate"]
        assert now + KEEP_FOR - timedelta(seconds=1) <= until <= pg_database.now() + KEEP_FOR
