"""Manual-queue rows for tests: items moved in time (the sensor's clock is the database's own),
and the queue's entries in the audit log."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from retention_pipelines.schema import audit_log, manual_queue
from retention_pipelines.stores import AppDatabase

QUEUE_ACTIONS = ("queue_opened", "queue_claimed", "queue_resolved", "queue_dismissed", "queue_retry_failed",
                 "queue_escalated")


def set_item(database: AppDatabase, item_id: int, **values) -> None:
    """Overwrite columns of one item; datetimes are bound as the database compares them."""
    bound = {k: database.bind_time(v) if isinstance(v, datetime) else v for k, v in values.items()}
    with database.engine.begin() as connection:
        updated = connection.execute(sa.update(manual_queue).where(manual_queue.c.id == item_id).values(bound))
        assert updated.rowcount == 1


def age_item(database: AppDatabase, item_id: int, age: timedelta, given: timedelta,
             now: datetime | None = None) -> datetime:
    """Make an item look created `age` ago (by the database's clock) with `given` to resolve it:
    the way a test moves an item past its due date when what judges it reads the database's now."""
    now = now or database.now()
    created = now - age
    set_item(database, item_id, created_at=created, due_at=created + given)
    return created


def queue_audit(database: AppDatabase, record_id: str | None = None) -> list[dict]:
    """The queue's audit entries (queue_* actions), oldest first."""
    query = sa.select(audit_log).where(audit_log.c.action.in_(QUEUE_ACTIONS)).order_by(audit_log.c.id)
    if record_id is not None:
        query = query.where(audit_log.c.record_id == record_id)
    with database.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def queue_rows(database: AppDatabase) -> list[dict]:
    with database.engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(sa.select(manual_queue).order_by(manual_queue.c.id))]


# Faults the queue is for ------------------------------------------------------------------------
NOTES_FK = "quiz_response_notes_response_fk"


def create_notes_table(database: AppDatabase) -> None:
    """A table of the app that refers to quiz responses (PostgreSQL): a row it names cannot be deleted."""
    with database.engine.begin() as connection:
        connection.exec_driver_sql(
            f"CREATE TABLE quiz_response_notes (id serial PRIMARY KEY, response_id uuid NOT NULL "
            f"CONSTRAINT {NOTES_FK} REFERENCES quiz_responses(id))")


def refer_to(database: AppDatabase, record_id: str) -> None:
    with database.engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO quiz_response_notes (response_id) VALUES (%(id)s)", {"id": record_id})


def drop_notes(database: AppDatabase, record_id: str | None = None) -> None:
    with database.engine.begin() as connection:
        if record_id is None:
            connection.exec_driver_sql("DELETE FROM quiz_response_notes")
        else:
            connection.exec_driver_sql("DELETE FROM quiz_response_notes WHERE response_id = %(id)s", {"id": record_id})


def deny_deletes(bucket: str, keys: list[str]) -> None:
    """A bucket policy that denies s3:DeleteObject on these keys: the S3 server (moto's, as AWS)
    answers AccessDenied for each of them in a DeleteObjects request, and deletes the others."""
    import json

    import boto3

    boto3.client("s3").put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "KeepForTheTest", "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
                       "Resource": [f"arn:aws:s3:::{bucket}/{key}" for key in keys]}]}))


def allow_deletes(bucket: str) -> None:
    import boto3

    boto3.client("s3").delete_bucket_policy(Bucket=bucket)


def place_hold(database, domain: str, record_id: str, reason: str = "litigation hold") -> None:
    """An unreleased legal hold on a record."""
    import sqlalchemy as sa

    from retention_pipelines.schema import legal_holds

    with database.engine.begin() as connection:
        connection.execute(sa.insert(legal_holds).values(domain=domain, record_id=record_id, reason=reason))
