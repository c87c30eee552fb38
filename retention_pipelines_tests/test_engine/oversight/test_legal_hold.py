"""A row under an unreleased legal hold stays, is reported once, and goes after its release."""

from __future__ import annotations

from datetime import timedelta

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
