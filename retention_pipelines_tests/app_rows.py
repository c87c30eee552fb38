"""Rows of the app's tables for tests, and what a test reads back: remaining ids, audit entries."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.stores import AppDatabase


def insert_quiz_at(database: AppDatabase, instants: list[datetime], email: str = "person@example.invalid") -> list[str]:
    """quiz_responses rows created exactly at the given (tz-aware) instants; returns their ids."""
    table = sa.Table("quiz_responses", sa.MetaData(), autoload_with=database.engine)
    rows, ids = [], []
    for instant in instants:
        record = uuid.uuid4()
        ids.append(str(record))
        rows.append({"id": str(record) if database.is_sqlite else record,
                     "session_id": str(uuid.uuid4()) if database.is_sqlite else uuid.uuid4(),
                     "email": email, "answers": {"weight_kg": 80}, "created_at": database.bind_time(instant)})
    with database.engine.begin() as connection:
        for start in range(0, len(rows), 5000):
            connection.execute(sa.insert(table), rows[start:start + 5000])
    return ids


def insert_quiz_rows(database: AppDatabase, ages: list[timedelta], email: str = "person@example.invalid") -> list[str]:
    """quiz_responses rows created `age` before the database's now; returns their ids (as text)."""
    now = database.now()
    return insert_quiz_at(database, [now - age for age in ages], email)


def remaining_ids(database: AppDatabase, table: str = "quiz_responses") -> set[str]:
    with database.engine.connect() as connection:
        return {str(v) for v in connection.exec_driver_sql(f"SELECT id FROM {table}").scalars()}


def audit_entries(database: AppDatabase) -> list[dict]:
    with database.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(sa.select(schema.audit_log).order_by(schema.audit_log.c.id))]


def archive_root(url: str) -> Path:
    return Path(url.removeprefix("file://"))


def insert_token_expiring_at(database: AppDatabase, instants: list[datetime]) -> list[str]:
    """magic_link_tokens rows expiring exactly at the given instants; returns their ids."""
    return _insert(database, "magic_link_tokens", [
        {"email": "token.owner@example.invalid", "token_hash": uuid.uuid4().hex,
         "created_at": database.bind_time(instant - timedelta(minutes=15)), "expires_at": database.bind_time(instant)}
        for instant in instants])


def insert_blacklist_at(database: AppDatabase, instants: list[datetime]) -> list[str]:
    """email_blacklist entries added exactly at the given instants; returns their ids."""
    return _insert(database, "email_blacklist", [
        {"email": "abuser@example.invalid", "reason": "chargeback", "created_at": database.bind_time(instant)}
        for instant in instants])


def _insert(database: AppDatabase, table_name: str, rows: list[dict]) -> list[str]:
    table = sa.Table(table_name, sa.MetaData(), autoload_with=database.engine)
    ids = [str(uuid.uuid4()) for _ in rows]
    with database.engine.begin() as connection:
        connection.execute(sa.insert(table), [{"id": rid if database.is_sqlite else uuid.UUID(rid), **row}
                                              for rid, row in zip(ids, rows)])
    return ids


def insert_meal_plans_at(database: AppDatabase, instants: list[datetime], blob_keys: list[str | None]) -> list[str]:
    """meal_plans rows bought at the given instants, pointing at the given object keys."""
    return _insert(database, "meal_plans", [
        {"payment_id": f"pay_{uuid.uuid4().hex[:12]}", "email": "buyer@example.invalid", "pdf_blob_key": key,
         "created_at": database.bind_time(instant)} for instant, key in zip(instants, blob_keys)])


def meal_plan_rows(database: AppDatabase) -> dict[str, tuple]:
    """{id: (pdf_blob_key, pdf_deleted_at)} of every meal plan."""
    with database.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT id, pdf_blob_key, pdf_deleted_at FROM meal_plans").all()
    return {str(rid): (key, deleted) for rid, key, deleted in rows}


def uuid_spellings(record_id: str) -> list[str]:
    """Spellings of one uuid that PostgreSQL's uuid type accepts, none of them its canonical text."""
    plain = record_id.replace("-", "")
    return [record_id.upper(), plain, plain.upper(), "{" + record_id + "}", f"  {record_id}  ",
            "-".join(plain[i:i + 4] for i in range(0, 32, 4))]
