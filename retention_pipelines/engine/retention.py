"""The retention run for any domain a policy describes, in the steps of the design:

1. find    — the cutoff from the database's clock; count what is due (no ids kept in memory)
2. archive — per batch: rows → gzip'd JSON lines + manifest → archive store, read back, verified
3. act     — per batch, ONE transaction: DELETE (or redact) … RETURNING pk + one audit row per pk
4. audit   — the run's audit rows counted back against what it acted on

Every step is safe to repeat: a batch is whole or untouched; the delete's own WHERE skips what is
gone, and only the rows a DELETE/UPDATE … RETURNING hands back are audited, so no row is acted on
or audited twice; archive objects are content-addressed, so re-archiving rewrites the same object.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from retention_pipelines.engine.archive_format import encode_batch, read_manifest, verify
from retention_pipelines.engine.queries import AuditStamp, DomainTable, report_once
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.schema import audit_log, ensure_current
from retention_pipelines.stores import AppDatabase, ArchiveStore, BlobStore, HeldLock, StoreUnavailable


# The audit actions that mean "this row was acted on", by the policy's action.
ACTED_ACTIONS = {"deleted": ("deleted",), "redacted": ("redacted", "redacted_blob_missing")}


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class ArchiveVerificationFailed(Exception):
    """An archive object read back does not match what was written: its rows are left in place."""


@dataclass(frozen=True)
class Found:
    """What is due: the cutoff (a deadline, from the database's clock) and counts, no ids."""

    domain: str
    database_now: datetime
    window_start: datetime | None
    window_end: datetime | None
    cutoff: datetime
    clock_cutoff: datetime
    due_in_window: int
    overdue: int
    held: int

    @property
    def rows(self) -> int:
        return self.due_in_window + self.overdue


@dataclass(frozen=True)
class ArchivedBatch:
    key: str
    manifest_key: str
    uri: str
    rows: int
    sha256: str


@dataclass
class Archived:
    enabled: bool
    dry_run: bool
    batches: list[ArchivedBatch] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(b.rows for b in self.batches)


@dataclass
class Acted:
    action: str
    dry_run: bool
    since: datetime | None = None  # the database's now before the first batch: audit rows are newer
    acted_on: int = 0
    failed: int = 0  # rows left untouched because their object could not be deleted
    skipped_legal_hold: int = 0
    batches: int = 0
    longest_batch_seconds: float = 0.0
    seconds: float = 0.0


@dataclass(frozen=True)
class Audited:
    run_id: str
    audit_rows: int
    acted_on: int
    skipped_legal_hold_rows: int

    @property
    def consistent(self) -> bool:
        return self.audit_rows == self.acted_on


@dataclass(frozen=True)
class Orphans:
    objects_without_row: int
    rows_without_object: int
    objects: int
    rows_with_object: int


@dataclass(frozen=True)
class RunReport:
    found: Found
    archived: Archived
    acted: Acted
    audited: Audited | None


class RetentionEngine:
    """One domain's retention, against one database and one archive store."""

    def __init__(self, policy: DomainPolicy, policy_version: str, database: AppDatabase,
                 archive_store: ArchiveStore, log: logging.Logger | None = None, blob_store: BlobStore | None = None):
        self.policy, self.policy_version = policy, policy_version
        self.database, self.archive_store, self.blob_store = database, archive_store, blob_store
        if policy.blob_key_column and blob_store is None:
            raise ValueError(f"domain {policy.name} keeps objects ({policy.blob_key_column}): it needs a blob store")
        self.log = log or logging.getLogger(__name__)
        try:
            ensure_current(database.engine)
        except sa.exc.OperationalError as exc:
            raise database.connect_error(exc) from None
        self.table = DomainTable(policy, database.app_table(policy))

    # 1. find ---------------------------------------------------------------------------------
    def find(self, window_start: datetime | None = None, window_end: datetime | None = None) -> Found:
        """Everything whose deadline is at or before the cutoff, the earlier of the window's end
        and the database's now, is due: rows of the window and any left from before it."""
        now = self.database.now()
        cutoff = min(window_end, now) if window_end is not None else now
        clock_cutoff = cutoff - self.policy.retain_for
        start_clock = window_start - self.policy.retain_for if window_start is not None else None
        bind = self.database.bind_time
        with self._connect() as connection:
            in_window, total = connection.execute(
                self.table.count_due(bind(clock_cutoff), bind(start_clock) if start_clock else None)
            ).one()
            held = len(self.table.held_due(connection, bind(clock_cutoff)))
        found = Found(self.policy.name, now, window_start, window_end, cutoff, clock_cutoff,
                      int(in_window), int(total) - int(in_window), held)
        self.log.info(f"{self.policy.name}: cutoff {cutoff.isoformat()}: {found.rows} due "
                      f"({found.due_in_window} in the window, {found.overdue} overdue), {held} under legal hold")
        return found

    # 2. archive ------------------------------------------------------------------------------
    def archive(self, found: Found, dry_run: bool = False) -> Archived:
        """Write each batch of due rows to the archive store and verify it by reading it back.
        Dry-run computes the same keys and writes nothing."""
        archived = Archived(enabled=self.policy.archive.enabled, dry_run=dry_run)
        if not archived.enabled:
            return archived
        started = time.monotonic()
        columns, raw_json = self.table.archive_select()
        names = [c.name for c in columns]

        def archive_batch(rows: list) -> ArchivedBatch:
            record_ids = [self.table.record_id(row[1]) for row in rows]
            values = [row[2:] for row in rows]  # batches() puts clock and pk first
            day = self.database.read_time(rows[0][0]).date()
            blobs = self._archive_blobs(rows, names, record_ids, dry_run) if self.blob_store else None
            encoded = encode_batch(self.policy.name, self.policy_version, names, values, record_ids, day, raw_json,
                                   blobs)
            if not dry_run:
                self._write_verified(encoded)
            return ArchivedBatch(encoded.key, encoded.manifest_key, self.archive_store.uri(encoded.key),
                                 encoded.rows, encoded.sha256)

        # The walk reads the next batch while workers encode, write and verify the previous ones.
        walk = self.table.batches(self.database.engine, columns, self._bind(found.clock_cutoff), self.policy.batch_size)
        archived.batches.extend(_bounded_parallel(archive_batch, walk, self.policy.parallel_batches))
        archived.seconds = time.monotonic() - started
        verb = "would archive" if dry_run else "archived and verified"
        self.log.info(f"{self.policy.name}: {verb} {archived.rows} rows in {len(archived.batches)} objects")
        return archived

    def _archive_blobs(self, rows: list, names: list[str], record_ids: list[str], dry_run: bool) -> dict:
        """Copy each row's object to the archive store (cold) and verify it: {record id: where}.
        An object already gone from hot storage is either archived by an earlier, interrupted
        run (its copy is there) or missing, which the act step audits as such."""
        key_at = names.index(self.policy.blob_key_column) + 2  # batches() puts clock and pk first
        blobs = {}
        for record_id, row in zip(record_ids, rows):
            archive_key = f"{self.policy.name}/blobs/{record_id}"
            data = self.blob_store.get(row[key_at]) if row[key_at] else None
            if data is None:
                earlier = self.archive_store.exists(archive_key)
                blobs[record_id] = {"archive_key": archive_key, "earlier": True} if earlier else {"missing": True}
                continue
            digest = hashlib.sha256(data).hexdigest()
            if not dry_run:
                self.archive_store.put_cold(archive_key, data)
                if not self.archive_store.holds(archive_key, data):
                    raise ArchiveVerificationFailed(f"{self.archive_store.uri(archive_key)} does not match the object "
                                                    "it copies; no object or row of its batch was deleted")
            blobs[record_id] = {"archive_key": archive_key, "sha256": digest}
        return blobs

    def _write_verified(self, encoded) -> None:
        self.archive_store.put(encoded.key, encoded.data)
        self.archive_store.put(encoded.manifest_key, encoded.manifest)
        problem = verify(self.archive_store.get(encoded.key), read_manifest(self.archive_store.get(encoded.manifest_key)))
        if problem:
            raise ArchiveVerificationFailed(f"{self.archive_store.uri(encoded.key)}: {problem}; no row of it was deleted")

    # 3. act: delete or redact, with the audit rows, one transaction per batch ------------------
    def act(self, found: Found, archived: Archived | None, run_id: str, dry_run: bool = False,
            lock: HeldLock | None = None) -> Acted:
        acted = Acted(action=self.policy.action_name, dry_run=dry_run, since=found.database_now)
        if dry_run:
            acted.acted_on = archived.rows if self.policy.archive.enabled and archived else found.rows
            acted.skipped_legal_hold = found.held
            self.log.info(f"{self.policy.name}: dry run: would have {acted.action} {acted.acted_on} rows")
            return acted
        if self.policy.archive.enabled and (archived is None or archived.dry_run):
            raise ValueError(f"domain {self.policy.name} archives: its rows are acted on only from a written archive")
        started = time.monotonic()
        acted.skipped_legal_hold = self._audit_held(found, run_id)
        clock_cutoff = self._bind(found.clock_cutoff)
        stamp = AuditStamp(self.policy.name, acted.action, run_id, self.policy_version)

        def act_on(batch: dict) -> tuple[int, int, float]:
            batch_started = time.monotonic()
            failed = 0
            with self._begin() as connection:
                if batch.get("blobs") is not None:
                    count, failed = self._act_with_blobs(connection, clock_cutoff, stamp, batch["pks"], batch["blobs"])
                else:
                    count = self.table.act_batch(connection, clock_cutoff,
                                                 replace(stamp, archive_uri=batch["archive_uri"]),
                                                 pks=batch["pks"], key_range=batch["key_range"])
                if lock is not None:
                    lock.ensure_held()  # a run that lost its lock must not commit another batch
            return count, failed, time.monotonic() - batch_started

        for count, failed, seconds in _bounded_parallel(act_on, self._batches_to_act_on(found, archived),
                                                        self.policy.parallel_batches):
            acted.acted_on += count
            acted.failed += failed
            acted.batches += 1
            acted.longest_batch_seconds = max(acted.longest_batch_seconds, seconds)
        acted.seconds = time.monotonic() - started
        self.log.info(f"{self.policy.name}: {acted.action} {acted.acted_on} rows in {acted.batches} batches, "
                      f"{acted.skipped_legal_hold} newly reported under legal hold")
        return acted

    def _batches_to_act_on(self, found: Found, archived: Archived | None) -> Iterator[dict]:
        """Archived domains act on exactly the rows of each verified object (listed in its
        manifest); the others on consecutive key ranges of due rows."""
        if not self.policy.archive.enabled:
            for key_range in self.table.key_ranges(self.database.engine, self._bind(found.clock_cutoff),
                                                   self.policy.batch_size):
                yield {"pks": None, "key_range": key_range, "archive_uri": None}
            return
        for batch in archived.batches:
            # Read back once more: an object changed or gone since it was verified protects nothing.
            try:
                digest = hashlib.sha256(self.archive_store.get(batch.key)).hexdigest()
            except StoreUnavailable:
                raise ArchiveVerificationFailed(f"{batch.uri} cannot be read back; its rows stay") from None
            manifest = read_manifest(self.archive_store.get(batch.manifest_key))
            if not digest == batch.sha256 == manifest["sha256"]:
                raise ArchiveVerificationFailed(f"{batch.uri} changed since it was verified; its rows stay")
            pks = [pk for rid in manifest["record_ids"] if (pk := self.table.pk_value(rid)) is not None]
            yield {"pks": pks, "key_range": None, "archive_uri": batch.uri, "blobs": manifest.get("blobs")}

    def _act_with_blobs(self, connection: sa.Connection, clock_cutoff: datetime, stamp: AuditStamp, pks: list,
                        blobs: dict) -> tuple[int, int]:
        """Objects first, then rows: the batch's rows (still due, not held) are locked, their
        archived objects deleted from hot storage in bulk, and only the rows whose object is gone
        are redacted and audited, in this transaction. A row whose object would not go stays as
        it was, with a `blob_delete_failed` audit entry. Returns (redacted, failed)."""
        table = self.table
        key_column = table.table.c[self.policy.blob_key_column]
        rows = connection.execute(sa.select(table.pk, key_column).where(
            table.pk.in_(pks), *table.due(clock_cutoff), table.not_held()).with_for_update()).all()
        archived = {table.record_id(pk): key for pk, key in rows
                    if key and "archive_key" in blobs.get(table.record_id(pk), {})}
        failed = self.blob_store.delete_many(list(archived.values())) if archived else {}
        failed_ids = {rid for rid, key in archived.items() if key in failed}
        done = []
        keep = [pk for pk, _ in rows if table.record_id(pk) not in failed_ids]
        if keep:
            done = connection.execute(table.redact_rows(keep, clock_cutoff)).all()
        entries = []
        for pk, clock in done:
            rid = table.record_id(pk)
            where = blobs.get(rid, {})
            entries.append(replace(stamp, action="redacted" if "archive_key" in where else "redacted_blob_missing",
                                   archive_uri=self.archive_store.uri(where["archive_key"]) if "archive_key" in where
                                   else None).row(rid, _utc(clock) + self.policy.retain_for))
        for rid in sorted(failed_ids):
            entries.append(replace(stamp, action="blob_delete_failed",
                                   archive_uri=self.archive_store.uri(blobs[rid]["archive_key"])).row(rid))
        if entries:
            connection.execute(sa.insert(audit_log), entries)
        if failed_ids:
            self.log.warning(f"{self.policy.name}: {len(failed_ids)} objects could not be deleted "
                             f"({', '.join(sorted(set(failed.values())))}); their rows were left as they were")
        return len(done), len(failed_ids)

    def _audit_held(self, found: Found, run_id: str) -> int:
        """One `skipped_legal_hold` audit row per held, due record, written once ever."""
        with self._begin() as connection:
            held = sorted(set(self.table.held_due(connection, self._bind(found.clock_cutoff))))
            if not held:
                return 0
            stamp = AuditStamp(self.policy.name, "skipped_legal_hold", run_id, self.policy_version)
            # Two runs may report the same hold at once: the database keeps one report, both go on.
            return len(connection.execute(report_once(connection, [stamp.row(record_id) for record_id in held])).all())

    # 4. audit ---------------------------------------------------------------------------------
    def audit(self, acted: Acted, run_id: str) -> Audited:
        """Count the run's audit rows back from the database: they must equal the rows acted on."""
        query = self._run_entries(sa.select(audit_log.c.action, sa.func.count()), acted, run_id)
        query = query.group_by(audit_log.c.action)
        with self._connect() as connection:
            counts = dict(connection.execute(query).all())
        return Audited(run_id, sum(int(counts.get(a, 0)) for a in ACTED_ACTIONS[acted.action]), acted.acted_on,
                       int(counts.get("skipped_legal_hold", 0)))

    def count_acted_on_early(self, acted: Acted, run_id: str) -> int:
        """The run's audit entries of rows acted on before their deadline: what must be zero
        (for the blacklist, "never one second earlier")."""
        query = self._run_entries(sa.select(sa.func.count()), acted, run_id).where(
            audit_log.c.action.in_(ACTED_ACTIONS[acted.action]), audit_log.c.occurred_at < audit_log.c.deadline)
        with self._connect() as connection:
            return int(connection.execute(query).scalar_one())

    def count_remaining(self, deadline: datetime) -> int:
        """Rows not under a legal hold whose deadline is at or before `deadline` and that are still
        to be acted on: what a compliance check expects to be zero after a run."""
        clock_cutoff = self._bind(deadline - self.policy.retain_for)
        with self._connect() as connection:
            return int(connection.execute(self.table.count_due(clock_cutoff, None)).one()[1])

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
        query = query.where(audit_log.c.run_id == run_id)
        if acted.since is not None:
            # Whole seconds, a second early: SQLite's clock (the cutoff's) stops at the second.
            since = acted.since.replace(microsecond=0) - timedelta(seconds=1)
            query = query.where(audit_log.c.occurred_at >= self._bind(since))
        return query

    def find_orphans(self) -> Orphans:
        """Objects in hot storage that no row points at, and rows pointing at no object. Counts
        only, for a person to look into: nothing is deleted on this basis."""
        key_column = self.table.table.c[self.policy.blob_key_column]
        with self._connect() as connection:
            referenced = set(connection.execute(sa.select(key_column).where(key_column.is_not(None))).scalars())
        stored = set(self.blob_store.keys())
        return Orphans(objects_without_row=len(stored - referenced), rows_without_object=len(referenced - stored),
                       objects=len(stored), rows_with_object=len(referenced))

    # the whole run, for the CLI's engine-only paths, tests and benchmarks ----------------------
    def run(self, run_id: str, window_start: datetime | None = None, window_end: datetime | None = None,
            dry_run: bool = False, lock: HeldLock | None = None) -> RunReport:
        found = self.find(window_start, window_end)
        archived = self.archive(found, dry_run)
        acted = self.act(found, archived, run_id, dry_run, lock)
        return RunReport(found, archived, acted, None if dry_run else self.audit(acted, run_id))

    # ------------------------------------------------------------------------------------------
    def _bind(self, moment: datetime) -> datetime:
        return self.database.bind_time(moment)

    def _connect(self):
        return _guarded(self.database, self.database.engine.connect)

    def _begin(self):
        return _guarded(self.database, self.database.engine.begin)


def _bounded_parallel(work, items: Iterator, workers: int):
    """work(item) for each item, `workers` at a time, results in completion order; the items are
    drawn lazily (at most twice `workers` ahead), so memory stays flat. The first error stops
    the drawing and is raised once the batches in flight have finished."""
    if workers <= 1:
        yield from map(work, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="retention-batch") as pool:
        in_flight: set = set()
        for item in items:
            in_flight.add(pool.submit(work, item))
            if len(in_flight) >= 2 * workers:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        for future in as_completed(in_flight):
            yield future.result()


class _guarded:
    """A connection context whose connection failure names the database, not a driver traceback."""

    def __init__(self, database: AppDatabase, opener):
        self.database, self.opener, self.context = database, opener, None

    def __enter__(self) -> sa.Connection:
        try:
            self.context = self.opener()
            return self.context.__enter__()
        except sa.exc.OperationalError as exc:
            raise self.database.connect_error(exc) from None

    def __exit__(self, *exc_info):
        return self.context.__exit__(*exc_info)


__all__ = ["Acted", "ArchiveVerificationFailed", "Archived", "Audited", "Found", "RetentionEngine", "RunReport",
           "StoreUnavailable"]
