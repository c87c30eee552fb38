"""SLA breaches: one open breach per domain and kind.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_sla_breaches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("domain", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        # Seconds for retention_lag and run_duration; a count of failures for run_failures.
        sa.Column("observed", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
    )
    open_only = sa.text("closed_at IS NULL")
    op.create_index("retention_sla_breaches_one_open", "retention_sla_breaches", ["domain", "kind"], unique=True,
                    postgresql_where=open_only, sqlite_where=open_only)


def downgrade() -> None:
    op.drop_table("retention_sla_breaches")
