"""The erasure run (GDPR Art. 17): one request's subject erased from every domain that names them.

For each domain whose policy has a subject column, the subject's rows are found by the one
normalisation of addresses (engine/identity/subjects.py), and the domain's own engine, given the
addresses they were found with as its selection (`Selection.erasing`), archives, deletes or redacts and
audits them (action `erased`) under the same domain lock, legal holds and archive rules as a
scheduled run. A record under a legal hold stays (Art. 17(3)(e)); it gets a `legal_hold_conflict`
item in the manual queue. A domain whose policy keeps its rows until their deadline
(`on_erasure: keep_until_deadline`) gives up only those past it.

Then every domain is read again for anything left of the subject. Only when nothing is left is the
request completed; records kept by a hold or by policy make it partially blocked, saying which and
why, and records left for no such reason keep it open for a rerun. In one transaction with that,
the subject's data keys are destroyed (every archived copy of their rows and PDFs becomes
unreadable), unless a held record's only copy is in the archive under one: then the keys are kept,
which the outcome says. A request partially blocked by policy is checked again once the last kept
record's deadline has passed (the erasure sensor launches the run), and completed then.

Every step is safe to repeat: an erased row no longer matches the subject, a destroyed key is
not destroyed twice, a completed request is not completed twice. Nothing here logs an address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import sqlalchemy as sa

from retention_pipelines.engine.archive.format import read_manifest
from retention_pipelines.engine.archive.keys import ArchiveKeys
from retention_pipelines.engine.audit.entries import Action
from retention_pipelines.engine.gdpr.archive_upgrade import upgrade_legacy_batches, upgrade_legacy_blobs
from retention_pipelines.engine.gdpr.requests import (
    OPEN,
    AlreadyComplete,
    ErasureRequests,
    KeptByPolicy,
    Outcome,
)
from retention_pipelines.engine.identity.subjects import Subject, normalise_address, spellings, subject_rows
from retention_pipelines.engine.oversight.holds import EVERY_DOMAIN, pass_gate, under_legal_hold
from retention_pipelines.engine.oversight.queue import ManualQueue, QueueItem
from retention_pipelines.engine.retention.run import RetentionEngine
from retention_pipelines.engine.retention.selection import Selection, SubjectRows
from retention_pipelines.engine.retention.table import DomainTable
from retention_pipelines.logs import get_logger
from retention_pipelines.policies import DomainPolicy
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
    kept: list[str] = field(default_factory=list)  # record ids kept until their deadline by the policy
    # Names of keys the subject's archives may have from before the one normalisation (legacy
    # hashes of the addresses found that differ from today's hash; none for an ASCII address).
    legacy_keys: list[str] = field(default_factory=list)

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
    kept_by_policy: tuple[KeptByPolicy, ...] = ()


@dataclass(frozen=True)
class Left:
    """A record that still names the subject after the erasure, and why."""

    domain: str
    record_id: str
    held: bool
    kept_until: datetime | None  # its deadline, where its policy keeps it until then and it is not past


class SubjectErasure:
    """Erases the subject of one open request, domain by domain, then completes the request."""

    def __init__(self, requests: ErasureRequests, keys: ArchiveKeys, archive_store: ArchiveStore, policy_version: str,
                 policies: Sequence[DomainPolicy] = ()):
        self.requests, self.keys, self.policy_version = requests, keys, policy_version
        self.archive_store = archive_store
        # Every domain that names subjects: completing a request reads each one for what is left.
        self.policies = [policy for policy in policies if policy.subject_column]
        # Each domain's time for a person to resolve a queue item (its policy's sla.resolve_within).
        self.resolve_within = {policy.name: policy.sla.resolve_within for policy in policies}
        self.database = requests.database

    def is_subject(self, request_id: int) -> Subject:
        """Whether a stored address names the request's subject, by the one normalisation: compared
        with the request's address while it is open, with its keyed hash once the address is gone
        (a partially blocked request checked again). Refused once the request is complete."""
        request = self.requests.get(request_id)
        if request.status in OPEN:
            address = self.requests.address(request_id)
            return Subject(lambda stored: normalise_address(stored) == address, address)
        if not request.recheckable:
            raise AlreadyComplete(f"erasure request {request_id} is {request.status}: its address is gone")
        hashed = request.subject_hash
        return Subject(lambda stored: self.keys.subject_hash(stored) == hashed, None)

    def erase_domain(self, engine: RetentionEngine, request_id: int, run_id: str, dry_run: bool = False,
                     lock: HeldLock | None = None) -> DomainErasure:
        """The subject's records in one domain: found, archived where the policy archives (encrypted
        with the subject's key), deleted or redacted with their audit entries; held ones kept, each
        with a `legal_hold_conflict` queue item; in a domain that keeps its rows until their
        deadline, those not past it kept."""
        policy = engine.policy
        request = self.requests.get(request_id)
        try:
            is_subject = self.is_subject(request_id)
        except AlreadyComplete:  # a rerun after the request completed
            return DomainErasure(policy.name, dry_run=dry_run, already_complete=True)
        found = list(self._rows_of(engine.table, is_subject))
        written = spellings(found)
        subject = Selection.erasing(SubjectRows(written, request.id, request.due_at))
        if policy.archive.enabled and not dry_run:
            # Copies written in clear before the archives were encrypted would outlive the key.
            upgrade_legacy_batches(engine)
            upgrade_legacy_blobs(engine, subject)
        report = engine.run(run_id, dry_run=dry_run, lock=lock, selection=subject)
        with self.database.connect() as connection:
            held = engine.table.held_due(connection, report.found.clock_cutoff, subject)
        kept = sorted(engine.table.record_id(row.pk) for row in found if policy.on_erasure == "keep_until_deadline"
                      and row.clock > report.found.clock_cutoff and engine.table.record_id(row.pk) not in held)
        current = {self.keys.subject_hash(stored) for stored in written}
        legacy = sorted(self.keys.subject_hashes(*written) - current)
        part = DomainErasure(policy.name, report.acted.acted_on, sorted(held), report.acted.failed,
                             report.archived.rows, dry_run, kept=kept, legacy_keys=legacy)
        if held and not dry_run:
            queue = ManualQueue(self.database, self.policy_version)
            for record_id in held:
                queue.add(policy.name, record_id, LEGAL_HOLD_CONFLICT,
                          f"erasure request {request_id}: the record is under a legal hold and was kept; erase it "
                          "by hand once the hold is released", policy.sla.resolve_within, run_id,
                          erasure_request_id=request_id)
        log.info(f"erasure request {request_id}: {part.summary()}" + (f", {len(kept)} kept until their deadline"
                                                                      if kept else "")
                 + (" (dry run)" if dry_run else ""),
                 extra={"domain": policy.name, "step": "erase", "request_id": request_id, "rows": part.erased,
                        "rows_held": len(part.held), "rows_kept_by_policy": len(kept), "dry_run": dry_run})
        return part

    def complete(self, request_id: int, parts: list[DomainErasure], run_id: str) -> ErasureOutcome:
        """Check every domain for what is left of the subject, then destroy the subject's data keys
        and complete the request, in one transaction: completed when nothing is left, partially
        blocked when a hold or the policy keeps records (each named, with why). A request completed
        already (a rerun) is reported as it ended, nothing done twice."""
        if not self.policies:
            raise ValueError("completing an erasure needs the policies of the domains to check for what is left")
        request = self.requests.get(request_id)
        try:
            is_subject = self.is_subject(request_id)
            address = self.requests.address(request_id) if request.status in OPEN else None
        except AlreadyComplete:  # a rerun, or another run a moment ago: the request as it ended
            return self._as_ended(request_id)
        hashes = {request.subject_hash} if address is None else self.keys.subject_hashes(address)
        hashes |= {name for part in parts for name in part.legacy_keys}
        failed = sum(part.failed for part in parts)
        if failed:
            raise ErasureIncomplete(f"erasure request {request_id}: {failed} records wait in the manual queue; "
                                    "the request stays open until they are done")
        left = self._left(is_subject)
        unexplained = [f"{item.domain}/{item.record_id}" for item in left if not item.held and item.kept_until is None]
        if unexplained:
            # Written since the domain's step, or missed by it: a rerun erases them.
            raise ErasureIncomplete(f"erasure request {request_id}: {len(unexplained)} records still name the subject "
                                    f"after the erasure ({', '.join(unexplained[:20])}); the request stays as it is "
                                    "until a rerun erases them")
        held = [item for item in left if item.held]
        kept = self._kept_by_policy([item for item in left if not item.held])
        blocking = self._held_archived_under(hashes)
        queue = ManualQueue(self.database, self.policy_version)
        reported = {(part.domain, record_id) for part in parts for record_id in part.held}
        for item in held:
            # The domain's step reports only held records it would have erased now: not one its
            # policy keeps until a deadline still to come, nor one written since.
            if (item.domain, item.record_id) not in reported:
                queue.add(item.domain, item.record_id, LEGAL_HOLD_CONFLICT,
                          f"erasure request {request_id}: the record is under a legal hold and was kept; erase it "
                          "by hand once the hold is released",
                          self.resolve_within.get(item.domain, DEFAULT_RESOLVE_WITHIN), run_id,
                          erasure_request_id=request_id)
        # Counted from the audit log, every run of the request: a run killed halfway erased some already.
        erased = self._erased_for(request_id)
        held_in = {}
        for item in held:
            held_in.setdefault(item.domain, []).append(item.record_id)
        parts = [replace(part, erased=erased.get(part.domain, 0), held=sorted(held_in.get(part.domain, [])))
                 for part in parts]
        summary = "; ".join([part.summary() for part in parts] + [k.summary() for k in kept])
        if blocking:
            summary += (f"; the archive key was kept: {len(blocking)} held records exist only in the archive "
                        f"({', '.join(blocking)})")
            for held_record in blocking:
                domain, record_id = held_record.split("/", 1)
                queue.add(domain, record_id, LEGAL_HOLD_CONFLICT,
                          f"erasure request {request_id}: the record is under a legal hold and exists only in the "
                          "archive, so the subject's archive key was kept; a retry once the hold is released "
                          "destroys it", self.resolve_within.get(domain, DEFAULT_RESOLVE_WITHIN), run_id,
                          erasure_request_id=request_id)
        if request.recheckable and not (held or kept or blocking):
            summary += "; checked again: nothing of the subject is left"
        destroyed: list[str] = []

        def destroy_keys(connection: sa.Connection) -> None:
            # Records kept by a hold may exist only in the archive (`blocking`); records kept by policy
            # are rows in their table, which no key is needed to read: their archive copy is written
            # when they go, under a key made then, which the check once they are gone destroys.
            if not blocking:
                # Holds are read again behind every domain's hold gate: one placed since the check
                # above keeps the keys, and the request stays open for the next run to say so.
                pass_gate(connection, EVERY_DOMAIN)
                if self._held_archived_under(hashes):
                    raise ErasureIncomplete(f"erasure request {request_id}: a legal hold was placed on an archived "
                                            "record of the subject while the request completed; it stays open")
                for hashed in sorted(hashes):
                    destroyed.extend(self.keys.destroy_subject(connection, hashed, run_id, self.policy_version,
                                                               f"erasure request {request_id}"))

        summary += "; archived copies made unreadable" if not blocking else ""
        outcome = Outcome(summary, tuple(kept), max((k.until for k in kept), default=None), verified=True)
        try:
            request = self.requests.complete(request_id, outcome, partially_blocked=bool(held or kept or blocking),
                                             within=destroy_keys)
        except AlreadyComplete:  # another run completed it a moment ago (locked, re-read): as it ended
            return self._as_ended(request_id)
        log.info(f"erasure request {request_id}: {request.status}; {len(destroyed)} archive keys destroyed",
                 extra={"step": "complete", "request_id": request_id, "keys_destroyed": len(destroyed),
                        "records_kept_by_policy": sum(len(k.record_ids) for k in kept)})
        return ErasureOutcome(request_id, request.status, summary, len(destroyed), bool(blocking), tuple(kept))

    def _as_ended(self, request_id: int) -> ErasureOutcome:
        request = self.requests.get(request_id)
        return ErasureOutcome(request_id, request.status, request.outcome or "", 0, False, request.kept_by_policy)

    def _rows_of(self, table: DomainTable, is_subject: Subject):
        return subject_rows(self.database, table.table, table.pk, table.table.c[table.policy.subject_column],
                            table.clock, is_subject)

    def _left(self, is_subject: Subject) -> list[Left]:
        """Every record of every domain that still names the subject: held, kept by its policy until
        its deadline, or neither."""
        now = self.database.now()
        left = []
        for policy in self.policies:
            table = DomainTable.of(policy, self.database)
            rows = list(self._rows_of(table, is_subject))
            with self.database.connect() as connection:
                held = {table.record_id(pk) for pk in table.held_keys(connection)}
            for row in rows:
                record_id = table.record_id(row.pk)
                deadline = table.clock_instant(row.clock) + policy.retain_for
                kept = policy.on_erasure == "keep_until_deadline" and deadline > now
                left.append(Left(policy.name, record_id, record_id in held, deadline if kept else None))
        return left

    def _kept_by_policy(self, left: list[Left]) -> list[KeptByPolicy]:
        reasons = {policy.name: " ".join((policy.on_erasure_reason or "").split()) for policy in self.policies}
        kept = []
        for domain in sorted({item.domain for item in left}):
            items = [item for item in left if item.domain == domain]
            kept.append(KeptByPolicy(domain, tuple(sorted(item.record_id for item in items)),
                                     max(item.kept_until for item in items), reasons[domain]))
        return kept

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
        target = Selection.erasing(SubjectRows(None, request_id, request.due_at)).retry([item.record_id])
        report = engine.run(run_id, lock=lock, selection=target)
        if report.acted.failed:
            return False, f"{report.acted.failed} records could not be erased yet"
        # Past its deadline as the run judged it: a domain that keeps its rows until their deadline
        # does not count one before it as left to erase (the request waits for it by policy).
        clock_cutoff = self.database.bind_time(self.database.now() - engine.policy.retain_for)
        with self.database.connect() as connection:
            left = connection.execute(sa.select(sa.func.count()).select_from(engine.table.table).where(
                *engine.table.due(clock_cutoff, target))).scalar_one()
        if left:
            return False, "the record is still there and was not erased"
        destroyed: list[str] = []
        if (request.status not in OPEN and request.subject_hash
                and not self._held_archived_under({request.subject_hash})):
            with self.database.begin() as connection:
                pass_gate(connection, EVERY_DOMAIN)
                if self._held_archived_under({request.subject_hash}):
                    return False, "a legal hold was placed on an archived record of the subject meanwhile"
                destroyed = self.keys.destroy_subject(connection, request.subject_hash, run_id, self.policy_version,
                                                      f"erasure request {request_id}: a kept record erased")
            # What kept the request partially blocked may be all gone now: the sensor checks it again.
            self.requests.recheck_soon(request_id)
        return True, (f"erasure request {request_id}: {report.acted.acted_on} records erased; "
                      f"{len(destroyed)} archive keys destroyed")

    def _erased_for(self, request_id: int) -> dict[str, int]:
        """Records erased for the request so far, by domain: its `erased` audit entries, read through
        the time index from when the request was received."""
        request = self.requests.get(request_id)
        since = request.received_at.replace(microsecond=0) - timedelta(seconds=1)  # SQLite's clock: whole seconds
        query = sa.select(audit_log.c.domain, sa.func.count()).where(
            audit_log.c.occurred_at >= self.database.bind_time(since), audit_log.c.action == Action.ERASED.value,
            audit_log.c.detail == f"erasure request {request_id}").group_by(audit_log.c.domain)
        with self.database.connect() as connection:
            return {domain: int(count) for domain, count in connection.execute(query)}

    def _held_archived_under(self, hashes: set[str]) -> list[str]:
        """Held records (domain/record id) whose row is gone and whose archived copy is encrypted
        with one of the subject's live keys: destroying it would destroy what the hold keeps."""
        live = self.keys.live_subject_keys(hashes)
        if not live:
            return []
        key_ids = {key.key_id for key in live.values()}
        with self.database.connect() as connection:
            holds = connection.execute(sa.select(legal_holds.c.domain, legal_holds.c.record_id).where(
                legal_holds.c.released_at.is_(None)).distinct()).all()
            blocking = []
            for domain, record_id in holds:
                uri = connection.execute(sa.select(audit_log.c.archive_uri).where(
                    audit_log.c.domain == domain, audit_log.c.record_id == record_id,
                    audit_log.c.archive_uri.is_not(None)).order_by(audit_log.c.id.desc()).limit(1)).scalar()
                if uri and self._archived_under(uri, record_id, key_ids):
                    blocking.append(f"{domain}/{record_id}")
        return blocking

    def _archived_under(self, uri: str, record_id: str, key_ids: set[str]) -> bool:
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
                return segment["key"] in key_ids
        return False


def _request_of(item: QueueItem) -> int:
    if item.erasure_request_id is None:
        raise ValueError(f"queue item {item.id} does not name its erasure request")
    return item.erasure_request_id


class ErasureIncomplete(Exception):
    """Records of the subject could not be erased yet, for no reason a hold or the policy gives: the
    request stays as it is (open, or partially blocked) for a rerun."""


__all__ = ["DomainErasure", "ErasureIncomplete", "ErasureOutcome", "LEGAL_HOLD_CONFLICT", "SubjectErasure"]
