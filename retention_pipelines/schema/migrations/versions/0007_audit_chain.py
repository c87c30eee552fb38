"""The audit log's hash chains (engine/audit/seal.py): one chain per domain, sealed after the fact.

Revision ID: 0007
Revises: 0006

The audit log itself is left as it is: no column, no index, no trigger added, no row ever updated,
so the transactions that write audit rows write exactly what they wrote before. A sealer chains
each domain's audit rows in id order, row after row (row hash = sha256(previous row hash + the
row's content)), and stores them one block per sealed chunk: the chunk's row ids, the first 16
bytes of each row's hash, and the full hash before and after the chunk.
`retention_audit_chain_heads` keeps each chain's end and how far (by audit-row id) it is sealed.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_audit_chain",
        sa.Column("domain", sa.String(63), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),  # 1, 2, … within the domain
        sa.Column("first_seq", sa.BigInteger(), nullable=False),  # the chain position of its first row (from 1)
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("ids", sa.LargeBinary(), nullable=False),  # the rows' audit ids, 8 bytes big-endian each
        sa.Column("row_hashes", sa.LargeBinary(), nullable=False),  # each row's hash, its first 16 bytes
        sa.Column("prev_hash", sa.String(64), nullable=False),  # the chain's hash before the block (hex)
        sa.Column("last_hash", sa.String(64), nullable=False),  # the full hash of its last row (hex)
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("domain", "block", name="retention_audit_chain_pkey"),
    )
    op.create_table(
        "retention_audit_chain_heads",
        sa.Column("domain", sa.String(63), primary_key=True),
        sa.Column("last_block", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("last_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("last_id", sa.BigInteger(), nullable=True),
        sa.Column("last_hash", sa.String(64), nullable=False),
        # Every audit row of the domain with an id at or below this one is in the chain.
        sa.Column("sealed_through", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("retention_audit_chain_heads")
    op.drop_table("retention_audit_chain")
