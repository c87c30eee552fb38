"""A row under an unreleased legal hold stays, is reported once, and goes after its release."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_pipelines import schema
from retention_pipelines_tests.support.app_rows import insert_quiz_rows, remaining_ids
from retention_pipelines_tests.support.audit_rows import audit_rows
from retention_pipelines_tests.support.engines import engine_for
from retention_pipelines_tests.support.legal_holds import place_hold, release_holds


def test_held_row_stays_is_reported_once_and_goes_after_release(any_database, policies, quiz_policy,
                                                               local_archive_url):
    held, *others = insert_quiz_rows(any_database, [timedelta(days=2)] * 3)
    fresh = insert_quiz_rows(any_database, [timedelta(hours=1)])
    place_hold(any_database, held)
    engine = engine_for(quiz_policy, policies, any_database, local_archive_url)

    first = engine.run("hold-1")
    assert first.found.held == 1
    assert first.found.rows == 2
    assert first.acted.acted_on == 2
    assert first.acted.skipped_legal_hold == 1
    assert remaining_ids(any_database) == {held, *fresh}
    reports = audit_rows(any_database, "skipped_legal_hold")
    assert [(r["record_id"], r["run_id"]) for r in reports] == [(held, "hold-1")]
    assert held not in {r["record_id"] for r in audit_rows(any_database, "deleted")}

    second = engine.run("hold-2")
    assert second.found.held == 1
    assert second.acted.acted_on == 0
    assert second.acted.skipped_legal_hold == 0
    assert remaining_ids(any_database) == {held, *fresh}
    assert len(audit_rows(any_database, "skipped_legal_hold")) == 1

    release_holds(any_database, held)
    third = engine.run("hold-3")
    assert third.found.held == 0
    assert third.acted.acted_on == 1
    assert remaining_ids(any_database) == set(fresh)
    deleted = [(r["record_id"], r["run_id"]) for r in audit_rows(any_database, "deleted")]
    assert sorted(deleted) == sorted([(o, "hold-1") for o in others] + [(held, "hold-3")])
    assert len(audit_rows(any_database, "skipped_legal_hold")) == 1


def test_a_released_hold_does_not_free_a_row_still_under_another_hold(any_database, policies, quiz_policy,
                                                                     local_archive_url):
    (held,) = insert_quiz_rows(any_database, [timedelta(days=2)])
    place_hold(any_database, held)
    release_holds(any_database, held)  # the first hold is over…
    place_hold(any_database, held)     # …and a second one is placed
    engine = engine_for(quiz_policy, policies, any_database, local_archive_url)

    report = engine.run("hold-again")
    assert report.acted.acted_on == 0
    assert remaining_ids(any_database) == {held}
    assert [r["record_id"] for r in audit_rows(any_database, "skipped_legal_hold")] == [held]


def test_a_hold_naming_the_uuid_in_upper_case_protects_the_row(pg_database, policies, quiz_policy,
                                                              local_archive_url):
    """A uuid is the same id in either case (RFC 4122): the engine reports such a hold as holding
    the row, so the row must stay too."""
    (held,) = insert_quiz_rows(pg_database, [timedelta(days=2)])
    place_hold(pg_database, held.upper())
    engine = engine_for(quiz_policy, policies, pg_database, local_archive_url)

    report = engine.run("upper-case-hold")
    assert report.found.held == 1
    assert report.acted.acted_on == 0
    assert remaining_ids(pg_database) == {held}
    assert audit_rows(pg_database, "deleted") == []


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(held=st.lists(st.booleans(), min_size=1, max_size=40), batch_size=st.integers(1, 8), lanes=st.integers(1, 3))
def test_whichever_due_rows_are_held_exactly_the_others_go_each_audited_once(pg_database, policies, quiz_policy,
                                                                             local_archive_url, held, batch_size,
                                                                             lanes):
    """Held rows anywhere among the due ones (whole batches of them, a lane's first or last), any
    batch size, lanes side by side: every row not held goes, audited once; every held row stays."""
    with pg_database.engine.begin() as connection:
        connection.execute(sa.delete(schema.legal_holds))
        connection.exec_driver_sql("DELETE FROM quiz_responses")
    ids = insert_quiz_rows(pg_database, [timedelta(days=2, minutes=n) for n in range(len(held))])
    kept = {record_id for record_id, is_held in zip(ids, held, strict=True) if is_held}
    for record_id in kept:
        place_hold(pg_database, record_id)
    policy = quiz_policy.model_copy(update={"batch_size": batch_size, "parallel_batches": lanes})
    run_id = f"held-{uuid4().hex[:8]}"
    report = engine_for(policy, policies, pg_database, local_archive_url).run(run_id)
    assert remaining_ids(pg_database) == kept
    deleted = [entry["record_id"] for entry in audit_rows(pg_database, "deleted") if entry["run_id"] == run_id]
    assert sorted(deleted) == sorted(set(ids) - kept)
    assert report.acted.acted_on == len(ids) - len(kept)
