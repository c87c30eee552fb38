"""Rows that point at an object in storage (meal_plans' PDFs): the object is archived (encrypted
with its subject's data key), then deleted from hot storage, and only then is its row redacted and
audited."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime

import sqlalchemy as sa

from retention_pipelines.engine.archive_format import encrypt_blob, read_manifest
from retention_pipelines.engine.keys import DataKey
from retention_pipelines.engine.parallel import in_parallel
from retention_pipelines.engine.queries import AuditStamp, DomainTable
from retention_pipelines.engine.results import ArchiveVerificationFailed, Orphans
from retention_pipelines.logs import get_logger
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.schema import audit_log
from retention_pipelines.stores import ArchiveStore, BlobStore
from retention_pipelines.stores.files import KeyOutsideStore

log = get_logger("engine")


class StoredObjects:
    """One domain's objects: where they are (blob store), where they go (archive store)."""

    def __init__(self, policy: DomainPolicy, table: DomainTable, blob_store: BlobStore, archive_store: ArchiveStore):
        self.policy, self.table = policy, table
        self.blob_store, self.archive_store = blob_store, archive_store

    def archive(self, values: list, names: list[str], record_ids: list[str], row_keys: list[DataKey] | None,
                retain_until: datetime | None = None) -> dict:
        """Copy each row's object to the archive store (cold), encrypted with the row's data key
        (its subject's: erasing them makes the copy unreadable), and verify it: {record id: where}.
        row_keys None is a dry run: nothing is written. An object already gone from hot storage is
        either archived by an earlier, interrupted run (its copy is there) or missing, which the act
        step audits as such. retain_until: the S3 Object Lock date, where one is configured.

        The objects go side by side (`object_threads`): each is a few round trips to the stores,
        which wait on the network, not on this process. Nothing is deleted here, so the order in
        which copies land does not matter; what matters is that all of them are verified before
        this returns, and that none of the batch's objects is deleted if one is not."""
        key_at = names.index(self.policy.blob_key_column)
        jobs = [(record_id, row[key_at], row_keys[index] if row_keys is not None else None)
                for index, (record_id, row) in enumerate(zip(record_ids, values))]
        copies = in_parallel(lambda job: self._archive_one(*job, dry_run=row_keys is None, retain_until=retain_until),
                             jobs, self.object_threads(), f"{self.policy.name}-objects")
        return dict(zip(record_ids, copies))

    def object_threads(self) -> int:
        """Objects of one batch in flight at once: as many requests as the stores' connection
        pools take, shared between the batches the engine runs side by side."""
        slots = min(self.blob_store.max_parallel_requests, self.archive_store.max_parallel_requests)
        return max(1, slots // max(1, self.policy.parallel_batches))

    def _archive_one(self, record_id: str, blob_key: str | None, data_key: DataKey | None, dry_run: bool,
                     retain_until: datetime | None) -> dict:
        """One row's object: read from hot storage, encrypted, written cold and verified."""
        archive_key = f"{self.policy.name}/blobs/{record_id}"
        try:
            data = self.blob_store.get(blob_key) if blob_key else None
        except KeyOutsideStore:
            # A key that leads out of the blob store names nobody's PDF that this run may touch:
            # nothing is read, archived or deleted, and its row waits for a person (act).
            return {"outside_store": True}
        if data is None:
            earlier = self.archive_store.exists(archive_key)
            return {"archive_key": archive_key, "earlier": True} if earlier else {"missing": True}
        if dry_run:
            return {"archive_key": archive_key}
        sealed = encrypt_blob(data, data_key, self.policy.name)
        if not self.archive_store.put_cold_verified(archive_key, sealed, retain_until=retain_until):
            raise ArchiveVerificationFailed(f"{self.archive_store.uri(archive_key)} does not match the object "
                                            "it copies; no object or row of its batch was deleted",
                                            self.archive_store.uri(archive_key))
        # The digest of what is stored (ciphertext): a digest of the PDF itself would outlive
        # its erasure and confirm a guess of it.
        return {"archive_key": archive_key, "sha256": hashlib.sha256(sealed).hexdigest(), "key": data_key.key_id}

    def keep_earlier_digests(self, blobs: dict, manifest_key: str) -> dict:
        """Objects gone from hot storage whose copies an interrupted run wrote and verified (killed
        after it deleted them, before it redacted their rows) keep, in the rerun's manifest, the
        entries that run's manifest gave them (the copy's digest and key): the rerun only finds the
        copy there, and its manifest replaces the earlier one under the same name."""
        if not any(where.get("earlier") for where in blobs.values()) or not self.archive_store.exists(manifest_key):
            return blobs
        earlier = read_manifest(self.archive_store.get(manifest_key)).get("blobs", {})
        return {rid: earlier[rid] if where.get("earlier") and "sha256" in earlier.get(rid, {}) else where
                for rid, where in blobs.items()}

    def act(self, connection: sa.Connection, clock_cutoff: datetime, stamp: AuditStamp, pks: list,
            blobs: dict) -> tuple[int, dict[str, str]]:
        """Objects first, then rows: the batch's rows (still due, not held) are locked, their
        archived objects deleted from hot storage in bulk, and only the rows whose object is gone
        are redacted and audited, in this transaction. A row whose object would not go, or whose
        key leads outside the blob store, stays as it was, with a `blob_delete_failed` audit
        entry. Returns (redacted, {record id: why its object would not go})."""
        table = self.table
        key_column = table.table.c[self.policy.blob_key_column]
        rows = connection.execute(sa.select(table.pk, key_column).where(
            table.pk.in_(pks), *table.due(clock_cutoff), table.not_held()).with_for_update()).all()
        outside = {table.record_id(pk) for pk, _ in rows if blobs.get(table.record_id(pk), {}).get("outside_store")}
        archived = {table.record_id(pk): key for pk, key in rows
                    if key and "archive_key" in blobs.get(table.record_id(pk), {})}
        failed = self.blob_store.delete_many(list(archived.values())) if archived else {}
        refused = {rid: f"the object store refused the delete: {failed[key]}" for rid, key in archived.items()
                   if key in failed}
        why = {**refused, **dict.fromkeys(outside, f"its {self.policy.blob_key_column} is outside the blob store "
                                                   "(absolute, with '.', '..' or empty segments, or through a link "
                                                   "out): nothing was read, archived or deleted; correct the key, "
                                                   "then retry")}
        done = []
        keep = [pk for pk, _ in rows if table.record_id(pk) not in why]
        if keep:
            done = connection.execute(table.redact_rows(keep, clock_cutoff)).all()
        entries = []
        for pk, clock_utc in done:
            rid = table.record_id(pk)
            where = blobs.get(rid, {})
            # An erasure's rows are all `erased`; a scheduled run's say whether their object was there.
            action = stamp.action if stamp.action != "redacted" else (
                "redacted" if "archive_key" in where else "redacted_blob_missing")
            entries.append(replace(stamp, action=action,
                                   archive_uri=self.archive_store.uri(where["archive_key"]) if "archive_key" in where
                                   else None).row(rid, table.deadline_value(clock_utc)))
        for rid in sorted(why):
            where = blobs.get(rid, {})
            entries.append(replace(stamp, action="blob_delete_failed",
                                   archive_uri=self.archive_store.uri(where["archive_key"]) if "archive_key" in where
                                   else None).row(rid))
        if entries:
            connection.execute(sa.insert(audit_log), entries)
        if refused:
            log.warning(f"{self.policy.name}: {len(refused)} objects could not be deleted "
                        f"({', '.join(sorted(set(failed.values())))}); their rows were left as they were",
                        extra={"domain": self.policy.name, "step": "act", "objects_failed": len(refused)})
        if outside:
            log.warning(f"{self.policy.name}: {len(outside)} rows' {self.policy.blob_key_column} lead outside the "
                        "blob store; their rows were left as they were, for a person",
                        extra={"domain": self.policy.name, "step": "act", "objects_outside_store": len(outside)})
        return len(done), why

    def orphans(self, connection: sa.Connection) -> Orphans:
        """Objects in hot storage that no row points at, and rows pointing at no object."""
        key_column = self.table.table.c[self.policy.blob_key_column]
        referenced = set(connection.execute(sa.select(key_column).where(key_column.is_not(None))).scalars())
        stored = set(self.blob_store.keys())
        return Orphans(objects_without_row=len(stored - referenced), rows_without_object=len(referenced - stored),
                       objects=len(stored), rows_with_object=len(referenced))
