"""A row under an unreleased legal hold stays, is reported once, and goes after its release."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines_tests.app_rows import insert_quiz_rows, remaining_ids
from retention_pipelines_tests.test_engine.helpers import audit_rows, engine_for


def place_hold(database, record_id: str) -> None:
    with database.engine.begin() as connection:
        connection.execute(sa.insert(schema.legal_holds).values(
            domain="quiz_responses", record_id=record_id, reason="litigation 2026-17"))


def release_holds(database, record_id: str) -> None:
    with database.engine.begin() as connection:
        connection.execute(sa.update(schema.legal_holds).where(schema.legal_holds.c.record_id == record_id)
                           .values(released_at=database.bind_time(database.now())))


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
