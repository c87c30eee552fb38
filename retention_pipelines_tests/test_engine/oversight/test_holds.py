"""Legal holds bind at the moment an action commits, whatever spelling of the key placed them.

- every spelling of a uuid that the key type accepts becomes one hold, which keeps the row;
- a hold committed between a run's archive step and its act step keeps its record;
- a hold whose transaction is still open when a batch starts makes the batch wait, then keeps the
  record; a batch in flight makes `hold add` wait, which then finds the record gone.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.engine.oversight.holds import EVERY_DOMAIN, HoldRefused, LegalHolds, pass_gate
from retention_pipelines_tests.support.app_rows import audit_entries, insert_quiz_rows, remaining_ids, uuid_spellings
from retention_pipelines_tests.support.engines import archiving, engine_for


def quiz_key(database, policy) -> sa.Column:
    return database.app_table(policy).c[policy.primary_key]


@pytest.mark.parametrize("index", range(6))
def test_a_hold_in_any_accepted_spelling_keeps_its_row(pg_database, policies, quiz_policy, local_archive_url, index):
    held, other = insert_quiz_rows(pg_database, [timedelta(days=2)] * 2)
    book = LegalHolds(pg_database, policies.policy_version)
    placed = book.place("quiz_responses", quiz_key(pg_database, quiz_policy), uuid_spellings(held)[index], "case 1",
                        "legal")
    assert placed.record_id == held

    report = engine_for(quiz_policy, policies, pg_database, local_archive_url).run("spelled")
    assert remaining_ids(pg_database) == {held}
    assert report.found.held == 1 and report.acted.acted_on == 1
    deleted = {e["record_id"] for e in audit_entries(pg_database) if e["action"] == "deleted"}
    assert deleted == {other}


def test_a_hold_committed_between_archive_and_act_keeps_its_record(pg_database, policies, quiz_policy,
                                                                 local_archive_url):
    policy = archiving(quiz_policy, batch_size=2)
    ids = insert_quiz_rows(pg_database, [timedelta(days=2)] * 5)
    engine = engine_for(policy, policies, pg_database, local_archive_url)
    found = engine.find()
    archived = engine.archive(found, run_id="between")
    assert archived.rows == 5
    LegalHolds(pg_database, policies.policy_version).place(
        "quiz_responses", quiz_key(pg_database, policy), ids[2].upper(), "case 2", "legal")

    acted = engine.act(found, archived, "between")
    assert acted.acted_on == 4
    assert remaining_ids(pg_database) == {ids[2]}
    actions = {(e["record_id"], e["action"]) for e in audit_entries(pg_database)}
    assert (ids[2], "deleted") not in actions


def test_a_batch_waits_for_a_hold_being_placed_and_then_keeps_the_record(pg_database, policies, quiz_policy,
                                                                        local_archive_url):
    held, other = insert_quiz_rows(pg_database, [timedelta(days=2)] * 2)
    engine = engine_for(quiz_policy, policies, pg_database, local_archive_url)
    found = engine.find()  # before the hold: the run counts both rows as due
    assert found.rows == 2
    placing = pg_database.engine.connect()
    transaction = placing.begin()
    pass_gate(placing, "quiz_responses", exclusive=True)
    placing.execute(sa.insert(schema.legal_holds).values(domain="quiz_responses", record_id=held, reason="case 3",
                                                         placed_by="legal"))
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("acted", engine.act(found, None, "racing")))
    worker.start()
    time.sleep(1.0)
    assert worker.is_alive(), "a batch went ahead while a hold was being placed"
    assert remaining_ids(pg_database) == {held, other}
    transaction.commit()
    placing.close()
    worker.join(30)
    assert not worker.is_alive()
    assert remaining_ids(pg_database) == {held}
    assert outcome["acted"].acted_on == 1


def test_hold_add_waits_for_a_batch_in_flight_and_then_finds_the_record_gone(pg_database, policies, quiz_policy):
    [record] = insert_quiz_rows(pg_database, [timedelta(days=2)])
    key = quiz_key(pg_database, quiz_policy)
    batch = pg_database.engine.connect()
    transaction = batch.begin()
    pass_gate(batch, "quiz_responses")
    batch.execute(sa.text("DELETE FROM quiz_responses WHERE id = :id"), {"id": record})
    outcome = {}

    def place():
        try:
            LegalHolds(pg_database, policies.policy_version).place("quiz_responses", key, record, "case 4", "legal")
        except HoldRefused as exc:
            outcome["refused"] = str(exc)

    worker = threading.Thread(target=place)
    worker.start()
    time.sleep(1.0)
    assert worker.is_alive(), "a hold was placed while a batch acting on its domain was in flight"
    transaction.commit()
    batch.close()
    worker.join(30)
    assert "no record" in outcome["refused"]
    with pg_database.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(schema.legal_holds)).scalar_one() == 0


def test_batches_of_other_domains_and_side_by_side_batches_do_not_wait_for_each_other(pg_database):
    first, second, other = (pg_database.engine.connect() for _ in range(3))
    try:
        with first.begin(), second.begin(), other.begin():
            for connection in (second, other):  # a wait fails the test instead of hanging it
                connection.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            pass_gate(first, "quiz_responses")
            pass_gate(second, "quiz_responses")  # a second shared pass
            pass_gate(other, "meal_plans", exclusive=True)  # another domain's gate
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
                pass_gate(other, "quiz_responses", exclusive=True)  # a hold on quiz_responses waits
    finally:
        for connection in (first, second, other):
            connection.close()


def test_a_hold_waits_for_a_key_destruction_in_flight(pg_database, policies, quiz_policy):
    """A subject's archive key destroyed passes every domain's gate: a hold on any domain placed
    meanwhile waits for it, and is then read by whatever comes next."""
    [record] = insert_quiz_rows(pg_database, [timedelta(days=2)])
    destroying = pg_database.engine.connect()
    transaction = destroying.begin()
    pass_gate(destroying, EVERY_DOMAIN)
    worker = threading.Thread(target=lambda: LegalHolds(pg_database, policies.policy_version).place(
        "quiz_responses", quiz_key(pg_database, quiz_policy), record, "case 5", "legal"))
    worker.start()
    time.sleep(1.0)
    assert worker.is_alive(), "a hold was placed while a key destruction was in flight"
    transaction.commit()
    destroying.close()
    worker.join(30)
    assert not worker.is_alive()
    with pg_database.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(schema.legal_holds)).scalar_one() == 1
