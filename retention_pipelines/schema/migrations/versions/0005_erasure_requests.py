"""Requests for erasure (GDPR Art. 17): one open request per address.

Revision ID: 0005
Revises: 0004

The table is the app's way in as much as ours: it may insert rows itself (an address, and the
database fills in received_at, a due_at 30 days on and the status `received`).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    due_in_30_days = sa.text("(now() + interval '30 days')") if op.get_bind().dialect.name == "postgresql" \
        else sa.text("(datetime('now', '+30 days'))")
    op.create_table(
        "gdpr_erasure_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        # The subject's address while the request is open; replaced by subject_hash when it completes.
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("subject_hash", sa.String(64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False, server_default=due_in_30_days),
        sa.Column("status", sa.String(20), nullable=False, server_default="received"),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("extension_reason", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('received', 'completed', 'partially_blocked')",
                           name="gdpr_erasure_requests_status"),
        sa.CheckConstraint("email IS NOT NULL OR status <> 'received'", name="gdpr_erasure_requests_open_has_email"),
    )
    op.create_index("gdpr_erasure_requests_one_open", "gdpr_erasure_requests", [sa.text("lower(email)")], unique=True,
                    postgresql_where=sa.text("status = 'received'"), sqlite_where=sa.text("status = 'received'"))


def downgrade() -> None:
    op.drop_table("gdpr_erasure_requests")
