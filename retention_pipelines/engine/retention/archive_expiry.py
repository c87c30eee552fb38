"""Archive retention: an archived domain's objects live `archive.keep_for` after they were written.

Every object under `<domain>/` in the archive store is the domain's archive: batch objects with
their manifests (`<domain>/YYYY/MM/DD/<sha>.jsonl.gz` + `.manifest.json`) and archived PDFs
(`<domain>/blobs/<record id>`). Nothing else in the store (`audit_anchors/`, `reports/`, the health
probe's `_health/`) is ever listed here: those prefixes cannot be domain names (policies/model.py).
Only keys and the store's own timestamps are read (the file's mtime, S3's LastModified), never an
object's content, whatever its format.

An object is due when written + keep_for ≤ the database's now; a batch object and its manifest are
one unit, due when both are (the later of the two), deleted data first, manifest last.

No object is gone without its audit entry: the store and the database share no transaction, so
the entry comes first. For each due unit:

1. its Object Lock is read (S3's HEAD): a unit under a lock still in force is skipped and counted,
   without an entry (the next day's run tries again); a legal hold past the lock date also goes to
   the manual queue (`blob_delete_failed`, record id = the object key), as it will not lift itself;
2. one `archive_expired` audit entry per object is committed (record id = the key, archive_uri, the
   run, the policy version, deadline = written + keep_for), unless the object already has one;
3. the objects are deleted (in S3, every version, see stores/archive.py).

(Deleting inside the entry's transaction, before its commit, would lose the entry of an object
whose commit then failed; an intent row and a done row would double the entries and need a sweep of
the whole log for unfinished intents.) A kill between 2 and 3 leaves the object with its entry: the
next run finds the entry and deletes the object without writing a second. A kill before 2 leaves
the object and no entry. A delete the store refuses after 2 (a lock the HEAD did not show, a
permission) leaves the entry, an object the next run deletes, and a manual-queue item, resolved by
the run that finally deletes it.

An object "already has an entry" when an `archive_expired` entry of the domain names its key and
was written since its deadline (a second early: SQLite's clock stops at the second). That bound
reads the audit log through its time index instead of the whole log, and tells this object apart
from an earlier one under the same key (content-addressed keys can be written again), whose entry
is older than this object. Were keep_for lengthened between a kill and the rerun, the rerun would
write a second entry for the object: one too many, never one missing.

A legal hold keeps every archived copy of its record: a unit holding a record under an unreleased
hold (a manifest's record ids, an archived PDF's key) is skipped, counted apart, and goes to the
manual queue (`legal_hold_conflict`, record id = the object key) as it is past its keep_for. The
domain's hold gate (engine/oversight/holds.py) is held, shared, while a chunk of units is checked, audited and
deleted: a hold placed meanwhile waits for it, and one placed before is seen.

The Object Lock the retention run puts on an object (stores/archive.py) ends at the database's now
+ keep_for, read before the put: no later than its deadline here, so a lock delays a deletion only
where the store's clock and the database's disagree. A manifest that is not listed right after its
object (which S3 and the folder store always do) is a unit of its own, expired on its own time.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from retention_pipelines.engine.archive.format import read_manifest
from retention_pipelines.engine.audit.entries import Action, AuditStamp, write_entries
from retention_pipelines.engine.oversight.holds import gate_held, held_record_ids
from retention_pipelines.engine.oversight.queue import ACTIVE, SYSTEM_ACTOR, ManualQueue
from retention_pipelines.engine.retention.lanes import bounded_parallel
from retention_pipelines.logs import get_logger
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.policies.model import format_duration
from retention_pipelines.schema import audit_log, manual_queue
from retention_pipelines.stores import AppDatabase, ArchiveStore, HeldLock
from retention_pipelines.stores.archive import DeleteRefused

log = get_logger("engine")

MANIFEST_SUFFIX = ".manifest.json"
QUEUE_REASON = "blob_delete_failed"  # "the object store refused the delete"; record id = the key
HELD_REASON = "legal_hold_conflict"  # "a record under legal hold is in it"; record id = the key
CHUNK = 400  # units whose earlier entries are looked up in one query (≤ 800 keys: SQLite binds ≤ 999)
# Units handled side by side, each in its own transaction: a unit is mostly waiting on S3 round
# trips (lock, versions, deletes).
WORKERS = 8
# The check's allowance: a daily job deletes an object up to a day after its deadline.
GRACE = timedelta(days=1)


@dataclass(frozen=True)
class ArchiveUnit:
    """What goes together: a batch object and its manifest (data first), or one object alone."""

    objects: tuple[tuple[str, datetime], ...]

    @property
    def written_at(self) -> datetime:
        return max(written for _, written in self.objects)

    @property
    def keys(self) -> list[str]:
        return [key for key, _ in self.objects]


@dataclass
class Expiry:
    """One run of a domain's archive expiry: counts of objects, never their content."""

    domain: str
    dry_run: bool
    database_now: datetime
    keep_for: timedelta
    objects_due: int = 0  # past keep_for when the run looked
    objects_deleted: int = 0  # or, in a dry run, that would be
    objects_skipped_locked: int = 0  # under an Object Lock or legal hold: tried again tomorrow
    objects_skipped_held: int = 0  # holding a record under a legal hold of ours: kept while it lasts
    objects_refused: int = 0  # the store refused the delete although no lock was seen
    audit_entries: int = 0
    queued: int = 0  # manual-queue items added or counted again
    oldest_due_written_at: datetime | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Overdue:
    """What the check sees: objects kept past keep_for + grace, and the oldest object's age."""

    objects: int
    overdue: int
    overdue_under_lock: int
    oldest_age: timedelta
    grace: timedelta
    overdue_under_hold: int = 0  # kept for a record under a legal hold (not under an Object Lock)

    @property
    def overdue_unlocked(self) -> int:
        """Kept past keep_for for no reason that holds: neither an Object Lock nor a legal hold."""
        return self.overdue - self.overdue_under_lock - self.overdue_under_hold


@dataclass
class _UnitOutcome:
    deleted: int = 0
    skipped_locked: int = 0
    skipped_held: int = 0
    refused: int = 0
    audit_entries: int = 0
    queued: int = 0
    gone: bool = False  # every object of the unit is gone


def is_archive_key(domain: str, record_id: str) -> bool:
    """Whether a manual-queue item's record id is an archive object of the domain (record ids of
    rows hold no '/')."""
    return record_id.startswith(f"{domain}/")


def archive_units(objects: Iterable[tuple[str, datetime]]) -> Iterator[ArchiveUnit]:
    """Objects in key order → units: a manifest joins the data object listed just before it (a
    store lists `<key>` then `<key>.manifest.json`); anything else is a unit alone."""
    pending: tuple[str, datetime] | None = None
    for key, written in objects:
        if pending is not None and key == pending[0] + MANIFEST_SUFFIX:
            yield ArchiveUnit((pending, (key, written)))
            pending = None
            continue
        if pending is not None:
            yield ArchiveUnit((pending,))
        pending = (key, written)
    if pending is not None:
        yield ArchiveUnit((pending,))


class ArchiveRetention:
    """One archived domain's archive objects, deleted once past keep_for, each deletion audited."""

    def __init__(self, policy: DomainPolicy, policy_version: str, database: AppDatabase,
                 archive_store: ArchiveStore):
        if not policy.archive.enabled or policy.archive.keep_for is None:
            raise ValueError(f"domain {policy.name} is not archived (archive.enabled, archive.keep_for): "
                             "it has no archive to expire")
        self.policy, self.policy_version = policy, policy_version
        self.database, self.archive_store = database, archive_store
        self.keep_for: timedelta = policy.archive.keep_for
        self.prefix = f"{policy.name}/"
        # What a run cannot finish goes to a person.
        self.queue = ManualQueue(database, policy_version)

    def _deadline(self, written_at: datetime) -> datetime:
        return written_at + self.keep_for

    # the run -------------------------------------------------------------------------------------
    def expire(self, run_id: str, dry_run: bool = False, lock: HeldLock | None = None,
               key: str | None = None) -> Expiry:
        """Delete every object of the domain past keep_for (or only the unit holding `key`: a
        manual-queue retry), each with its audit entry. A dry run looks and counts, nothing more.
        A retry counts its attempt on its own item: it adds to and resolves nothing in the queue."""
        if key is not None and not key.startswith(self.prefix):
            raise ValueError(f"{key!r} is not an archive object of domain {self.policy.name} ({self.prefix}…)")
        queue = self.queue if key is None else None
        started = time.monotonic()
        now = self.database.now()
        result = Expiry(self.policy.name, dry_run, now, self.keep_for)
        units = archive_units(self.archive_store.objects(key or self.prefix))
        due = (unit for unit in units if (key is None or key in unit.keys) and self._deadline(unit.written_at) <= now)
        while chunk := list(itertools.islice(due, CHUNK)):
            with gate_held(self.database, [self.policy.name]):
                self._expire_chunk(chunk, result, now, run_id, dry_run, lock, queue)
        result.seconds = time.monotonic() - started
        verb = "would delete" if dry_run else "deleted"
        log.info(f"{self.policy.name}: archive expiry: {verb} {result.objects_deleted} of {result.objects_due} objects "
                 f"past keep_for, {result.objects_skipped_locked} under an Object Lock, {result.objects_skipped_held} "
                 f"kept for a legal hold, {result.objects_refused} refused",
                 extra={"domain": self.policy.name, "step": "archive_expiry", "dry_run": dry_run,
                        "objects_due": result.objects_due, "objects_deleted": result.objects_deleted,
                        "objects_skipped_locked": result.objects_skipped_locked,
                        "objects_skipped_held": result.objects_skipped_held,
                        "objects_refused": result.objects_refused, "audit_entries": result.audit_entries})
        return result

    def _expire_chunk(self, chunk: list[ArchiveUnit], result: Expiry, now: datetime, run_id: str, dry_run: bool,
                      lock: HeldLock | None, queue: ManualQueue | None) -> None:
        """Units of one chunk, under the domain's hold gate: the holds read here stay the holds
        until the last of them is deleted."""
        with self.database.connect() as connection:
            held = held_record_ids(connection, self.policy.name)
        audited = set() if dry_run else self._audited(chunk)
        for unit in chunk:
            result.objects_due += len(unit.objects)
            oldest = min(written for _, written in unit.objects)
            if result.oldest_due_written_at is None or oldest < result.oldest_due_written_at:
                result.oldest_due_written_at = oldest

        def expire_unit(unit: ArchiveUnit) -> tuple[ArchiveUnit, _UnitOutcome]:
            return unit, self._expire_unit(unit, audited, held, now, run_id, dry_run, lock, queue)

        deleted = []
        for unit, outcome in bounded_parallel(expire_unit, chunk, WORKERS):
            result.objects_deleted += outcome.deleted
            result.objects_skipped_locked += outcome.skipped_locked
            result.objects_skipped_held += outcome.skipped_held
            result.objects_refused += outcome.refused
            result.audit_entries += outcome.audit_entries
            result.queued += outcome.queued
            deleted += unit.keys if outcome.gone else []
        if not dry_run:
            self._resolve_queue_items(queue, deleted, run_id)

    def _expire_unit(self, unit: ArchiveUnit, audited: set[str], held: set[str], now: datetime, run_id: str,
                     dry_run: bool, lock: HeldLock | None, queue: ManualQueue | None) -> _UnitOutcome:
        """Legal holds → lock check → audit entries committed → delete (a dry run stops after the
        checks, counting what it would delete)."""
        result = _UnitOutcome()
        keeps = self._held_in(unit, held)
        if keeps:
            result.skipped_held += len(unit.objects)
            if not dry_run:  # one item for the unit, named by its data object
                self._needs_person(queue, unit.keys[0],
                                   f"archive object past its keep_for ({self._keep_for_text()}) holds {keeps} under "
                                   "legal hold: kept while the hold lasts", run_id, result, HELD_REASON)
            return result
        locks = [(key, self.archive_store.lock(key)) for key in unit.keys]
        held = [(key, found) for key, found in locks if found is not None and found.in_force(now)]
        if held:
            result.skipped_locked += len(unit.objects)
            for key, found in held:
                if not dry_run and (found.retain_until is None or found.retain_until <= now):
                    # A legal hold past the lock date: it will not lift itself.
                    self._needs_person(queue, key, f"archive object past its keep_for ({self._keep_for_text()}) "
                                       "is under an S3 legal hold", run_id, result)
            return result
        if dry_run:
            result.deleted += len(unit.objects)
            return result
        if lock is not None:
            lock.ensure_held()  # a run that lost its lock must not delete anything more
        stamp = AuditStamp(self.policy.name, Action.ARCHIVE_EXPIRED, run_id, self.policy_version)
        entries = [{**stamp.row(key, self.database.bind_time(self._deadline(written))),
                    "archive_uri": self.archive_store.uri(key)}
                   for key, written in unit.objects if key not in audited]
        if entries:
            with self.database.begin() as connection:
                result.audit_entries += write_entries(connection, entries)
        for index, key in enumerate(unit.keys):
            try:
                self.archive_store.delete(key)
            except DeleteRefused as exc:
                result.refused += len(unit.keys) - index
                self._needs_person(queue, key, f"archive object past its keep_for ({self._keep_for_text()}): {exc}",
                                   run_id, result)
                return result
            result.deleted += 1
        result.gone = True
        return result

    def _held_in(self, unit: ArchiveUnit, held: set[str]) -> str | None:
        """What of the unit a legal hold keeps ('record …', 'records whose ids the store cannot
        tell'), or None. Only read when the domain has holds: a manifest's record ids, or the record
        id an archived PDF is named by."""
        if not held:
            return None
        records: set[str] = set()
        for key in unit.keys:
            if key.startswith(f"{self.prefix}blobs/"):
                records.add(key.removeprefix(f"{self.prefix}blobs/"))
            elif key.endswith(MANIFEST_SUFFIX):
                records.update(read_manifest(self.archive_store.get(key)).get("record_ids", []))
            elif key + MANIFEST_SUFFIX not in unit.keys:
                # A data object without its manifest: which records it holds cannot be read without its
                # keys, so it is kept as if it held one, for a person to look at.
                return "records it cannot name (its manifest is gone)"
        kept = sorted(records & held)
        return f"{len(kept)} record(s)" if kept else None

    def _keep_for_text(self) -> str:
        return format_duration(self.keep_for)

    def _needs_person(self, queue: ManualQueue | None, key: str, detail: str, run_id: str, result: _UnitOutcome,
                      reason: str = QUEUE_REASON) -> None:
        if queue is None:
            return
        queue.add(self.policy.name, key, reason, detail, self.policy.sla.resolve_within, run_id)
        result.queued += 1

    def _audited(self, chunk: list[ArchiveUnit]) -> set[str]:
        """The keys of the chunk that already have their `archive_expired` entry (module docstring)."""
        keys = [key for unit in chunk for key in unit.keys]
        since = min(self._deadline(written) for unit in chunk for _, written in unit.objects)
        since = since.replace(microsecond=0) - timedelta(seconds=1)
        query = sa.select(audit_log.c.record_id).where(
            audit_log.c.occurred_at >= self.database.bind_time(since), audit_log.c.domain == self.policy.name,
            audit_log.c.action == Action.ARCHIVE_EXPIRED.value, audit_log.c.record_id.in_(keys))
        with self.database.connect() as connection:
            return set(connection.execute(query).scalars())

    def _resolve_queue_items(self, queue: ManualQueue | None, keys: list[str], run_id: str) -> None:
        """Items about objects this run deleted are done."""
        if not keys or queue is None:
            return
        query = sa.select(manual_queue.c.id).where(
            manual_queue.c.domain == self.policy.name, manual_queue.c.reason.in_((QUEUE_REASON, HELD_REASON)),
            manual_queue.c.status.in_(ACTIVE), manual_queue.c.record_id.in_(keys))
        with self.database.connect() as connection:
            items = list(connection.execute(query).scalars())
        for item_id in items:
            queue.resolve(item_id, SYSTEM_ACTOR, f"deleted by archive expiry run {run_id}", run_id)

    # the check -----------------------------------------------------------------------------------
    def count_overdue(self, grace: timedelta = GRACE) -> Overdue:
        """Objects kept past written + keep_for + grace, those of them under an Object Lock still in
        force or kept for a legal hold, and how old the oldest object is, all by the database's now.
        Keys only (and, while the domain has holds, the manifests' record ids)."""
        now = self.database.now()
        limit = now - self.keep_for - grace
        objects = under_lock = 0
        overdue: list[tuple[str, datetime]] = []
        oldest: datetime | None = None
        for key, written in self.archive_store.objects(self.prefix):
            objects += 1
            oldest = written if oldest is None or written < oldest else oldest
            if written <= limit:
                overdue.append((key, written))
        with self.database.connect() as connection:
            held = held_record_ids(connection, self.policy.name)
        under_hold = 0
        for unit in archive_units(overdue):
            if self._held_in(unit, held):
                under_hold += len(unit.objects)
                continue
            for key in unit.keys:
                found = self.archive_store.lock(key)
                under_lock += bool(found is not None and found.in_force(now))
        return Overdue(objects, len(overdue), under_lock, max(now - oldest, timedelta(0)) if oldest else timedelta(0),
                       grace, under_hold)
