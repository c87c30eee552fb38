"""What must hold of the database and the stores at every instant, killed run or not:
the one check that the kill matrix and the other parts of the suite run after each fault.

`assert_invariants` returns the violations it finds (an empty list when all hold), each a short
line naming what is wrong, with counts and ids only, never a row's content.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from retention_pipelines.engine.archive.format import verify
from retention_pipelines.engine.audit.entries import ACTED_ACTIONS
from retention_pipelines.stores import AppDatabase, archive_store_from_url
from retention_pipelines.stores.files import DRAFT_PREFIX
from retention_pipelines_tests.support.app_rows import meal_plan_rows, remaining_ids
from retention_pipelines_tests.support.archives import archive_objects, manifests
from retention_pipelines_tests.support.audit_rows import audit_rows
from retention_pipelines_tests.support.hot_bucket import hot_keys

MANIFEST = ".manifest.json"


@dataclass
class Seeded:
    """What a case put in before the run: the domain's row ids (all due), and for meal_plans each
    row's object in the hot bucket."""

    domain: str
    ids: set[str]
    archive_url: str | None = None  # set where the domain archives
    hot_bucket: str | None = None
    blob_keys: dict[str, str] = field(default_factory=dict)  # record id -> hot object key


def acted_on(database: AppDatabase, seeded: Seeded) -> set[str]:
    """The rows the run has visibly acted on: gone from the table, or (meal_plans) redacted."""
    if seeded.domain == "meal_plans":
        return {rid for rid, (key, _) in meal_plan_rows(database).items() if rid in seeded.ids and key is None}
    return seeded.ids - remaining_ids(database, seeded.domain)


def assert_invariants(database: AppDatabase, seeded: Seeded, settled: bool = False) -> list[str]:
    """The violations of the invariants, after a kill or any fault:
    - every row acted on (gone, or redacted) has exactly one audit entry of its action, and no row
      still there has one; no audit entry (record, action) is written twice;
    - where the domain archives: each such entry names an archive object that exists, has its
      manifest, matches it and lists the record; every object that a manifest names matches it;
      no batch object without its manifest once `settled` (a kill between the object's PUT and its
      manifest's leaves one that holds no deleted row; the rerun rewrites both), and none ever that
      an audit entry names;
    - meal_plans: every PDF gone from the hot bucket has its verified copy in the archive.
    """
    problems: list[str] = []
    entries = audit_rows(database)
    doubled = [k for k, n in Counter((e["domain"], e["record_id"], e["action"]) for e in entries).items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} audit entries written twice, e.g. {doubled[0]}")
    acting = [e for e in entries if e["domain"] == seeded.domain and e["action"] in ACTED_ACTIONS[
        "redacted" if seeded.domain == "meal_plans" else "deleted"]]
    counts = Counter(e["record_id"] for e in acting)
    done = acted_on(database, seeded)
    if more := [rid for rid, n in counts.items() if n > 1]:
        problems.append(f"{len(more)} rows audited more than once, e.g. {more[0]}")
    if unaudited := done - set(counts):
        problems.append(f"{len(unaudited)} rows acted on without an audit entry, e.g. {sorted(unaudited)[0]}")
    if phantom := set(counts) - done:
        problems.append(f"{len(phantom)} audit entries for rows still there, e.g. {sorted(phantom)[0]}")
    if missing := [e["record_id"] for e in acting if e["action"] == "redacted_blob_missing"]:
        problems.append(f"{len(missing)} PDFs audited as missing though every one was uploaded, e.g. {missing[0]}")
    if seeded.archive_url is not None:
        problems += _archive_violations(database, seeded, acting, settled)
    return problems


def _archive_violations(database: AppDatabase, seeded: Seeded, acting: list[dict], settled: bool) -> list[str]:
    problems: list[str] = []
    store = archive_store_from_url(seeded.archive_url)
    # The store's objects: a kill inside a local write leaves a draft (.partial-…) that its listings
    # pass over and no reader takes for an object.
    objects = {key: data for key, data in archive_objects(seeded.archive_url).items()
               if not key.rsplit("/", 1)[-1].startswith(DRAFT_PREFIX)}
    listed = manifests(objects)
    blobs_prefix = f"{seeded.domain}/blobs/"
    batch_objects = {k for k in objects if not k.endswith(MANIFEST) and not k.startswith(blobs_prefix)
                     and not k.startswith("audit_anchors/")}
    if gone := [k for k in listed if k not in objects]:
        problems.append(f"{len(gone)} manifests without their object, e.g. {gone[0]}")
    for key, manifest in listed.items():
        if key in objects and (problem := verify(objects[key], manifest)) is not None:
            problems.append(f"{key} does not match its manifest: {problem}")
    unlisted = batch_objects - set(listed)
    named = {store.key_of(e["archive_uri"]) for e in acting if e["archive_uri"]}
    if settled and unlisted:
        problems.append(f"{len(unlisted)} archive objects without their manifest after the rerun, "
                        f"e.g. {sorted(unlisted)[0]}")
    elif unlisted & named:
        problems.append(f"{len(unlisted & named)} archive objects holding deleted rows without their manifest")
    # Each archived PDF copy: where its batch's manifest says, with the digest it says.
    copies = {rid: where for manifest in listed.values() for rid, where in manifest.get("blobs", {}).items()
              if "sha256" in where}

    def copy_is_verified(rid: str) -> bool:
        where = copies.get(rid)
        data = objects.get(where["archive_key"]) if where else None
        return data is not None and hashlib.sha256(data).hexdigest() == where["sha256"]

    for entry in acting:
        rid, key = entry["record_id"], store.key_of(entry["archive_uri"] or "")
        if key is None:
            problems.append(f"{rid} acted on with no archive object named")
        elif key.startswith(blobs_prefix):
            if not copy_is_verified(rid):
                problems.append(f"{rid} redacted without a verified copy of its PDF at {key}")
        elif rid not in set(listed.get(key, {}).get("record_ids", ())):
            problems.append(f"{rid} deleted but not in the verified object its audit entry names ({key})")
    if seeded.hot_bucket is not None:
        present = hot_keys(seeded.hot_bucket)
        deleted = [rid for rid, key in seeded.blob_keys.items() if key not in present]
        if unsafe := [rid for rid in deleted if not copy_is_verified(rid)]:
            problems.append(f"{len(unsafe)} PDFs deleted before their copy was written and verified, e.g. {unsafe[0]}")
    return problems


def converged(database: AppDatabase, seeded: Seeded) -> list[str]:
    """What a rerun must leave: every due row acted on, each audited exactly once, archives
    verified, no object in flight, the hot bucket empty of due PDFs."""
    problems = assert_invariants(database, seeded, settled=True)
    if left := seeded.ids - acted_on(database, seeded):
        problems.append(f"{len(left)} due rows left after the rerun")
    if seeded.hot_bucket is not None and (left_pdfs := set(seeded.blob_keys.values()) & hot_keys(seeded.hot_bucket)):
        problems.append(f"{len(left_pdfs)} due PDFs left in the hot bucket after the rerun")
    return problems


def deleted_audit_counts(database: AppDatabase) -> Counter:
    return Counter(r["record_id"] for r in audit_rows(database, "deleted"))


def assert_each_deleted_audited_once(database: AppDatabase, inserted: set[str], remaining: set[str]) -> None:
    """Every id gone from the table has exactly one `deleted` audit row, and no audit row names
    an id that is still there."""
    counts = deleted_audit_counts(database)
    gone = inserted - remaining
    duplicates = {rid: n for rid, n in counts.items() if n != 1}
    assert not duplicates, f"ids audited more than once: {list(duplicates.items())[:5]}"
    assert set(counts) == gone, (
        f"{len(gone - set(counts))} deleted ids without an audit row, "
        f"{len(set(counts) - gone)} audit rows for ids still present"
    )


def assert_invariant(database, inserted: set[str], archive_url: str | None) -> set[str]:
    """Every id gone from the table has exactly one `deleted` audit row and, when archiving, sits in
    the manifest of an existing, intact object, the one its audit row names."""
    remaining = remaining_ids(database)
    assert_each_deleted_audited_once(database, inserted, remaining)
    if archive_url is not None:
        store = archive_store_from_url(archive_url)
        objects = archive_objects(archive_url)
        listed: dict[str, set[str]] = {}
        for key, manifest in manifests(objects).items():
            if key in objects:
                assert verify(objects[key], manifest) is None, f"{key} does not match its manifest"
                listed[store.uri(key)] = set(manifest["record_ids"])
        for row in audit_rows(database, "deleted"):
            assert row["record_id"] in listed.get(row["archive_uri"], set()), (
                f"{row['record_id']} deleted but not in the object its audit row names ({row['archive_uri']})")
    return remaining
