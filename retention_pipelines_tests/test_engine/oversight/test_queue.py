"""The manual-resolution queue itself (engine/oversight/queue.py), on real PostgreSQL and on SQLite: its state
machine and the audit rows of each change, idempotent adding (also under 8 concurrent adders),
refusals, escalation judged at a controlled clock, and the health figures."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from retention_pipelines.engine.oversight.queue import REASONS, ManualQueue, QueueRefused
from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.queue_rows import place_hold, queue_audit, queue_rows, set_item

VERSION = "test-policies-1"
DOMAIN = "meal_plans"
REASON = "blob_delete_failed"
DETAIL = "the object store refused the delete: AccessDenied"
RECORD = "6f1c1d3e-0b55-4c7b-9a53-2b8f0c1d2e3f"
TWO_DAYS = timedelta(days=2)


@pytest.fixture
def queue(any_database) -> ManualQueue:
    return ManualQueue(any_database, VERSION)


def add(queue: ManualQueue, record_id: str = RECORD, reason: str = REASON, domain: str = DOMAIN,
        detail: str = DETAIL, run_id: str = "run-1", resolve_within: timedelta = TWO_DAYS):
    return queue.add(domain, record_id, reason, detail, resolve_within, run_id)


def item_in(queue: ManualQueue, status: str, record_id: str = RECORD):
    """An item brought to `status` by the queue's own commands (alice did the earlier steps)."""
    item = add(queue, record_id).item
    if status == "claimed":
        queue.claim(item.id, "alice")
    elif status == "resolved":
        queue.resolve(item.id, "alice", "deleted the object by hand")
    elif status == "dismissed":
        queue.dismiss(item.id, "alice", "the object was already gone")
    return queue.get(item.id)


def run_command(queue: ManualQueue, command: str, item_id: int, by: str = "bob", note: str | None = "done by hand"):
    if command == "claim":
        return queue.claim(item_id, by)
    return getattr(queue, command)(item_id, by, note)


# The state machine ---------------------------------------------------------------------------------
ALLOWED = [("open", "claim", "claimed"), ("open", "resolve", "resolved"), ("open", "dismiss", "dismissed"),
           ("claimed", "resolve", "resolved"), ("claimed", "dismiss", "dismissed")]
REFUSED = [("claimed", "claim", "claimed"),
           ("resolved", "claim", "claimed"), ("resolved", "resolve", "resolved"), ("resolved", "dismiss", "dismissed"),
           ("dismissed", "claim", "claimed"), ("dismissed", "resolve", "resolved"),
           ("dismissed", "dismiss", "dismissed")]


@pytest.mark.parametrize(("start", "command", "end"), ALLOWED, ids=[f"{s}-{c}" for s, c, _ in ALLOWED])
def test_an_allowed_transition_changes_the_status_and_is_audited_once(queue, any_database, start, command, end):
    before = item_in(queue, start)
    audited_before = queue_audit(any_database)

    after = run_command(queue, command, before.id, by="bob", note="  removed it from the bucket  ")

    assert after.status == end and queue.get(before.id) == after
    if end == "claimed":
        assert after.claimed_by == "bob" and after.closed_at is None and after.resolved_by is None
    else:
        assert after.resolved_by == "bob" and after.resolution_note == "removed it from the bucket"
        assert after.closed_at is not None and after.closed_at >= after.created_at
        assert after.claimed_by == (before.claimed_by)  # who had claimed it is kept
    # Nothing else about the item changed.
    assert (after.domain, after.record_id, after.reason, after.attempts, after.due_at, after.escalation_level) == (
        before.domain, before.record_id, before.reason, before.attempts, before.due_at, before.escalation_level)

    new = queue_audit(any_database)[len(audited_before):]
    assert len(new) == 1, new
    [entry] = new
    assert entry["action"] == f"queue_{end}"
    assert entry["actor"] == "bob"
    assert entry["detail"] == f"queue item {before.id} ({REASON}): {start} → {end}"
    assert (entry["domain"], entry["record_id"], entry["policy_version"]) == (DOMAIN, RECORD, VERSION)
    assert entry["run_id"] == "manual"


@pytest.mark.parametrize(("start", "command", "end"), REFUSED, ids=[f"{s}-{c}" for s, c, _ in REFUSED])
def test_a_forbidden_transition_is_refused_and_changes_nothing(queue, any_database, start, command, end):
    before = item_in(queue, start)
    audited_before = queue_audit(any_database)

    with pytest.raises(QueueRefused) as refused:
        run_command(queue, command, before.id)

    holder = " by alice" if start == "claimed" else ""
    assert str(refused.value) == f"queue item {before.id} is {start}{holder}: it cannot be {end}"
    assert queue.get(before.id) == before
    assert queue_audit(any_database) == audited_before


@pytest.mark.parametrize("command", ["claim", "resolve", "dismiss"])
def test_an_unknown_item_is_refused_by_its_id(queue, any_database, command):
    item_in(queue, "open")
    with pytest.raises(QueueRefused, match=r"^no queue item 987654$"):
        run_command(queue, command, 987654)
    with pytest.raises(QueueRefused, match=r"^no queue item 987654$"):
        queue.get(987654)
    assert [e["action"] for e in queue_audit(any_database)] == ["queue_opened"]


BAD_INPUT = [
    ("claim", "", None, "say who you are"),
    ("claim", "   ", None, "say who you are"),
    ("resolve", None, "fixed", "say who you are"),
    ("dismiss", "\t", "fixed", "say who you are"),
    ("resolve", "bob", "", "a note saying what was done is required"),
    ("resolve", "bob", "   ", "a note saying what was done is required"),
    ("dismiss", "bob", None, "a note saying what was done is required"),
    ("claim", "bob.smith@example.com", None, "personal data"),
    ("resolve", "ops+queue@corp.example.org", "fixed", "personal data"),
    ("resolve", "bob", "asked jane.doe@example.com, she deleted it", "personal data"),
    ("dismiss", "bob", "customer x@y.io asked for it", "personal data"),
]


@pytest.mark.parametrize(("command", "by", "note", "message"), BAD_INPUT,
                         ids=[f"{c}-{i}" for i, (c, *_rest) in enumerate(BAD_INPUT)])
def test_missing_names_and_notes_and_e_mail_addresses_are_refused(queue, any_database, command, by, note, message):
    for status in ("open", "claimed"):
        before = item_in(queue, status, record_id=f"{RECORD[:-1]}{'0' if status == 'open' else '1'}")
        audited_before = queue_audit(any_database)
        if command == "claim" and status == "claimed":
            continue  # a claimed item cannot be claimed anyway
        with pytest.raises(QueueRefused, match=message):
            run_command(queue, command, before.id, by=by, note=note)
        assert queue.get(before.id) == before
        assert queue_audit(any_database) == audited_before


# Adding ------------------------------------------------------------------------------------------
def test_adding_opens_an_item_due_after_the_time_it_is_given(queue, any_database):
    before = any_database.now()
    added = add(queue, run_id="run-7", resolve_within=TWO_DAYS)
    item = added.item
    assert added.newly_added
    assert (item.domain, item.record_id, item.reason, item.detail, item.status) == (DOMAIN, RECORD, REASON, DETAIL,
                                                                                    "open")
    assert item.attempts == 1 and item.escalation_level == 0
    assert item.due_at - item.created_at == TWO_DAYS
    assert before - timedelta(seconds=1) <= item.created_at <= any_database.now() + timedelta(seconds=1)
    assert item.last_attempt_at == item.created_at
    assert item.claimed_by is item.resolved_by is item.resolution_note is item.closed_at is None
    [entry] = queue_audit(any_database)
    assert entry["action"] == "queue_opened" and entry["actor"] == "retention" and entry["run_id"] == "run-7"
    assert entry["detail"] == f"queue item {item.id} ({REASON}): → open"
    assert entry["policy_version"] == VERSION and entry["record_id"] == RECORD


def test_adding_the_same_failure_again_counts_an_attempt_on_the_one_item(queue, any_database):
    first = add(queue, run_id="run-1").item
    repeats = [add(queue, run_id=f"run-{n}", detail=f"{DETAIL} (try {n})") for n in range(2, 6)]

    assert not any(r.newly_added for r in repeats)
    assert {r.item.id for r in repeats} == {first.id}
    assert [r.item.attempts for r in repeats] == [2, 3, 4, 5]
    [row] = queue_rows(any_database)
    assert row["attempts"] == 5 and row["status"] == "open"
    assert row["detail"] == f"{DETAIL} (try 5)"  # the latest failure's detail
    final = queue.get(first.id)
    assert final.last_attempt_at >= first.last_attempt_at and final.created_at == first.created_at
    assert final.due_at == first.due_at  # a repeat does not push the due date back
    [opened] = queue_audit(any_database)
    assert opened["action"] == "queue_opened" and opened["run_id"] == "run-1"


def test_a_claimed_item_counts_attempts_too(queue, any_database):
    claimed = item_in(queue, "claimed")
    again = add(queue)
    assert not again.newly_added and again.item.id == claimed.id
    assert again.item.status == "claimed" and again.item.claimed_by == "alice" and again.item.attempts == 2
    assert len(queue_rows(any_database)) == 1


def test_each_domain_record_and_reason_is_an_item_of_its_own(queue, any_database):
    ids = {add(queue).item.id,
           add(queue, reason="delete_blocked").item.id,
           add(queue, domain="quiz_responses").item.id,
           add(queue, record_id=RECORD.replace("6f", "7f")).item.id}
    assert len(ids) == 4
    assert {row["attempts"] for row in queue_rows(any_database)} == {1}
    assert [e["action"] for e in queue_audit(any_database)] == ["queue_opened"] * 4


@pytest.mark.parametrize("closed", ["resolved", "dismissed"])
def test_a_failure_after_the_item_was_closed_opens_a_new_item(queue, any_database, closed):
    old = item_in(queue, closed)
    again = add(queue, run_id="run-2")
    assert again.newly_added and again.item.id != old.id
    assert again.item.status == "open" and again.item.attempts == 1
    assert queue.get(old.id) == old  # the closed one stays as it was
    assert [row["status"] for row in queue_rows(any_database)] == [closed, "open"]
    assert [e["action"] for e in queue_audit(any_database)] == ["queue_opened", f"queue_{closed}", "queue_opened"]
    # Each item's history is its own, though both are about the same record.
    assert [e["action"] for e in queue.history(again.item.id)] == ["queue_opened"]
    assert [e["action"] for e in queue.history(old.id)] == ["queue_opened", f"queue_{closed}"]
    # And a further repeat counts on the new item.
    third = add(queue)
    assert not third.newly_added and third.item.id == again.item.id and third.item.attempts == 2


def test_an_unknown_reason_is_refused(queue, any_database):
    with pytest.raises(QueueRefused, match="unknown queue reason 'disk_full'") as refused:
        add(queue, reason="disk_full")
    for reason in REASONS:
        assert reason in str(refused.value)
    assert queue_rows(any_database) == [] and queue_audit(any_database) == []


@pytest.mark.parametrize("detail", ["refused for jane.doe@example.com", "x@y.io", "owner: A.B+c@mail.example.co.uk"])
def test_a_detail_with_an_e_mail_address_is_refused(queue, any_database, detail):
    with pytest.raises(QueueRefused, match="personal data"):
        add(queue, detail=detail)
    assert queue_rows(any_database) == [] and queue_audit(any_database) == []


def test_eight_concurrent_adders_of_the_same_failure_make_one_item_with_eight_attempts(pg_url, pg_database):
    workers = 8
    for round_number in range(3):  # several rounds: the race is won differently each time
        record = f"record-{round_number}"
        barrier = threading.Barrier(workers)
        results, errors = [], []

        def adder(n: int) -> None:
            database = AppDatabase(pg_url)
            try:
                queue = ManualQueue(database, VERSION)
                barrier.wait(timeout=30)
                results.append(queue.add(DOMAIN, record, REASON, DETAIL, TWO_DAYS, f"run-{n}"))
            except Exception as exc:  # reported below, with the others
                errors.append(exc)
            finally:
                database.dispose()

        threads = [threading.Thread(target=adder, args=(n,)) for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert len(results) == workers
        assert sum(r.newly_added for r in results) == 1
        assert len({r.item.id for r in results}) == 1
        assert sorted(r.item.attempts for r in results) == list(range(1, workers + 1))  # each saw its own count
        [row] = [r for r in queue_rows(pg_database) if r["record_id"] == record]
        assert row["attempts"] == workers and row["status"] == "open"
        opened = [e for e in queue_audit(pg_database, record) if e["action"] == "queue_opened"]
        assert len(opened) == 1
    assert len(queue_rows(pg_database)) == 3


# Retries -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["open", "claimed"])
def test_a_failed_retry_counts_an_attempt_and_keeps_the_status(queue, any_database, status):
    before = item_in(queue, status)
    assert queue.retryable(before.id) == before
    after = queue.retry_failed(before.id, "carol", "AccessDenied", "retry-run-1")
    assert after.attempts == before.attempts + 1 and after.status == status
    assert after.claimed_by == before.claimed_by and after.closed_at is None
    entry = queue_audit(any_database)[-1]
    assert entry["action"] == "queue_retry_failed" and entry["actor"] == "carol" and entry["run_id"] == "retry-run-1"
    assert entry["detail"] == f"queue item {before.id}: retry failed (AccessDenied); stays {status}"
    assert entry in queue.history(before.id)


def test_a_retry_outcome_with_an_e_mail_address_is_refused(queue, any_database):
    item = item_in(queue, "open")
    with pytest.raises(QueueRefused, match="personal data"):
        queue.retry_failed(item.id, "carol", "row of jane@example.com refused", "retry-run-1")
    assert queue.get(item.id) == item and len(queue_audit(any_database)) == 1


@pytest.mark.parametrize("status", ["resolved", "dismissed"])
def test_a_closed_item_is_not_retryable(queue, status):
    item = item_in(queue, status)
    with pytest.raises(QueueRefused, match=f"queue item {item.id} is {status}: there is nothing to retry"):
        queue.retryable(item.id)


def test_a_legal_hold_conflict_is_not_retryable_while_its_hold_stands(queue):
    item = add(queue, reason="legal_hold_conflict").item
    place_hold(queue.database, DOMAIN, RECORD)
    with pytest.raises(QueueRefused, match="a retry cannot override a hold"):
        queue.retryable(item.id)
    with pytest.raises(QueueRefused, match="^no queue item 424242$"):
        queue.retryable(424242)


# Reading -------------------------------------------------------------------------------------------
def test_history_lists_every_change_of_the_item_in_order(queue, any_database):
    item = add(queue, run_id="run-1").item
    add(queue, record_id="someone-else")  # another item's entries are not in this history
    queue.claim(item.id, "alice")
    queue.retry_failed(item.id, "alice", "AccessDenied", "retry-1")
    queue.resolve(item.id, "alice", "retried after the bucket policy was fixed", run_id="retry-2")
    history = queue.history(item.id)
    assert [(e["action"], e["actor"], e["run_id"]) for e in history] == [
        ("queue_opened", "retention", "run-1"), ("queue_claimed", "alice", "manual"),
        ("queue_retry_failed", "alice", "retry-1"), ("queue_resolved", "alice", "retry-2")]
    assert [e["detail"] for e in history] == [
        f"queue item {item.id} ({REASON}): → open", f"queue item {item.id} ({REASON}): open → claimed",
        f"queue item {item.id}: retry failed (AccessDenied); stays claimed",
        f"queue item {item.id} ({REASON}): claimed → resolved"]


def test_an_item_whose_id_is_a_prefix_of_another_has_only_its_own_history(queue, any_database):
    items = [add(queue, record_id=RECORD).item]
    # Items 1 and 1x of the same record: "queue item 1 …" must not match "queue item 12 …".
    while len(items) < 12:
        queue.resolve(items[-1].id, "alice", "done")
        items.append(add(queue, record_id=RECORD).item)
    first, last = items[0], items[-1]
    assert str(last.id).startswith(str(first.id))
    assert [e["detail"] for e in queue.history(first.id)] == [
        f"queue item {first.id} ({REASON}): → open", f"queue item {first.id} ({REASON}): open → resolved"]
    assert [e["action"] for e in queue.history(last.id)] == ["queue_opened"]


def test_list_filters_by_domain_status_and_overdue(any_database):
    now = any_database.now()
    clock = {"now": now}
    queue = ManualQueue(any_database, VERSION, clock=lambda: clock["now"])
    soon = add(queue, record_id="a", resolve_within=timedelta(hours=1)).item
    later = add(queue, record_id="b", resolve_within=timedelta(days=3)).item
    other = add(queue, record_id="c", domain="quiz_responses", resolve_within=timedelta(hours=2)).item
    claimed = add(queue, record_id="d", resolve_within=timedelta(hours=3)).item
    queue.claim(claimed.id, "alice")
    done = add(queue, record_id="e", resolve_within=timedelta(minutes=30)).item
    queue.resolve(done.id, "alice", "done")

    ids = lambda items: [i.id for i in items]  # noqa: E731
    assert ids(queue.list()) == [done.id, soon.id, other.id, claimed.id, later.id]  # soonest due first
    assert ids(queue.list(domain="quiz_responses")) == [other.id]
    assert ids(queue.list(status="claimed")) == [claimed.id]
    assert ids(queue.list(domain=DOMAIN, status="open")) == [soon.id, later.id]
    assert queue.list(overdue=True) == []
    clock["now"] = now + timedelta(hours=2, minutes=30)  # past soon (1 h) and other (2 h); done is closed
    assert ids(queue.list(overdue=True)) == [soon.id, other.id]
    assert ids(queue.list(domain=DOMAIN, overdue=True)) == [soon.id]
    clock["now"] = now + timedelta(days=5)
    assert ids(queue.list(overdue=True)) == [soon.id, other.id, claimed.id, later.id]
    with pytest.raises(QueueRefused, match="unknown status 'closed'"):
        queue.list(status="closed")


# Escalation ----------------------------------------------------------------------------------------
def escalations(database) -> list[str]:
    return [e["detail"] for e in queue_audit(database) if e["action"] == "queue_escalated"]


def test_an_item_escalates_once_overdue_then_at_each_multiple_of_its_time(any_database):
    clock = {"now": any_database.now()}
    queue = ManualQueue(any_database, VERSION, clock=lambda: clock["now"])
    item = add(queue, resolve_within=timedelta(days=1)).item
    created, given = item.created_at, timedelta(days=1)
    multiples = [2.0, 4.0]

    def at(moment) -> list[int]:
        clock["now"] = moment
        return [i.escalation_level for i in queue.escalate(DOMAIN, multiples)]

    assert at(created + timedelta(hours=23)) == []  # not overdue
    assert at(created + given - timedelta(microseconds=1)) == []
    assert escalations(any_database) == []
    assert at(created + given) == [1]  # due now: overdue
    assert at(created + given + timedelta(seconds=1)) == []  # each level once
    assert at(created + 2 * given - timedelta(microseconds=1)) == []
    assert at(created + 2 * given) == [2]
    assert at(created + 3 * given) == []
    assert at(created + 4 * given + timedelta(seconds=1)) == [3]
    for days in (5, 8, 30):  # past the last multiple: no further level
        assert at(created + timedelta(days=days)) == []
    assert queue.get(item.id).escalation_level == 3
    assert escalations(any_database) == [f"queue item {item.id} ({REASON}): level 0 → 1",
                                         f"queue item {item.id} ({REASON}): level 1 → 2",
                                         f"queue item {item.id} ({REASON}): level 2 → 3"]
    entries = [e for e in queue_audit(any_database) if e["action"] == "queue_escalated"]
    assert {(e["actor"], e["run_id"], e["record_id"], e["policy_version"]) for e in entries} == {
        ("retention", "retention", RECORD, VERSION)}
    assert [e["action"] for e in queue.history(item.id)] == ["queue_opened"] + ["queue_escalated"] * 3


def test_an_item_first_seen_long_past_due_goes_straight_to_its_level(any_database):
    clock = {"now": any_database.now()}
    queue = ManualQueue(any_database, VERSION, clock=lambda: clock["now"])
    item = add(queue, resolve_within=timedelta(hours=6)).item
    clock["now"] = item.created_at + timedelta(hours=25)  # over 4 × 6 h
    [raised] = queue.escalate(DOMAIN, [2.0, 4.0])
    assert raised.id == item.id and raised.escalation_level == 3
    assert escalations(any_database) == [f"queue item {item.id} ({REASON}): level 0 → 3"]
    assert queue.escalate(DOMAIN, [2.0, 4.0]) == []


def test_closed_items_and_other_domains_never_escalate(any_database):
    clock = {"now": any_database.now()}
    queue = ManualQueue(any_database, VERSION, clock=lambda: clock["now"])
    resolved = item_in(queue, "resolved", record_id="r")
    dismissed = item_in(queue, "dismissed", record_id="d")
    claimed = item_in(queue, "claimed", record_id="c")
    elsewhere = add(queue, record_id="q", domain="quiz_responses").item
    clock["now"] = any_database.now() + timedelta(days=30)
    assert [(i.id, i.escalation_level) for i in queue.escalate(DOMAIN, [2.0, 4.0])] == [(claimed.id, 3)]
    assert queue.get(resolved.id).escalation_level == 0 and queue.get(dismissed.id).escalation_level == 0
    assert queue.get(elsewhere.id).escalation_level == 0
    assert queue.escalate(DOMAIN, [2.0, 4.0]) == []
    # A resolved item, escalated or not, stays where it was, however late it gets.
    queue.resolve(claimed.id, "alice", "done")
    clock["now"] = any_database.now() + timedelta(days=300)
    assert queue.escalate(DOMAIN, [2.0, 4.0]) == []
    assert len(escalations(any_database)) == 1


def test_without_multiples_an_item_escalates_to_level_one_only(any_database):
    clock = {"now": any_database.now()}
    queue = ManualQueue(any_database, VERSION, clock=lambda: clock["now"])
    item = add(queue, resolve_within=timedelta(hours=1)).item
    clock["now"] = item.created_at + timedelta(days=10)
    assert [i.escalation_level for i in queue.escalate(DOMAIN, [])] == [1]
    assert queue.escalate(DOMAIN, []) == []


def test_two_escalators_at_once_raise_a_level_once(pg_url, pg_database):
    queue = ManualQueue(pg_database, VERSION)
    item = add(queue, resolve_within=timedelta(hours=1)).item
    later = item.created_at + timedelta(hours=2, minutes=1)
    results, errors = [], []
    barrier = threading.Barrier(6)

    def escalator() -> None:
        database = AppDatabase(pg_url)
        try:
            mine = ManualQueue(database, VERSION, clock=lambda: later)
            barrier.wait(timeout=30)
            results.append(mine.escalate(DOMAIN, [2.0, 4.0]))
        except Exception as exc:
            errors.append(exc)
        finally:
            database.dispose()

    threads = [threading.Thread(target=escalator) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 0, 0, 0, 0, 1]
    assert escalations(pg_database) == [f"queue item {item.id} ({REASON}): level 0 → 2"]


# Health --------------------------------------------------------------------------------------------
def test_health_figures_of_a_known_queue(any_database):
    now = any_database.now()
    queue = ManualQueue(any_database, VERSION, clock=lambda: now)
    hour = timedelta(hours=1)
    # 20 active items aged 1 h … 20 h, each given 12 h: those aged 12 h or more are overdue (9).
    layout = [("quiz_responses", "open")] * 12 + [("quiz_responses", "claimed")] * 3 + \
             [("meal_plans", "open")] * 4 + [("meal_plans", "claimed")] * 1
    levels = {11: 1, 12: 1, 13: 1, 15: 2, 17: 2, 20: 3}  # by age in hours
    for age, (domain, status) in enumerate(layout, start=1):
        item = add(queue, record_id=f"active-{age}", domain=domain).item
        if status == "claimed":
            queue.claim(item.id, "alice")
        set_item(any_database, item.id, created_at=now - age * hour, due_at=now - age * hour + 12 * hour,
                 escalation_level=levels.get(age, 0))
    # Closed items: only resolutions of the last 24 h count (the boundary included); dismissals do not.
    for name, closed_ago, how in [("r1", hour, "resolve"), ("r2", 23 * hour, "resolve"), ("r3", 24 * hour, "resolve"),
                                  ("r4", 25 * hour, "resolve"), ("r5", 48 * hour, "resolve"),
                                  ("d1", hour, "dismiss"), ("d2", 2 * hour, "dismiss")]:
        item = add(queue, record_id=name, domain="quiz_responses").item
        getattr(queue, how)(item.id, "alice", "done")
        set_item(any_database, item.id, created_at=now - 100 * hour, due_at=now - 90 * hour,
                 closed_at=now - closed_ago, escalation_level=3)

    health = queue.health()

    assert health["depth"] == {"quiz_responses": {"open": 12, "claimed": 3}, "meal_plans": {"open": 4, "claimed": 1}}
    assert health["active"] == 20
    assert health["overdue"] == 9  # aged 12 … 20 h
    assert health["escalated"] == 3  # level 2 or more, active only
    assert health["oldest_age_seconds"] == 20 * 3600
    assert health["p50_age_seconds"] == 10.5 * 3600  # the median of 1 … 20 h
    assert health["p95_age_seconds"] == 19 * 3600  # nearest rank: the 19th of 20
    assert health["resolved_last_24h"] == 3

    # Judged two hours later, the same queue: everything is two hours older.
    later = ManualQueue(any_database, VERSION, clock=lambda: now + 2 * hour).health()
    assert later["overdue"] == 11 and later["oldest_age_seconds"] == 22 * 3600
    assert later["resolved_last_24h"] == 1  # r1 (1 h ago) and r2 (23 h ago) → 3 h and 25 h
    assert later["p50_age_seconds"] == 12.5 * 3600


def test_health_of_an_empty_queue(any_database):
    health = ManualQueue(any_database, VERSION).health()
    assert health == {"depth": {}, "active": 0, "overdue": 0, "escalated": 0, "oldest_age_seconds": 0.0,
                      "p50_age_seconds": 0.0, "p95_age_seconds": 0.0, "resolved_last_24h": 0}


def test_health_of_a_single_item(any_database):
    now = any_database.now()
    queue = ManualQueue(any_database, VERSION, clock=lambda: now)
    item = add(queue).item
    set_item(any_database, item.id, created_at=now - timedelta(minutes=90))
    health = queue.health()
    assert health["oldest_age_seconds"] == health["p50_age_seconds"] == health["p95_age_seconds"] == 5400
    assert health["active"] == 1 and health["overdue"] == 0
