"""The manual-resolution queue, and who did what in the audit log.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

REASONS = ("blob_delete_failed", "archive_verification_failed", "delete_blocked", "legal_hold_conflict", "run_failed")
STATUSES = ("open", "claimed", "resolved", "dismissed")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    # Who made a change a person made (queue operators), and what changed (from → to).
    op.add_column("retention_audit_log", sa.Column("actor", sa.String(128), nullable=True))
    op.add_column("retention_audit_log", sa.Column("detail", sa.Text(), nullable=True))
    op.create_table(
        "retention_manual_queue",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("domain", sa.String(63), nullable=False),
        sa.Column("record_id", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("resolved_by", sa.String(128), nullable=True),
        sa.Column("resolution_note", sa.Text(), nullable=True),
        sa.Column("escalation_level", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_announced", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.CheckConstraint(_one_of("reason", REASONS), name="retention_manual_queue_reason"),
        sa.CheckConstraint(_one_of("status", STATUSES), name="retention_manual_queue_status"),
    )
    active = sa.text("status IN ('open', 'claimed')")
    op.create_index("retention_manual_queue_one_active", "retention_manual_queue", ["domain", "record_id", "reason"],
                    unique=True, postgresql_where=active, sqlite_where=active)
    op.create_index("retention_manual_queue_due", "retention_manual_queue", ["status", "due_at"])


def downgrade() -> None:
    op.drop_table("retention_manual_queue")
    with op.batch_alter_table("retention_audit_log") as batch:
        batch.drop_column("detail")
        batch.drop_column("actor")
