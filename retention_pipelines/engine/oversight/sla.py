"""SLA breaches: opened once when a limit is crossed, escalated as what they observe grows past
multiples of the limit, closed with how long they lasted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from retention_pipelines.schema import sla_breaches
from retention_pipelines.stores import AppDatabase

RETENTION_LAG = "retention_lag"  # data kept past its deadline longer than sla.max_lag
RUN_DURATION = "run_duration"  # a run that took longer than sla.max_run_duration
RUN_FAILURES = "run_failures"  # sla.max_consecutive_failures failed runs in a row


def _amount(value: timedelta | int) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True)
class Breach:
    id: int
    domain: str
    kind: str
    newly_opened: bool
    level: int = 1
    escalated: bool = False  # this observation raised the breach's escalation level


class Breaches:
    """The breach book in the app database (retention_sla_breaches)."""

    def __init__(self, database: AppDatabase):
        self.database = database

    def open(self, domain: str, kind: str, observed: timedelta | int, threshold: timedelta | int,
             level: int = 1) -> Breach:
        """The open breach of this domain and kind, opened now if there was none: never two.
        `level` is the escalation this observation calls for; a breach's level only rises."""
        statement = self.database.dialect.upsert(sla_breaches).values(
            domain=domain, kind=kind, observed=_amount(observed), threshold=_amount(threshold), escalation_level=level,
        ).on_conflict_do_nothing(index_elements=["domain", "kind"], index_where=sla_breaches.c.closed_at.is_(None))
        with self.database.begin() as connection:
            inserted = connection.execute(statement.returning(sla_breaches.c.id)).scalar_one_or_none()
            if inserted is not None:
                return Breach(inserted, domain, kind, True, level)
            # Row-locked, so two sensors observing at once escalate a breach once, not twice.
            existing = connection.execute(sa.select(sla_breaches.c.id, sla_breaches.c.escalation_level).where(
                *self._open(domain, kind)).with_for_update()).one()
            new_level = max(existing.escalation_level, level)
            connection.execute(sa.update(sla_breaches).where(sla_breaches.c.id == existing.id).values(
                observed=_amount(observed), escalation_level=new_level))
        return Breach(existing.id, domain, kind, False, new_level, new_level > existing.escalation_level)

    def close(self, domain: str, kind: str) -> timedelta | None:
        """Close the open breach, if any; returns how long it lasted (by the database's clock)."""
        now = self.database.now()
        with self.database.begin() as connection:
            opened = connection.execute(sa.select(sla_breaches.c.id, sla_breaches.c.opened_at).where(
                *self._open(domain, kind))).first()
            if opened is None:
                return None
            lasted = now - self.database.read_time(opened.opened_at)
            connection.execute(sa.update(sla_breaches).where(sla_breaches.c.id == opened.id).values(
                closed_at=self.database.bind_time(now), duration_seconds=max(lasted.total_seconds(), 0.0)))
        return lasted

    def attach_run(self, breach_id: int, run_id: str) -> None:
        with self.database.begin() as connection:
            connection.execute(sa.update(sla_breaches).where(sla_breaches.c.id == breach_id).values(run_id=run_id))

    def all(self, domain: str | None = None) -> list[dict]:
        query = sa.select(sla_breaches).order_by(sla_breaches.c.id)
        if domain:
            query = query.where(sla_breaches.c.domain == domain)
        with self.database.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    @staticmethod
    def _open(domain: str, kind: str):
        return (sla_breaches.c.domain == domain, sla_breaches.c.kind == kind, sla_breaches.c.closed_at.is_(None))
