"""The audit log for tests: rows written straight into it (to seal, verify and tamper with) and
read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.stores import AppDatabase

log = schema.audit_log


def write_audit_rows(database: AppDatabase, count: int, domains=("alpha", "beta"), start: int = 0) -> list[int]:
    """`count` audit rows, the domains taking turns; their ids."""
    rows = [{"domain": domains[i % len(domains)], "record_id": f"rec-{start + i}", "action": "deleted",
             "run_id": f"run-{(start + i) // 7}", "policy_version": "v1+test", "deadline":
             datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=start + i),
             "archive_uri": f"s3://archive/{start + i}.jsonl.gz" if i % 3 == 0 else None} for i in range(count)]
    with database.begin() as connection:
        return list(connection.execute(sa.insert(log).returning(log.c.id), rows).scalars())


def execute(database: AppDatabase, sql: str, **params) -> None:
    with database.begin() as connection:
        connection.execute(sa.text(sql), params)


def ids_of(database: AppDatabase, domain: str) -> list[int]:
    with database.connect() as connection:
        return list(connection.execute(sa.select(log.c.id).where(log.c.domain == domain).order_by(log.c.id)).scalars())


def audit_rows(database: AppDatabase, action: str | None = None) -> list[dict]:
    query = sa.select(schema.audit_log).order_by(schema.audit_log.c.id)
    if action is not None:
        query = query.where(schema.audit_log.c.action == action)
    with database.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(query)]
