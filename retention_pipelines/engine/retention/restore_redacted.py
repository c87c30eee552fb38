"""Restore of a redacting domain (meal_plans): a row a run redacted in error gets back the values
its redaction took (its PDF's key, its empty stamp), from the batch the archive step wrote, and its
PDF is written back to hot storage from the archived copy, under that key.

Which batch holds a row: the redaction's audit entry names the row's archived PDF, not its batch.
The batch is found among the domain's manifests, newest day first from the row's own clock day
(a batch is named by the day of its earliest row): the one that lists the record with the digest
of the archived copy there now — the copy the redaction's archive step wrote and verified.

Each row is restored in a transaction of its own, with the row locked: the PDF is written back
first, then the row un-redacted and its `restored` entry written, and the transaction committed.
A PDF that cannot be written leaves the row redacted and writes no entry; a row that is not
redacted any more (restored already) is refused, so a rerun after a kill restores nothing twice.
Should the commit fail after the PDF was written, the PDF is in hot storage with no row pointing
at it (the orphans report counts it) until the restore is run again, which finds it there, with
the same bytes, and finishes. Refused, and said why, besides what the deleting restore refuses:
rows of an erased subject (the entry, the row's address, a completed request or the destroyed
key says so), rows redacted again by a later run, rows whose PDF was already gone when they were
redacted, and rows whose key now holds another object (nothing is overwritten).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import date

import sqlalchemy as sa

from retention_pipelines.engine.archive.chunked import (
    HEAD_BYTES,
    ArchivedObjectDamaged,
    decrypted,
    key_id_of,
    plaintext_sha256,
)
from retention_pipelines.engine.archive.format import read_manifest, read_rows
from retention_pipelines.engine.audit.entries import Action, AuditStamp, write_entries
from retention_pipelines.engine.retention.restore import Restorer, RestoreRefused, RestoreReport
from retention_pipelines.engine.retention.selection import ERASED_PLACEHOLDER_PATTERN
from retention_pipelines.schema import audit_log
from retention_pipelines.stores import HeldLock, StoreUnavailable

MANIFEST = ".manifest.json"
EARLIEST_YEAR = 2000  # no policy's partitions start earlier: no batch is named before it
ERASED = "its subject was erased on request: never restored"
KEY_DESTROYED = "its subject was erased (the archive key is destroyed)"
DAMAGED = "its archived PDF does not decrypt as it was written: changed since it was archived"


@dataclass(frozen=True)
class ArchivedCopy:
    """A PDF's archived copy as the restore found it: its digest (what the manifests list) and the
    id of its data key, read from it chunk by chunk."""

    key: str
    sha256: str
    key_id: str


@dataclass(frozen=True)
class ArchivedPdf:
    """An archived copy read through and authenticated: where it is, its key, and its plaintext's digest."""

    key: str
    data_key: bytes
    sha256: str


@dataclass(frozen=True)
class ArchivedRow:
    """What a restore puts back for one record: the columns its redaction changed, as archived,
    and its PDF's archived copy (None for a row that pointed at no PDF)."""

    values: dict
    pdf: ArchivedPdf | None
    uri: str


class RedactionRestorer(Restorer):
    restorable = (Action.REDACTED.value, Action.REDACTED_BLOB_MISSING.value, Action.ERASED.value)
    verb = "redacted"

    def restore(self, redacting_run_id: str, record_ids: list[str] | None, by: str, restore_run_id: str,
                dry_run: bool = False, lock: HeldLock | None = None) -> RestoreReport:
        if not self.policy.redact:
            raise RestoreRefused(f"domain {self.policy.name} deletes: its rows are put back by Restorer")
        if not self.policy.archive.enabled:
            raise RestoreRefused(f"domain {self.policy.name} is not archived: there is nothing to restore from")
        redacting_run_id = self.run_named(redacting_run_id)
        report = RestoreReport(self.policy.name, redacting_run_id, dry_run=dry_run, verb=self.verb)
        entries = self._entries(redacting_run_id, record_ids)
        if not entries:
            raise RestoreRefused(f"run {redacting_run_id} redacted nothing in {self.policy.name}"
                                 + (" among the record ids given" if record_ids else ""))
        report.deleted_in_run = sum(action != Action.ERASED for _, action, _ in entries)
        wanted: dict[str, str] = {}
        for record_id, action, uri in entries:
            if action == Action.ERASED:
                report.refused[record_id] = ERASED
            elif action == Action.REDACTED_BLOB_MISSING:
                report.refused[record_id] = "its PDF was already gone when it was redacted: nothing to put back"
            elif uri is None:
                report.refused[record_id] = "redacted without an archive copy"
            else:
                wanted[record_id] = uri
        wanted = self._still_this_runs(wanted, redacting_run_id, report)
        clocks = self._redacted_rows(wanted, report)
        archived = self._archived(wanted, clocks, report)
        stamp = AuditStamp(self.policy.name, Action.RESTORED, restore_run_id, self.engine.policy_version, actor=by,
                           detail=f"restored: redacted by run {redacting_run_id}")
        now = self.database.now()
        for record_id in sorted(archived):
            if self._restore_row(record_id, archived[record_id], stamp, report, dry_run, lock):
                report.restored.append(record_id)
                report.still_due += self.table.clock_instant(clocks[record_id]) + self.policy.retain_for <= now
        if record_ids:
            for record_id in set(record_ids) - {rid for rid, _, _ in entries}:
                report.refused[record_id] = f"not redacted by run {redacting_run_id}"
        return report

    def _still_this_runs(self, wanted: dict[str, str], run_id: str, report: RestoreReport) -> dict[str, str]:
        """The records whose last redaction (or erasure) is this run's: a later run's is the one
        to restore from, and an erasure since is never undone."""
        if not wanted:
            return wanted
        latest = sa.select(audit_log.c.record_id, sa.func.max(audit_log.c.id).label("id")).where(
            audit_log.c.domain == self.policy.name, audit_log.c.record_id.in_(sorted(wanted)),
            audit_log.c.action.in_(self.restorable)).group_by(audit_log.c.record_id).subquery()
        query = sa.select(audit_log.c.record_id, audit_log.c.action, audit_log.c.run_id).join(
            latest, latest.c.id == audit_log.c.id)
        with self.database.connect() as connection:
            last = {rid: (action, run) for rid, action, run in connection.execute(query)}
        kept = {}
        for record_id, uri in wanted.items():
            action, run = last.get(record_id, (None, run_id))
            if action == Action.ERASED:
                report.refused[record_id] = ERASED
            elif run != run_id:
                report.refused[record_id] = f"redacted again by run {run}: restore from that run"
            else:
                kept[record_id] = uri
        return kept

    def _redacted_rows(self, wanted: dict[str, str], report: RestoreReport) -> dict[str, object]:
        """The clock of each wanted row that is still redacted and whose subject is not erased;
        the others refused (and taken out of `wanted`)."""
        table, stamp = self.table, self.table.table.c[self.policy.redact.stamp_column]
        subject = table.table.c[self.policy.subject_column] if self.policy.subject_column else sa.null()
        pks = [pk for rid in wanted if (pk := table.pk_value(rid)) is not None]
        with self.database.connect() as connection:
            rows = {table.record_id(pk): (clock, redacted_at, person) for pk, clock, redacted_at, person in
                    connection.execute(sa.select(table.pk, table.clock, stamp, subject).where(table.pk.in_(pks)))}
        erased = self._erased_subjects({person for _, _, person in rows.values() if person})
        clocks = {}
        for record_id in list(wanted):
            clock, redacted_at, person = rows.get(record_id, (None, None, None))
            if record_id not in rows:
                why = "its row is gone"
            elif redacted_at is None:
                why = "it is not redacted (restored already?)"
            elif person and (_placeholder(person) or self.engine.keys.subject_hashes(person) & erased):
                why = ERASED
            else:
                clocks[record_id] = clock
                continue
            report.refused[record_id] = why
            del wanted[record_id]
        return clocks

    # the archive ----------------------------------------------------------------------------------
    def _archived(self, wanted: dict[str, str], clocks: dict[str, object], report: RestoreReport
                  ) -> dict[str, ArchivedRow]:
        """Each wanted row's redacted columns and PDF as archived; the rows that cannot be read refused."""
        copies = {rid: copy for rid, uri in wanted.items() if (copy := self._copy(rid, uri, report)) is not None}
        pending = {rid: copy.sha256 for rid, copy in copies.items()}
        days = {rid: self.table.clock_instant(clocks[rid]).date() for rid in pending}
        found: dict[str, ArchivedRow] = {}
        for manifest_key in self._manifests(max(days.values(), default=None)):
            manifest = read_manifest(self.engine.archive_store.get(manifest_key))
            blobs = manifest.get("blobs", {})
            hits = {rid for rid, digest in pending.items() if blobs.get(rid, {}).get("sha256") == digest
                    and _day_of(manifest_key) <= days[rid]}
            if hits:
                found.update(self._read_batch(manifest_key, manifest, hits, copies, wanted, report))
                for rid in hits:
                    del pending[rid]
            if not pending:
                break
        for record_id in pending:
            report.refused[record_id] = "no archived batch lists its archived PDF: its row values cannot be read"
        return found

    def _copy(self, record_id: str, uri: str, report: RestoreReport) -> ArchivedCopy | None:
        """The copy's digest and key id, read chunk by chunk."""
        store = self.engine.archive_store
        key = store.key_of(uri)
        try:
            if key is None or not store.exists(key):
                report.refused[record_id] = f"its archived PDF {uri} is gone (past the archive's retention?)"
                return None
            digest, head = hashlib.sha256(), b""
            for chunk in store.chunks(key):
                digest.update(chunk)
                if len(head) < HEAD_BYTES:
                    head += chunk[:HEAD_BYTES - len(head)]
        except StoreUnavailable as exc:
            # A copy in a cold storage class (GLACIER, DEEP_ARCHIVE) is read only once restored in S3.
            report.refused[record_id] = (f"its archived PDF {uri} cannot be read ({exc}); a copy in cold storage is "
                                         "read once S3 has restored it (docs/rollback.md)")
            return None
        try:
            return ArchivedCopy(key, digest.hexdigest(), key_id_of(head))
        except ArchivedObjectDamaged:
            report.refused[record_id] = f"its archived PDF {uri} is not an encrypted archive object: nothing is guessed"
            return None

    def _manifests(self, latest: date | None):
        """The domain's batch manifests named on `latest` or before, newest day first, a year's
        listing at a time (listing the domain's whole prefix would list every archived PDF too)."""
        if latest is None:
            return
        for year in range(latest.year, EARLIEST_YEAR - 1, -1):
            keys = [key for key in self.engine.archive_store.keys(f"{self.policy.name}/{year}/")
                    if key.endswith(MANIFEST) and _day_of(key) <= latest]
            yield from sorted(keys, key=_day_of, reverse=True)

    def _read_batch(self, manifest_key: str, manifest: dict, hits: set[str], copies: dict[str, ArchivedCopy],
                    wanted: dict[str, str], report: RestoreReport) -> dict[str, ArchivedRow]:
        store, blobs = self.engine.archive_store, manifest["blobs"]
        data = store.get(manifest_key.removesuffix(MANIFEST))
        key_ids = {segment["key"] for segment in manifest.get("segments", [])}
        key_ids |= {copies[rid].key_id for rid in hits}
        keys = self.engine.keys.unwrap(key_ids)
        column = self.policy.blob_key_column
        restored_columns = [*self.policy.redact.null_columns, self.policy.redact.stamp_column]
        found = {}
        for record_id, row in read_rows(data, manifest, keys):
            if record_id not in hits:
                continue
            copy = copies[record_id]
            key = keys.get(copy.key_id)
            if row is None or key is None:
                report.refused[record_id] = KEY_DESTROYED
                continue
            values = self._values(row)
            if self.engine.objects.fingerprint("key", values.get(column)) != blobs[record_id].get("blob"):
                report.refused[record_id] = "its archived row does not point at its archived PDF: nothing is guessed"
                continue
            # Read through before anything is written: a copy changed since it was verified (a
            # chunk altered, swapped, cut short) is refused here, dry run or not.
            try:
                pdf = ArchivedPdf(copy.key, key, plaintext_sha256(store.chunks(copy.key), key, self.policy.name))
            except ArchivedObjectDamaged as exc:
                report.refused[record_id] = f"{DAMAGED} ({exc})"
                continue
            found[record_id] = ArchivedRow({name: values.get(name) for name in restored_columns}, pdf,
                                           wanted[record_id])
        return found

    # the row --------------------------------------------------------------------------------------
    def _restore_row(self, record_id: str, archived: ArchivedRow, stamp: AuditStamp, report: RestoreReport,
                     dry_run: bool, lock: HeldLock | None) -> bool:
        """One row in one transaction, its PDF written back before the row points at it again."""
        table = self.table
        stamp_column = table.table.c[self.policy.redact.stamp_column]
        blob_key = archived.values.get(self.policy.blob_key_column)
        still_redacted = sa.and_(table.pk == table.pk_value(record_id), stamp_column.is_not(None))
        with self.database.begin() as connection:
            if connection.execute(sa.select(table.pk).where(still_redacted).with_for_update()).first() is None:
                report.refused[record_id] = "it is not redacted (restored already?)"
                return False
            if dry_run:
                return True
            try:
                if blob_key is not None and not self._pdf_written_back(blob_key, archived.pdf):
                    report.refused[record_id] = "another object is at its PDF's key now: nothing was overwritten"
                    return False
            except ArchivedObjectDamaged as exc:
                report.refused[record_id] = f"{DAMAGED} ({exc}); nothing was written back"
                return False
            connection.execute(sa.update(table.table).where(still_redacted).values(archived.values))
            write_entries(connection, [replace(stamp, archive_uri=archived.uri).row(record_id)])
            if lock is not None:
                lock.ensure_held()
        return True

    def _pdf_written_back(self, blob_key: str, pdf: ArchivedPdf) -> bool:
        """The archived PDF in hot storage under its key: written, or found there already with the
        same bytes (a PDF another purchase kept, or a rerun's); False when another object is there.
        Both are read chunk by chunk; the PDF is decrypted as it is written, and a copy that turns
        out damaged half-way leaves nothing under the key (the store's write is whole or nothing)."""
        store, archive = self.engine.blob_store, self.engine.archive_store
        current = store.open(blob_key)
        if current is None:
            store.put_streamed(blob_key, decrypted(archive.chunks(pdf.key), pdf.data_key, self.policy.name))
            return True
        digest = hashlib.sha256()
        try:
            for chunk in current:
                digest.update(chunk)
        finally:
            current.close()
        return digest.hexdigest() == pdf.sha256


def _placeholder(subject: str) -> bool:
    prefix, suffix = ERASED_PLACEHOLDER_PATTERN.split("%")
    return subject.startswith(prefix) and subject.endswith(suffix)


def _day_of(key: str) -> date:
    """The day a batch's key is named by: <domain>/YYYY/MM/DD/<name>."""
    year, month, day = key.split("/")[1:4]
    return date(int(year), int(month), int(day))
