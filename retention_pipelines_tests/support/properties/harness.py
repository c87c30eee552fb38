"""The property suite's hands and eyes on the real stores: one PostgreSQL database per test,
emptied between examples; rows written as the app writes them; holds placed, released and listed
through the `retention hold` command; everything read back for the model (model.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.cli import main as retention_cli
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.stores import AppDatabase
from retention_pipelines.stores.blob import BlobStore
from retention_pipelines_tests.support.properties.model import Observed, record_of

APP_TABLES = ("quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist")
PDF = b"%PDF-1.7\n% a meal plan\n%%EOF\n"
HOLD_REASON = "case-2026-17"  # one word: `hold list` prints it in a column of its own


class PropertyWorld:
    """One test's database (each session time zone its own connection pool) and its folders."""

    def __init__(self, url: str, folder: Path):
        self.url, self.folder = url, folder
        self._databases: dict[str, AppDatabase] = {}
        self._examples = 0

    def database(self, timezone: str = "UTC") -> AppDatabase:
        """The database with every session in `timezone`; the hold command is pointed at it too."""
        url = f"{self.url}?options={quote(f'-c timezone={timezone}')}"
        if timezone not in self._databases:
            self._databases[timezone] = AppDatabase(url)
        os.environ["RETENTION_DATABASE_URL"] = url
        return self._databases[timezone]

    def new_example(self) -> Path:
        """Empty tables and a fresh folder for the next example (its archive and blob stores)."""
        self._examples += 1
        # DELETE, not TRUNCATE: a few rows each, and TRUNCATE's new files cost more than the rows.
        with self.database().engine.begin() as connection:
            for table in [*APP_TABLES, *(t.name for t in schema.metadata.sorted_tables)]:
                connection.exec_driver_sql(f"DELETE FROM {table}")
        folder = self.folder / f"example-{self._examples}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def close(self) -> None:
        for database in self._databases.values():
            database.dispose()


def record_uuid(index: int) -> str:
    """The n-th record of an example: the same ids in every run of the suite, so that the order of
    rows within an instant (the keyset's tie-break) is reproducible too."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"retention-property-row-{index}"))


# -- the app's writes -------------------------------------------------------------------------------
def insert_row(database: AppDatabase, policy: DomainPolicy, record_id: str, clock: datetime, subject: str | None,
               blob: str | None = None) -> None:
    """One row of the domain's table as the app writes it, its clock column at `clock`."""
    values: dict = {"id": record_id, "email": subject}
    if policy.table == "quiz_responses":
        values.update(session_id=str(uuid.uuid4()), answers={"weight_kg": 80}, created_at=clock)
    elif policy.table == "magic_link_tokens":
        values.update(token_hash=uuid.uuid4().hex, created_at=clock, expires_at=clock)
    elif policy.table == "meal_plans":
        values.update(payment_id=f"pay_{record_id[:8]}", pdf_blob_key=blob, created_at=clock)
    else:
        values.update(reason="chargeback", created_at=clock)
    values[policy.clock_column] = clock
    with database.engine.begin() as connection:
        connection.execute(sa.insert(database.app_table(policy)), values)


def move_clock(database: AppDatabase, policy: DomainPolicy, record_id: str, clock: datetime) -> None:
    """The app changes a row's clock (a token extended, a purchase re-dated)."""
    table = database.app_table(policy)
    with database.engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.id == record_id).values({policy.clock_column: clock}))


def put_objects(blob_store: BlobStore, keys) -> None:
    for key in keys:
        blob_store.put(key, PDF + key.encode())


# -- the hold command ---------------------------------------------------------------------------------
def retention(*args: str) -> tuple[int, str]:
    """`retention ARGS…` in this process: (exit code, what it printed)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = retention_cli(list(args))
        except SystemExit as exc:  # argparse refusing the arguments
            code = exc.code
    return int(code or 0), out.getvalue() + err.getvalue()


def hold(verb: str, domain: str, spelling: str) -> bool:
    """`retention hold add|release --domain D --record-id SPELLING`: whether it was accepted."""
    extra = ("--reason", HOLD_REASON) if verb == "add" else ()
    code, _ = retention("hold", verb, "--domain", domain, f"--record-id={spelling}", *extra)
    return code == 0


def held_records(domain: str) -> set[str]:
    """The records `retention hold list --domain D` reports as held (their ids read as uuids)."""
    code, printed = retention("hold", "list", "--domain", domain)
    assert code == 0, f"`retention hold list` failed: {printed}"
    held = set()
    for line in printed.splitlines()[1:]:
        columns = line.split()  # id, domain, record_id, reason, placed_at…: none of the first three has a space
        if len(columns) >= 3 and columns[1] == domain and (record := record_of(columns[2])):
            held.add(record)
    return held


class Holds:
    """The holds an operator placed and released through `retention hold`; what is held is what
    `retention hold list` reports, listed again only when asked after a change (each command
    takes a few hundred milliseconds)."""

    def __init__(self):
        self._listed: dict[str, set[str]] = {}

    def change(self, verb: str, domain: str, spelling: str) -> bool:
        self._listed.pop(domain, None)
        return hold(verb, domain, spelling)

    def of(self, domain: str) -> set[str]:
        if domain not in self._listed:
            self._listed[domain] = held_records(domain)
        return set(self._listed[domain])


# -- what is there ---------------------------------------------------------------------------------------
def present_ids(database: AppDatabase, policy: DomainPolicy) -> set[str]:
    table = database.app_table(policy)
    with database.engine.connect() as connection:
        return {str(rid) for rid in connection.execute(sa.select(table.c.id)).scalars()}


def observe(database: AppDatabase, policy: DomainPolicy, blob_store: BlobStore | None = None) -> Observed:
    """The domain's rows, the audit log (every domain's), the hot objects and the domain's open
    manual-queue items, now."""
    table = database.app_table(policy)
    clock = table.c[policy.clock_column]
    blob = table.c.pdf_blob_key if "pdf_blob_key" in table.c else sa.null()
    redacted = table.c.pdf_deleted_at.is_not(None) if "pdf_deleted_at" in table.c else sa.false()
    audit, queue = schema.audit_log, schema.manual_queue
    with database.engine.connect() as connection:
        present = {str(rid): {"clock": at, "subject": subject, "blob": key, "redacted": done}
                   for rid, at, subject, key, done in connection.execute(
                       sa.select(table.c.id, clock, table.c.email, blob, redacted))}
        entries = [dict(row._mapping) for row in connection.execute(sa.select(
            audit.c.domain, audit.c.record_id, audit.c.action, audit.c.run_id, audit.c.occurred_at,
            audit.c.deadline).order_by(audit.c.id))]
        queued: dict[str, set[str]] = {}
        for record_id, reason in connection.execute(sa.select(queue.c.record_id, queue.c.reason).where(
                queue.c.domain == policy.name, queue.c.status.in_(("open", "claimed")))):
            queued.setdefault(record_of(record_id) or record_id, set()).add(reason)
    objects = set(blob_store.keys()) if blob_store is not None else set()
    return Observed(present, entries, objects, queued)


def observe_all(database: AppDatabase, policies: dict[str, DomainPolicy], blob_store: BlobStore) -> dict[str, Observed]:
    """observe() of every domain."""
    return {name: observe(database, policy, blob_store if policy.blob_key_column else None)
            for name, policy in policies.items()}
