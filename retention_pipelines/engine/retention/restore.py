"""Restore (the rollback plan): rows a run deleted in error, put back from their archive.

Only what the audit log says the run deleted, from the archive object it names, is re-inserted,
each row with a `restored` audit entry in the same transaction. Refused, and said why:
- rows of an erased subject (their data key is destroyed, or their request for erasure completed);
- rows that exist again (a rerun of the restore restores nothing twice);
- rows whose archive object is gone (past the archive's retention) or was never written;
- entries that are not deletions (a redacted row was never removed; its PDF is in the archive).
Dry run reads and decides the same, and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa

from retention_pipelines.engine.archive.format import read_manifest, read_rows
from retention_pipelines.engine.audit.entries import Action, AuditStamp, write_entries
from retention_pipelines.engine.retention.run import RetentionEngine
from retention_pipelines.schema import audit_log, erasure_requests
from retention_pipelines.stores import HeldLock, StoreUnavailable

RESTORABLE = (Action.DELETED.value, Action.ERASED.value)  # erased rows are found in order to be refused by name
AMBIGUOUS_SHOWN = 5  # runs named when a shortened run id fits several


@dataclass
class RestoreReport:
    domain: str
    run_id: str = ""  # the deleting run, in full (the one a shortened id named)
    deleted_in_run: int = 0
    restored: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # record id → why
    still_due: int = 0  # restored rows whose deadline has passed: the next run deletes them again
    dry_run: bool = False
    verb: str = "deleted"  # what the run did to its rows: deleted, or redacted (deleted_in_run counts them)


class RestoreRefused(ValueError):
    """The restore as asked cannot be done at all (the domain, the run); nothing was written."""


class Restorer:
    # The audit actions of the runs a restore names: what it puts back, and what it refuses by name.
    restorable = RESTORABLE
    verb = "deleted"  # what those runs did to the rows, as messages say it

    def __init__(self, engine: RetentionEngine):
        self.engine, self.policy = engine, engine.policy
        self.database, self.table = engine.database, engine.table

    def restore(self, deleting_run_id: str, record_ids: list[str] | None, by: str, restore_run_id: str,
                dry_run: bool = False, lock: HeldLock | None = None) -> RestoreReport:
        if not self.policy.archive.enabled:
            raise RestoreRefused(f"domain {self.policy.name} is not archived: there is nothing to restore from")
        if self.policy.redact:
            raise RestoreRefused(f"domain {self.policy.name} redacts, it does not delete: its rows are put back by "
                                 "RedactionRestorer (engine/retention/restore_redacted.py)")
        self._check_columns()
        deleting_run_id = self.run_named(deleting_run_id)
        report = RestoreReport(self.policy.name, deleting_run_id, dry_run=dry_run)
        entries = self._entries(deleting_run_id, record_ids)
        report.deleted_in_run = sum(action == Action.DELETED for _, action, _ in entries)
        if not entries:
            raise RestoreRefused(f"run {deleting_run_id} deleted nothing in {self.policy.name}"
                                 + (" among the record ids given" if record_ids else ""))
        by_object: dict[str, list[str]] = defaultdict(list)
        for record_id, action, uri in entries:
            if action == Action.ERASED:
                report.refused[record_id] = "erased on request: never restored"
            elif uri is None:
                report.refused[record_id] = "deleted without an archive copy"
            else:
                by_object[uri].append(record_id)
        for uri, wanted in by_object.items():
            rows = self._archived(uri, set(wanted), report)
            self._restore_rows(rows, uri, deleting_run_id, by, restore_run_id, report, dry_run, lock)
        if record_ids:
            for record_id in set(record_ids) - {rid for rid, _, _ in entries}:
                report.refused[record_id] = f"not deleted by run {deleting_run_id}"
        return report

    def run_named(self, given: str) -> str:
        """The run an id names, whole or any unambiguous beginning of it (as the CLI prints run
        ids), among the runs that deleted or erased rows of the domain."""
        given = given.strip()
        if not given:
            raise RestoreRefused("the run id is empty")
        query = sa.select(audit_log.c.run_id).distinct().where(
            audit_log.c.domain == self.policy.name, audit_log.c.action.in_(self.restorable),
            audit_log.c.run_id.startswith(given, autoescape=True)).limit(AMBIGUOUS_SHOWN + 1)
        with self.database.connect() as connection:
            runs = sorted(connection.execute(query).scalars())
        if not runs:
            raise RestoreRefused(f"run {given} {self.verb} nothing in {self.policy.name}")
        if given in runs:
            return given
        if len(runs) > 1:
            shown = ", ".join(runs[:AMBIGUOUS_SHOWN]) + (", …" if len(runs) > AMBIGUOUS_SHOWN else "")
            raise RestoreRefused(f"run id {given!r} is the beginning of several runs that {self.verb} rows of "
                                 f"{self.policy.name} ({shown}): give more of it")
        return runs[0]

    def _entries(self, run_id: str, record_ids: list[str] | None) -> list[tuple[str, str, str | None]]:
        query = sa.select(audit_log.c.record_id, audit_log.c.action, audit_log.c.archive_uri).where(
            audit_log.c.domain == self.policy.name, audit_log.c.run_id == run_id,
            audit_log.c.action.in_(self.restorable)).order_by(audit_log.c.id)
        if record_ids:
            query = query.where(audit_log.c.record_id.in_(record_ids))
        with self.database.connect() as connection:
            return [tuple(row) for row in connection.execute(query)]

    def _archived(self, uri: str, wanted: set[str], report: RestoreReport) -> dict[str, dict]:
        """The wanted rows of one archive object, decrypted; the others refused with the reason."""
        store = self.engine.archive_store
        key = store.key_of(uri)
        try:
            if key is None or not store.exists(key):
                raise StoreUnavailable("gone")
            manifest = read_manifest(store.get(key + ".manifest.json"))
            data = store.get(key)
        except StoreUnavailable:
            for record_id in wanted:
                report.refused[record_id] = f"its archive object {uri} is gone (past the archive's retention?)"
            return {}
        keys = self.engine.keys.unwrap({segment["key"] for segment in manifest.get("segments", [])})
        rows = {}
        for record_id, row in read_rows(data, manifest, keys):
            if record_id not in wanted:
                continue
            if row is None:
                report.refused[record_id] = "its subject was erased (the archive key is destroyed)"
            else:
                rows[record_id] = row
        erased = self._erased_subjects({row[self.policy.subject_column] for row in rows.values()
                                        if self.policy.subject_column and row.get(self.policy.subject_column)})
        for record_id in list(rows):
            subject = rows[record_id].get(self.policy.subject_column) if self.policy.subject_column else None
            if subject and self.engine.keys.subject_hashes(subject) & erased:
                report.refused[record_id] = "its subject was erased on request"
                del rows[record_id]
        for record_id in wanted - set(rows) - set(report.refused):
            report.refused[record_id] = f"not in its archive object {uri}"
        return rows

    def _erased_subjects(self, subjects: set[str]) -> set[str]:
        # A request completed before the one normalisation keeps the older hash of its address.
        hashes = {hashed for subject in subjects for hashed in self.engine.keys.subject_hashes(subject)}
        if not hashes:
            return set()
        with self.database.connect() as connection:
            return set(connection.execute(sa.select(erasure_requests.c.subject_hash).where(
                erasure_requests.c.subject_hash.in_(sorted(hashes)))).scalars())

    def _restore_rows(self, rows: dict[str, dict], uri: str, deleting_run_id: str, by: str, restore_run_id: str,
                      report: RestoreReport, dry_run: bool, lock: HeldLock | None) -> None:
        if not rows:
            return
        values = {record_id: self._values(row) for record_id, row in rows.items()}
        now = self.database.now()
        with self.database.begin() as connection:
            present = set(map(self.table.record_id, connection.execute(sa.select(self.table.pk).where(
                self.table.pk.in_([v[self.table.pk.name] for v in values.values()]))).scalars()))
            chosen = {rid: v for rid, v in values.items() if rid.lower() not in {p.lower() for p in present}}
            for record_id in set(values) - set(chosen):
                report.refused[record_id] = "it exists again"
            if not chosen:
                return
            if not dry_run:
                connection.execute(sa.insert(self.table.table), list(chosen.values()))
                stamp = AuditStamp(self.policy.name, Action.RESTORED, restore_run_id, self.engine.policy_version,
                                   archive_uri=uri, actor=by, detail=f"restored: deleted by run {deleting_run_id}")
                write_entries(connection, [stamp.row(record_id) for record_id in chosen])
                if lock is not None:
                    lock.ensure_held()
        report.restored.extend(chosen)
        clock = self.policy.clock_column
        report.still_due += sum(self.table.clock_instant(v[clock]) + self.policy.retain_for <= now
                                for v in chosen.values())

    def _values(self, row: dict) -> dict:
        """An archived row (JSON) back to values of the table's column types."""
        values = {}
        for column in self.table.table.c:
            if column.name not in row:
                continue
            value = row[column.name]
            if value is not None:
                if isinstance(column.type, sa.DateTime):
                    value = dt.datetime.fromisoformat(value)
                    # A wall time of a `timestamp without time zone` column goes back as it was,
                    # never made an instant that the session's zone would turn into another wall time.
                    if value.tzinfo or not self.database.dialect.has_column_types or column.type.timezone:
                        value = self.database.bind_time(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
                elif isinstance(column.type, sa.Date):
                    value = dt.date.fromisoformat(value)
                elif isinstance(column.type, sa.Uuid) and self.database.dialect.has_column_types:
                    value = uuid.UUID(value)
            values[column.name] = value
        return values

    def _check_columns(self) -> None:
        excluded = set(self.policy.archive.exclude_columns)
        needed = [c.name for c in self.table.table.c
                  if c.name in excluded and not c.nullable and c.server_default is None]
        if needed:
            raise RestoreRefused(f"domain {self.policy.name}: column {', '.join(needed)} is not archived and has no "
                                 "default: its rows cannot be re-inserted")
