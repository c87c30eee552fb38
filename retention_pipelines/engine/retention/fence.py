"""A domain's fencing token: what keeps a run that lost its lock from committing another batch.

The lock (Redis or a file) is checked inside each batch transaction, but a run stopped between
that check and its commit would commit after another run took the lock. So the run that acts on a
domain under a lock first raises the domain's token (retention_domain_fences), and each of its
batch transactions reads the token FOR SHARE just before committing: another token means another
run took over, and the batch rolls back. Raising the token waits for any batch that still holds
the row, so the new holder begins only once the old holder's last batch is over.
"""

from __future__ import annotations

import sqlalchemy as sa

from retention_pipelines.schema import domain_fences
from retention_pipelines.stores import AppDatabase, LockLost


class DomainFence:
    def __init__(self, domain: str, token: int):
        self.domain, self.token = domain, token

    @classmethod
    def take(cls, database: AppDatabase, domain: str) -> DomainFence:
        """Raise the domain's token (in its own transaction) and hold the new value."""
        with database.begin() as connection:
            insert = database.dialect.upsert(domain_fences).values(domain=domain, token=1)
            token = connection.execute(insert.on_conflict_do_update(
                index_elements=["domain"], set_={"token": domain_fences.c.token + 1}).returning(domain_fences.c.token)
            ).scalar_one()
        return cls(domain, int(token))

    def check(self, connection: sa.Connection) -> None:
        """In a batch's transaction, last before its commit: LockLost unless the token is still ours."""
        current = connection.execute(sa.select(domain_fences.c.token).where(
            domain_fences.c.domain == self.domain).with_for_update(read=True)).scalar()
        if current != self.token:
            raise LockLost(f"domain {self.domain}: its lock was taken over by another run (fencing token "
                           f"{current}, this run's {self.token}); this batch rolled back, stopping")
