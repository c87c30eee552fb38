"""Sealing: the audit rows written since the last seal chained into their domain's hash chain.

Nothing is added to the transactions that write audit rows (the batch DELETE … RETURNING + INSERT,
the legal-hold reports, the manual queue): a sealer comes afterwards and chains each domain's rows
in id order (links.py), one block per chunk of CHUNK_ROWS rows, committed with the chain's head in
`retention_audit_chain_heads`. The audit log itself is never updated: it stays append-only, so the
database role that writes it can be refused UPDATE and DELETE on it, and a sealed row costs 24
bytes of chain and one INSERT per 10,000 rows.

Audit-row ids are not committed in id order (a run's batches commit side by side, a person's queue
action at any time). The sealer therefore takes only rows up to a *settled horizon*: the highest
committed id, once every transaction that could still commit a lower one has ended (on PostgreSQL,
the transactions holding a write lock on the audit log when the horizon was read; SQLite has one
writer at a time). So every row of a domain with an id at or below its head's `sealed_through` is
in its chain: one found there outside the chain was inserted behind the sealer's back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa

from retention_pipelines.engine.audit.links import (
    GENESIS,
    ROW_HASH_BYTES,
    content_reader,
    content_sql,
    link_hash,
    pack_ids,
)
from retention_pipelines.logs import get_logger
from retention_pipelines.schema import audit_chain, audit_chain_heads, audit_log
from retention_pipelines.stores import AppDatabase, Dialect

log = get_logger("audit_chain")

CHUNK_ROWS = 10_000  # rows per block, sealed in one transaction: memory stays constant, a kill loses one
SETTLE_SECONDS = 30.0  # how long the sealer waits for open writers of the audit log before giving up


@dataclass
class SealReport:
    """What one seal did: rows appended to each domain's chain. settled is False when writers of
    the audit log stayed open past the wait, in which case nothing was sealed (the next seal will)."""

    sealed: dict[str, int] = field(default_factory=dict)
    horizon: int = 0
    settled: bool = True
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.sealed.values())


def seal(database: AppDatabase, domains: Iterable[str] | None = None, *, chunk_rows: int = CHUNK_ROWS,
         settle_seconds: float = SETTLE_SECONDS,
         after_chunk: Callable[[str, int], None] | None = None) -> SealReport:
    """Chain every settled, unsealed audit row of these domains (default: every domain in the audit
    log), chunk_rows rows per transaction, each chunk one block committed with its head. Idempotent
    and safe to kill: a rerun goes on from the head. `after_chunk(domain, rows)` is called inside
    each chunk's transaction, before it commits (a test's way to kill a seal halfway)."""
    started = time.monotonic()
    horizon = settled_horizon(database, settle_seconds)
    report = SealReport(horizon=horizon or 0, settled=horizon is not None)
    if horizon is None:
        log.warning(f"audit chain: writers of the audit log still open after {settle_seconds:g} s; nothing sealed "
                    "this time", extra={"step": "seal", "settle_seconds": settle_seconds})
    else:
        for domain in (list(domains) if domains is not None else _domains_in_log(database)):
            report.sealed[domain] = _seal_domain(database, domain, horizon, chunk_rows, after_chunk)
    report.seconds = time.monotonic() - started
    return report


def settled_horizon(database: AppDatabase, settle_seconds: float) -> int | None:
    """The highest audit-row id at or below which no row can still be committed; None when writers
    that could still commit one stayed open longer than settle_seconds."""
    with database.connect() as connection:
        horizon = int(connection.execute(sa.select(sa.func.max(audit_log.c.id))).scalar_one() or 0)
        if database.dialect.one_writer_at_a_time:
            return horizon  # an open writer's ids are above every committed one
        # An INSERT takes its RowExclusiveLock on the table before its rows' ids are drawn and holds
        # it until its transaction ends: an id at or below the horizon that is not committed yet
        # belongs to a transaction holding that lock now (read after the horizon).
        writers = """SELECT DISTINCT virtualtransaction FROM pg_locks
                     WHERE locktype = 'relation' AND relation = 'retention_audit_log'::regclass
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


def _domains_in_log(database: AppDatabase) -> list[str]:
    with database.connect() as connection:
        return sorted(connection.execute(sa.select(audit_log.c.domain).distinct()).scalars())


def _new_head(connection: sa.Connection, domain: str) -> sa.Insert:
    return Dialect.of(connection).upsert(audit_chain_heads).values(
        domain=domain, last_block=0, last_seq=0, last_hash=GENESIS.hex(), sealed_through=0,
    ).on_conflict_do_nothing(index_elements=["domain"])


def _seal_domain(database: AppDatabase, domain: str, horizon: int, chunk_rows: int,
                 after_chunk: Callable[[str, int], None] | None) -> int:
    sealed = 0
    while True:
        rows, through = _seal_chunk(database, domain, horizon, chunk_rows, after_chunk)
        sealed += rows
        if through >= horizon:
            return sealed


def _seal_chunk(database: AppDatabase, domain: str, horizon: int, chunk_rows: int,
                after_chunk: Callable[[str, int], None] | None) -> tuple[int, int]:
    """One block and its head, in one transaction: (rows sealed, the id sealed through). Its rows
    are let go on return, before the next chunk is read: one chunk in memory at a time."""
    dialect = database.dialect
    content_of = content_reader(dialect)
    with database.begin() as connection:
        # The first statement writes, so that SQLite takes its write lock before the head is read;
        # on PostgreSQL the head's row lock serialises sealers of the same domain.
        connection.execute(_new_head(connection, domain))
        head = connection.execute(sa.select(audit_chain_heads).where(
            audit_chain_heads.c.domain == domain).with_for_update()).one()
        if head.sealed_through >= horizon:
            return 0, head.sealed_through
        rows, through = _unsealed_rows(connection, dialect, domain, head.sealed_through, horizon, chunk_rows)
        state, ids, hashes = bytes.fromhex(head.last_hash), [], []
        for row in rows:
            state = link_hash(state, content_of(row))
            ids.append(row[0])
            hashes.append(state[:ROW_HASH_BYTES])
        del rows
        if ids:
            connection.execute(sa.insert(audit_chain).values(
                domain=domain, block=head.last_block + 1, first_seq=head.last_seq + 1, rows=len(ids),
                first_id=ids[0], last_id=ids[-1], ids=pack_ids(ids), row_hashes=b"".join(hashes),
                prev_hash=head.last_hash, last_hash=state.hex()))
        connection.execute(sa.update(audit_chain_heads).where(audit_chain_heads.c.domain == domain).values(
            last_block=head.last_block + (1 if ids else 0), last_seq=head.last_seq + len(ids),
            last_id=ids[-1] if ids else head.last_id, last_hash=state.hex(), sealed_through=through,
            sealed_at=sa.func.now()))
        if after_chunk is not None:
            after_chunk(domain, len(ids))
    return len(ids), through


def _unsealed_rows(connection: sa.Connection, dialect: Dialect, domain: str, after: int, horizon: int,
                   chunk_rows: int) -> tuple[list[tuple], int]:
    """The domain's next rows after `after`, at most chunk_rows of them, and the id they reach.

    Read in windows of chunk_rows consecutive ids: each one an index range of the primary key
    however the planner's statistics stand (a LIMIT over a domain filter, whose selectivity the
    planner cannot know, made PostgreSQL sort the whole log for every chunk), and never more rows
    than the window's ids. Ids that no row has are skipped in one step."""
    window = (f"SELECT {content_sql(dialect, 'a')} FROM retention_audit_log a "
              f"WHERE a.id > {dialect.param('after')} AND a.id <= {dialect.param('upto')} "
              f"AND a.domain = {dialect.param('domain')} ORDER BY a.id")
    following = (f"SELECT min(id) FROM retention_audit_log WHERE id > {dialect.param('after')} "
                 f"AND id <= {dialect.param('upto')}")
    rows: list[tuple] = []
    cursor = connection.connection.dbapi_connection.cursor()  # plain tuples, in the same transaction
    try:
        while len(rows) < chunk_rows and after < horizon:
            upto = min(after + chunk_rows, horizon)
            cursor.execute(window, {"after": after, "upto": upto, "domain": domain})
            found = cursor.fetchall()
            if len(rows) + len(found) > chunk_rows:
                found = found[:chunk_rows - len(rows)]
                upto = found[-1][0]
            rows.extend(found)
            after = upto
            if not found and after < horizon:
                cursor.execute(following, {"after": after, "upto": horizon})
                next_id = cursor.fetchone()[0]
                after = horizon if next_id is None else next_id - 1
    finally:
        cursor.close()
    return rows, after


__all__ = ["CHUNK_ROWS", "SETTLE_SECONDS", "SealReport", "seal", "settled_horizon"]
