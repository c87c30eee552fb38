"""Rows that point at an object in storage (meal_plans' PDFs): the object is archived (encrypted
with its subject's data key), then its row redacted and audited, and the object deleted from hot
storage, in the transaction that commits the redaction — only the version that was archived, and
only when no row left behind still points at it."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag

from retention_pipelines.engine.archive.chunked import CHUNK_BYTES, SealedObject, sealed_size
from retention_pipelines.engine.archive.format import read_manifest
from retention_pipelines.engine.archive.keys import NONCE_BYTES, DataKey, open_sealed, seal
from retention_pipelines.engine.audit.entries import Action, AuditStamp, write_entries
from retention_pipelines.engine.retention.lanes import ByteBudget, in_parallel
from retention_pipelines.engine.retention.results import ArchiveVerificationFailed, Orphans
from retention_pipelines.engine.retention.selection import Selection
from retention_pipelines.engine.retention.table import DomainTable
from retention_pipelines.logs import get_logger
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.stores import ArchiveStore, BlobStore
from retention_pipelines.stores.blob import CHANGED, OpenedBlob
from retention_pipelines.stores.files import KeyOutsideStore

log = get_logger("engine")

# The detail of the audit entry of a row redacted while its object stays for another row.
KEPT = "object kept: still referenced"
# The bytes a run's object copies may hold in memory at once (RETENTION_BLOB_BYTES_IN_FLIGHT).
BYTES_IN_FLIGHT = 32 * 1024 * 1024
# Why a row whose key leads out of the blob store stays (its queue item's detail).
OUTSIDE = ("its key is outside the blob store (absolute, with '.', '..' or empty segments, or through a link "
           "out): nothing was read, archived or deleted; correct the key, then retry")


@dataclass(frozen=True)
class ObjectPlan:
    """What one batch does, decided with its rows locked: the rows to redact ({record id: the
    detail of its audit entry}), the objects to delete ({key: the version archived}) and whose
    rows those are ({record id: key}), and how many rows stay as they were because their key or
    their object changed since it was archived."""

    redact: dict[str, str | None]
    delete: dict[str, str]
    deleting: dict[str, str]
    changed: int
    acting: frozenset[str] = frozenset()  # the batch's rows that are due and not held


class StoredObjects:
    """One domain's objects: where they are (blob store), where they go (archive store).
    name_key keys what the manifests keep of each object: its key's fingerprint, its version
    encrypted."""

    def __init__(self, policy: DomainPolicy, table: DomainTable, blob_store: BlobStore, archive_store: ArchiveStore,
                 name_key: bytes | None = None, bytes_in_flight: int = BYTES_IN_FLIGHT):
        self.policy, self.table = policy, table
        self.blob_store, self.archive_store = blob_store, archive_store
        self.name_key = name_key
        # One budget for the run: every batch's object threads draw on it.
        self.budget = ByteBudget(bytes_in_flight)

    def archive(self, values: list, names: list[str], record_ids: list[str], row_keys: list[DataKey] | None,
                retain_until: datetime | None = None) -> dict:
        """Copy each row's object to the archive store (cold), encrypted with the row's data key
        (its subject's: erasing them makes the copy unreadable), and verify it: {record id: where}.
        row_keys None is a dry run: nothing is written. An object already gone from hot storage is
        either archived by an earlier, interrupted run (its copy is there) or missing, which the act
        step audits as such. retain_until: the S3 Object Lock date, where one is configured.

        The objects go side by side (`object_threads`): each is a few round trips to the stores,
        which wait on the network, not on this process. Each is streamed, a chunk at a time, and
        takes from the run's budget of bytes what its copy holds at most (`bytes_held`): however
        large the objects, the bytes in memory stay within the budget. Nothing is deleted here, so
        the order in which copies land does not matter; what matters is that all of them are
        verified before this returns, and that none of the batch's objects is deleted if one is
        not."""
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

    def bytes_held(self, size: int | None) -> int:
        """What copying an object of `size` bytes (unknown: None) holds in memory at most: a
        chunk read and its ciphertext, and what the archive store gathers before it writes (an S3
        part); never more than the whole budget."""
        chunk = CHUNK_BYTES if size is None else min(size, CHUNK_BYTES)
        gathered = self.archive_store.write_buffer_bytes
        if size is not None:
            gathered = min(gathered, sealed_size(size) + sealed_size(size) // 8)
        return max(1, min(self.budget.total, 2 * chunk + gathered))

    def _open_within_budget(self, blob_key: str) -> tuple[OpenedBlob | None, int]:
        """The object opened, with what its copy holds taken from the budget: (None, 0) when it is
        gone. Its size is known once it is open; an object opened while the budget is spent is
        closed again while it waits (a connection left unread that long may be cut), then opened
        anew."""
        taken = 0
        try:
            while True:
                opened = self.blob_store.open(blob_key)
                if opened is None:
                    self.budget.give_back(taken)
                    return None, 0
                needed = self.bytes_held(opened.size)
                if needed <= taken:
                    return opened, taken
                # Nothing is held while waiting, so that two waiters never hold what the other needs.
                self.budget.give_back(taken)
                taken = self.budget.take(needed, wait=False)
                if taken:
                    return opened, taken
                opened.close()
                taken = self.budget.take(needed)
        except BaseException:
            self.budget.give_back(taken)
            raise

    def _archive_one(self, record_id: str, blob_key: str | None, data_key: DataKey | None, dry_run: bool,
                     retain_until: datetime | None) -> dict:
        """One row's object: read from hot storage, encrypted and written cold chunk by chunk, and verified."""
        archive_key = f"{self.policy.name}/blobs/{record_id}"
        try:
            opened, taken = self._open_within_budget(blob_key) if blob_key else (None, 0)
        except KeyOutsideStore:
            # A key that leads out of the blob store names nobody's PDF that this run may touch:
            # nothing is read, archived or deleted, and its row waits for a person (act).
            return {"outside_store": True}
        if opened is None:
            seen = {"blob": self.fingerprint("key", blob_key)}  # what the row pointed at, for the act step
            if not self.archive_store.exists(archive_key):
                return {"missing": True, **seen}
            return {"archive_key": archive_key, "earlier": True, **seen}
        try:
            if dry_run:
                return {"archive_key": archive_key}
            sealed = SealedObject(opened, data_key, self.policy.name)
            stored = self.archive_store.put_cold_streamed(archive_key, sealed, retain_until=retain_until)
        finally:
            opened.close()
            self.budget.give_back(taken)
        # Verified twice over: the store holds exactly what it was sent, and what it was sent is
        # what was encrypted here (the digest the manifest keeps).
        if stored is None or stored != sealed.sha256:
            raise ArchiveVerificationFailed(f"{self.archive_store.uri(archive_key)} does not match the object "
                                            "it copies; no object or row of its batch was deleted",
                                            self.archive_store.uri(archive_key))
        # The digest of what is stored (ciphertext): a digest of the PDF itself would outlive
        # its erasure and confirm a guess of it. For the same reason the object's key is kept as a
        # keyed fingerprint and the version read (an ETag is most often the PDF's MD5) encrypted:
        # the act step deletes the object only in that version, and only for a row whose key is
        # still this one.
        return {"archive_key": archive_key, "sha256": sealed.sha256, "key": data_key.key_id,
                "blob": self.fingerprint("key", blob_key), "version": self._seal_version(archive_key, opened.version)}

    def fingerprint(self, what: str, value: str | None) -> str:
        """A keyed digest of an object's key, as the manifests keep it."""
        return hmac.new(self._name_key(), f"{what}\0{value or ''}".encode(), hashlib.sha256).hexdigest()

    def _seal_version(self, archive_key: str, version: str) -> str:
        nonce, sealed = seal(self._version_key(), version.encode(), archive_key.encode())
        return base64.b64encode(nonce + sealed).decode()

    def _open_version(self, where: dict) -> str | None:
        """The version the archive step copied; None when it copied none (an interrupted run did)
        or what the manifest says cannot be read (then nothing is deleted on its word)."""
        if "version" not in where:
            return None
        raw = base64.b64decode(where["version"])
        try:
            return open_sealed(self._version_key(), raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                               where["archive_key"].encode()).decode()
        except InvalidTag:
            return None

    def _version_key(self) -> bytes:
        return hmac.new(self._name_key(), b"object versions", hashlib.sha256).digest()

    def _name_key(self) -> bytes:
        if self.name_key is None:
            raise ValueError(f"domain {self.policy.name}: objects are archived only with the archive's keys")
        return self.name_key

    def keep_earlier_digests(self, blobs: dict, manifest_key: str) -> dict:
        """Objects gone from hot storage whose copies an interrupted run wrote and verified (killed
        after it deleted them, before it redacted their rows) keep, in the rerun's manifest, the
        entries that run's manifest gave them (the copy's digest and key): the rerun only finds the
        copy there, and its manifest replaces the earlier one under the same name."""
        if not any(where.get("earlier") for where in blobs.values()) or not self.archive_store.exists(manifest_key):
            return blobs
        earlier = read_manifest(self.archive_store.get(manifest_key)).get("blobs", {})
        # The key is the one the row points at now: the act step compares the row with it.
        return {rid: {**earlier[rid], "blob": where["blob"]}
                if where.get("earlier") and "sha256" in earlier.get(rid, {}) else where
                for rid, where in blobs.items()}

    def act(self, connection: sa.Connection, clock_cutoff: datetime, selection: Selection, stamp: AuditStamp,
            pks: list, blobs: dict,
            before_delete: Callable[[sa.Connection], None] | None = None) -> tuple[int, dict[str, str]]:
        """The batch's rows and objects, in the caller's transaction: plan() decides with the rows
        locked; before_delete (the run's lock and fence) is checked; the rows are redacted and
        audited; only then are the objects deleted, each only in the version archived, and the
        transaction left to commit. An object that would not go takes its rows' redaction back
        (to a savepoint): they stay as they were, with a `blob_delete_failed` audit entry, unless
        the object had only changed since it was archived, which the next run archives again.
        So no object is deleted without the audit entries of its rows written before it, in the
        transaction that commits them (if that commit fails, the object is gone with its verified
        copy in the archive, and the next run redacts and audits its rows). Returns (redacted,
        {record id: why its object would not go})."""
        plan = self.plan(connection, clock_cutoff, selection, pks, blobs)
        outside = {rid: OUTSIDE for rid in sorted(plan.acting) if blobs.get(rid, {}).get("outside_store")}
        if before_delete is not None:
            before_delete(connection)
        failed: dict[str, str] = {}
        with connection.begin_nested() as redacting:
            done = self._redact(connection, clock_cutoff, selection, stamp, plan.redact, blobs)
            if plan.delete:
                failed = self.blob_store.delete_many(list(plan.delete), plan.delete)
            if failed:
                redacting.rollback()
        stayed = {rid for rid, key in plan.deleting.items() if key in failed}
        refused = {rid: failed[plan.deleting[rid]] for rid in stayed if failed[plan.deleting[rid]] != CHANGED}
        if failed:
            done = self._redact(connection, clock_cutoff, selection, stamp,
                                {rid: detail for rid, detail in plan.redact.items() if rid not in stayed}, blobs)
            if refused:
                log.warning(f"{self.policy.name}: {len(refused)} objects could not be deleted "
                            f"({', '.join(sorted(set(refused.values())))}); their rows were left as they were",
                            extra={"domain": self.policy.name, "step": "act", "objects_failed": len(refused)})
        refused = {rid: f"the object store refused the delete: {why}" for rid, why in refused.items()}
        if outside:
            refused.update(outside)
            log.warning(f"{self.policy.name}: {len(outside)} rows' {self.policy.blob_key_column} lead outside the "
                        "blob store; their rows were left as they were, for a person",
                        extra={"domain": self.policy.name, "step": "act", "objects_outside_store": len(outside)})
        write_entries(connection, [
            replace(stamp, action=Action.BLOB_DELETE_FAILED, archive_uri=self.archive_store.uri(
                blobs[rid]["archive_key"]) if "archive_key" in blobs.get(rid, {}) else None).row(rid)
            for rid in sorted(refused)])
        changed = plan.changed + len(stayed) - len(refused)
        if changed:
            log.warning(f"{self.policy.name}: {changed} rows left as they were: their object or its key changed "
                        "since it was archived; the next run archives them again",
                        extra={"domain": self.policy.name, "step": "act", "rows_changed_since_archive": changed})
        return done, refused

    def plan(self, connection: sa.Connection, clock_cutoff: datetime, selection: Selection, pks: list,
             blobs: dict) -> ObjectPlan:
        """The one decision of what goes. The batch's transaction has passed its domain's hold gate
        (engine/oversight/holds.py: a hold placed from now on waits for the commit); the batch's rows and
        every row that points at the same objects are locked, in key order (two batches sharing an
        object wait for each other rather than deadlock). A row is redacted if it is due, not held, in this batch and
        still points where it did when archived (and an object the archive step found missing is
        missing still). Its object is deleted only if every row pointing at it is redacted here,
        and then only in the version archived (the store's conditional delete); otherwise the
        row's link to it goes (the retention rule is about this purchase's record) and the object
        stays for the purchases that still need it."""
        table, by_rid = self.table, {}
        key = table.table.c[self.policy.blob_key_column]
        batch = table.pk.in_(pks)
        sharing = key.in_(sa.select(key).where(batch, key.is_not(None)))
        acting = sa.and_(batch, *table.due(clock_cutoff, selection), table.not_held()).label("acting")
        rows = connection.execute(sa.select(table.pk, key, acting).where(sa.or_(batch, sharing))
                                  .order_by(table.pk).with_for_update()).all()
        holders: dict[str, set[str]] = {}
        for pk, blob_key, is_acting in rows:
            by_rid[table.record_id(pk)] = (blob_key, bool(is_acting))
            if blob_key is not None:
                holders.setdefault(blob_key, set()).add(table.record_id(pk))
        archived = {rid: self._open_version(blobs[rid]) for rid, (blob_key, is_acting) in by_rid.items()
                    if is_acting and self._same_key(blobs.get(rid, {}), blob_key)}
        # A row whose object was not copied now is redacted only while that object is still absent:
        # one that appeared since has no copy. Few rows (missing PDFs, reruns): one request each.
        unseen = sorted({by_rid[rid][0] for rid, version in archived.items()
                         if version is None and by_rid[rid][0] is not None})
        appeared = {blob_key for blob_key, version in zip(unseen, in_parallel(
            self.blob_store.version, unseen, self.object_threads(), f"{self.policy.name}-absent")) if version}
        unchanged = {rid for rid, version in archived.items() if version is not None or by_rid[rid][0] not in appeared}
        redact, delete, deleting = {}, {}, {}
        for rid in sorted(unchanged):
            blob_key, version = by_rid[rid][0], archived[rid]
            if version is None:  # no object to delete
                redact[rid] = None
            elif holders[blob_key] <= unchanged:
                redact[rid], deleting[rid] = None, blob_key
                delete.setdefault(blob_key, version)
            else:
                redact[rid] = KEPT
        changed = sum(1 for _, is_acting in by_rid.values() if is_acting) - len(unchanged)
        acting = frozenset(rid for rid, (_, is_acting) in by_rid.items() if is_acting)
        return ObjectPlan(redact, delete, deleting, changed, acting)

    def _same_key(self, where: dict, blob_key: str | None) -> bool:
        """Whether a row points where it did when the archive step read it: at the object it
        copied (or found copied), or at the one it found missing."""
        return ("archive_key" in where or where.get("missing", False)) and \
            where.get("blob") == self.fingerprint("key", blob_key)

    def _redact(self, connection: sa.Connection, clock_cutoff: datetime, selection: Selection, stamp: AuditStamp,
                redact: dict[str, str | None], blobs: dict) -> int:
        """Redact these rows and write each one's audit entry; returns how many."""
        table = self.table
        done = connection.execute(table.redact_rows([table.pk_value(rid) for rid in redact], clock_cutoff,
                                                    selection)).all() if redact else []
        entries = []
        for pk, clock_utc in done:
            rid = table.record_id(pk)
            where = blobs.get(rid, {})
            # An erasure's rows are all `erased`; a scheduled run's say whether their object was there.
            action = stamp.action if stamp.action != Action.REDACTED else (
                Action.REDACTED if "archive_key" in where else Action.REDACTED_BLOB_MISSING)
            detail = "; ".join(part for part in (stamp.detail, redact[rid]) if part) or None
            entries.append(replace(stamp, action=action, detail=detail,
                                   archive_uri=self.archive_store.uri(where["archive_key"]) if "archive_key" in where
                                   else None).row(rid, table.deadline_value(clock_utc, selection)))
        write_entries(connection, entries)
        return len(done)

    def orphans(self, connection: sa.Connection) -> Orphans:
        """Objects in hot storage that no row points at, and rows pointing at no object."""
        key_column = self.table.table.c[self.policy.blob_key_column]
        referenced = set(connection.execute(sa.select(key_column).where(key_column.is_not(None))).scalars())
        stored = set(self.blob_store.keys())
        return Orphans(objects_without_row=len(stored - referenced), rows_without_object=len(referenced - stored),
                       objects=len(stored), rows_with_object=len(referenced))
