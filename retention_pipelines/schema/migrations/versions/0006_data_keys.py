"""Data keys of the encrypted archives (crypto-shredding, engine/archive/keys.py).

Revision ID: 0006
Revises: 0005

A subject's archived rows are encrypted with the subject's own data key; rows with no subject with
a key of their batch. Each key is kept only wrapped (encrypted) by the master key from
configuration. Erasing a subject destroys their key (wrapped_key set to NULL), which makes every
archived copy of their rows unreadable, wherever it is and however long the archive is kept.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_data_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        # The id an archive names its key by (a random hex string: it says nothing of the subject).
        sa.Column("key_id", sa.String(32), nullable=False, unique=True),
        # The keyed hash (HMAC) of the subject's address, for a subject's key; NULL for a batch key.
        sa.Column("subject_hash", sa.String(64), nullable=True),
        # For a batch key: what the batch is (domain and a digest of its record ids), so that a
        # rerun over the same rows finds the same key and writes the same archive object.
        sa.Column("batch", sa.String(128), nullable=True, unique=True),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("(wrapped_key IS NULL) = (destroyed_at IS NOT NULL)", name="retention_data_keys_destroyed"),
        sa.CheckConstraint("(subject_hash IS NULL) <> (batch IS NULL)", name="retention_data_keys_owner"),
    )
    # One live key per subject: a subject erased and seen again later gets a new key.
    op.create_index("retention_data_keys_live_subject", "retention_data_keys", ["subject_hash"], unique=True,
                    postgresql_where=sa.text("destroyed_at IS NULL"), sqlite_where=sa.text("destroyed_at IS NULL"))


def downgrade() -> None:
    op.drop_table("retention_data_keys")
