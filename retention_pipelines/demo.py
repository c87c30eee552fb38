"""The demo app database: the app's tables (our copy of its schema) filled with synthetic rows."""

from __future__ import annotations

import random
import re
import uuid
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

import sqlalchemy as sa

from retention_pipelines.stores import AppDatabase


def app_schema_sql(dialect: str) -> list[str]:
    """The app's CREATE statements, translated for SQLite where needed (uuid, jsonb, now()). The
    subject keys' indexes are left out there: the demo's tables are small, and SQLAlchemy cannot
    reflect an index on an expression from SQLite (it warns on every reflection of the table)."""
    sql = (resources.files("retention_pipelines") / "app_schema.sql").read_text()
    sql = re.sub(r"--[^\n]*", "", sql)
    if dialect == "sqlite":
        for pattern, replacement in ((r"\buuid\b", "CHAR(36)"), (r"\bjsonb\b", "JSON"),
                                     (r"\btimestamptz\b", "TIMESTAMP"),
                                     (r"DEFAULT now\(\)", "DEFAULT CURRENT_TIMESTAMP")):
            sql = re.sub(pattern, replacement, sql)
    statements = [statement.strip() for statement in sql.split(";") if statement.strip()]
    if dialect == "sqlite":
        statements = [statement for statement in statements if "_subject_key_idx ON " not in statement]
    return statements


def create_app_tables(database: AppDatabase) -> None:
    existing = set(sa.inspect(database.engine).get_table_names())
    with database.engine.begin() as connection:
        for statement in app_schema_sql(database.engine.dialect.name):
            match = re.match(r"CREATE (?:TABLE|INDEX) (\w+)(?: ON (\w+))?", statement)
            table = match.group(2) or match.group(1)
            if table not in existing:
                connection.exec_driver_sql(statement)


def seed(database: AppDatabase, rows_per_table: int = 500, seed_value: int = 7,
         blob_folder: Path | None = None) -> dict[str, int]:
    """Rows of all ages (up to 200 days old, some in the future for tokens), synthetic addresses,
    and a small PDF in blob_folder for each meal plan."""
    rng = random.Random(seed_value)
    now = database.now()
    meta = sa.MetaData()
    tables = {name: sa.Table(name, meta, autoload_with=database.engine)
              for name in ("quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist")}

    def when(max_days: float) -> datetime:
        return database.bind_time(now - timedelta(days=rng.uniform(0, max_days)))

    def address(i: int) -> str:
        return f"demo-user-{i}@example.invalid"

    def uid() -> object:
        value = uuid.UUID(int=rng.getrandbits(128), version=4)
        return str(value) if database.is_sqlite else value

    batches = {
        "quiz_responses": [{"id": uid(), "session_id": uid(), "email": address(i) if i % 3 else None,
                            "answers": {"weight_kg": rng.randint(50, 120), "goal": "lose"},
                            "created_at": when(3)} for i in range(rows_per_table)],
        "magic_link_tokens": [{"id": uid(), "email": address(i), "token_hash": uuid.uuid4().hex + str(i),
                               "created_at": when(2),
                               "expires_at": database.bind_time(now + timedelta(hours=rng.uniform(-48, 2)))}
                              for i in range(rows_per_table)],
        "meal_plans": [{"id": uid(), "payment_id": f"pay_{i}", "email": address(i),
                        "pdf_blob_key": f"plans/{i}.pdf", "created_at": when(200)} for i in range(rows_per_table)],
        "email_blacklist": [{"id": uid(), "email": address(i),
                             "reason": rng.choice(["chargeback", "refund_abuse", "manual"]),
                             "created_at": when(200)} for i in range(rows_per_table)],
    }
    if blob_folder is not None:
        for row in batches["meal_plans"]:
            path = blob_folder / row["pdf_blob_key"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"%PDF-1.4\n% demo meal plan " + row["payment_id"].encode() + b"\n%%EOF\n")
    with database.engine.begin() as connection:
        for name, rows in batches.items():
            connection.execute(sa.insert(tables[name]), rows)
    return {name: len(rows) for name, rows in batches.items()}
