"""Legal holds: which record a hold names, and the one gate every destructive action passes.

Identity. A hold names its record in canonical text (engine/identity/records.py), and every comparison
with a hold is plain equality of that text (`held`): no spelling the key type accepts can be counted
as held by one path and missed by another.

The moment. A hold binds an action when it is committed before the action commits. Every
transaction that removes something of a domain (a batch's delete or redaction with its objects,
an archive object's expiry, a subject key's destruction) first passes the domain's hold gate,
shared; placing or releasing a hold passes it exclusively. So a hold is committed either before
such a transaction's statements run — each takes a fresh snapshot under READ COMMITTED, and its
own WHERE sees the hold — or after that transaction has committed, when `hold add` finds the
record gone and says so. Shared passes do not wait for each other: batches side by side still run
together. (SQLite, the demo, has one writer at a time, which orders a hold and a batch the same way.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from retention_pipelines.engine.audit.entries import Action, AuditStamp, write_entries
from retention_pipelines.engine.identity.records import canonical_record_id
from retention_pipelines.schema import legal_holds
from retention_pipelines.stores import AppDatabase, Dialect

# The advisory-lock class of the hold gates ('HOLD'); each domain's gate is (class, hashtext(domain)).
HOLD_GATE = 0x484F4C44
# The gate of every domain at once: an action that may remove a copy of records of any domain (a
# subject's archive key destroyed) passes it shared; placing or releasing any hold, exclusively.
EVERY_DOMAIN = "*"
MANUAL_RUN = "manual"  # the run id of changes a person makes from the shell


class HoldRefused(Exception):
    """A hold that cannot be placed or released as asked (already held, no such record, none to release)."""


def held(domain: str, record_id: sa.ColumnElement) -> sa.ColumnElement[bool]:
    """The one test of a hold: an unreleased hold of the domain names this record id (canonical text)."""
    return sa.exists().where(legal_holds.c.domain == domain, legal_holds.c.record_id == record_id,
                             legal_holds.c.released_at.is_(None))


def held_record_ids(connection: sa.Connection, domain: str) -> set[str]:
    """Every record id of the domain under an unreleased hold: holds are few."""
    return set(connection.execute(sa.select(legal_holds.c.record_id).where(
        legal_holds.c.domain == domain, legal_holds.c.released_at.is_(None))).scalars())


def under_legal_hold(database: AppDatabase, domain: str, record_id: str) -> bool:
    """Whether an unreleased legal hold is on the record (its id in canonical text)."""
    with database.connect() as connection:
        return bool(connection.execute(sa.select(held(domain, sa.literal(record_id, sa.Text)))).scalar())


@dataclass(frozen=True)
class LegalHold:
    """One hold as the hold book keeps it (its columns, in their order)."""

    id: int
    domain: str
    record_id: str  # canonical
    reason: str
    placed_at: datetime
    released_at: datetime | None
    placed_by: str | None
    released_by: str | None


def placed_holds(database: AppDatabase, domain: str | None = None, include_released: bool = False) -> list[LegalHold]:
    """The holds in force, of one domain or of all, oldest first; with `include_released` the
    released ones too. Reading them needs no policy version, unlike placing or releasing one."""
    query = sa.select(legal_holds).order_by(legal_holds.c.placed_at, legal_holds.c.id)
    if domain:
        query = query.where(legal_holds.c.domain == domain)
    if not include_released:
        query = query.where(legal_holds.c.released_at.is_(None))
    with database.connect() as connection:
        return [LegalHold(**row._mapping) for row in connection.execute(query)]


def pass_gate(connection: sa.Connection, domain: str, exclusive: bool = False) -> None:
    """The domain's hold gate, for the rest of the caller's transaction: first in every transaction
    that removes something of the domain (shared; EVERY_DOMAIN for something of any domain), and in
    every one that places or releases a hold (exclusive, with EVERY_DOMAIN's)."""
    if Dialect.of(connection).one_writer_at_a_time:
        return  # the database orders a hold and a removal by itself
    lock = sa.func.pg_advisory_xact_lock if exclusive else sa.func.pg_advisory_xact_lock_shared
    for gate in (domain, EVERY_DOMAIN) if exclusive else (domain,):
        connection.execute(sa.select(lock(HOLD_GATE, sa.func.hashtext(gate))))


@contextlib.contextmanager
def gate_held(database: AppDatabase, domains: Iterable[str]) -> Iterator[None]:
    """The gates of these domains, shared, across several transactions and the object-store calls
    between them (an archive object's audit entry is committed before the object is deleted)."""
    if database.dialect.one_writer_at_a_time:
        yield
        return
    keys = sorted(set(domains))
    with database.connect() as connection:
        for domain in keys:
            connection.execute(sa.select(sa.func.pg_advisory_lock_shared(HOLD_GATE, sa.func.hashtext(domain))))
        connection.commit()
        try:
            yield
        finally:
            for domain in keys:
                connection.execute(sa.select(sa.func.pg_advisory_unlock_shared(HOLD_GATE, sa.func.hashtext(domain))))
            connection.commit()


@dataclass(frozen=True)
class HoldChange:
    hold_id: int
    record_id: str  # canonical


class LegalHolds:
    """Holds placed and released by a person, each change audited with who made it."""

    def __init__(self, database: AppDatabase, policy_version: str):
        self.database, self.policy_version = database, policy_version

    def place(self, domain: str, key: sa.Column, given_id: str, reason: str, by: str,
              force: bool = False) -> HoldChange:
        """A hold on the record `given_id` names, stored in canonical form. Refused (HoldRefused) when
        no such record exists, unless `force` (a record the app has yet to write, or one already gone
        whose archived copy must stay), and when the record is already held."""
        with self.database.begin() as connection:
            record_id = canonical_record_id(connection, key, given_id)
            pass_gate(connection, domain, exclusive=True)
            active = connection.execute(sa.select(legal_holds.c.id).where(
                legal_holds.c.domain == domain, legal_holds.c.record_id == record_id,
                legal_holds.c.released_at.is_(None))).scalar()
            if active is not None:
                raise HoldRefused(f"record {record_id} of {domain} is already under legal hold {active}")
            value = sa.cast(sa.literal(record_id, sa.Text), key.type) if Dialect.of(connection).has_column_types \
                else record_id  # compared in the key's type, so that its index answers
            exists = connection.execute(sa.select(sa.literal(1)).select_from(key.table).where(
                key == value).limit(1)).first() is not None
            if not exists and not force:
                raise HoldRefused(f"{domain} has no record {record_id} (now): nothing to hold; --force places the "
                                  "hold all the same, on its archived copy or on a record yet to come")
            hold_id = connection.execute(sa.insert(legal_holds).values(
                domain=domain, record_id=record_id, reason=reason, placed_by=by,
            ).returning(legal_holds.c.id)).scalar_one()
            detail = f"legal hold {hold_id} placed: {reason}" + ("" if exists else " (the record does not exist now)")
            self._audit(connection, domain, record_id, Action.HOLD_PLACED, by, detail)
        return HoldChange(hold_id, record_id)

    def release(self, domain: str, key: sa.Column, given_id: str, by: str) -> HoldChange:
        with self.database.begin() as connection:
            record_id = canonical_record_id(connection, key, given_id)
            pass_gate(connection, domain, exclusive=True)
            hold_id = connection.execute(sa.update(legal_holds).where(
                legal_holds.c.domain == domain, legal_holds.c.record_id == record_id,
                legal_holds.c.released_at.is_(None),
            ).values(released_at=sa.func.now(), released_by=by).returning(legal_holds.c.id)).scalar()
            if hold_id is None:
                raise HoldRefused(f"no active legal hold on {domain} record {record_id}")
            self._audit(connection, domain, record_id, Action.HOLD_RELEASED, by, f"legal hold {hold_id} released")
        return HoldChange(hold_id, record_id)

    def _audit(self, connection: sa.Connection, domain: str, record_id: str, action: Action, by: str,
               detail: str) -> None:
        write_entries(connection, [AuditStamp(domain, action, MANUAL_RUN, self.policy_version, detail=detail,
                                              actor=by).row(record_id)])
