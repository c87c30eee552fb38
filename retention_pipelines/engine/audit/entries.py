"""The audit log's vocabulary and its one writer. Every entry names an `Action`; every module that
writes one goes through `write_entries` (or, inside the statement that acts on the rows,
`audited_from`), in the caller's transaction, so that what an entry may say, which columns it fills
and how it is chained are decided here and nowhere else.

Entries that share what they did (domain, action, run, policy version, archive object, actor,
detail) are one batch: a row of `retention_audit_batches` and a narrow row per record in
`retention_audit_records`. The batch's link in its domain's hash chain (links.py) is computed in the
same transaction, under a lock on the domain's head, so no committed entry is ever outside the chain.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa

from retention_pipelines.engine.audit.links import (
    FIELDS,
    GENESIS,
    link,
    records_digest,
    sql_link,
    sql_records_digest,
    sql_utc_text,
    utc_text,
)
from retention_pipelines.schema import audit_batches, audit_chain_heads, audit_held_once, audit_records
from retention_pipelines.stores import Dialect


class Action(StrEnum):
    """What an audit entry records. The report counts some of them (report/figures.ACTION_GROUPS)."""

    # A retention run's or an erasure's act on a row, one entry per row, in the act's transaction.
    DELETED = "deleted"
    REDACTED = "redacted"
    REDACTED_BLOB_MISSING = "redacted_blob_missing"  # redacted; its object was already gone
    ERASED = "erased"
    # Due, and left in place: under a legal hold (once per record, ever), or its object would not go.
    SKIPPED_LEGAL_HOLD = "skipped_legal_hold"
    BLOB_DELETE_FAILED = "blob_delete_failed"
    # The archive's own life: a copy removed at the end of its keep_for, a subject's key destroyed
    # (crypto-shredding), a record put back from its archive.
    ARCHIVE_EXPIRED = "archive_expired"
    KEY_DESTROYED = "key_destroyed"
    RESTORED = "restored"
    # Legal holds: placed and released by a person, rewritten in its key's canonical spelling by a run.
    HOLD_PLACED = "hold_placed"
    HOLD_RELEASED = "hold_released"
    HOLD_RESPELLED = "hold_respelled"
    # The manual-resolution queue: an item's life.
    QUEUE_OPENED = "queue_opened"
    QUEUE_CLAIMED = "queue_claimed"
    QUEUE_RESOLVED = "queue_resolved"
    QUEUE_DISMISSED = "queue_dismissed"
    QUEUE_ESCALATED = "queue_escalated"
    QUEUE_RETRY_FAILED = "queue_retry_failed"


# What a run's act leaves in the log, by the act: a redaction says whether its object was there.
# Plain strings (the members' values), as they are bound in queries and shown in metadata.
ACTED_ACTIONS: dict[str, tuple[str, ...]] = {
    Action.DELETED.value: (Action.DELETED.value,),
    Action.REDACTED.value: (Action.REDACTED.value, Action.REDACTED_BLOB_MISSING.value),
    Action.ERASED.value: (Action.ERASED.value,),
}
@dataclass(frozen=True)
class AuditStamp:
    """What the entries of one act share; the record id (and its deadline) is each entry's own."""

    domain: str
    action: str
    run_id: str
    policy_version: str
    archive_uri: str | None = None
    detail: str | None = None
    actor: str | None = None

    def row(self, record_id: str, deadline: datetime | None = None) -> dict:
        entry = {"domain": self.domain, "record_id": record_id, "action": str(self.action), "run_id": self.run_id,
                 "policy_version": self.policy_version, "archive_uri": self.archive_uri, "deadline": deadline,
                 "detail": self.detail}
        return entry if self.actor is None else {**entry, "actor": self.actor}


def write_entries(connection: sa.Connection, entries: Sequence[dict]) -> int:
    """The entries (AuditStamp.row), in the caller's transaction, a batch per run of entries that
    share their stamp: how many were written."""
    batches: dict[tuple, list[tuple[str, object]]] = {}
    for entry in entries:
        stamp = tuple(entry.get(name) for name in _STAMP)
        batches.setdefault(stamp, []).append((entry["record_id"], entry.get("deadline")))
    # Heads are locked in domain order: two writers of several domains never wait for each other in a cycle.
    for stamp, records in sorted(batches.items(), key=lambda item: item[0][0]):
        for start in range(0, len(records), MAX_BATCH_RECORDS):
            _write_batch(connection, dict(zip(_STAMP, stamp, strict=True)), records[start:start + MAX_BATCH_RECORDS])
    return len(entries)


def write_held_once(connection: sa.Connection, entries: Sequence[dict]) -> int:
    """`skipped_legal_hold` entries, skipping any record already reported (refused by the database,
    so two runs reporting one hold at once keep one entry): how many were written."""
    if not entries:
        return 0
    first = Dialect.of(connection).upsert(audit_held_once).values(
        [{"domain": entry["domain"], "record_id": entry["record_id"]} for entry in entries],
    ).on_conflict_do_nothing(index_elements=["domain", "record_id"]).returning(audit_held_once.c.record_id)
    new = set(connection.execute(first).scalars())
    return write_entries(connection, [entry for entry in entries if entry["record_id"] in new])


def audited_from(connection: sa.Connection, record_id: sa.ColumnElement, deadline: sa.ColumnElement) -> sa.Select:
    """PostgreSQL: the audit of every row a DELETE/UPDATE … RETURNING hands back, as CTEs of one
    statement with it: one record row each, under a batch id drawn once. `record_id` and
    `deadline` are expressions over the returning CTE's columns. The select returned has one row,
    (batch_id, records, digest: sql_records_digest over the record rows), what `link_batch` then
    needs, in the same transaction, to write the batch and link it into its domain's chain.

    The chain's head is locked by link_batch, after the rows are acted on, not by this statement:
    two lanes of a run delete side by side and wait for each other only to link their batches."""
    dialect = Dialect.of(connection)
    # The batch's id drawn first, once (a CTE read twice is materialized): its record rows' ids follow from it.
    drawn = sa.select(dialect.next_id(audit_batches.name, "id").label("id")).cte("audit_batch_id")
    acted = sa.select(sa.func.row_number().over().label("place"), record_id.label("record_id"),
                      deadline.label("deadline")).cte("audit_acted")
    batch_id = sa.select(drawn.c.id).scalar_subquery()
    row_id = batch_id * RECORDS_PER_BATCH + acted.c.place
    written = sa.insert(audit_records).from_select(
        ["id", "batch_id", "record_id", "deadline"],
        sa.select(row_id, batch_id, acted.c.record_id, acted.c.deadline).select_from(acted)).cte("audit_written")
    return sa.select(batch_id.label("batch_id"), sa.func.count().label("records"),
                     sql_records_digest(dialect, row_id, acted.c.record_id, acted.c.deadline).label("digest"),
                     ).select_from(acted).add_cte(written)


def link_batch(connection: sa.Connection, stamp: AuditStamp, batch_id: int, records: int, digest: bytes) -> int:
    """The batch of `records` record rows that audited_from's statement wrote under `batch_id`,
    written and linked into its domain's chain by PostgreSQL, in the caller's transaction, under a
    lock on the domain's head held until it ends: how many records (none: nothing is written)."""
    if not records:
        return 0
    values = {f"batch_{name}": getattr(stamp, name) for name in _STAMP}
    values |= {"batch_action": str(stamp.action), "batch_id": batch_id, "batch_records": records,
               "batch_digest": digest}
    linking = getattr(_local, "linking", None)
    if linking is None:
        linking = _local.linking = _linking_statement()
    # A domain's head exists from its first batch on: made then, when the statement found none to
    # lock (and so wrote nothing), rather than asked for in every batch.
    if connection.execute(linking, values).rowcount == 0:
        _ensure_head(connection, stamp.domain)
        connection.execute(linking, values)
    return records


# link_batch's statement, one per thread (table.py DomainTable._built says why not one for all).
_local = threading.local()


def _linking_statement() -> sa.Update:
    """link_batch's statement, built once per thread (every value bound at execution): built per
    batch, its tree would be garbage in reference cycles that only a full collection frees
    (table.py _built)."""
    head = sa.select(audit_chain_heads.c.last_seq, audit_chain_heads.c.last_hash).where(
        audit_chain_heads.c.domain == sa.bindparam("batch_domain", type_=sa.String)).with_for_update().cte("audit_head")
    now = sa.func.now()
    # Bound under names of no column of the tables written (SQLAlchemy keeps those for SET and VALUES).
    fields = {name: sa.bindparam(f"batch_{name}", type_=sa.Text) for name in _STAMP}
    fields |= {"seq": head.c.last_seq + 1, "occurred_at": sql_utc_text(now),
               "records": sa.bindparam("batch_records", type_=sa.Integer)}
    batch = sa.insert(audit_batches).from_select(
        ["id", *FIELDS, "prev_link", "link"],
        sa.select(sa.bindparam("batch_id", type_=sa.BigInteger),
                  *(now if name == "occurred_at" else fields[name] for name in FIELDS), head.c.last_hash,
                  sql_link(head.c.last_hash, fields, sa.bindparam("batch_digest", type_=sa.LargeBinary))),
    ).returning(audit_batches.c.id, audit_batches.c.seq, audit_batches.c.link, audit_batches.c.domain,
                ).cte("audit_batch")
    # Joined on the domain alone: the row the statement's snapshot shows may be older than the one
    # its lock waited for, and PostgreSQL re-checks only a row that matched (on the older, a join
    # on the position would skip the update and leave the head behind the batch).
    return sa.update(audit_chain_heads).where(audit_chain_heads.c.domain == batch.c.domain).values(
        last_seq=batch.c.seq, last_block=batch.c.seq, last_id=batch.c.id, last_hash=batch.c.link,
        sealed_through=batch.c.id, sealed_at=now)


_STAMP = ("domain", "action", "run_id", "policy_version", "archive_uri", "actor", "detail")
# A record row's id is its batch's id × RECORDS_PER_BATCH + its place in the batch (1, 2, …): drawn
# from one sequence call per batch, where a sequence call per row cost the write a third of its speed
# (benchmarks/), and as ordered as the batches (a batch's id is drawn under no cache, so a later
# writer's ids are all higher: the evidence index relies on it). Batches are at most 100,000 records
# (the policies' batch_size; write_entries splits larger groups).
RECORDS_PER_BATCH = 2**20
MAX_BATCH_RECORDS = 100_000


def _batch_id(connection: sa.Connection) -> int:
    """A new batch's id, drawn before it is written: its record rows' ids follow from it."""
    if Dialect.of(connection).has_column_types:
        return connection.execute(sa.select(Dialect.of(connection).next_id(audit_batches.name, "id"))).scalar_one()
    # SQLite: one writer at a time, and this transaction holds the write lock (_ensure_head wrote).
    # Past every batch and every record row (those moved from the log before batches keep their ids).
    batches = connection.execute(sa.select(sa.func.max(audit_batches.c.id))).scalar_one() or 0
    records = connection.execute(sa.select(sa.func.max(audit_records.c.id))).scalar_one() or 0
    return max(batches, records // RECORDS_PER_BATCH) + 1


def _ensure_head(connection: sa.Connection, domain: str) -> None:
    connection.execute(Dialect.of(connection).upsert(audit_chain_heads).values(
        domain=domain, last_block=0, last_seq=0, last_hash=GENESIS.hex(), sealed_through=0,
    ).on_conflict_do_nothing(index_elements=["domain"]))


def _database_now(connection: sa.Connection) -> datetime:
    if Dialect.of(connection).has_column_types:
        return connection.execute(sa.select(sa.func.now())).scalar_one()
    text = connection.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar_one()
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _write_batch(connection: sa.Connection, stamp: dict, records: list[tuple[str, object]]) -> None:
    """One batch, linked in Python (the writers that are not one statement with their act)."""
    domain = stamp["domain"]
    # The first statement writes, so that SQLite takes its write lock before the head is read; on
    # PostgreSQL the head's row lock serialises the writers of a domain until they commit.
    _ensure_head(connection, domain)
    head = connection.execute(sa.select(audit_chain_heads.c.last_seq, audit_chain_heads.c.last_hash).where(
        audit_chain_heads.c.domain == domain).with_for_update()).one()
    now = _database_now(connection)
    batch = {**stamp, "action": str(stamp["action"]), "seq": head.last_seq + 1, "occurred_at": utc_text(now),
             "records": len(records)}
    batch_id = _batch_id(connection)
    ids = [batch_id * RECORDS_PER_BATCH + n for n in range(1, len(records) + 1)]
    digest = records_digest([(row_id, record_id, deadline)
                             for row_id, (record_id, deadline) in zip(ids, records, strict=True)])
    linked = link(head.last_hash, batch, digest)
    stored_now = now if Dialect.of(connection).has_column_types else now.replace(tzinfo=None)
    connection.execute(sa.insert(audit_batches).values(
        **{**batch, "occurred_at": stored_now}, id=batch_id, prev_link=head.last_hash, link=linked))
    connection.execute(sa.insert(audit_records), [
        {"id": row_id, "batch_id": batch_id, "record_id": record_id, "deadline": deadline}
        for row_id, (record_id, deadline) in zip(ids, records, strict=True)])
    connection.execute(sa.update(audit_chain_heads).where(audit_chain_heads.c.domain == domain).values(
        last_seq=batch["seq"], last_block=batch["seq"], last_id=batch_id, last_hash=linked, sealed_through=batch_id,
        sealed_at=stored_now))
