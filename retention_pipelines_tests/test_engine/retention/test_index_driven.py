"""Every statement a run sends about quiz_responses is planned on its indexes, never a full scan."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from retention_pipelines_tests.support.app_rows import bulk_insert_pg
from retention_pipelines_tests.support.engines import archiving, engine_for

TOTAL, DUE = 20_000, 200


@pytest.mark.parametrize("archive", [False, True], ids=["no-archive", "archive"])
def test_statements_of_a_real_run_use_indexes(pg_database, policies, quiz_policy, local_archive_url, archive):
    bulk_insert_pg(pg_database, TOTAL - DUE, "1 hour", email="fresh@example.invalid")
    bulk_insert_pg(pg_database, DUE, "2 days")
    with pg_database.engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE")
    policy = archiving(quiz_policy, batch_size=50) if archive else quiz_policy.model_copy(update={"batch_size": 50})
    engine = engine_for(policy, policies, pg_database, local_archive_url)

    plans: list[tuple[str, str]] = []

    def explain(conn, cursor, statement, parameters, context, executemany):
        """The plan of each statement, taken on its own connection just before it runs."""
        if executemany or "quiz_responses" not in statement:
            return
        if not re.match(r"\s*(SELECT|WITH|DELETE|UPDATE)\b", statement, re.IGNORECASE):
            return
        with cursor.connection.cursor() as explainer:
            explainer.execute("EXPLAIN " + statement, parameters)
            plans.append((statement, "\n".join(row[0] for row in explainer.fetchall())))

    sa.event.listen(pg_database.engine, "before_cursor_execute", explain)
    try:
        report = engine.run("index-driven")
    finally:
        sa.event.remove(pg_database.engine, "before_cursor_execute", explain)

    assert report.acted.acted_on == DUE
    assert any("count(" in s.lower() for s, _ in plans), "the count query was not seen"
    assert any(s.lstrip().upper().startswith(("DELETE", "WITH")) and "DELETE" in s.upper() for s, _ in plans), \
        "the delete statement was not seen"
    if archive:
        assert any("ORDER BY" in s and "LIMIT" in s for s, _ in plans), "the keyset select was not seen"
    full_scans = [(s, p) for s, p in plans if re.search(r"Seq Scan on quiz_responses\b", p)]
    assert not full_scans, "full scans of quiz_responses:\n\n" + "\n\n".join(f"{s}\n{p}" for s, p in full_scans)


def test_a_runs_audit_entries_are_found_through_the_time_index(pg_database, policies, quiz_policy, local_archive_url):
    """The audit log grows for ever: counting one run's entries reads its batches (by run id) and
    their record rows (BRIN on the batch), not the whole log."""
    bulk_insert_pg(pg_database, DUE, "2 days")
    engine = engine_for(quiz_policy, policies, pg_database, local_archive_url)
    report = engine.run("brin-run")
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "retention_audit_log" in statement and "count(" in statement:
            statements.append((statement, parameters))

    sa.event.listen(pg_database.engine, "before_cursor_execute", capture)
    try:
        assert engine.audit(report.acted, "brin-run").audit_rows == DUE
    finally:
        sa.event.remove(pg_database.engine, "before_cursor_execute", capture)
    (statement, parameters), = statements
    with pg_database.engine.connect() as connection:
        cursor = connection.connection.cursor()
        cursor.execute("SET enable_seqscan = off")  # tiny test tables: make the planner show its index
        cursor.execute("EXPLAIN " + statement, parameters)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "retention_audit_batches_run" in plan and "retention_audit_records_batch" in plan, plan
