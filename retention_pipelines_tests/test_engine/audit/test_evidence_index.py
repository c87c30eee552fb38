"""The evidence index (engine/audit/evidence.py, migration 0008) on PostgreSQL and SQLite: filled after the
fact in id order, read together with the log's unindexed tail, so that a record's evidence is whole
whether or not the index has caught up, and never doubled."""

from __future__ import annotations

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.engine.audit.evidence import index_records, record_evidence
from retention_pipelines_tests.support.audit_rows import write_audit_rows


def state(database) -> tuple[int, int]:
    with database.connect() as connection:
        through = connection.execute(sa.select(schema.audit_record_index_state.c.indexed_through)).scalar_one()
        entries = connection.execute(sa.select(sa.func.count()).select_from(schema.audit_record_index)).scalar_one()
    return through, entries


def actions(entries: list[dict]) -> list[tuple[str, str]]:
    return [(e["domain"], e["run_id"]) for e in entries]


def test_evidence_is_whole_before_during_and_after_indexing(any_database):
    write_audit_rows(any_database, 20)  # rec-0 … rec-19, alpha and beta taking turns
    before = record_evidence(any_database, "rec-4")
    assert actions(before) == [("alpha", "run-0")]

    assert index_records(any_database, chunk=7) == 20
    ids = write_audit_rows(any_database, 3, start=4)  # rec-4 again (a later entry), rec-5, rec-6: the tail
    through, entries = state(any_database)
    assert entries == 20 and through < ids[0]  # ids are sparse: the tail begins past the last indexed one
    after = record_evidence(any_database, "rec-4")
    assert actions(after) == [("alpha", "run-0"), ("alpha", "run-0")]
    assert after[0]["occurred_at"] <= after[1]["occurred_at"]

    assert index_records(any_database) == 3 and index_records(any_database) == 0
    assert record_evidence(any_database, "rec-4") == after
    # rec-5 is beta's both times (the second write's second row): one entry indexed, one from the tail
    assert actions(record_evidence(any_database, "rec-5", domain="beta")) == [("beta", "run-0")] * 2
    assert record_evidence(any_database, "rec-5", domain="alpha") == []


def test_a_record_never_audited_has_no_evidence(any_database):
    write_audit_rows(any_database, 5)
    index_records(any_database)
    assert record_evidence(any_database, "rec-999") == []


def test_the_index_reads_through_the_log_in_id_order_in_chunks(pg_database):
    # Written straight into the tables, unchained: the index reads only the records' ids and record ids.
    with pg_database.begin() as connection:
        connection.exec_driver_sql(
            "WITH batch AS (INSERT INTO retention_audit_batches (domain, seq, action, run_id, occurred_at, "
            "policy_version, records, prev_link, link) "
            "VALUES ('alpha', 1, 'deleted', 'run', now(), 'v', 25000, '', '') RETURNING id) "
            "INSERT INTO retention_audit_records (id, batch_id, record_id) "
            "SELECT i, batch.id, 'r' || mod(i, 1000) FROM batch, generate_series(1, 25000) AS i")
    assert index_records(pg_database, chunk=10_000) == 25_000
    assert state(pg_database) == (25_000, 25_000)
    assert len(record_evidence(pg_database, "r7")) == 25
