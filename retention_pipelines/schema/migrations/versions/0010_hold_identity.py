"""Legal holds name their record in the key type's canonical text, and say who placed and released them.

Revision ID: 0010
Revises: 0009

A hold is compared with a row as the database writes the row's key as text (`id::text`). A hold
stored in another spelling the key type accepts (a uuid in upper case, without hyphens, in braces)
was counted as held but matched no row in the delete's own check. Every key of the app is a uuid,
so the holds already stored in a uuid spelling are rewritten in the canonical one (lower case,
hyphenated); `hold add` stores nothing else from now on.
"""

import re
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UUID_SPELLING = re.compile(r"^\s*\{?\s*[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                           r"[0-9a-fA-F]{12}\s*\}?\s*$")


def upgrade() -> None:
    op.add_column("retention_legal_holds", sa.Column("placed_by", sa.String(128), nullable=True))
    op.add_column("retention_legal_holds", sa.Column("released_by", sa.String(128), nullable=True))
    connection = op.get_bind()
    holds = sa.table("retention_legal_holds", sa.column("id"), sa.column("record_id"))
    for hold_id, record_id in connection.execute(sa.select(holds.c.id, holds.c.record_id)).all():
        if UUID_SPELLING.match(record_id):
            canonical = str(uuid.UUID(record_id.strip().strip("{}").strip()))
            if canonical != record_id:
                connection.execute(sa.update(holds).where(holds.c.id == hold_id).values(record_id=canonical))


def downgrade() -> None:
    op.drop_column("retention_legal_holds", "released_by")
    op.drop_column("retention_legal_holds", "placed_by")
