"""Evidence for one record, for an auditor: every audit entry about it — when, what was done, under
which policy version, by which run or person, and where its archived copy is.

Read through the evidence index (`retention_audit_record_index`, migration 0008), which the index job
fills after the fact, plus the tail of the log written since it last ran: a primary-key range,
short when the job keeps up. No index on the audit log itself: every batch transaction would
maintain it (benchmarks/bench_audit_lookup.py)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from retention_pipelines.schema import audit_log, audit_record_index, audit_record_index_state
from retention_pipelines.stores import AppDatabase

EVIDENCE_COLUMNS = ("occurred_at", "domain", "action", "policy_version", "run_id", "actor", "archive_uri",
                    "deadline", "detail")
INDEX_CHUNK = 200_000  # audit ids per indexing transaction, from the next id there is
SETTLE_SECONDS = 30.0  # how long the indexer waits for open writers of the audit log before giving up


def record_evidence(database: AppDatabase, record_id: str, domain: str | None = None) -> list[dict]:
    """The record's audit entries, oldest first."""
    indexed = sa.select(audit_record_index.c.audit_id).where(audit_record_index.c.record_id == record_id)
    columns = [audit_log.c.id, *(audit_log.c[name] for name in EVIDENCE_COLUMNS)]
    with database.connect() as connection:
        # Read first and bound as a value: the planner then sees the tail's id range (a short range
        # of the primary key), which it cannot through a subquery.
        through = connection.execute(sa.select(audit_record_index_state.c.indexed_through)).scalar_one()
        ids = connection.execute(indexed).scalars().all()
        rows = []
        if ids:
            rows += connection.execute(sa.select(*columns).where(audit_log.c.id.in_(ids))).all()
        rows += connection.execute(sa.select(*columns).where(
            audit_log.c.id > through, audit_log.c.record_id == record_id)).all()
    entries = []
    for row in sorted(set(rows), key=lambda r: r.id):
        entry = {name: row._mapping[name] for name in EVIDENCE_COLUMNS}
        if domain and entry["domain"] != domain:
            continue
        for column in ("occurred_at", "deadline"):
            if entry[column] is not None:
                entry[column] = database.read_time(entry[column])
        entries.append(entry)
    return entries


def index_records(database: AppDatabase, settle_seconds: float = SETTLE_SECONDS, chunk: int = INDEX_CHUNK) -> int:
    """Add the audit rows written since the last time to the evidence index, in id order, a chunk
    per transaction (one INSERT … SELECT: no row travels to Python); only rows no open transaction
    can still add to (the settled horizon), so that none is passed over. Returns how many."""
    horizon = settled_horizon(database, settle_seconds)
    if horizon is None:
        return 0
    added = 0
    while True:
        with database.begin() as connection:
            through = connection.execute(sa.select(audit_record_index_state.c.indexed_through).where(
                audit_record_index_state.c.id == 1).with_for_update()).scalar_one()
            if through >= horizon:
                return added
            # Ids are sparse (a batch's id × 2^20 + its place): the chunk starts at the next id there is.
            following = connection.execute(sa.select(sa.func.min(audit_log.c.id)).where(
                audit_log.c.id > through)).scalar()
            upto = horizon if following is None or following > horizon else min(following - 1 + chunk, horizon)
            # Two indexers at once on SQLite (no row lock to wait on) add each entry once.
            added += connection.execute(database.dialect.upsert(audit_record_index).from_select(
                ["record_id", "audit_id"], sa.select(audit_log.c.record_id, audit_log.c.id).where(
                    audit_log.c.id > through, audit_log.c.id <= upto)).on_conflict_do_nothing()).rowcount
            connection.execute(sa.update(audit_record_index_state).where(audit_record_index_state.c.id == 1).values(
                indexed_through=upto))



def settled_horizon(database: AppDatabase, settle_seconds: float) -> int | None:
    """The highest audit entry id at or below which no entry can still be committed; None when
    writers that could still commit one stayed open longer than settle_seconds.

    Entry ids are not committed in id order (a run's batches commit side by side, a person's queue
    action at any time): an id at or below the highest committed one that is not committed yet
    belongs to a transaction holding its INSERT's RowExclusiveLock on the record table now (taken
    before its ids are drawn, held until it ends; read after the horizon). SQLite has one writer."""
    with database.connect() as connection:
        horizon = int(connection.execute(sa.select(sa.func.max(audit_log.c.id))).scalar_one() or 0)
        if database.dialect.one_writer_at_a_time:
            return horizon  # an open writer's ids are above every committed one
        writers = """SELECT DISTINCT virtualtransaction FROM pg_locks
                     WHERE locktype = 'relation' AND relation = 'retention_audit_records'::regclass
                       AND mode = 'RowExclusiveLock' AND granted AND pid <> pg_backend_pid()"""
        open_writers = connection.exec_driver_sql(writers).scalars().all()
        deadline = time.monotonic() + settle_seconds
        while open_writers:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)
            open_writers = connection.exec_driver_sql(
                writers + " AND virtualtransaction = ANY(%(open)s)", {"open": list(open_writers)}).scalars().all()
    return horizon
