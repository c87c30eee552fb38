"""The audit log and legal holds.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # SQLite's CURRENT_TIMESTAMP stops at the second; occurred_at is compared with deadlines.
    now = sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now'))") if sqlite else sa.func.now()
    op.create_table(
        "retention_audit_log",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("domain", sa.String(63), nullable=False),
        sa.Column("record_id", sa.Text(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("policy_version", sa.String(96), nullable=False),
        sa.Column("archive_uri", sa.Text(), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
    )
    if not sqlite:
        # Cheap to keep up on an append-only log; a run's entries are read by time range + run_id.
        op.create_index("retention_audit_log_occurred_brin", "retention_audit_log", ["occurred_at"],
                        postgresql_using="brin")
    else:
        op.create_index("retention_audit_log_run_idx", "retention_audit_log", ["run_id"])
    # Deletions are made once by DELETE … RETURNING itself; only the legal-hold reports, which
    # leave the row in place, need the database to refuse a second entry (see tables.py).
    held_only = sa.text("action = 'skipped_legal_hold'")
    op.create_index("retention_audit_log_held_once", "retention_audit_log", ["domain", "record_id"], unique=True,
                    postgresql_where=held_only, sqlite_where=held_only)
    op.create_table(
        "retention_legal_holds",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("domain", sa.String(63), nullable=False),
        sa.Column("record_id", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("retention_legal_holds_record_idx", "retention_legal_holds", ["domain", "record_id"])


def downgrade() -> None:
    op.drop_table("retention_legal_holds")
    op.drop_table("retention_audit_log")
