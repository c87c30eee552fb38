"""Legal holds on quiz answers, placed and released as a test needs them."""

from __future__ import annotations

import sqlalchemy as sa

from retention_pipelines import schema


def place_hold(database, record_id: str) -> None:
    with database.engine.begin() as connection:
        connection.execute(sa.insert(schema.legal_holds).values(
            domain="quiz_responses", record_id=record_id, reason="litigation 2026-17"))


def release_holds(database, record_id: str) -> None:
    with database.engine.begin() as connection:
        connection.execute(sa.update(schema.legal_holds).where(schema.legal_holds.c.record_id == record_id)
                           .values(released_at=database.bind_time(database.now())))
