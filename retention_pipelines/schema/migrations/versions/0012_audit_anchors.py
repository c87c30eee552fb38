"""A record of every audit anchor written: its key in the archive store and the SHA-256 of its bytes.

Revision ID: 0012
Revises: 0011

Anchors are written once each and never over; the record lets `retention audit verify` report an
anchor gone from the store or replaced there, and one the store holds that was never written.
Anchors written before this revision (one per day, `audit_anchors/YYYY/MM/DD.json`) have no
record: the verifier still reads them and checks the chains against them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_audit_anchors",
        sa.Column("object_key", sa.String(255), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("retention_audit_anchors")
