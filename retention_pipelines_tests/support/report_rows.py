"""A month of retention activity for the compliance-report tests: real engine runs of every domain,
a legal hold, breaches, queue items and requests for erasure, moved in time to days of October
2026 and just outside it (the way queue_rows.age_item moves an item: what the engine stamps with
the database's now, the test re-dates).

Subjects' addresses go into the app's rows, the erasure requests and one hold's reason: no output
of the report may contain any of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.engine import RetentionEngine
from retention_pipelines.engine.audit.entries import AuditStamp, write_entries
from retention_pipelines.engine.gdpr.requests import ErasureRequests, KeptByPolicy, Outcome
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.engine.oversight.sla import Breaches
from retention_pipelines.stores import AppDatabase, archive_store_from_url, blob_store_from_url
from retention_pipelines_tests.support.app_rows import (
    insert_blacklist_at,
    insert_meal_plans_at,
    insert_quiz_rows,
    insert_token_expiring_at,
)
from retention_pipelines_tests.support.archives import configured_keys
from retention_pipelines_tests.support.audit_rows import relink

MONTH = "2026-10"
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
TICK = timedelta(microseconds=1)
HASH_KEY = b"report-test-hash-key-0123456789"
ADDRESSES = ["dana.subject@example.com", "erin.subject@example.net", "frank.subject@example.org",
             "gina.subject@example.com", "hugo.subject@example.net", "ivy.subject@example.org",
             "jon.subject@example.com", "kim.subject@example.net", "lea.subject@example.org",
             "max.subject@example.com", "nia.subject@example.net", "oto.subject@example.org"]


def at(day: int, hour: int = 0, minute: int = 0, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@dataclass
class Scenario:
    runs: dict[str, datetime] = field(default_factory=dict)  # run id → when its entries are dated
    breaches: dict[str, int] = field(default_factory=dict)
    queue: dict[str, int] = field(default_factory=dict)
    erasure: dict[str, int] = field(default_factory=dict)
    holds: dict[str, int] = field(default_factory=dict)


# moving what the engine stamped --------------------------------------------------------------------
def redate_run(database: AppDatabase, run_id: str, moment: datetime) -> int:
    """Every audit entry of one run, dated `moment` (its batches carry the time); returns how many."""
    batches = schema.audit_batches
    with database.engine.begin() as connection:
        connection.execute(sa.update(batches).where(batches.c.run_id == run_id).values(
            occurred_at=database.bind_time(moment)))
        return connection.execute(sa.select(sa.func.count()).select_from(schema.audit_log).where(
            schema.audit_log.c.run_id == run_id)).scalar_one()


def redate_queue_item(database: AppDatabase, item_id: int, created: datetime, due: datetime,
                      closed: datetime | None = None) -> None:
    """The item's times, and its audit entries with them: opened when created, closed when closed."""
    log = schema.audit_batches  # an entry's time is its batch's
    with database.engine.begin() as connection:
        connection.execute(sa.update(schema.manual_queue).where(schema.manual_queue.c.id == item_id).values(
            created_at=database.bind_time(created), due_at=database.bind_time(due),
            closed_at=None if closed is None else database.bind_time(closed)))
        mine = sa.or_(log.c.detail.like(f"queue item {item_id} %"), log.c.detail.like(f"queue item {item_id}:%"))
        connection.execute(sa.update(log).where(mine, log.c.action == "queue_opened").values(
            occurred_at=database.bind_time(created)))
        if closed is not None:
            connection.execute(sa.update(log).where(mine, log.c.action.in_(("queue_resolved", "queue_dismissed")))
                               .values(occurred_at=database.bind_time(closed)))


def set_times(database: AppDatabase, table: sa.Table, row_id: int, **moments: datetime | None) -> None:
    with database.engine.begin() as connection:
        assert connection.execute(sa.update(table).where(table.c.id == row_id).values(
            {k: None if v is None else database.bind_time(v) for k, v in moments.items()})).rowcount == 1


def place_hold(database: AppDatabase, domain: str, record_id: str, reason: str, placed: datetime,
               released: datetime | None = None) -> int:
    with database.engine.begin() as connection:
        return connection.execute(sa.insert(schema.legal_holds).values(
            domain=domain, record_id=record_id, reason=reason, placed_at=database.bind_time(placed),
            released_at=None if released is None else database.bind_time(released),
        ).returning(schema.legal_holds.c.id)).scalar_one()


def audit_entry(database: AppDatabase, domain: str, record_id: str, action: str, moment: datetime) -> None:
    """An entry of an action other engineers' code writes (erased, key_destroyed, …)."""
    batches = schema.audit_batches
    with database.engine.begin() as connection:
        write_entries(connection, [AuditStamp(domain, action, "erasure-run", "test").row(record_id)])
        last = sa.select(sa.func.max(batches.c.id)).where(batches.c.domain == domain).scalar_subquery()
        connection.execute(sa.update(batches).where(batches.c.id == last).values(
            occurred_at=database.bind_time(moment)))


# the month --------------------------------------------------------------------------------------------
def month_of_activity(database: AppDatabase, policies, archive_url: str, folder: Path) -> Scenario:
    """October 2026 as the report should see it, with entries on each side of its bounds."""
    scenario = Scenario()
    version = policies.policy_version
    archive = archive_store_from_url(archive_url)

    def engine(domain: str, **options) -> RetentionEngine:
        keys = configured_keys(database) if policies.domains[domain].archive.enabled else None
        return RetentionEngine(policies.domains[domain], version, database, archive, keys=keys, **options)

    def run(domain: str, run_id: str, moment: datetime, **options) -> None:
        engine(domain, **options).run(run_id)
        assert redate_run(database, run_id, moment) > 0, run_id
        scenario.runs[run_id] = moment

    # quiz_responses: a held row and deletions at the month's first instant, mid-month, just before it
    held, *_ = insert_quiz_rows(database, [timedelta(days=2)] * 6, email=ADDRESSES[0])
    scenario.holds["quiz held"] = place_hold(database, "quiz_responses", held, "litigation 2026-17", at(15, month=9))
    run("quiz_responses", "quiz-oct-01", START)
    insert_quiz_rows(database, [timedelta(days=2)] * 3, email=ADDRESSES[1])
    run("quiz_responses", "quiz-oct-15", at(15, 12))
    insert_quiz_rows(database, [timedelta(days=2)] * 2, email=ADDRESSES[1])
    run("quiz_responses", "quiz-sep-30", START - TICK)
    # magic_link_tokens: the month's last instant, and the next month's first
    insert_token_expiring_at(database, [database.now() - timedelta(hours=1)] * 4)
    run("magic_link_tokens", "tokens-oct-31", END - TICK)
    insert_token_expiring_at(database, [database.now() - timedelta(hours=1)] * 2)
    run("magic_link_tokens", "tokens-nov-01", END)
    # email_blacklist, archived first
    insert_blacklist_at(database, [database.now() - timedelta(days=91)] * 3)
    run("email_blacklist", "blacklist-oct-20", at(20, 8))
    # meal_plans: three PDFs deleted and their rows redacted; one row whose PDF was already gone
    blobs = folder / "blobs"
    for name in ("a", "b", "c"):
        (blobs / "plans").mkdir(parents=True, exist_ok=True)
        (blobs / "plans" / f"{name}.pdf").write_bytes(b"%PDF-1.4 " + name.encode())
    insert_meal_plans_at(database, [database.now() - timedelta(days=91)] * 4,
                         ["plans/a.pdf", "plans/b.pdf", "plans/c.pdf", "plans/gone.pdf"])
    run("meal_plans", "plans-oct-07", at(7, 2, 20), blob_store=blob_store_from_url(blobs.as_uri()))
    # actions on their way from other work: a subject's records erased, their archive key destroyed
    for moment in (at(10, 9), at(10, 9), END):
        audit_entry(database, "quiz_responses", "erased-record", "erased", moment)
    for moment in (at(10, 9), END):
        audit_entry(database, "gdpr", "subject-key", "key_destroyed", moment)

    _queue(database, scenario, version)
    _breaches(database, scenario)
    _erasure(database, scenario)
    _holds(database, scenario)
    # The entries' times were moved to the month after they were written: every chain linked again,
    # as if they had been written then.
    with database.connect() as connection:
        domains = connection.execute(sa.select(schema.audit_chain_heads.c.domain)).scalars().all()
    for domain in domains:
        relink(database, domain)
    return scenario


def _queue(database: AppDatabase, scenario: Scenario, version: str) -> None:
    queue = ManualQueue(database, version)

    def add(name: str, domain: str, record: str, reason: str, created: datetime, given: timedelta,
            closed: datetime | None = None, how: str | None = None) -> None:
        item = queue.add(domain, record, reason, f"{reason} in a test", given).item
        if how == "resolve":
            queue.resolve(item.id, "ops-handle", "done by hand")
        elif how == "dismiss":
            queue.dismiss(item.id, "ops-handle", "not needed")
        redate_queue_item(database, item.id, created, created + given, closed)
        scenario.queue[name] = item.id

    add("resolved in time", "meal_plans", "plan-x", "blob_delete_failed", at(3, 9), timedelta(days=2),
        at(4, 9), "resolve")
    add("dismissed late", "magic_link_tokens", "2026-10-20-00:00", "run_failed", at(20), timedelta(days=2),
        at(25), "dismiss")
    add("open, due as the month ends", "email_blacklist", "email_blacklist/2026/10/30/x.jsonl.gz",
        "archive_verification_failed", at(30), timedelta(days=2))
    add("resolved next month", "meal_plans", "plan-y", "blob_delete_failed", at(31, 12), timedelta(days=2),
        at(2, month=11), "resolve")
    add("open past due", "meal_plans", "plan-z", "delete_blocked", at(2), timedelta(days=2))
    add("resolved in time 2", "quiz_responses", "quiz-blocked", "delete_blocked", at(5, 10), timedelta(days=1),
        at(6, 9), "resolve")
    add("before the month", "quiz_responses", "2026-09-30-23:00", "run_failed", START - TICK, timedelta(days=1))
    add("after the month", "quiz_responses", "2026-11-01-00:00", "run_failed", END, timedelta(days=1))


def _breaches(database: AppDatabase, scenario: Scenario) -> None:
    breaches = Breaches(database)
    table = schema.sla_breaches

    def breach(name: str, domain: str, kind: str, opened: datetime, closed: datetime | None = None) -> None:
        opened_breach = breaches.open(domain, kind, timedelta(hours=3), timedelta(hours=1))
        if closed is not None:
            breaches.close(domain, kind)
        set_times(database, table, opened_breach.id, opened_at=opened, closed_at=closed)
        if closed is not None:
            with database.engine.begin() as connection:
                connection.execute(sa.update(table).where(table.c.id == opened_breach.id).values(
                    duration_seconds=(closed - opened).total_seconds()))
        scenario.breaches[name] = opened_breach.id

    breach("within the month", "quiz_responses", "retention_lag", at(2, 10), at(2, 12, 30))
    breach("from the month before", "meal_plans", "run_duration", at(28, month=9), at(1, 6))
    breach("open", "magic_link_tokens", "run_failures", at(30))
    breach("before the month", "email_blacklist", "retention_lag", at(1, month=9), at(2, month=9))
    breach("after the month", "gdpr", "erasure_overdue", END)
    breach("over the whole month", "quiz_responses", "run_duration", at(30, month=9), END + timedelta(hours=1))
    breach("closed as the month began", "email_blacklist", "run_failures", at(30, 22, month=9), START)
    breach("opened as the month began", "quiz_responses", "queue_overdue", START, at(1, 0, 30))


def _erasure(database: AppDatabase, scenario: Scenario) -> None:
    requests = ErasureRequests(database, HASH_KEY)
    table = schema.erasure_requests
    addresses = iter(ADDRESSES)

    def request(name: str, received: datetime, due: datetime, completed: datetime | None = None,
                blocked: bool = False, extend: bool = False, kept_until: datetime | None = None,
                rechecked: bool = False) -> None:
        made = requests.request(next(addresses))
        if extend:
            requests.extend(made.id, timedelta(days=30), "a complex request: two systems to search")
        if kept_until is not None:  # the blacklist keeps an entry of theirs until its deadline
            kept = KeptByPolicy("email_blacklist", (f"entry-of-{name.replace(' ', '-')}",), kept_until, "evidence")
            requests.complete(made.id, Outcome("erased; 1 kept", (kept,), kept_until, verified=True),
                              partially_blocked=True)
            if rechecked:  # checked again today, after the month: complete now
                requests.complete(made.id, Outcome("erased; checked again", verified=True))
        elif completed is not None:
            requests.complete(made.id, "erased", partially_blocked=blocked)
        set_times(database, table, made.id, received_at=received, due_at=due, completed_at=completed)
        scenario.erasure[name] = made.id

    request("met", at(2), END, at(20))
    request("missed", at(5, month=9), at(5), at(9))
    request("open", at(10), at(9, month=11))
    request("open past due", at(20, month=9), at(20))
    request("partially blocked", at(15), at(14, month=11), at(30), blocked=True)
    request("before the month", at(1, month=8), at(31, month=8), at(3, month=9))
    request("after the month", END, at(1, month=12))
    request("completed next month", at(25), at(24, month=11), at(3, month=11))
    request("due and completed as the month began", at(1, month=9), START, START)
    request("kept until deadline", at(6), at(5, month=11), at(8), kept_until=at(29, 12, month=12))
    request("kept, completed after the month", at(7), at(6, month=11), at(9), kept_until=at(30, month=10),
            rechecked=True)
    request("extended", at(25, month=9), at(24, month=11), at(28), extend=True)


def _holds(database: AppDatabase, scenario: Scenario) -> None:
    scenario.holds["released in the month"] = place_hold(database, "meal_plans", "plan-held-2", "case 2026-20",
                                                         at(5), at(25))
    scenario.holds["released as the month ended"] = place_hold(database, "email_blacklist", "bl-held-3",
                                                               "case 2026-21", at(10), END)
    scenario.holds["placed after the month"] = place_hold(database, "quiz_responses", "held-4", "case 2026-22", END)
    scenario.holds["placed at the month's last instant"] = place_hold(database, "magic_link_tokens", "held-5",
                                                                     "case 2026-23", END - TICK)
    scenario.holds["reason with an address"] = place_hold(
        database, "quiz_responses", "held-6", f"complaint by {ADDRESSES[-1]}, case 88", at(12))
