"""The audit log for tests: entries written through its one writer (to verify and tamper with),
tampering with its tables as someone with the database's credentials could, and read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.engine.audit.entries import write_entries
from retention_pipelines.stores import AppDatabase

log = schema.audit_log


def write_audit_rows(database: AppDatabase, count: int, domains=("alpha", "beta"), start: int = 0) -> list[int]:
    """`count` audit entries, the domains taking turns, seven to a run (a batch per run and archive
    object); their ids, in order."""
    rows = [{"domain": domains[i % len(domains)], "record_id": f"rec-{start + i}", "action": "deleted",
             "run_id": f"run-{(start + i) // 7}", "policy_version": "v1+test", "deadline":
             database.bind_time(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=start + i)),
             "archive_uri": f"s3://archive/{(start + i) // 3}.jsonl.gz" if i % 2 == 0 else None}
            for i in range(count)]
    with database.begin() as connection:
        before = connection.execute(sa.select(sa.func.max(log.c.id))).scalar_one() or 0
        write_entries(connection, rows)
        return list(connection.execute(sa.select(log.c.id).where(log.c.id > before).order_by(log.c.id)).scalars())


def execute(database: AppDatabase, sql: str, **params) -> None:
    with database.begin() as connection:
        connection.execute(sa.text(sql), params)


def batch_of(database: AppDatabase, audit_id: int) -> int:
    """The id of the batch the entry `audit_id` belongs to."""
    with database.connect() as connection:
        return connection.execute(sa.select(log.c.batch_id).where(log.c.id == audit_id)).scalar_one()


def ids_of(database: AppDatabase, domain: str) -> list[int]:
    with database.connect() as connection:
        return list(connection.execute(sa.select(log.c.id).where(log.c.domain == domain).order_by(log.c.id)).scalars())


def audit_rows(database: AppDatabase, action: str | None = None) -> list[dict]:
    query = sa.select(schema.audit_log).order_by(schema.audit_log.c.id)
    if action is not None:
        query = query.where(schema.audit_log.c.action == action)
    with database.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(query)]


def relink(database: AppDatabase, domain: str) -> None:
    """Every link of the domain's chain computed again from its rows as they are now, and its head
    moved to the last: a forger's work, which only an anchor can tell."""
    from retention_pipelines.engine.audit.links import python_link, utc_text

    batches, records = schema.audit_batches, schema.audit_records
    with database.begin() as connection:
        chain = connection.execute(sa.select(batches).where(batches.c.domain == domain).order_by(batches.c.seq)).all()
        previous = chain[0].prev_link
        for batch in chain:
            rows = [(r.id, r.record_id, utc_text(r.deadline)) for r in connection.execute(
                sa.select(records).where(records.c.batch_id == batch.id))]
            fields = {**batch._mapping, "records": len(rows), "occurred_at": utc_text(batch.occurred_at)}
            link = python_link(previous, fields, rows)
            connection.execute(sa.update(batches).where(batches.c.id == batch.id).values(
                records=len(rows), prev_link=previous, link=link))
            previous = link
        connection.execute(sa.update(schema.audit_chain_heads).where(schema.audit_chain_heads.c.domain == domain)
                           .values(last_seq=chain[-1].seq, last_id=chain[-1].id, last_hash=previous))
