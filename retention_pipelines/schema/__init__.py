"""The tables this project owns and the Alembic migrations that create them."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from retention_pipelines.schema.tables import (
    VERSION_TABLE,
    audit_anchors,
    audit_batches,
    audit_chain,
    audit_chain_heads,
    audit_held_once,
    audit_log,
    audit_record_index,
    audit_record_index_state,
    audit_records,
    data_keys,
    domain_fences,
    erasure_requests,
    legal_holds,
    manual_queue,
    metadata,
    sla_breaches,
)

MIGRATIONS = Path(__file__).parent / "migrations"

__all__ = ["SchemaBehindError", "audit_anchors", "audit_batches", "audit_chain", "audit_chain_heads", "audit_held_once",
           "audit_log", "audit_record_index", "audit_record_index_state", "audit_records", "data_keys",
           "domain_fences", "ensure_current", "erasure_requests", "legal_holds", "manual_queue", "metadata",
           "sla_breaches", "upgrade"]


class SchemaBehindError(Exception):
    """The database lacks migrations this code needs."""


def _config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()


def upgrade(engine: sa.Engine) -> tuple[str | None, str]:
    """Apply every missing migration; returns (revision before, revision after)."""
    before = current_revision(engine)
    with engine.begin() as connection:
        command.upgrade(_config(connection), "head")
    return before, head_revision()


def ensure_current(engine: sa.Engine) -> None:
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaBehindError(
            f"the retention tables are at migration {current or 'none'}, this code needs {head}: "
            "run `retention db upgrade` first"
        )
