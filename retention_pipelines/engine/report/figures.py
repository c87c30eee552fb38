"""The monthly compliance report's figures: one calendar month in UTC, [the 1st 00:00, the next
month's 1st 00:00), read from the audit log and the retention tables. No Dagster here, and no
rendering (render.py turns the figures into HTML and CSV files).

Records removed, held or left behind are counted from the audit log alone, so that every number
reconciles with it. Breaches, queue items, requests for erasure and legal holds come from their
own tables, each read as it stood at the end of the month: what closed after the month ended
counts as still open, so that a report rebuilt later tells the same story for the month.

Nothing personal is read: no address, no subject hash, no free-text outcome (of a request's outcome
only what a domain keeps until its deadline: the domain and until when); record ids, domains,
times and counts only.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from retention_pipelines.engine.audit.entries import Action
from retention_pipelines.engine.gdpr.requests import COMPLETED, PARTIALLY_BLOCKED, Outcome
from retention_pipelines.policies import DomainPolicy, PolicyFile
from retention_pipelines.policies.model import format_duration
from retention_pipelines.policies.processing import ProcessingEntry, record_of_processing
from retention_pipelines.schema import audit_log, erasure_requests, legal_holds, manual_queue, sla_breaches
from retention_pipelines.stores import AppDatabase

# Which audit actions the report counts, and as what: the one place to extend. A new action is a
# word in a group, a new group a line; the summary gets a column per group, the daily table one
# per removal action.
ACTION_GROUPS: dict[str, tuple[str, ...]] = {
    # records removed or redacted
    "removed": (Action.DELETED.value, Action.REDACTED.value, Action.REDACTED_BLOB_MISSING.value, Action.ERASED.value),
    "held": (Action.SKIPPED_LEGAL_HOLD.value,),  # due, left in place under a legal hold
    "failed": (Action.BLOB_DELETE_FAILED.value,),  # due, left in place: their object would not go
    "keys_destroyed": (Action.KEY_DESTROYED.value,),  # a subject's archive key destroyed (crypto-shredding)
    "archives_expired": (Action.ARCHIVE_EXPIRED.value,),  # archive objects removed at the end of their own retention
    "restored": (Action.RESTORED.value,),  # records restored from the archive
}
REMOVAL_ACTIONS = ACTION_GROUPS["removed"]
COUNTED_ACTIONS = tuple(action for group in ACTION_GROUPS.values() for action in group)

# A deadline judged at the end of the month.
MET, MISSED, OPEN = "met", "missed", "open"
ALL_DOMAINS = "all domains"

# The months a report may cover: 2000-01 to 2999-12, the years a domain's partitions may start in
# (policies/model.py), far from the limits of a datetime that the bounds computed from a month
# (the next month, deadlines judged at its end) must stay inside.
MONTH = re.compile(r"(2[0-9]{3})-(0[1-9]|1[0-2])")


class ReportRefused(ValueError):
    """A month the report cannot be made for; the message names the month and the expected form."""


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """'2026-11' → (2026-11-01 00:00 UTC, 2026-12-01 00:00 UTC)."""
    match = MONTH.fullmatch(month.strip()) if isinstance(month, str) else None
    if not match:
        raise ReportRefused(f"{month!r} is not a month: write it as YYYY-MM, from 2000-01 to 2999-12, e.g. 2026-11")
    year, number = int(match[1]), int(match[2])
    return (datetime(year, number, 1, tzinfo=UTC),
            datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC))


# The figures ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleEntry:
    """One domain's retention rule: GDPR Art. 30(1)(f), the envisaged time limits for erasure."""

    domain: str
    enabled: bool
    table: str
    what: str
    retain_for: str  # the policy file's own spelling: '24h', '90d', '0s'
    counted_from: str  # the clock column the period runs from
    action: str
    archived: bool
    archive_keep_for: str | None  # how long each archive copy lives; None where nothing is archived
    subject_column: str | None
    sla_max_lag: str
    erasure_time_limit: str | None  # for domains that hold a subject's data: the time to erase on request
    # What a request for erasure does to the domain's rows: erase, or keep until their deadline and why.
    on_erasure: str | None = None


@dataclass(frozen=True)
class Breach:
    id: int
    domain: str
    kind: str
    opened_at: datetime
    closed_at: datetime | None  # None: still open at the month's end
    escalation_level: int
    duration_seconds: int | None  # the whole breach, once closed
    seconds_in_month: int


@dataclass(frozen=True)
class QueueEntry:
    id: int
    domain: str
    record_id: str
    reason: str
    created_at: datetime
    due_at: datetime
    status: str  # at the month's end: resolved, dismissed or open
    closed_at: datetime | None
    seconds_to_close: int | None
    deadline: str  # met, missed (closed late, or open past due) or open


@dataclass(frozen=True)
class QueueReason:
    reason: str
    items: int
    resolved: int
    dismissed: int
    open: int
    met: int
    missed: int
    median_seconds_to_close: int | None


@dataclass(frozen=True)
class ErasureEntry:
    id: int
    received_at: datetime
    due_at: datetime
    extended: bool
    status: str  # at the month's end: received (open), completed or partially_blocked
    completed_at: datetime | None
    deadline: str  # met, missed or open
    # At the month's end, partially blocked by a domain that keeps the subject's records until their
    # deadline (on_erasure: keep_until_deadline): which domains, until when; else empty.
    kept_until_deadline: str = ""


@dataclass(frozen=True)
class HeldRecord:
    id: int
    domain: str
    record_id: str
    reason: str
    placed_at: datetime


@dataclass(frozen=True)
class DomainTotals:
    domain: str
    actions: dict[str, int]  # by ACTION_GROUPS name
    queue_items: int
    queue_items_open: int
    sla_breaches: int
    seconds_in_breach: int
    legal_holds_active: int


@dataclass(frozen=True)
class ChainStatus:
    verified: bool
    intact: bool | None
    rows_checked: int | None
    first_broken: str | None
    outside_chain: int | None = None  # record rows of no batch of a chain

    @property
    def label(self) -> str:
        if not self.verified:
            return "not verified"
        return "intact" if self.intact else "BROKEN"

    @classmethod
    def of(cls, status: dict | None) -> ChainStatus:
        if status is None:
            return cls(False, None, None, None)
        broken = status.get("first_broken")
        return cls(True, bool(status["intact"]), int(status.get("rows_checked") or 0),
                   None if broken is None else str(broken), int(status.get("outside_chain") or 0))


@dataclass(frozen=True)
class ComplianceReport:
    month: str
    start: datetime
    end: datetime
    as_of: datetime  # the month's end, or the database's now for the month in progress
    generated_at: datetime
    policy_version: str
    action_groups: dict[str, tuple[str, ...]]
    schedule: list[ScheduleEntry]
    processing: list[ProcessingEntry]  # the record of processing (Art. 30(1)) beside the schedule
    domains: list[str]
    days: list[date]
    counts: dict[date, dict[tuple[str, str], int]]  # day → (domain, action) → audit entries
    breaches: list[Breach]
    queue_items: list[QueueEntry]
    erasure_requests: list[ErasureEntry]
    legal_holds: list[HeldRecord]
    chain: ChainStatus

    @property
    def in_progress(self) -> bool:
        return self.as_of < self.end

    def count(self, domain: str, actions: tuple[str, ...], day: date | None = None) -> int:
        days = self.days if day is None else [day]
        return sum(self.counts[d].get((domain, action), 0) for d in days for action in actions)

    def totals(self) -> list[DomainTotals]:
        """One row per domain, then the sum over every domain."""
        rows = []
        for domain in self.domains:
            queue = [item for item in self.queue_items if item.domain == domain]
            breaches = [breach for breach in self.breaches if breach.domain == domain]
            rows.append(DomainTotals(
                domain, {group: self.count(domain, actions) for group, actions in self.action_groups.items()},
                len(queue), sum(item.status == OPEN for item in queue), len(breaches),
                sum(breach.seconds_in_month for breach in breaches),
                sum(hold.domain == domain for hold in self.legal_holds)))
        every = DomainTotals(ALL_DOMAINS,
                             {group: sum(row.actions[group] for row in rows) for group in self.action_groups},
                             *(sum(getattr(row, name) for row in rows) for name in (
                                 "queue_items", "queue_items_open", "sla_breaches", "seconds_in_breach",
                                 "legal_holds_active")))
        return [*rows, every]

    def queue_by_reason(self) -> list[QueueReason]:
        rows = []
        for reason in sorted({item.reason for item in self.queue_items}):
            items = [item for item in self.queue_items if item.reason == reason]
            closed = [item.seconds_to_close for item in items if item.seconds_to_close is not None]
            rows.append(QueueReason(
                reason, len(items),
                *(sum(item.status == status for item in items) for status in ("resolved", "dismissed", OPEN)),
                *(sum(item.deadline == deadline for item in items) for deadline in (MET, MISSED)),
                round(statistics.median(closed)) if closed else None))
        return rows

    def erasure_summary(self) -> dict[str, int]:
        requests = self.erasure_requests
        return {"requests": len(requests), **{deadline: sum(r.deadline == deadline for r in requests)
                                              for deadline in (MET, MISSED, OPEN)},
                "partially_blocked": sum(r.status == PARTIALLY_BLOCKED for r in requests),
                "kept_until_deadline": sum(bool(r.kept_until_deadline) for r in requests)}


# Gathering -------------------------------------------------------------------------------------
def build_report(database: AppDatabase, policies: PolicyFile, month: str, chain_status: dict | None = None,
                 erasure_due: timedelta = timedelta(days=30)) -> ComplianceReport:
    """Every figure of the month. `chain_status` is the audit chain's verification
    ({"intact", "rows_checked", "first_broken"}); None reports it as not verified.
    `erasure_due` is the time a request for erasure is given (RETENTION_ERASURE_DUE_DAYS)."""
    start, end = month_bounds(month)
    now = database.now()
    if start > now:
        raise ReportRefused(f"{month} has not begun: the database's clock says {now:%Y-%m-%d %H:%M} UTC")
    gather = _Gatherer(database, start, end, min(end, now))
    counts = gather.audit_counts()
    breaches, queue, holds = gather.breaches(), gather.queue_items(), gather.legal_holds()
    enabled = [name for name, policy in policies.domains.items() if policy.enabled]
    seen = {domain for day in counts.values() for domain, _ in day} | {
        row.domain for rows in (breaches, queue, holds) for row in rows}
    return ComplianceReport(
        month=month.strip(), start=start, end=end, as_of=gather.as_of, generated_at=now,
        policy_version=policies.policy_version, action_groups=dict(ACTION_GROUPS),
        schedule=[_schedule_entry(policy, erasure_due) for policy in policies.domains.values()],
        processing=record_of_processing(policies),
        domains=enabled + sorted(seen - set(enabled)), days=sorted(counts), counts=counts,
        breaches=breaches, queue_items=queue, erasure_requests=gather.erasure_requests(), legal_holds=holds,
        chain=ChainStatus.of(chain_status))


def _schedule_entry(policy: DomainPolicy, erasure_due: timedelta) -> ScheduleEntry:
    if policy.redact:
        action = (f"redact: {', '.join(policy.redact.null_columns)} emptied, "
                  f"{policy.redact.stamp_column} stamped")
    else:
        action = "delete"
    return ScheduleEntry(
        domain=policy.name, enabled=policy.enabled, table=policy.table, what=" ".join(policy.description.split()),
        retain_for=format_duration(policy.retain_for), counted_from=policy.clock_column, action=action,
        archived=policy.archive.enabled,
        archive_keep_for=format_duration(policy.archive.keep_for)
        if policy.archive.enabled and policy.archive.keep_for else None,
        subject_column=policy.subject_column,
        sla_max_lag=format_duration(policy.sla.max_lag),
        erasure_time_limit=format_duration(erasure_due) if policy.subject_column else None,
        on_erasure=None if not policy.subject_column else "erase" if policy.on_erasure == "erase" else
        f"keep until deadline: {' '.join((policy.on_erasure_reason or '').split())}")


def _deadline(due: datetime, done: datetime | None, as_of: datetime) -> str:
    if done is not None:
        return MET if done <= due else MISSED
    return MISSED if due < as_of else OPEN


class _Gatherer:
    """The month's queries. Every range is half-open, [from, to), so an entry at 00:00 of the 1st
    belongs to the month that begins then, and to no other."""

    def __init__(self, database: AppDatabase, start: datetime, end: datetime, as_of: datetime):
        self.database, self.start, self.end, self.as_of = database, start, end, as_of

    def _at(self, moment: datetime):
        """A UTC instant as a bound of a range, compared right with every spelling the database
        keeps times in (Dialect.time_bound)."""
        return self.database.dialect.time_bound(moment)

    def _within(self, column, start: datetime, end: datetime):
        return sa.and_(column >= self._at(start), column < self._at(end))

    def _time(self, value) -> datetime | None:
        return self.database.read_time(value)

    def _closed_by_month_end(self, moment) -> datetime | None:
        moment = self._time(moment)
        return moment if moment is not None and moment < self.as_of else None

    def audit_counts(self) -> dict[date, dict[tuple[str, str], int]]:
        """Entries per day, domain and action, in one pass over the month's range of the
        occurred_at index (BRIN in PostgreSQL): 3 million entries in about a second."""
        days = {}
        day = self.start
        while day < self.as_of:
            days[day.date()] = {}
            day += timedelta(days=1)
        query = (sa.select(self._day(audit_log.c.occurred_at).label("day"), audit_log.c.domain, audit_log.c.action,
                           sa.func.count())
                 # To the month's end, not to as_of: an entry of the month in progress stamped in the very
                 # second the report is made (SQLite's clock stops at the second) is the month's too.
                 .where(self._within(audit_log.c.occurred_at, self.start, self.end),
                        audit_log.c.action.in_(COUNTED_ACTIONS))
                 .group_by(sa.literal_column("day"), audit_log.c.domain, audit_log.c.action))
        with self.database.connect() as connection:
            for when, domain, action, n in connection.execute(query):
                days[when if isinstance(when, date) else date.fromisoformat(when)][(domain, action)] = int(n)
        return days

    def _day(self, column):
        """The UTC day of an instant, whatever the session's time zone: a date, or its ISO text."""
        return self.database.dialect.utc_day(column)

    def breaches(self) -> list[Breach]:
        """Breaches opened in the month, and those opened before that were still open when it began."""
        table = sla_breaches
        query = sa.select(table).where(sa.or_(
            self._within(table.c.opened_at, self.start, self.end),
            sa.and_(table.c.opened_at < self._at(self.start),
                    sa.or_(table.c.closed_at.is_(None), table.c.closed_at > self._at(self.start)))),
        ).order_by(table.c.opened_at, table.c.id)
        found = []
        with self.database.connect() as connection:
            for row in connection.execute(query):
                opened, closed = self._time(row.opened_at), self._closed_by_month_end(row.closed_at)
                until = min(closed or self.as_of, self.as_of)
                in_month = max((until - max(opened, self.start)).total_seconds(), 0.0)
                duration = None if closed is None else round(row.duration_seconds if row.duration_seconds is not None
                                                             else (closed - opened).total_seconds())
                found.append(Breach(row.id, row.domain, row.kind, opened, closed, row.escalation_level, duration,
                                    round(in_month)))
        return found

    def queue_items(self) -> list[QueueEntry]:
        """Items created in the month, and where each stood at its end."""
        table = manual_queue
        query = sa.select(table.c.id, table.c.domain, table.c.record_id, table.c.reason, table.c.status,
                          table.c.created_at, table.c.due_at, table.c.closed_at).where(
            self._within(table.c.created_at, self.start, self.end)).order_by(table.c.created_at, table.c.id)
        found = []
        with self.database.connect() as connection:
            for row in connection.execute(query):
                created, due = self._time(row.created_at), self._time(row.due_at)
                closed = self._closed_by_month_end(row.closed_at)
                found.append(QueueEntry(
                    row.id, row.domain, row.record_id, row.reason, created, due,
                    row.status if closed is not None else OPEN, closed,
                    None if closed is None else round((closed - created).total_seconds()),
                    _deadline(due, closed, self.as_of)))
        return found

    def erasure_requests(self) -> list[ErasureEntry]:
        """Requests received, due or completed in the month. Neither the address nor its hash is read."""
        table = erasure_requests
        query = sa.select(table.c.id, table.c.received_at, table.c.due_at, table.c.status, table.c.completed_at,
                          table.c.outcome, table.c.extension_reason.is_not(None).label("extended")).where(sa.or_(
            self._within(table.c.received_at, self.start, self.end), self._within(table.c.due_at, self.start, self.end),
            self._within(table.c.completed_at, self.start, self.end))).order_by(table.c.received_at, table.c.id)
        found = []
        with self.database.connect() as connection:
            for row in connection.execute(query):
                due, completed = self._time(row.due_at), self._closed_by_month_end(row.completed_at)
                status = row.status if completed is not None else "received"
                outcome = Outcome.read(row.outcome)
                kept = outcome.kept_by_policy if outcome else ()
                if status == COMPLETED and kept and self._closed_by_month_end(outcome.completed_on_recheck_at) is None:
                    status = PARTIALLY_BLOCKED  # the kept records went after the month's end
                kept_text = ", ".join(f"{k.domain} until {k.until:%Y-%m-%d %H:%M}" for k in kept) \
                    if status == PARTIALLY_BLOCKED else ""
                found.append(ErasureEntry(row.id, self._time(row.received_at), due, bool(row.extended), status,
                                          completed, _deadline(due, completed, self.as_of), kept_text))
        return found

    def legal_holds(self) -> list[HeldRecord]:
        """Holds in force at the month's end: placed before it, not released by then."""
        table = legal_holds
        query = sa.select(table.c.id, table.c.domain, table.c.record_id, table.c.reason, table.c.placed_at).where(
            table.c.placed_at < self._at(self.as_of),
            sa.or_(table.c.released_at.is_(None), table.c.released_at >= self._at(self.as_of)),
        ).order_by(table.c.domain, table.c.placed_at, table.c.id)
        with self.database.connect() as connection:
            return [HeldRecord(row.id, row.domain, row.record_id, row.reason, self._time(row.placed_at))
                    for row in connection.execute(query)]
