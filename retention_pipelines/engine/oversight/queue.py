"""The manual-resolution queue: what automation could not finish, for a person to resolve on time.

An item is one record (or archive object, or partition) of one domain that needs a person, for
one reason. Its life:

    open ──claim──▶ claimed ──resolve / dismiss──▶ resolved / dismissed
      └────────────resolve / dismiss───────────────▶

Adding is idempotent: while an item is open or claimed, adding the same (domain, record id,
reason) again counts one more attempt on it instead of a second item (a partial unique index
makes that hold under concurrent adders). Every change of status, and every failed retry, is
written to the audit log in the same transaction, with who made it and the change (from → to).
Details, notes and names are checked for e-mail addresses and refused with them: the queue holds
ids, never personal data.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from retention_pipelines.engine.audit.entries import Action, AuditStamp, write_entries
from retention_pipelines.engine.oversight.holds import under_legal_hold
from retention_pipelines.redaction import EMAIL
from retention_pipelines.schema import audit_log, manual_queue
from retention_pipelines.stores import AppDatabase

REASONS = ("blob_delete_failed", "archive_verification_failed", "delete_blocked", "legal_hold_conflict", "run_failed")
# Items about one record, which a retry runs through the engine on that record alone; the others
# (an archive object, a failing partition) are retried by a run of the whole domain.
RECORD_REASONS = ("blob_delete_failed", "delete_blocked")
OPEN, CLAIMED, RESOLVED, DISMISSED = "open", "claimed", "resolved", "dismissed"
ACTIVE = (OPEN, CLAIMED)
# command: (the statuses it may start from, the status it leads to)
TRANSITIONS = {"claim": (ACTIVE[:1], CLAIMED), "resolve": (ACTIVE, RESOLVED), "dismiss": (ACTIVE, DISMISSED)}
# The audit entry of each status an item moves to.
MOVED_TO = {CLAIMED: Action.QUEUE_CLAIMED, RESOLVED: Action.QUEUE_RESOLVED, DISMISSED: Action.QUEUE_DISMISSED}
SYSTEM_ACTOR = "retention"


class QueueRefused(ValueError):
    """An impossible operation on the queue: unknown item, a transition its status forbids, bad input."""


@dataclass(frozen=True)
class QueueItem:
    id: int
    domain: str
    record_id: str
    reason: str
    detail: str
    status: str
    created_at: datetime
    due_at: datetime
    claimed_by: str | None
    resolved_by: str | None
    resolution_note: str | None
    escalation_level: int  # 0 until it is overdue
    attempts: int
    last_attempt_at: datetime | None
    closed_at: datetime | None  # when it was resolved or dismissed
    close_announced: bool  # an escalated item's close has been alerted
    erasure_request_id: int | None = None  # the erasure it belongs to: its retry erases the record

    def overdue(self, now: datetime) -> bool:
        return self.status in ACTIVE and self.due_at <= now


@dataclass(frozen=True)
class Added:
    item: QueueItem
    newly_added: bool


def _no_personal_data(what: str, text: str | None) -> str | None:
    if text is not None and EMAIL.search(text):
        raise QueueRefused(f"{what} must not contain personal data: remove the e-mail address")
    return text


class ManualQueue:
    """The queue in the app database (retention_manual_queue). What it stores is stamped with the
    database's now; `clock` is the moment overdue items, escalation and health are judged at: the
    database's now too, unless a test hands in its own to move time forward."""

    def __init__(self, database: AppDatabase, policy_version: str = "manual",
                 clock: Callable[[], datetime] | None = None):
        self.database, self.policy_version = database, policy_version
        self.clock = clock or database.now

    # adding ------------------------------------------------------------------------------------
    def add(self, domain: str, record_id: str, reason: str, detail: str, resolve_within: timedelta,
            run_id: str = SYSTEM_ACTOR, erasure_request_id: int | None = None) -> Added:
        """One active item per (domain, record id, reason): a repeat counts one more attempt. An
        erasure's item names its request, so that its retry erases the record."""
        if reason not in REASONS:
            raise QueueRefused(f"unknown queue reason {reason!r}: one of {', '.join(REASONS)}")
        _no_personal_data("a queue item's detail", detail)
        now = self.database.now()
        statement = self.database.dialect.upsert(manual_queue).values(
            domain=domain, record_id=record_id, reason=reason, detail=detail, status=OPEN,
            created_at=self._bind(now), due_at=self._bind(now + resolve_within), last_attempt_at=self._bind(now),
            erasure_request_id=erasure_request_id,
        ).on_conflict_do_nothing(index_elements=["domain", "record_id", "reason"],
                                 index_where=manual_queue.c.status.in_(ACTIVE)).returning(manual_queue.c.id)
        key = (manual_queue.c.domain == domain, manual_queue.c.record_id == record_id,
               manual_queue.c.reason == reason, manual_queue.c.status.in_(ACTIVE))
        for _ in range(3):  # an item resolved between our insert and our update: insert again
            with self.database.begin() as connection:
                inserted = connection.execute(statement).scalar_one_or_none()
                if inserted is not None:
                    self._audit(connection, domain, record_id, Action.QUEUE_OPENED, SYSTEM_ACTOR, run_id,
                                f"queue item {inserted} ({reason}): → open")
                    return Added(self._get(connection, inserted), True)
                bumped = connection.execute(sa.update(manual_queue).where(*key).values(
                    attempts=manual_queue.c.attempts + 1, last_attempt_at=self._bind(now), detail=detail,
                    **({} if erasure_request_id is None else {"erasure_request_id": erasure_request_id}),
                ).returning(manual_queue.c.id)).scalar_one_or_none()
                if bumped is not None:
                    return Added(self._get(connection, bumped), False)
        raise QueueRefused(f"could not add {domain} {record_id} ({reason}) to the queue: it kept changing")

    # the operator's workflow -------------------------------------------------------------------
    def claim(self, item_id: int, by: str) -> QueueItem:
        return self._transition(item_id, "claim", by, None)

    def resolve(self, item_id: int, by: str, note: str, run_id: str = "manual") -> QueueItem:
        return self._transition(item_id, "resolve", by, note, run_id)

    def dismiss(self, item_id: int, by: str, note: str) -> QueueItem:
        return self._transition(item_id, "dismiss", by, note)

    def retry_failed(self, item_id: int, by: str, why: str, run_id: str) -> QueueItem:
        """A retry that did not finish the job: one more attempt, the item stays as it was."""
        _no_personal_data("a retry's outcome", why)
        with self.database.begin() as connection:
            item = self._get(connection, item_id, lock=True)
            connection.execute(sa.update(manual_queue).where(manual_queue.c.id == item_id).values(
                attempts=manual_queue.c.attempts + 1, last_attempt_at=self._bind(self.database.now())))
            self._audit(connection, item.domain, item.record_id, Action.QUEUE_RETRY_FAILED, by, run_id,
                        f"queue item {item_id}: retry failed ({why}); stays {item.status}")
            return self._get(connection, item_id)

    def retryable(self, item_id: int) -> QueueItem:
        """The item, if a retry may run on it (it is open or claimed, and not a hold conflict)."""
        with self.database.connect() as connection:
            item = self._get(connection, item_id)
        if item.status not in ACTIVE:
            raise QueueRefused(f"queue item {item_id} is {item.status}: there is nothing to retry")
        if item.reason == "legal_hold_conflict" and under_legal_hold(self.database, item.domain, item.record_id):
            raise QueueRefused(f"queue item {item_id} is a legal-hold conflict: a retry cannot override a hold; "
                               "release the hold first (then a retry erases the record), or dismiss the item "
                               "with a note")
        return item

    def _transition(self, item_id: int, command: str, by: str, note: str | None, run_id: str = "manual") -> QueueItem:
        allowed, to = TRANSITIONS[command]
        by = (by or "").strip()
        if not by:
            raise QueueRefused(f"{command}: say who you are (--by NAME)")
        _no_personal_data("the name given with --by (use a handle)", by)
        if command != "claim" and not (note or "").strip():
            raise QueueRefused(f"{command}: a note saying what was done is required (--note)")
        _no_personal_data("a resolution note", note)
        with self.database.begin() as connection:
            item = self._get(connection, item_id, lock=True)
            if item.status not in allowed:
                holder = f" by {item.claimed_by}" if item.status == CLAIMED else ""
                raise QueueRefused(f"queue item {item_id} is {item.status}{holder}: it cannot be {to}")
            values: dict = {"status": to}
            if to == CLAIMED:
                values["claimed_by"] = by
            else:
                values.update(resolved_by=by, resolution_note=note.strip(), closed_at=self._bind(self.database.now()))
            connection.execute(sa.update(manual_queue).where(manual_queue.c.id == item_id).values(values))
            self._audit(connection, item.domain, item.record_id, MOVED_TO[to], by, run_id,
                        f"queue item {item_id} ({item.reason}): {item.status} → {to}")
            return self._get(connection, item_id)

    # reading -------------------------------------------------------------------------------------
    def get(self, item_id: int) -> QueueItem:
        with self.database.connect() as connection:
            return self._get(connection, item_id)

    def list(self, domain: str | None = None, status: str | None = None, overdue: bool = False) -> list[QueueItem]:
        query = sa.select(manual_queue).order_by(manual_queue.c.due_at, manual_queue.c.id)
        if domain:
            query = query.where(manual_queue.c.domain == domain)
        if status:
            if status not in (*ACTIVE, RESOLVED, DISMISSED):
                raise QueueRefused(f"unknown status {status!r}: one of open, claimed, resolved, dismissed")
            query = query.where(manual_queue.c.status == status)
        if overdue:
            query = query.where(manual_queue.c.status.in_(ACTIVE), manual_queue.c.due_at <= self._bind(self.clock()))
        with self.database.connect() as connection:
            return [self._item(row) for row in connection.execute(query)]

    def history(self, item_id: int) -> list[dict]:
        """The item's audit entries, oldest first: read through the time index from its creation."""
        item = self.get(item_id)
        query = sa.select(audit_log).where(
            audit_log.c.occurred_at >= self._bind(item.created_at - timedelta(minutes=1)),
            audit_log.c.domain == item.domain, audit_log.c.record_id == item.record_id,
            sa.or_(audit_log.c.detail.like(f"queue item {item_id} %"),
                   audit_log.c.detail.like(f"queue item {item_id}:%")),
        ).order_by(audit_log.c.id)
        with self.database.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def take_closed_to_announce(self) -> list[QueueItem]:
        """Items resolved or dismissed since they escalated (and so alerted), each handed out once:
        a conditional update marks them, so no close is announced twice or missed, however
        closely they follow each other or however many sensors tick."""
        query = sa.update(manual_queue).where(
            manual_queue.c.status.in_((RESOLVED, DISMISSED)), manual_queue.c.escalation_level >= 1,
            manual_queue.c.close_announced.is_(False)).values(close_announced=True).returning(*manual_queue.c)
        with self.database.begin() as connection:
            return sorted((self._item(row) for row in connection.execute(query)), key=lambda item: item.id)

    # escalation and health -------------------------------------------------------------------------
    def escalate(self, domain: str, multiples: Iterable[float]) -> list[QueueItem]:
        """Raise the level of the domain's overdue items: 1 once past due, one more at each multiple
        of the time it was given (created → due). Returns the items whose level rose now; the
        conditional update makes each level happen once, however many sensors tick."""
        now = self.clock()
        raised = []
        for item in self.list(domain=domain, overdue=True):
            given = item.due_at - item.created_at
            level = 1 + sum(now - item.created_at >= multiple * given for multiple in multiples)
            if level <= item.escalation_level:
                continue
            with self.database.begin() as connection:
                changed = connection.execute(sa.update(manual_queue).where(
                    manual_queue.c.id == item.id, manual_queue.c.escalation_level < level,
                    manual_queue.c.status.in_(ACTIVE)).values(escalation_level=level)).rowcount
                if changed:
                    self._audit(connection, item.domain, item.record_id, Action.QUEUE_ESCALATED,
                                SYSTEM_ACTOR, SYSTEM_ACTOR,
                                f"queue item {item.id} ({item.reason}): level {item.escalation_level} → {level}")
                    raised.append(self._get(connection, item.id))
        return raised

    def health(self) -> dict[str, float | int | dict]:
        """The queue's figures for people and plots: depth by domain and status, ages of the
        active items (oldest, p50, p95, in seconds), overdue items, resolved in the last 24 h."""
        now = self.clock()
        with self.database.connect() as connection:
            active = [self._item(row) for row in connection.execute(
                sa.select(manual_queue).where(manual_queue.c.status.in_(ACTIVE)))]
            resolved_24h = connection.execute(sa.select(sa.func.count()).select_from(manual_queue).where(
                manual_queue.c.status == RESOLVED,
                manual_queue.c.closed_at >= self._bind(now - timedelta(hours=24)))).scalar_one()
        ages = sorted((now - item.created_at).total_seconds() for item in active)
        depth: dict[str, dict[str, int]] = {}
        for item in active:
            depth.setdefault(item.domain, {}).setdefault(item.status, 0)
            depth[item.domain][item.status] += 1
        return {
            "depth": depth, "active": len(active),
            "overdue": sum(item.overdue(now) for item in active),
            "escalated": sum(item.escalation_level >= 2 for item in active),
            "oldest_age_seconds": ages[-1] if ages else 0.0,
            "p50_age_seconds": statistics.median(ages) if ages else 0.0,
            "p95_age_seconds": _percentile(ages, 0.95),
            "resolved_last_24h": int(resolved_24h),
        }

    # ---------------------------------------------------------------------------------------------
    def _get(self, connection: sa.Connection, item_id: int, lock: bool = False) -> QueueItem:
        """The item; with `lock`, row-locked until the transaction ends (a change of status)."""
        query = sa.select(manual_queue).where(manual_queue.c.id == item_id)
        row = connection.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise QueueRefused(f"no queue item {item_id}")
        return self._item(row)

    def _item(self, row: sa.Row) -> QueueItem:
        values = dict(row._mapping)
        for column in ("created_at", "due_at", "last_attempt_at", "closed_at"):
            if values[column] is not None:
                values[column] = self.database.read_time(values[column])
        return QueueItem(**values)

    def _audit(self, connection: sa.Connection, domain: str, record_id: str, action: Action, actor: str,
               run_id: str, detail: str) -> None:
        write_entries(connection, [AuditStamp(domain, action, run_id, self.policy_version, detail=detail,
                                              actor=actor).row(record_id)])

    def _bind(self, moment: datetime) -> datetime:
        return self.database.bind_time(moment)


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))]
