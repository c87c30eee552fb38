"""Evidence for one record, for an auditor: every audit entry about it — when, what was done, under
which policy version, by which run or person, and where its archived copy is.

The log has no index on record_id yet: one costs every retention run a third of its speed
(benchmarks/bench_audit_lookup.py), so for now this reads the whole log (≈0.4 s per 10 million
entries on the reference machine)."""

from __future__ import annotations

import sqlalchemy as sa

from retention_pipelines.schema import audit_log
from retention_pipelines.stores import AppDatabase

EVIDENCE_COLUMNS = ("occurred_at", "domain", "action", "policy_version", "run_id", "actor", "archive_uri",
                    "deadline", "detail")


def record_evidence(database: AppDatabase, record_id: str, domain: str | None = None) -> list[dict]:
    """The record's audit entries, oldest first."""
    query = sa.select(*(audit_log.c[name] for name in EVIDENCE_COLUMNS)).where(audit_log.c.record_id == record_id)
    if domain:
        query = query.where(audit_log.c.domain == domain)
    with database.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(query.order_by(audit_log.c.id))]
    for row in rows:
        for column in ("occurred_at", "deadline"):
            if row[column] is not None:
                row[column] = database.read_time(row[column])
    return rows
