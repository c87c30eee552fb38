"""The erasure run (GDPR Art. 17): one request's subject erased from every domain that names them.

For each domain whose policy has a subject column, the domain's own engine, narrowed to the
subject's rows (`RetentionEngine.for_subject`), finds, archives, deletes or redacts and audits
them (action `erased`) under the same domain lock, legal holds and archive rules as a scheduled
run. A record under a legal hold stays (Art. 17(3)(e)); it gets a `legal_hold_conflict` item in
the manual queue, and the request ends `partially_blocked`.

Then, in one transaction, the subject's data key is destroyed (every archived copy of their rows
and PDFs becomes unreadable) and the request is completed, its address replaced by the keyed
hash. Unless a held record's only copy is in the archive under that key: then the key is kept,
which the outcome says.

Every step is safe to repeat: an erased row no longer matches the subject, a destroyed key is
not destroyed twice, a completed request is not completed twice. Nothing here logs an address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import timedelta

import sqlalchemy as sa

from retention_pipelines.engine.archive_format import read_manifest
from retention_pipelines.engine.archive_upgrade import upgrade_legacy_batches, upgrade_legacy_blobs
from retention_pipelines.engine.erasure import OPEN, AlreadyComplete, ErasureRequests
from retention_pipelines.engine.keys import ArchiveKeys
from retention_pipelines.engine.holds import EVERY_DOMAIN, pass_gate, under_legal_hold
from retention_pipelines.engine.queries import SubjectRows
from retention_pipelines.engine.queue import ManualQueue, QueueItem
from retention_pipelines.engine.retention import RetentionEngine
from retention_pipelines.logs import get_logger
from retention_pipelines.schema import audit_log, legal_holds
from retention_pipelines.stores import ArchiveStore, HeldLock

log = get_logger("erasure")
LEGAL_HOLD_CONFLICT = "legal_hold_conflict"
DEFAULT_RESOLVE_WITHIN = timedelta(days=2)


@dataclass
class DomainErasure:
    """One domain's part of an erasure: how many records were erased, which were kept."""

    domain: str
    erased: int = 0
    held: list[str] = field(default_factory=list)  # record ids kept under a legal hold
    failed: int = 0  # records the run could not finish (in the manual queue)
    archived: int = 0
    dry_run: bool = False
    already_complete: bool = False  # the request was completed by an earlier run: nothing to do

    def summary(self) -> str:
        text = f"{self.domain}: {self.erased} erased"
        if self.held:
            text += f", {len(self.held)} kept under legal hold"
        if self.failed:
            text += f", {self.failed} waiting in the manual queue"
        return text


@dataclass(frozen=True)
class ErasureOutcome:
    request_id: int
    status: str
    outcome: str
    keys_destroyed: int
    key_kept_for_hold: bool


class SubjectErasure:
    """Erases the subject of one open request, domain by domain, then completes the request."""

    def __init__(self, requests: ErasureRequests, keys: ArchiveKeys, archive_store: ArchiveStore, policy_version: str,
                 resolve_within: dict[str, timedelta] | None = None):
        self.requests, self.keys, self.policy_version = requests, keys, policy_version
        self.archive_store = archive_store
        # Each domain's time for a person to resolve a queue item (its policy's sla.resolve_within).
        self.resolve_within = resolve_within or {}
        self.database = requests.database

    def subject(self, request_id: int) -> SubjectRows:
        """The request's subject, for an open request only (its address is gone once complete)."""
        request = self.requests.get(request_id)
        return SubjectRows(self.requests.address(request_id), request.id, request.due_at)

    def erase_domain(self, engine: RetentionEngine, request_id: int, run_id: str, dry_run: bool = False,
                     lock: HeldLock | None = None) -> DomainErasure:
        """The subject's records in one domain: found, archived where the policy archives (encrypted
        with the subject's key), deleted or redacted with their audit entries; held ones kept, each
        with a `legal_hold_conflict` queue item."""
        policy = engine.policy
        if self.requests.get(request_id).status not in OPEN:  # a rerun after the request completed
            return DomainErasure(policy.name, dry_run=dry_run, already_complete=True)
        subject = engine.for_subject(self.subject(request_id))
        if policy.archive.enabled and not dry_run:
            # Copies written in clear before the archives were encrypted would outlive the key.
            upgrade_legacy_batches(engine)
            upgrade_legacy_blobs(engine, subject.table)
        report = subject.run(run_id, dry_run=dry_run, lock=lock)
        with self.database.connect() as connection:
            held = subject.table.held_due(connection, report.found.clock_cutoff)
        part = DomainErasure(policy.name, report.acted.acted_on, sorted(held), report.acted.failed,
                             report.archived.rows, dry_run)
        if held and not dry_run:
            queue = ManualQueue(self.database, self.policy_version)
            for record_id in held:
                queue.add(policy.name, record_id, LEGAL_HOLD_CONFLICT,
                          f"erasure request {request_id}: the record is under a legal hold and was kept; erase it "
                          "by hand once the hold is released", policy.sla.resolve_within, run_id)
        log.info(f"erasure request {request_id}: {part.summary()}" + (" (dry run)" if dry_run else ""),
                 extra={"domain": policy.name, "step": "erase", "request_id": request_id, "rows": part.erased,
                        "rows_held": len(part.held), "dry_run": dry_run})
        return part

    def complete(self, request_id: int, parts: list[DomainErasure], run_id: str) -> ErasureOutcome:
        """Destroy the subject's data key and complete the request, in one transaction. A request
        completed already (a rerun) is reported as it ended, nothing done twice."""
        try:
            address = self.requests.address(request_id)
        except AlreadyComplete:  # a rerun, or another run a moment ago: the request as it ended
            request = self.requests.get(request_id)
            return ErasureOutcome(request_id, request.status, request.outcome or "", 0, False)
        hashed = self.keys.subject_hash(address)
        blocking = self._held_archived_under(hashed)
        held = sum(len(part.held) for part in parts) + len(blocking)
        failed = sum(part.failed for part in parts)
        if failed:
            raise ErasureIncomplete(f"erasure request {request_id}: {failed} records wait in the manual queue; "
                                    "the request stays open until they are done")
        # Counted from the audit log, every run of the request: a run killed halfway erased some already.
        erased = self._erased_for(request_id)
        parts = [replace(part, erased=erased.get(part.domain, 0)) for part in parts]
        summary = "; ".join(part.summary() for part in parts)
        if blocking:
            summary += (f"; the archive key was kept: {len(blocking)} held records exist only in the archive "
                        f"({', '.join(blocking)})")
            queue = ManualQueue(self.database, self.policy_version)
            for held_record in blocking:
                domain, record_id = held_record.split("/", 1)
                queue.add(domain, record_id, LEGAL_HOLD_CONFLICT,
                          f"erasure request {request_id}: the record is under a legal hold and exists only in the "
                          "archive, so the subject's archive key was kept; a retry once the hold is released "
                          "destroys it", self.resolve_within.get(domain, DEFAULT_RESOLVE_WITHIN), run_id)
        destroyed: list[str] = []

        def destroy_key(connection: sa.Connection) -> None:
            if not blocking:
                # Holds are read again behind every domain's hold gate: one placed since the check
                # above keeps the key, and the request stays open for the next run to say so.
                pass_gate(connection, EVERY_DOMAIN)
                if self._held_archived_under(hashed):
                    raise ErasureIncomplete(f"erasure request {request_id}: a legal hold was placed on an archived "
                                            "record of the subject while the request completed; it stays open")
                destroyed.extend(self.keys.destroy_subject(connection, hashed, run_id, self.policy_version,
                                                           f"erasure request {request_id}"))

        outcome = summary + ("; archived copies made unreadable" if not blocking else "")
        try:
            request = self.requests.complete(request_id, outcome, partially_blocked=bool(held), within=destroy_key)
        except AlreadyComplete:  # another run completed it a moment ago (locked, re-read): as it ended
            request = self.requests.get(request_id)
            return ErasureOutcome(request_id, request.status, request.outcome or "", 0, False)
        log.info(f"erasure request {request_id}: {request.status}; {len(destroyed)} archive keys destroyed",
                 extra={"step": "complete", "request_id": request_id, "keys_destroyed": len(destroyed)})
        return ErasureOutcome(request_id, request.status, outcome, len(destroyed), bool(blocking))

    def erase_record(self, engine: RetentionEngine, item: QueueItem, run_id: str,
                     lock: HeldLock | None = None) -> tuple[bool, str]:
        """An erasure's queue item, retried: its record erased now, by id (the request's address may
        be gone), whatever its deadline — a record a hold kept, once the hold is released, or one the
        run could not finish (a PDF the store kept). Once the request is complete, the subject's
        archive key is destroyed again unless another hold keeps a copy under it (the archive step
        may have made them a new one). Returns (done, what happened)."""
        request_id = _request_of(item)
        request = self.requests.get(request_id)
        if under_legal_hold(self.database, item.domain, item.record_id):
            return False, "the record is still under a legal hold"
        target = engine.for_subject(SubjectRows(None, request_id, request.due_at)).for_retry([item.record_id])
        report = target.run(run_id, lock=lock)
        if report.acted.failed:
            return False, f"{report.acted.failed} records could not be erased yet"
        with self.database.connect() as connection:
            left = connection.execute(sa.select(sa.func.count()).select_from(target.table.table).where(
                *target.table.due(None))).scalar_one()
        if left:
            return False, "the record is still there and was not erased"
        destroyed: list[str] = []
        if request.status not in OPEN and request.subject_hash and not self._held_archived_under(request.subject_hash):
            with self.database.begin() as connection:
                pass_gate(connection, EVERY_DOMAIN)
                if self._held_archived_under(request.subject_hash):
                    return False, "a legal hold was placed on an archived record of the subject meanwhile"
                destroyed = self.keys.destroy_subject(connection, request.subject_hash, run_id, self.policy_version,
                                                      f"erasure request {request_id}: a kept record erased")
        return True, (f"erasure request {request_id}: {report.acted.acted_on} records erased; "
                      f"{len(destroyed)} archive keys destroyed")

    def _erased_for(self, request_id: int) -> dict[str, int]:
        """Records erased for the request so far, by domain: its `erased` audit entries, read through
        the time index from when the request was received."""
        request = self.requests.get(request_id)
        since = request.received_at.replace(microsecond=0) - timedelta(seconds=1)  # SQLite's clock: whole seconds
        query = sa.select(audit_log.c.domain, sa.func.count()).where(
            audit_log.c.occurred_at >= self.database.bind_time(since), audit_log.c.action == "erased",
            audit_log.c.detail == f"erasure request {request_id}").group_by(audit_log.c.domain)
        with self.database.connect() as connection:
            return {domain: int(count) for domain, count in connection.execute(query)}

    def _held_archived_under(self, hashed_subject: str) -> list[str]:
        """Held records (domain/record id) whose row is gone and whose archived copy is encrypted
        with the subject's live key: destroying that key would destroy what the hold keeps."""
        live = self.keys.live_subject_keys({hashed_subject})
        if not live:
            return []
        key_id = live[hashed_subject].key_id
        with self.database.connect() as connection:
            holds = connection.execute(sa.select(legal_holds.c.domain, legal_holds.c.record_id).where(
                legal_holds.c.released_at.is_(None)).distinct()).all()
            blocking = []
            for domain, record_id in holds:
                uri = connection.execute(sa.select(audit_log.c.archive_uri).where(
                    audit_log.c.domain == domain, audit_log.c.record_id == record_id,
                    audit_log.c.archive_uri.is_not(None)).order_by(audit_log.c.id.desc()).limit(1)).scalar()
                if uri and self._archived_under(uri, record_id, key_id):
                    blocking.append(f"{domain}/{record_id}")
        return blocking

    def _archived_under(self, uri: str, record_id: str, key_id: str) -> bool:
        store = self.archive_store
        key = store.key_of(uri)
        if key is None or not store.exists(key + ".manifest.json"):
            return False
        manifest = read_manifest(store.get(key + ".manifest.json"))
        position = 0
        for segment in manifest.get("segments", []):
            ids = manifest["record_ids"][position:position + segment["rows"]]
            position += segment["rows"]
            if record_id in ids:
                return segment["key"] == key_id
        return False


def _request_of(item: QueueItem) -> int:
    match = re.match(r"erasure request (\d+)", item.detail or "")
    if match is None:
        raise ValueError(f"queue item {item.id} does not name its erasure request")
    return int(match[1])


class ErasureIncomplete(Exception):
    """Records of the subject could not be erased yet; the request stays open."""


__all__ = ["DomainErasure", "ErasureIncomplete", "ErasureOutcome", "LEGAL_HOLD_CONFLICT", "SubjectErasure"]
