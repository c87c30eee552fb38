"""Running the same window twice deletes nothing the second time and audits nothing twice."""

from __future__ import annotations

from datetime import timedelta

import pytest

from retention_pipelines_tests.support.app_rows import insert_quiz_rows, remaining_ids
from retention_pipelines_tests.support.audit_rows import audit_rows
from retention_pipelines_tests.support.engines import archiving, engine_for
from retention_pipelines_tests.support.invariants import assert_each_deleted_audited_once


@pytest.mark.parametrize("archive", [False, True], ids=["no-archive", "archive"])
def test_second_run_over_the_same_window_is_a_no_op(any_database, policies, quiz_policy, local_archive_url,
                                                    archive):
    due = insert_quiz_rows(any_database, [timedelta(days=1, hours=1, seconds=i) for i in range(7)])
    fresh = insert_quiz_rows(any_database, [timedelta(hours=2)] * 2)
    policy = archiving(quiz_policy, batch_size=3) if archive else quiz_policy.model_copy(update={"batch_size": 3})
    engine = engine_for(policy, policies, any_database, local_archive_url)
    window_end = any_database.now()
    window_start = window_end - timedelta(hours=1)

    first = engine.run("first", window_start, window_end)
    assert first.acted.acted_on == 7
    assert first.acted.batches == 3
    assert first.audited.consistent and first.audited.audit_rows == 7
    after_first = audit_rows(any_database)

    second = engine.run("second", window_start, window_end)
    assert second.found.rows == 0
    assert second.acted.acted_on == 0
    assert second.archived.rows == 0
    assert second.audited.audit_rows == 0 and second.audited.consistent

    assert audit_rows(any_database) == after_first
    assert {r["run_id"] for r in after_first} == {"first"}
    assert remaining_ids(any_database) == set(fresh)
    assert_each_deleted_audited_once(any_database, set(due) | set(fresh), remaining_ids(any_database))
    assert len(audit_rows(any_database, "deleted")) == len(due)
