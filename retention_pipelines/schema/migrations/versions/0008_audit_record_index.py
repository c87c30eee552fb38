"""The evidence index: which audit rows are about which record (engine/audit/evidence.py).

Revision ID: 0008
Revises: 0007

An index on retention_audit_log.record_id would answer `retention audit show` in a millisecond, but
every batch transaction of every run would maintain it: record ids are random (uuids), so each
audit row would dirty a random index page, and a run would lose a third of its speed
(benchmarks/bench_audit_lookup.py). This table is that index, filled after the fact by the seal job
(every 15 minutes) with one INSERT … SELECT per chunk of the log, in id order; a lookup reads it
and the short tail of the log written since (`indexed_through`).
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_audit_record_index",
        sa.Column("record_id", sa.Text(), nullable=False),
        sa.Column("audit_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("record_id", "audit_id", name="retention_audit_record_index_pkey"),
    )
    op.create_table(
        "retention_audit_record_index_state",
        sa.Column("id", sa.Integer(), primary_key=True),
        # Every audit row with an id at or below this one is in the index.
        sa.Column("indexed_through", sa.BigInteger(), nullable=False, server_default="0"),
        sa.CheckConstraint("id = 1", name="retention_audit_record_index_state_one_row"),
    )
    op.execute("INSERT INTO retention_audit_record_index_state (id, indexed_through) VALUES (1, 0)")


def downgrade() -> None:
    op.drop_table("retention_audit_record_index_state")
    op.drop_table("retention_audit_record_index")
