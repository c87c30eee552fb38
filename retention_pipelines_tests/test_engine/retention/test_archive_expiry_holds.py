"""Archive expiry keeps every archived copy of a record under legal hold: the batch object holding it
(with its manifest) and an archived PDF named by it stay past keep_for, counted apart on the check,
in the manual queue; the others go; the release of the hold lets the next expiry take them."""

from __future__ import annotations

import os
from datetime import timedelta

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.engine.oversight.holds import LegalHolds
from retention_pipelines.engine.retention.archive_expiry import HELD_REASON, ArchiveRetention
from retention_pipelines.stores.archive import LocalArchiveStore
from retention_pipelines_tests.support.app_rows import insert_blacklist_at
from retention_pipelines_tests.support.engines import engine_for

DOMAIN = "email_blacklist"


def age_every_object(store: LocalArchiveStore, days: int) -> None:
    for key, written in store.objects(f"{DOMAIN}/"):
        moment = written.timestamp() - days * 86400
        os.utime(store.root / key, (moment, moment))


def queue_items(database) -> list[dict]:
    with database.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(sa.select(schema.manual_queue))]


def test_archived_copies_of_a_held_record_outlive_keep_for(pg_database, policies, tmp_path):
    policy = policies.domains[DOMAIN].model_copy(update={"batch_size": 2})
    archive_url = (tmp_path / "archive").as_uri()
    now = pg_database.now()
    ids = insert_blacklist_at(pg_database, [now - timedelta(days=91, minutes=n) for n in range(6)])
    engine = engine_for(policy, policies, pg_database, archive_url)
    assert engine.run("archived").acted.acted_on == 6
    store = LocalArchiveStore(tmp_path / "archive")
    held = ids[3]
    pdf_of_held = f"{DOMAIN}/blobs/{held}"
    store.put(pdf_of_held, b"an archived object named by the held record")
    units_before = {key for key, _ in store.objects(f"{DOMAIN}/")}
    assert len(units_before) == 7  # three batches with their manifests, and the object named by the record

    # The row is gone (archived, then deleted): the hold is placed on its archived copies.
    key = pg_database.app_table(policy).c[policy.primary_key]
    LegalHolds(pg_database, policies.policy_version).place(DOMAIN, key, held.upper(), "dispute 9", "legal", force=True)
    age_every_object(store, 400)  # past keep_for (365d) and its day of grace
    expiry = ArchiveRetention(policy, policies.policy_version, pg_database, store)

    overdue = expiry.count_overdue()
    assert (overdue.overdue, overdue.overdue_under_hold, overdue.overdue_unlocked) == (7, 3, 4)

    result = expiry.expire("expiry-1")
    assert result.objects_skipped_held == 3
    assert result.objects_deleted == 4
    left = {key for key, _ in store.objects(f"{DOMAIN}/")}
    assert pdf_of_held in left and len(left) == 3
    manifests = [k for k in left if k.endswith(".manifest.json")]
    assert len(manifests) == 1 and manifests[0].removesuffix(".manifest.json") in left
    items = queue_items(pg_database)
    assert sorted(item["record_id"] for item in items) == sorted(
        [pdf_of_held, manifests[0].removesuffix(".manifest.json")])
    assert {item["reason"] for item in items} == {HELD_REASON}
    assert not any(held in (item["detail"] or "") for item in items)

    again = expiry.expire("expiry-2")  # still held: nothing more, the items counted once more
    assert (again.objects_deleted, again.objects_skipped_held) == (0, 3)
    assert len(queue_items(pg_database)) == 2

    LegalHolds(pg_database, policies.policy_version).release(DOMAIN, key, held, "legal")
    released = expiry.expire("expiry-3")
    assert released.objects_deleted == 3
    assert list(store.objects(f"{DOMAIN}/")) == []
    assert {item["status"] for item in queue_items(pg_database)} == {"resolved"}
    assert expiry.count_overdue().overdue == 0


def test_a_dry_run_counts_held_copies_and_queues_nothing(pg_database, policies, tmp_path):
    policy = policies.domains[DOMAIN]
    now = pg_database.now()
    [record] = insert_blacklist_at(pg_database, [now - timedelta(days=91)])
    engine_for(policy, policies, pg_database, (tmp_path / "archive").as_uri()).run("archived")
    store = LocalArchiveStore(tmp_path / "archive")
    key = pg_database.app_table(policy).c[policy.primary_key]
    LegalHolds(pg_database, policies.policy_version).place(DOMAIN, key, record, "dispute 10", "legal", force=True)
    age_every_object(store, 400)
    result = ArchiveRetention(policy, policies.policy_version, pg_database, store).expire("dry", dry_run=True)
    assert (result.objects_due, result.objects_skipped_held, result.objects_deleted) == (2, 2, 0)
    assert queue_items(pg_database) == []
    assert len(list(store.objects(f"{DOMAIN}/"))) == 2
