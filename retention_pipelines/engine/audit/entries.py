"""The audit log's vocabulary and its one writer. Every row of retention_audit_log names an
`Action`; every module that writes one goes through `write_entries` (or, inside the statement that acts on
the rows, `inserted_from`), in the caller's transaction, so that what an entry may say and which
columns it fills are decided here and nowhere else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa

from retention_pipelines.schema import audit_log
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
# The columns an entry written from a statement's RETURNING fills (the others keep their defaults).
_FROM_STATEMENT = ["domain", "record_id", "action", "run_id", "policy_version", "archive_uri", "deadline", "detail"]


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
    """The entries (AuditStamp.row), in the caller's transaction: how many were written."""
    if entries:
        connection.execute(sa.insert(audit_log), list(entries))
    return len(entries)


def inserted_from(stamp: AuditStamp, record_id: sa.ColumnElement, deadline: sa.ColumnElement) -> sa.Insert:
    """The INSERT of one entry per row that a DELETE/UPDATE … RETURNING hands back, as one statement
    with it (a data-modifying CTE): `record_id` and `deadline` are expressions over its columns."""
    return sa.insert(audit_log).from_select(
        _FROM_STATEMENT,
        sa.select(sa.literal(stamp.domain), record_id, sa.literal(str(stamp.action)), sa.literal(stamp.run_id),
                  sa.literal(stamp.policy_version), sa.literal(stamp.archive_uri, sa.Text), deadline,
                  sa.literal(stamp.detail, sa.Text)),
    ).returning(audit_log.c.id)


def held_once(connection: sa.Connection, entries: Sequence[dict]) -> sa.Insert:
    """INSERT of `skipped_legal_hold` entries that skips any record already reported (unique in the
    database, so two runs reporting one hold at once keep one entry), RETURNING one row per entry written."""
    return Dialect.of(connection).upsert(audit_log).values(list(entries)).on_conflict_do_nothing(
        index_elements=["domain", "record_id"], index_where=audit_log.c.action == Action.SKIPPED_LEGAL_HOLD.value,
    ).returning(audit_log.c.id)
