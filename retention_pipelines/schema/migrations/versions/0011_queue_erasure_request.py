"""A queue item says which erasure request it belongs to, in a column of its own.

Revision ID: 0011
Revises: 0010

An item an erasure could not finish is retried by erasing its record (whatever its deadline),
not by a retention run. Which items those are was read from the item's free-text detail
("erasure request N: …"); it is now the column `erasure_request_id`, filled by the erasure, and
the items already queued get it from their detail once, here.
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ERASURE_DETAIL = re.compile(r"^erasure request (\d+): ")


def upgrade() -> None:
    op.add_column("retention_manual_queue", sa.Column("erasure_request_id", sa.BigInteger(), nullable=True))
    connection = op.get_bind()
    queue = sa.table("retention_manual_queue", sa.column("id"), sa.column("detail"), sa.column("erasure_request_id"))
    rows = connection.execute(sa.select(queue.c.id, queue.c.detail).where(queue.c.detail.like("erasure request %")))
    for item_id, detail in rows.all():
        match = ERASURE_DETAIL.match(detail)
        if match:
            connection.execute(sa.update(queue).where(queue.c.id == item_id).values(
                erasure_request_id=int(match.group(1))))


def downgrade() -> None:
    op.drop_column("retention_manual_queue", "erasure_request_id")
