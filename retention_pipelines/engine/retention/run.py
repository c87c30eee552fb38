"""The retention run for any domain a policy describes, in the steps of the design:

1. find    — the cutoff from the database's clock; count what is due (no ids kept in memory)
2. archive — per batch: rows → JSON lines encrypted per subject + manifest → archive store, read back,
             decrypted, verified
3. act     — per batch, ONE transaction: DELETE (or redact) … RETURNING pk + one audit row per pk
4. audit   — the run's audit rows counted back against what it acted on

Every step is safe to repeat: a batch is whole or untouched; the delete's own WHERE skips what is
gone, and only the rows a DELETE/UPDATE … RETURNING hands back are audited, so no row is acted on
or audited twice; archive objects are content-addressed, so re-archiving rewrites the same object.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import sqlalchemy as sa

from retention_pipelines.engine.archive.format import encode_batch, read_manifest, verify
from retention_pipelines.engine.archive.keys import ArchiveKeys, DataKey
from retention_pipelines.engine.audit.entries import ACTED_ACTIONS, Action, AuditStamp, write_entries, write_held_once
from retention_pipelines.engine.oversight.holds import pass_gate
from retention_pipelines.engine.oversight.queue import SYSTEM_ACTOR, ManualQueue
from retention_pipelines.engine.retention.blobs import BYTES_IN_FLIGHT, StoredObjects
from retention_pipelines.engine.retention.fence import DomainFence
from retention_pipelines.engine.retention.lanes import bounded_parallel
from retention_pipelines.engine.retention.memory import give_large_blocks_back
from retention_pipelines.engine.retention.pacing import BatchPacer
from retention_pipelines.engine.retention.results import (
    Acted,
    Archived,
    ArchivedBatch,
    ArchiveVerificationFailed,
    Audited,
    Batch,
    BatchDone,
    BatchOutcome,
    Found,
    Orphans,
    Refusal,
    RunReport,
)
from retention_pipelines.engine.retention.selection import DUE, Selection
from retention_pipelines.engine.retention.table import DomainTable, DueRow, KeyRange
from retention_pipelines.logs import get_logger
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.schema import audit_log, ensure_current
from retention_pipelines.stores import AppDatabase, ArchiveStore, BlobStore, HeldLock, StoreUnavailable

log = get_logger("engine")


class RetentionEngine:
    """One domain's retention, against one database and one archive store."""

    def __init__(self, policy: DomainPolicy, policy_version: str, database: AppDatabase,
                 archive_store: ArchiveStore, blob_store: BlobStore | None = None, keys: ArchiveKeys | None = None,
                 blob_bytes_in_flight: int = BYTES_IN_FLIGHT):
        self.policy, self.policy_version = policy, policy_version
        self.database, self.archive_store, self.blob_store = database, archive_store, blob_store
        if policy.blob_key_column and blob_store is None:
            raise ValueError(f"domain {policy.name} keeps objects ({policy.blob_key_column}): it needs a blob store")
        if policy.archive.enabled and keys is None:
            raise ValueError(f"domain {policy.name} archives its rows: it needs the archive keys")
        try:
            ensure_current(database.engine)
        except sa.exc.OperationalError as exc:
            raise database.connect_error(exc) from None
        # Refused (PolicyMismatch) unless the table is what the policy requires: a wall-time clock
        # without its declared zone is never guessed at.
        self.table = DomainTable.of(policy, database)
        # The data keys the archives are encrypted with (crypto-shredding).
        self.keys = keys
        self.objects = StoredObjects(policy, self.table, blob_store, archive_store,
                                     self.keys.hash_key if self.keys else None,
                                     blob_bytes_in_flight) if blob_store else None
        # What the run cannot finish goes to a person; a retry of a queue item counts its own attempt.
        self.queue = ManualQueue(database, policy_version)
        give_large_blocks_back()  # a long run's memory stays where a short run's is

    def action(self, selection: Selection) -> str:
        """The audit action of each row the run acts on: an erasure's rows are `erased`, naming its request."""
        return Action.ERASED.value if selection.subject is not None else self.policy.action_name

    def _needs_person(self, record_id: str, reason: str, detail: str, run_id: str | None,
                      selection: Selection) -> None:
        if selection.retrying:  # the retry counts its attempt on its own item
            return
        if selection.audit_detail:
            detail = f"{selection.audit_detail}: {detail}"
        # An erasure's item names its request: its retry erases the record.
        self.queue.add(self.policy.name, record_id, reason, detail, self.policy.sla.resolve_within,
                       run_id or SYSTEM_ACTOR, erasure_request_id=selection.erasure_request_id)

    @contextlib.contextmanager
    def _failed_verification_to_queue(self, run_id: str | None, selection: Selection):
        try:
            yield
        except ArchiveVerificationFailed as exc:
            self._needs_person(exc.uri or f"{self.policy.name} archive", "archive_verification_failed", str(exc),
                               run_id, selection)
            raise

    # 1. find ---------------------------------------------------------------------------------
    def find(self, window_start: datetime | None = None, window_end: datetime | None = None,
             selection: Selection = DUE) -> Found:
        """Everything selected whose deadline is at or before the cutoff, the earlier of the window's
        end and the database's now, is due: rows of the window and any left from before it. The
        steps after find work on what it found: the selection travels with it."""
        now = self.database.now()
        cutoff = min(window_end, now) if window_end is not None else now
        clock_cutoff = cutoff - self.policy.retain_for
        start_clock = window_start - self.policy.retain_for if window_start is not None else None
        bind = self.database.bind_time
        with self._connect() as connection:
            in_window, total = connection.execute(
                self.table.count_due(bind(clock_cutoff), selection, bind(start_clock) if start_clock else None,
                                     held=True)
            ).one()
            held_clocks = self.table.held_due_clocks(connection, bind(clock_cutoff), selection)
        # The held rows, few, taken out of the counts the clock index gave.
        held = len(held_clocks)
        held_in_window = held if start_clock is None else sum(
            1 for clock in held_clocks.values() if self.database.read_time(clock) > start_clock)
        in_window, total = int(in_window) - held_in_window, int(total) - held
        found = Found(self.policy.name, now, window_start, window_end, cutoff, clock_cutoff,
                      in_window, total - in_window, held, selection)
        log.info(f"{self.policy.name}: cutoff {cutoff.isoformat()}: {found.rows} due "
                 f"({found.due_in_window} in the window, {found.overdue} overdue), {held} under legal hold",
                 extra={"domain": self.policy.name, "step": "find", "cutoff": cutoff.isoformat(),
                        "rows_found": found.rows, "rows_overdue": found.overdue, "rows_under_legal_hold": held})
        return found

    # 2. archive ------------------------------------------------------------------------------
    def archive(self, found: Found, dry_run: bool = False, run_id: str | None = None) -> Archived:
        """Write each batch of due rows to the archive store and verify it by reading it back.
        Dry-run computes the same keys and writes nothing."""
        archived = Archived(enabled=self.policy.archive.enabled, dry_run=dry_run)
        if not archived.enabled:
            return archived
        started = time.monotonic()
        columns, raw_json = self.table.archive_select()
        names = [c.name for c in columns]
        # Objects keep the policy's batch_size (a rerun must find the same objects); the pacer
        # only rests the workers while the database is busy.
        pacer = BatchPacer(self.policy, self.database.engine, fixed_size=True)

        def archive_batch(rows: list[DueRow]) -> ArchivedBatch:
            batch_started = time.monotonic()
            record_ids = [self.table.record_id(row.pk) for row in rows]
            values = [row.values for row in rows]
            day = self.table.clock_instant(rows[0].clock).date()
            row_keys = None if dry_run else self.row_keys([row.subject for row in rows], record_ids)
            # An S3 Object Lock (where configured) keeps each object until the database's now + keep_for.
            retain_until = None if dry_run else self.archive_store.retain_until(self.database.now,
                                                                                self.policy.archive.keep_for)
            blobs = self.objects.archive(values, names, record_ids, row_keys, retain_until) if self.objects else None
            if blobs and not dry_run:
                # Same rows, same object name: a rerun rewrites the manifest an interrupted run wrote.
                name = encode_batch(self.policy.name, self.policy_version, names, values, record_ids, day,
                                    self.keys.hash_key, None, raw_json).manifest_key
                blobs = self.objects.keep_earlier_digests(blobs, name)
            encoded = encode_batch(self.policy.name, self.policy_version, names, values, record_ids, day,
                                   self.keys.hash_key, row_keys, raw_json, blobs)
            if not dry_run:
                self._write_verified(encoded, row_keys, retain_until)
                pacer.after_batch(len(rows), time.monotonic() - batch_started)
            return ArchivedBatch(encoded.key, encoded.manifest_key, self.archive_store.uri(encoded.key),
                                 encoded.rows, encoded.sha256)

        # The walk reads the next batch while workers encode, write and verify the previous ones.
        walk = self.table.batches(self.database.engine, columns, self._bind(found.clock_cutoff), found.selection,
                                  self.policy.batch_size)
        with self._failed_verification_to_queue(run_id, found.selection):
            archived.batches.extend(bounded_parallel(archive_batch, walk, self.policy.parallel_batches))
        archived.seconds = time.monotonic() - started
        verb = "would archive" if dry_run else "archived and verified"
        log.info(f"{self.policy.name}: {verb} {archived.rows} rows in {len(archived.batches)} objects",
                 extra={"domain": self.policy.name, "step": "archive", "dry_run": dry_run,
                        "rows_archived": archived.rows, "archive_objects": len(archived.batches)})
        return archived

    def row_keys(self, subjects: list[str | None], record_ids: list[str]) -> list[DataKey]:
        """Each row's data key, by its subject (None: it has none): the subject's, or for the rows
        without one the batch's (named by their record ids)."""
        hashes = [self.keys.subject_hash(subject) if subject else None for subject in subjects]
        by_subject = self.keys.for_subjects({h for h in hashes if h})
        nobody = [rid for rid, h in zip(record_ids, hashes) if h is None]
        batch_key = None
        if nobody:
            digest = hashlib.sha256("\n".join(nobody).encode()).hexdigest()
            batch_key = self.keys.for_batch(f"{self.policy.name}:{digest}")
        return [by_subject[h] if h else batch_key for h in hashes]

    def _write_verified(self, encoded, row_keys: list[DataKey], retain_until: datetime | None = None) -> None:
        self.archive_store.put(encoded.key, encoded.data, retain_until=retain_until)
        self.archive_store.put(encoded.manifest_key, encoded.manifest, retain_until=retain_until)
        # Read back, and decrypted with the keys it was written with: an archive that cannot be read
        # protects nothing, so its rows stay.
        problem = verify(self.archive_store.get(encoded.key),
                         read_manifest(self.archive_store.get(encoded.manifest_key)),
                         {k.key_id: k.key for k in row_keys})
        if problem:
            uri = self.archive_store.uri(encoded.key)
            raise ArchiveVerificationFailed(f"{uri}: {problem}; no row of it was deleted", uri)

    # 3. act: delete or redact, with the audit rows, one transaction per batch ------------------
    def act(self, found: Found, archived: Archived | None, run_id: str, dry_run: bool = False,
            lock: HeldLock | None = None) -> Acted:
        selection = found.selection
        acted = Acted(action=self.action(selection), dry_run=dry_run, since=found.database_now)
        if dry_run:
            acted.acted_on = archived.rows if self.policy.archive.enabled and archived else found.rows
            acted.skipped_legal_hold = found.held
            log.info(f"{self.policy.name}: dry run: would have {acted.action} {acted.acted_on} rows",
                     extra={"domain": self.policy.name, "step": "act", "dry_run": True, "rows": acted.acted_on})
            return acted
        if self.policy.archive.enabled and (archived is None or archived.dry_run):
            raise ValueError(f"domain {self.policy.name} archives: its rows are acted on only from a written archive")
        started = time.monotonic()
        self._respell_holds(run_id)
        acted.skipped_legal_hold = self._audit_held(found, run_id)
        clock_cutoff = self._bind(found.clock_cutoff)
        stamp = AuditStamp(self.policy.name, acted.action, run_id, self.policy_version,
                           detail=selection.audit_detail)

        pacer = BatchPacer(self.policy, self.database.engine)
        # Under a lock, the domain's fencing token too: no batch of a run that lost the lock commits
        # once this one begins (engine/retention/fence.py).
        fence = DomainFence.take(self.database, self.policy.name) if lock is not None else None

        def act_on(batch: Batch) -> BatchOutcome:
            with pacer.turn():
                batch_started = time.monotonic()
                try:
                    done = self._act_on_batch(batch, clock_cutoff, selection, stamp, lock, fence)
                except sa.exc.IntegrityError:
                    # A row that another table still refers to (a foreign key) fails its whole
                    # batch: the batch goes again row by row, and the rows refused go to a person.
                    done = self._act_row_by_row(batch, clock_cutoff, selection, stamp, lock, fence)
                seconds = time.monotonic() - batch_started
            for record_id, refusal in done.refused.items():
                self._needs_person(record_id, refusal.reason, refusal.why, run_id, selection)
            pacer.after_batch(done.acted_on, seconds)
            return BatchOutcome(done.acted_on, len(done.refused), seconds, done.last)

        def walk_lane(lane: KeyRange) -> list[BatchOutcome]:
            """A lane's batches one after another, each choosing the rows after the last one's."""
            done, after = [], lane.after
            while True:
                outcome = act_on(Batch(lane=KeyRange(after, lane.upto), limit=pacer.next_size()))
                if outcome.last is None:  # nothing left to choose: the lane is done (no batch to count)
                    return done
                done.append(outcome)
                after = outcome.last

        with self._failed_verification_to_queue(run_id, selection):
            if self.policy.archive.enabled:  # exactly the rows of each verified object
                acting = list(bounded_parallel(act_on, self._verified_objects(archived),
                                               self.policy.parallel_batches))
            else:  # the due rows, in lanes side by side
                lanes = self.table.lanes(self.database.engine, clock_cutoff, selection, found.rows,
                                         self.policy.parallel_batches, self.policy.batch_size)
                acting = [batch for lane in bounded_parallel(walk_lane, lanes, len(lanes)) for batch in lane]
        for outcome in acting:
            acted.acted_on += outcome.acted_on
            acted.failed += outcome.failed
            acted.batches += 1
            acted.batch_seconds.append(outcome.seconds)
        acted.seconds, acted.paused_seconds = time.monotonic() - started, pacer.slept_seconds
        log.info(f"{self.policy.name}: {acted.action} {acted.acted_on} rows in {acted.batches} batches, "
                 f"{acted.skipped_legal_hold} newly reported under legal hold",
                 extra={"domain": self.policy.name, "step": "act", "action": acted.action, "rows": acted.acted_on,
                        "rows_failed": acted.failed, "batches": acted.batches,
                        "rows_skipped_legal_hold": acted.skipped_legal_hold,
                        "longest_batch_ms": round(acted.longest_batch_seconds * 1000, 1),
                        "paused_for_load_seconds": round(acted.paused_seconds, 3),
                        "seconds": round(acted.seconds, 3)})
        return acted

    def _act_on_batch(self, batch: Batch, clock_cutoff: datetime, selection: Selection, stamp: AuditStamp,
                      lock: HeldLock | None, fence: DomainFence | None = None) -> BatchDone:
        """One batch in one transaction: the rows acted on, those refused (for a person), and for a
        lane's batch the (clock, key) of the last row it chose, None when none was left."""
        last = None

        def still_ours(connection: sa.Connection) -> None:
            if lock is not None:
                lock.ensure_held()  # a run that lost its lock must not commit another batch
            if fence is not None:
                fence.check(connection)  # nor one stopped since that check while another run took over

        with self._begin() as connection:
            # First: a hold committed before this point is seen by every statement below; one placed
            # later waits for this commit (engine/oversight/holds.py).
            pass_gate(connection, self.policy.name)
            if batch.blobs is not None:
                # Checked before the first object is deleted, not after: an object cannot be put back
                # by a rollback. The fence's share lock then keeps the batch ours until it commits.
                count, failed = self.objects.act(connection, clock_cutoff, selection, stamp, batch.pks, batch.blobs,
                                                 before_delete=still_ours)
                return BatchDone(count, {rid: Refusal(Action.BLOB_DELETE_FAILED.value, why)
                                         for rid, why in failed.items()})
            if batch.pks is None:
                count, last = self.table.act_next(connection, clock_cutoff, selection, stamp, batch.lane, batch.limit)
            else:
                count = self.table.act_batch(connection, clock_cutoff, selection,
                                             replace(stamp, archive_uri=batch.archive_uri), batch.pks)
            still_ours(connection)
        return BatchDone(count, {}, last)

    def _act_row_by_row(self, batch: Batch, clock_cutoff: datetime, selection: Selection, stamp: AuditStamp,
                        lock: HeldLock | None, fence: DomainFence | None = None) -> BatchDone:
        pks, last = batch.pks, None
        if pks is None:  # a lane's batch: the rows it would have chosen
            with self._connect() as connection:
                keys = connection.execute(self.table.next_rows(clock_cutoff, selection, batch.lane, batch.limit)).all()
            pks, last = [pk for _, pk in keys], (tuple(keys[-1]) if keys else None)
        count, refused = 0, {}
        for pk in pks:
            try:
                done = self._act_on_batch(replace(batch, pks=[pk]), clock_cutoff, selection, stamp, lock, fence)
            except sa.exc.IntegrityError as exc:
                constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None) or "a constraint"
                refused[self.table.record_id(pk)] = Refusal("delete_blocked", f"the database refused: {constraint}")
                continue
            count += done.acted_on
            refused.update(done.refused)
        return BatchDone(count, refused, last)

    def _verified_objects(self, archived: Archived) -> Iterator[Batch]:
        """An archived domain acts on exactly the rows of each verified object (its manifest's)."""
        for batch in archived.batches:
            # Read back once more: an object changed or gone since it was verified protects nothing.
            try:
                digest = hashlib.sha256(self.archive_store.get(batch.key)).hexdigest()
            except StoreUnavailable:
                raise ArchiveVerificationFailed(f"{batch.uri} cannot be read back; its rows stay", batch.uri) from None
            manifest = read_manifest(self.archive_store.get(batch.manifest_key))
            if not digest == batch.sha256 == manifest["sha256"]:
                raise ArchiveVerificationFailed(f"{batch.uri} changed since it was verified; its rows stay", batch.uri)
            pks = [pk for rid in manifest["record_ids"] if (pk := self.table.pk_value(rid)) is not None]
            yield Batch(pks=pks, archive_uri=batch.uri, blobs=manifest.get("blobs"))

    def _respell_holds(self, run_id: str) -> None:
        """Holds found in another spelling of their record's key are counted as held (find): they
        are rewritten in the canonical one before anything is acted on, so that they hold too."""
        with self._begin() as connection:
            respelled = self.table.respell_holds(connection)
            write_entries(connection, [
                AuditStamp(self.policy.name, Action.HOLD_RESPELLED, run_id, self.policy_version, actor=SYSTEM_ACTOR,
                           detail=f"legal hold {hold_id}: record id rewritten in its key's canonical form",
                           ).row(canonical)
                for hold_id, _, canonical in respelled])
        if respelled:
            log.warning(f"{self.policy.name}: {len(respelled)} legal holds named their record in another spelling "
                        "of its key; rewritten in the canonical one", extra={"domain": self.policy.name,
                                                                            "holds_respelled": len(respelled)})

    def _audit_held(self, found: Found, run_id: str) -> int:
        """One `skipped_legal_hold` audit row per held, due record, written once ever."""
        with self._begin() as connection:
            held = sorted(set(self.table.held_due(connection, self._bind(found.clock_cutoff), found.selection)))
            if not held:
                return 0
            stamp = AuditStamp(self.policy.name, Action.SKIPPED_LEGAL_HOLD, run_id, self.policy_version)
            # Two runs may report the same hold at once: the database keeps one report, both go on.
            return write_held_once(connection, [stamp.row(record_id) for record_id in held])

    # 4. audit ---------------------------------------------------------------------------------
    def audit(self, acted: Acted, run_id: str) -> Audited:
        """Count the run's audit rows back from the database: they must equal the rows acted on."""
        query = self._run_entries(sa.select(audit_log.c.action, sa.func.count()), acted, run_id)
        query = query.group_by(audit_log.c.action)
        with self._connect() as connection:
            counts = dict(connection.execute(query).all())
        return Audited(run_id, sum(int(counts.get(a, 0)) for a in ACTED_ACTIONS[acted.action]), acted.acted_on,
                       int(counts.get(Action.SKIPPED_LEGAL_HOLD.value, 0)))

    def count_acted_on_early(self, acted: Acted, run_id: str) -> int:
        """The run's audit entries of rows acted on before their deadline: what must be zero
        (for the blacklist, "never one second earlier")."""
        query = self._run_entries(sa.select(sa.func.count()), acted, run_id).where(
            audit_log.c.action.in_(ACTED_ACTIONS[acted.action]), audit_log.c.occurred_at < audit_log.c.deadline)
        with self._connect() as connection:
            return int(connection.execute(query).scalar_one())

    def retention_lag(self) -> timedelta:
        """How long the oldest row outside a legal hold, and not waiting for a person in the manual
        queue, has been kept past its deadline (zero when none is): the first entry of the clock
        index, one cheap query however large the table."""
        now = self.database.now()
        oldest = sa.select(sa.func.min(self.table.clock_utc())).where(
            *self.table.due(self._bind(now - self.policy.retain_for), DUE), self.table.not_held(),
            self.table.not_waiting_for_a_person())
        with self._connect() as connection:
            clock = connection.execute(oldest).scalar_one()
        if clock is None:
            return timedelta(0)
        return max(now - (self.database.read_time(clock) + self.policy.retain_for), timedelta(0))

    def count_without_clock(self) -> int:
        """Rows whose clock is NULL, kept (clock_nulls: keep) and never due: zero for a NOT NULL clock."""
        with self._connect() as connection:
            return self.table.count_without_clock(connection)

    def count_remaining(self, deadline: datetime, waiting_for_a_person: bool | None = False,
                        selection: Selection = DUE) -> int:
        """Selected rows not under a legal hold whose deadline is at or before `deadline` and that
        are still to be acted on: what a compliance check expects to be zero after a run. Rows with
        an open manual-queue item are left out (False, the default), counted alone (True) or
        counted in with the others (None)."""
        clock_cutoff = self._bind(deadline - self.policy.retain_for)
        queued = self.table.not_waiting_for_a_person()
        extra = {False: [queued], True: [~queued], None: []}[waiting_for_a_person]
        with self._connect() as connection:
            return int(connection.execute(self.table.count_due(clock_cutoff, selection, None, *extra)).one()[1])

    def verify_archive(self, archived: Archived) -> list[str]:
        """Each object of the run read back against its manifest: the problems found, if any."""
        problems = []
        for batch in archived.batches:
            if not self.archive_store.exists(batch.key):
                problems.append(f"{batch.uri}: missing")
                continue
            manifest = read_manifest(self.archive_store.get(batch.manifest_key))
            problem = verify(self.archive_store.get(batch.key), manifest)
            if problem:
                problems.append(f"{batch.uri}: {problem}")
        return problems

    def _run_entries(self, query: sa.Select, acted: Acted, run_id: str) -> sa.Select:
        """The run's audit entries, read through the time index: none is older than the run."""
        # The domain too: an erasure run writes the entries of every domain under one run id.
        query = query.where(audit_log.c.run_id == run_id, audit_log.c.domain == self.policy.name)
        if acted.since is not None:
            # Whole seconds, a second early: SQLite's clock (the cutoff's) stops at the second.
            since = acted.since.replace(microsecond=0) - timedelta(seconds=1)
            query = query.where(audit_log.c.occurred_at >= self._bind(since))
        return query

    def find_orphans(self) -> Orphans:
        """Objects in hot storage that no row points at, and rows pointing at no object. Counts
        only, for a person to look into: nothing is deleted on this basis."""
        with self._connect() as connection:
            return self.objects.orphans(connection)

    # the whole run, for the CLI's engine-only paths, tests and benchmarks ----------------------
    def run(self, run_id: str, window_start: datetime | None = None, window_end: datetime | None = None,
            dry_run: bool = False, lock: HeldLock | None = None, selection: Selection = DUE) -> RunReport:
        found = self.find(window_start, window_end, selection)
        archived = self.archive(found, dry_run, run_id)
        acted = self.act(found, archived, run_id, dry_run, lock)
        return RunReport(found, archived, acted, None if dry_run else self.audit(acted, run_id))

    # ------------------------------------------------------------------------------------------
    def _bind(self, moment: datetime) -> datetime:
        return self.database.bind_time(moment)

    def _connect(self):
        return self.database.connect()

    def _begin(self):
        return self.database.begin()


__all__ = ["Acted", "ArchiveVerificationFailed", "Archived", "Audited", "Found", "Orphans", "RetentionEngine",
           "RunReport"]
