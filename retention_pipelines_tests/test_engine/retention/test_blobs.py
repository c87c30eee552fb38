"""meal_plans: PDFs in object storage (moto's S3 server), archived cold (streamed, within the run's
budget of bytes), verified, deleted, rows redacted."""

from __future__ import annotations

import threading
from datetime import timedelta

import boto3
import pytest
import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.engine import ArchiveVerificationFailed, RetentionEngine
from retention_pipelines.engine.archive.chunked import sealed_size
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.engine.retention.lanes import ByteBudget
from retention_pipelines.stores import StoreUnavailable
from retention_pipelines.stores.archive import S3ArchiveStore
from retention_pipelines.stores.blob import LocalBlobStore, S3BlobStore
from retention_pipelines.stores.s3 import PART_BUFFER_BYTES, S3_POOL_CONNECTIONS, s3_client
from retention_pipelines_tests.support.app_rows import audit_entries, insert_meal_plans_at, meal_plan_rows
from retention_pipelines_tests.support.archives import TAMPERINGS, TamperingArchiveStore, configured_keys
from retention_pipelines_tests.support.engines import meal_plans_engine
from retention_pipelines_tests.support.hot_bucket import PDF, hot_keys, put_large_pdf, put_pdfs
from retention_pipelines_tests.support.s3 import CutOffUploadsS3, FlakyS3, MisstoringS3, SlowReadsS3


def test_due_pdfs_are_archived_cold_deleted_and_their_rows_redacted(pg_database, policies, s3_archive_url,
                                                                   hot_bucket):
    now = pg_database.now()
    due_keys = [f"plans/due-{i}.pdf" for i in range(5)]
    young_keys = [f"plans/young-{i}.pdf" for i in range(2)]
    put_pdfs(hot_bucket, due_keys + young_keys)
    due = insert_meal_plans_at(pg_database, [now - timedelta(days=91)] * 5, due_keys)
    young = insert_meal_plans_at(pg_database, [now - timedelta(days=89)] * 2, young_keys)

    engine = meal_plans_engine(policies, pg_database, s3_archive_url, S3BlobStore(hot_bucket, ""), batch_size=2,
                               storage_class="GLACIER")
    report = engine.run("pdfs")

    assert report.acted.acted_on == 5 and report.acted.failed == 0
    assert hot_keys(hot_bucket) == set(young_keys)
    rows = meal_plan_rows(pg_database)
    assert all(rows[rid][0] is None and rows[rid][1] is not None for rid in due)  # redacted, stamped
    assert all(rows[rid] == (key, None) for rid, key in zip(young, young_keys))  # the purchase rows all stay
    entries = [e for e in audit_entries(pg_database) if e["action"] == "redacted"]
    assert {e["record_id"] for e in entries} == set(due)
    archive_bucket = s3_archive_url.split("/")[2]
    s3 = boto3.client("s3")
    for entry in entries:
        key = entry["archive_uri"].removeprefix(f"s3://{archive_bucket}/")
        head = s3.head_object(Bucket=archive_bucket, Key=key)
        assert head.get("StorageClass") == "GLACIER"
    assert report.audited.consistent
    assert engine.count_acted_on_early(report.acted, "pdfs") == 0


def test_keys_that_will_not_delete_leave_exactly_their_rows_and_are_reported(pg_database, policies,
                                                                           local_archive_url, hot_bucket):
    now = pg_database.now()
    keys = [f"plans/{i}.pdf" for i in range(6)]
    put_pdfs(hot_bucket, keys)
    ids = insert_meal_plans_at(pg_database, [now - timedelta(days=100)] * 6, keys)
    client = FlakyS3(forever={"plans/1.pdf", "plans/4.pdf"}, once={"plans/2.pdf"})
    blob_store = S3BlobStore(hot_bucket, "", client=client, attempts=3, wait_max_seconds=0.1)

    report = meal_plans_engine(policies, pg_database, local_archive_url, blob_store).run("flaky")

    assert report.acted.failed == 2 and report.acted.acted_on == 4
    assert hot_keys(hot_bucket) == {"plans/1.pdf", "plans/4.pdf"}  # plans/2.pdf went on the retry
    rows = meal_plan_rows(pg_database)
    kept = {ids[1], ids[4]}
    assert {rid for rid, (key, _) in rows.items() if key is not None} == kept
    failed = [e for e in audit_entries(pg_database) if e["action"] == "blob_delete_failed"]
    assert {e["record_id"] for e in failed} == kept
    assert client.calls >= 2

    # Once the store lets go, the next run finishes the job and audits each row once.
    healed = S3BlobStore(hot_bucket, "")
    again = meal_plans_engine(policies, pg_database, local_archive_url, healed).run("healed")
    assert again.acted.acted_on == 2 and again.acted.failed == 0
    redacted = [e["record_id"] for e in audit_entries(pg_database) if e["action"] == "redacted"]
    assert sorted(redacted) == sorted(ids)


def test_a_crash_between_object_delete_and_row_update_is_finished_by_the_rerun(pg_database, policies,
                                                                              local_archive_url, hot_bucket):
    now = pg_database.now()
    keys = [f"plans/c{i}.pdf" for i in range(3)]
    put_pdfs(hot_bucket, keys)
    ids = insert_meal_plans_at(pg_database, [now - timedelta(days=120)] * 3, keys)
    engine = meal_plans_engine(policies, pg_database, local_archive_url, S3BlobStore(hot_bucket, ""))
    found = engine.find()
    engine.archive(found)  # archived and verified ...
    S3BlobStore(hot_bucket, "").delete_many(keys)  # ... objects deleted, then the process died

    report = engine.run("rerun")

    assert report.acted.acted_on == 3 and report.acted.failed == 0
    entries = audit_entries(pg_database)
    assert sorted(e["record_id"] for e in entries) == sorted(ids)
    assert {e["action"] for e in entries} == {"redacted"}  # their archived copies are there
    assert all(e["archive_uri"] for e in entries)
    assert all(key is None for key, _ in meal_plan_rows(pg_database).values())


def test_an_object_missing_before_any_archive_is_redacted_and_audited_as_missing(pg_database, policies,
                                                                               local_archive_url, hot_bucket):
    now = pg_database.now()
    put_pdfs(hot_bucket, ["plans/present.pdf"])
    present, missing = insert_meal_plans_at(pg_database, [now - timedelta(days=95)] * 2,
                                            ["plans/present.pdf", "plans/never-uploaded.pdf"])
    report = meal_plans_engine(policies, pg_database, local_archive_url, S3BlobStore(hot_bucket, "")).run("missing")
    actions = {e["record_id"]: e["action"] for e in audit_entries(pg_database)}
    assert actions == {present: "redacted", missing: "redacted_blob_missing"}
    assert report.audited.consistent and report.acted.acted_on == 2


def test_a_held_purchase_keeps_its_pdf(pg_database, policies, local_archive_url, hot_bucket):
    now = pg_database.now()
    put_pdfs(hot_bucket, ["plans/held.pdf", "plans/free.pdf"])
    held, free = insert_meal_plans_at(pg_database, [now - timedelta(days=95)] * 2,
                                      ["plans/held.pdf", "plans/free.pdf"])
    with pg_database.engine.begin() as connection:
        connection.execute(sa.insert(schema.legal_holds).values(domain="meal_plans", record_id=held, reason="claim 7"))
    meal_plans_engine(policies, pg_database, local_archive_url, S3BlobStore(hot_bucket, "")).run("held")
    assert hot_keys(hot_bucket) == {"plans/held.pdf"}
    assert meal_plan_rows(pg_database)[held][0] == "plans/held.pdf"
    actions = {e["record_id"]: e["action"] for e in audit_entries(pg_database)}
    assert actions == {held: "skipped_legal_hold", free: "redacted"}


def test_dry_run_touches_no_object(pg_database, policies, local_archive_url, hot_bucket):
    now = pg_database.now()
    put_pdfs(hot_bucket, ["plans/d.pdf"])
    insert_meal_plans_at(pg_database, [now - timedelta(days=95)], ["plans/d.pdf"])
    before = meal_plan_rows(pg_database)
    report = meal_plans_engine(policies, pg_database, local_archive_url, S3BlobStore(hot_bucket, "")).run(
        "dry", dry_run=True)
    assert report.acted.acted_on == 1
    assert hot_keys(hot_bucket) == {"plans/d.pdf"}
    assert meal_plan_rows(pg_database) == before and audit_entries(pg_database) == []


def test_a_plan_bought_exactly_90_days_before_the_cutoff_goes_one_a_second_younger_stays(
        pg_database, policies, local_archive_url, hot_bucket):
    from retention_pipelines_tests.support.engines import whole_second

    cutoff = whole_second(pg_database.now())
    put_pdfs(hot_bucket, ["plans/at.pdf", "plans/younger.pdf"])
    at, younger = insert_meal_plans_at(pg_database, [cutoff - timedelta(days=90),
                                                     cutoff - timedelta(days=90) + timedelta(seconds=1)],
                                       ["plans/at.pdf", "plans/younger.pdf"])
    engine = meal_plans_engine(policies, pg_database, local_archive_url, S3BlobStore(hot_bucket, ""))
    report = engine.run("boundary", window_end=cutoff)
    assert report.acted.acted_on == 1
    assert hot_keys(hot_bucket) == {"plans/younger.pdf"}
    assert meal_plan_rows(pg_database)[younger][0] == "plans/younger.pdf"
    assert meal_plan_rows(pg_database)[at][0] is None


def test_a_copy_that_does_not_verify_deletes_nothing_reaches_a_person_and_the_rerun_finishes(
        pg_database, policies, s3_archive_url, hot_bucket):
    now = pg_database.now()
    keys = [f"plans/v{i}.pdf" for i in range(6)]
    put_pdfs(hot_bucket, keys)
    ids = insert_meal_plans_at(pg_database, [now - timedelta(days=100)] * 6, keys)
    bucket, prefix = s3_archive_url.removeprefix("s3://").split("/", 1)
    policy = policies.domains["meal_plans"].model_copy(update={"batch_size": 3})

    # The store keeps other bytes for one PDF, in the middle of its batch's copies.
    bad = S3ArchiveStore(bucket, prefix, client=MisstoringS3(bad_endings=(f"/blobs/{ids[1]}",)))
    with pytest.raises(ArchiveVerificationFailed, match="does not match"):
        RetentionEngine(policy, policies.policy_version, pg_database, bad,
                        blob_store=S3BlobStore(hot_bucket, ""), keys=configured_keys(pg_database)).run("bad-copy")
    assert hot_keys(hot_bucket) == set(keys)  # not one PDF deleted, of its batch or of another
    assert all(key is not None for key, _ in meal_plan_rows(pg_database).values())
    assert [e["action"] for e in audit_entries(pg_database)] == ["queue_opened"]
    [item] = ManualQueue(pg_database).list()
    assert item.reason == "archive_verification_failed"
    assert item.record_id == f"{s3_archive_url}/meal_plans/blobs/{ids[1]}"

    # A store that keeps what it is sent: the rerun archives, deletes and redacts each plan once.
    again = meal_plans_engine(policies, pg_database, s3_archive_url, S3BlobStore(hot_bucket, ""), batch_size=3)
    assert again.run("good-copy").acted.acted_on == 6
    assert hot_keys(hot_bucket) == set()
    assert sorted(e["record_id"] for e in audit_entries(pg_database) if e["action"] == "redacted") == sorted(ids)


def test_the_objects_of_a_batch_are_copied_side_by_side_as_many_as_the_connections_allow(
        pg_database, policies, s3_archive_url, hot_bucket):
    now = pg_database.now()
    keys = [f"plans/p{i}.pdf" for i in range(24)]
    put_pdfs(hot_bucket, keys)
    insert_meal_plans_at(pg_database, [now - timedelta(days=100)] * 24, keys)
    reads = SlowReadsS3(s3_client())
    engine = meal_plans_engine(policies, pg_database, s3_archive_url, S3BlobStore(hot_bucket, "", client=reads))
    threads = engine.objects.object_threads()
    # The two stores' pools (S3_POOL_CONNECTIONS each) shared by the batches that run side by side.
    assert threads == S3_POOL_CONNECTIONS // engine.policy.parallel_batches > 1

    assert engine.run("side-by-side").acted.acted_on == 24  # one batch: its objects only
    assert 1 < reads.most <= threads
    assert hot_keys(hot_bucket) == set()


def test_keys_that_lead_out_of_a_local_blob_store_are_not_acted_on_and_go_to_a_person(
        pg_database, policies, local_archive_url, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_bytes(b"root:x:0:0")
    store = tmp_path / "blobs" / "store"
    (store / "plans").mkdir(parents=True)
    (store / "plans" / "ok.pdf").write_bytes(PDF)
    (store / "plans" / "out").symlink_to(outside)  # a folder on the way that leads out
    (store / "plans" / "evil.pdf").symlink_to(outside / "passwd")  # a file that leads out
    hostile = ["../../outside/passwd", "plans/../../../outside/passwd", str(outside / "passwd"), "/etc/passwd",
               "../../etc/passwd", "plans/out/passwd", "plans/evil.pdf", "plans//./ok.pdf"]
    now = pg_database.now()
    ok, *refused = insert_meal_plans_at(pg_database, [now - timedelta(days=100)] * (1 + len(hostile)),
                                        ["plans/ok.pdf", *hostile])
    engine = meal_plans_engine(policies, pg_database, local_archive_url, LocalBlobStore(store))

    report = engine.run("hostile-keys")

    assert report.acted.acted_on == 1 and report.acted.failed == len(hostile) and report.audited.consistent
    rows = meal_plan_rows(pg_database)
    assert rows[ok][0] is None and not (store / "plans" / "ok.pdf").exists()
    assert {rid: rows[rid] for rid in refused} == {rid: (key, None) for rid, key in zip(refused, hostile)}
    assert (outside / "passwd").read_bytes() == b"root:x:0:0"
    assert (store / "plans" / "out").is_symlink() and (store / "plans" / "evil.pdf").is_symlink()
    archived = {p.name for p in (tmp_path / "archive" / "meal_plans" / "blobs").iterdir()}
    assert archived == {ok}  # nothing outside was read into the archive
    actions = {e["record_id"]: (e["action"], e["archive_uri"]) for e in audit_entries(pg_database)
               if e["action"] != "queue_opened"}
    assert actions[ok][0] == "redacted"
    assert all(actions[rid] == ("blob_delete_failed", None) for rid in refused)
    items = ManualQueue(pg_database).list()
    assert sorted(item.record_id for item in items) == sorted(refused)
    assert all(item.reason == "blob_delete_failed" and "outside the blob store" in item.detail for item in items)

    # The next run leaves them too: each item counts one more attempt, none is opened twice.
    again = engine.run("hostile-keys-again")
    assert again.acted.acted_on == 0 and again.acted.failed == len(hostile)
    assert sorted(item.attempts for item in ManualQueue(pg_database).list()) == [2] * len(hostile)
    assert (outside / "passwd").read_bytes() == b"root:x:0:0"


# streamed copies ----------------------------------------------------------------------------------------
LARGE = 9 * 1024 * 1024  # more than one part of a multipart upload (8 MiB)


def put_large_pdfs(bucket: str, count: int, size: int = LARGE) -> dict[str, str]:
    """{key: sha256} of `count` large PDFs in the hot bucket."""
    return {f"plans/large-{i}.pdf": put_large_pdf(bucket, f"plans/large-{i}.pdf", size, seed=i) for i in range(count)}


@pytest.mark.parametrize("how", TAMPERINGS)
def test_a_copy_damaged_on_its_way_to_the_archive_is_not_verified_and_nothing_is_deleted(
        pg_database, policies, s3_archive_url, hot_bucket, how):
    """The archive keeps (and vouches for) other bytes than were encrypted: a byte flipped, the
    copy cut short, two chunks swapped, the last chunk dropped. The digest of what was encrypted
    does not match, so no PDF of the batch goes; a store that keeps what it is sent finishes."""
    now = pg_database.now()
    keys = [f"plans/t{i}.pdf" for i in range(2)]
    for index, key in enumerate(keys):
        put_large_pdf(hot_bucket, key, 3 * 1024 * 1024 + 5, seed=index)
    ids = insert_meal_plans_at(pg_database, [now - timedelta(days=100)] * 2, keys)
    bucket, prefix = s3_archive_url.removeprefix("s3://").split("/", 1)
    policy = policies.domains["meal_plans"]

    with pytest.raises(ArchiveVerificationFailed, match="does not match"):
        RetentionEngine(policy, policies.policy_version, pg_database, TamperingArchiveStore(bucket, prefix, how=how),
                        blob_store=S3BlobStore(hot_bucket, ""), keys=configured_keys(pg_database)).run("tampered")
    assert hot_keys(hot_bucket) == set(keys)
    assert all(key is not None for key, _ in meal_plan_rows(pg_database).values())
    assert [e["action"] for e in audit_entries(pg_database)] == ["queue_opened"]

    again = meal_plans_engine(policies, pg_database, s3_archive_url, S3BlobStore(hot_bucket, ""))
    assert again.run("untampered").acted.acted_on == 2 and hot_keys(hot_bucket) == set()
    assert sorted(e["record_id"] for e in audit_entries(pg_database) if e["action"] == "redacted") == sorted(ids)


def test_a_large_copy_goes_in_parts_verified_by_s3s_digest_of_them_and_a_part_changed_on_the_way_is_caught(
        pg_database, policies, s3_archive_url, hot_bucket):
    now = pg_database.now()
    digests = put_large_pdfs(hot_bucket, 2)
    keys = sorted(digests)
    ids = insert_meal_plans_at(pg_database, [now - timedelta(days=100)] * 2, keys)
    bucket, prefix = s3_archive_url.removeprefix("s3://").split("/", 1)
    bad = S3ArchiveStore(bucket, prefix, client=MisstoringS3(bad_endings=(f"/blobs/{ids[1]}",)))
    with pytest.raises(ArchiveVerificationFailed, match="does not match"):
        RetentionEngine(policies.domains["meal_plans"], policies.policy_version, pg_database, bad,
                        blob_store=S3BlobStore(hot_bucket, ""), keys=configured_keys(pg_database)).run("bad-part")
    assert hot_keys(hot_bucket) == set(keys)

    engine = meal_plans_engine(policies, pg_database, s3_archive_url, S3BlobStore(hot_bucket, ""))
    assert engine.run("good-parts").acted.acted_on == 2 and hot_keys(hot_bucket) == set()
    s3 = boto3.client("s3")
    for record_id, key in zip(ids, keys):
        copy = s3.head_object(Bucket=bucket, Key=f"{prefix}/meal_plans/blobs/{record_id}")
        assert copy["ETag"].strip('"').endswith("-2")  # two parts: 9 MiB and its chunks' overhead
        assert copy["ContentLength"] == sealed_size(LARGE)


@pytest.mark.parametrize("killed", [False, True], ids=["failed", "killed"])
def test_an_upload_cut_off_leaves_no_copy_deletes_nothing_and_the_rerun_finishes(
        pg_database, policies, s3_archive_url, hot_bucket, killed):
    """A multipart upload that stops half-way is no object: a failure aborts it; a kill leaves its
    parts, which are not a copy (the bucket's lifecycle rule aborts them), and the rerun copies the
    PDF anew."""
    now = pg_database.now()
    digests = put_large_pdfs(hot_bucket, 1)
    [record_id] = insert_meal_plans_at(pg_database, [now - timedelta(days=100)], list(digests))
    bucket, prefix = s3_archive_url.removeprefix("s3://").split("/", 1)
    client = CutOffUploadsS3(killed=killed)
    with pytest.raises(StoreUnavailable):
        RetentionEngine(policies.domains["meal_plans"], policies.policy_version, pg_database,
                        S3ArchiveStore(bucket, prefix, client=client), blob_store=S3BlobStore(hot_bucket, ""),
                        keys=configured_keys(pg_database)).run("cut-off")
    s3 = boto3.client("s3")
    copy = f"{prefix}/meal_plans/blobs/{record_id}"
    assert s3.list_objects_v2(Bucket=bucket, Prefix=copy).get("KeyCount") == 0
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=copy).get("Uploads", [])
    assert (len(uploads), client.aborted) == ((1, 0) if killed else (0, 1))
    assert hot_keys(hot_bucket) == set(digests)

    report = meal_plans_engine(policies, pg_database, s3_archive_url, S3BlobStore(hot_bucket, "")).run("rerun")
    assert report.acted.acted_on == 1 and hot_keys(hot_bucket) == set()
    assert s3.head_object(Bucket=bucket, Key=copy)["ContentLength"] == sealed_size(LARGE)


def test_the_objects_in_flight_hold_no_more_bytes_than_the_runs_budget(pg_database, policies, s3_archive_url,
                                                                      hot_bucket):
    """Six large PDFs and six small ones, with room for two large copies at a time: the bytes
    taken never pass the budget, the large copies go at most two at a time, the small beside them."""
    now = pg_database.now()
    large = put_large_pdfs(hot_bucket, 6)
    small = [f"plans/small-{i}.pdf" for i in range(6)]
    put_pdfs(hot_bucket, small)
    insert_meal_plans_at(pg_database, [now - timedelta(days=100)] * 12, sorted(large) + small)
    engine = meal_plans_engine(policies, pg_database, s3_archive_url, S3BlobStore(hot_bucket, ""))
    objects = engine.objects
    large_copy = objects.bytes_held(LARGE)
    assert large_copy == 2 * 1024 * 1024 + PART_BUFFER_BYTES and objects.bytes_held(len(PDF)) < 1024
    objects.budget = ByteBudget(2 * large_copy + 1024 * 1024)
    most, in_flight, guard = {"bytes": 0, "large": 0}, {"large": 0}, threading.Lock()
    take, give_back = objects.budget.take, objects.budget.give_back

    def taking(wanted, wait=True):
        taken = take(wanted, wait)
        with guard:
            in_flight["large"] += taken == large_copy
            most["bytes"] = max(most["bytes"], objects.budget.taken)
            most["large"] = max(most["large"], in_flight["large"])
        return taken

    def giving_back(taken):
        with guard:
            in_flight["large"] -= taken == large_copy
        give_back(taken)

    objects.budget.take, objects.budget.give_back = taking, giving_back
    assert engine.run("budget").acted.acted_on == 12 and hot_keys(hot_bucket) == set()
    assert most["bytes"] <= objects.budget.total and most["large"] == 2
    assert objects.budget.taken == 0  # every copy gave back what it took
