"""Fencing tokens: a run that lost its lock cannot commit a batch once another run holds it.

Revision ID: 0009
Revises: 0008

A run checks its lock (Redis or a file) inside each batch transaction before it commits, but a run
stopped between that check and its commit (a long pause, a frozen VM) would commit one batch after
its lock expired and another run took it. The fence closes that window in the database itself:
the run that takes a domain's lock raises the domain's token before its first batch; each batch
reads the token FOR SHARE and stops unless it is its own. Raising the token waits for any batch
still holding the row, so no batch of the old holder can commit after the new holder begins.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_domain_fences",
        sa.Column("domain", sa.String(63), primary_key=True),
        sa.Column("token", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("retention_domain_fences")
