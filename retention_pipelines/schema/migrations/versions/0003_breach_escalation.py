"""SLA breaches: the escalation level an open breach has reached (1 when it opens).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("retention_sla_breaches",
                  sa.Column("escalation_level", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("retention_sla_breaches") as batch:
        batch.drop_column("escalation_level")
