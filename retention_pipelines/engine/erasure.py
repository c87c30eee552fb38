"""Requests for erasure (GDPR Art. 17): received, due within a month (Art. 12(3)), possibly
extended with a reason, completed.

A request holds the subject's e-mail address only while it is open: completing it replaces the
address by a keyed hash (HMAC-SHA256 under a secret key), so that the record of the request stays
(when it came, when it was due, when and how it ended) and a repeat request from the same address
can be recognised, but the address itself is gone. Nothing here logs, prints or raises with an
address in it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from retention_pipelines.engine import keys
from retention_pipelines.redaction import EMAIL
from retention_pipelines.schema import erasure_requests
from retention_pipelines.stores import AppDatabase

RECEIVED, COMPLETED, PARTIALLY_BLOCKED = "received", "completed", "partially_blocked"
# Art. 12(3): the month may be extended "by two further months where necessary".
MAX_EXTENSION_DAYS = 60
OPEN = (RECEIVED,)
# One address: something@something.tld, no spaces, no second @, at most 254 characters (RFC 5321).
ADDRESS = re.compile(r"^[^\s@]{1,64}@[^\s@]+\.[^\s@]{2,}$")


class ErasureRefused(ValueError):
    """A request that cannot be taken or changed; the message never contains the address."""


class AlreadyComplete(ErasureRefused):
    """The request was completed (by another run, at the same moment)."""


@dataclass(frozen=True)
class ErasureRequest:
    id: int
    received_at: datetime
    due_at: datetime
    status: str
    completed_at: datetime | None
    extension_reason: str | None
    outcome: str | None
    subject_hash: str | None = None  # once complete: the keyed hash of the address (never the address)

    def past_due(self, now: datetime) -> bool:
        return self.status in OPEN and self.due_at <= now

    def days_left(self, now: datetime) -> float:
        return round((self.due_at - now).total_seconds() / 86400, 1)


def normalized(address: str) -> str:
    address = (address or "").strip().lower()
    if len(address) > 254 or not ADDRESS.match(address):
        raise ErasureRefused("not an e-mail address: give exactly one address")
    return address


def subject_hash(address: str, key: bytes) -> str:
    """The keyed hash that replaces an address once its request is complete: the same that names
    the subject's data key (engine/keys.py)."""
    return keys.subject_hash(normalized(address), key)


class ErasureRequests:
    """The requests in the app database (gdpr_erasure_requests); the app may insert rows too."""

    def __init__(self, database: AppDatabase, hash_key: bytes | None = None, due_within: timedelta = timedelta(days=30)):
        self.database, self.hash_key, self.due_within = database, hash_key, due_within

    def request(self, address: str) -> ErasureRequest:
        """A new request, due `due_within` after it is received (the database's now). A second
        open request for the same address is refused: the first one covers it."""
        address = normalized(address)
        now = self.database.now()
        duplicate = ErasureRefused("an open erasure request for this address exists already: "
                                   "see `retention erasure status`")
        try:
            with self.database.begin() as connection:
                if connection.execute(sa.select(erasure_requests.c.id).where(
                        sa.func.lower(erasure_requests.c.email) == address,
                        erasure_requests.c.status.in_(OPEN))).first() is not None:
                    raise duplicate
                inserted = connection.execute(sa.insert(erasure_requests).values(
                    email=address, received_at=self._bind(now), due_at=self._bind(now + self.due_within),
                    status=RECEIVED).returning(erasure_requests.c.id)).scalar_one()
        except sa.exc.IntegrityError:  # the same address requested at the same moment: the index keeps one
            raise duplicate from None
        return self.get(inserted)

    def extend(self, request_id: int, by: timedelta, reason: str) -> ErasureRequest:
        """Art. 12(3): up to two further months, with the reason recorded."""
        if not (reason or "").strip():
            raise ErasureRefused("an extension needs its reason (--reason)")
        if EMAIL.search(reason):
            raise ErasureRefused("the reason must not contain personal data: remove the e-mail address")
        if not timedelta(0) < by <= timedelta(days=MAX_EXTENSION_DAYS):
            raise ErasureRefused(f"an extension is between 1 and {MAX_EXTENSION_DAYS} days (GDPR Art. 12(3): two "
                                 "further months at most)")
        request = self.get(request_id)
        if request.status not in OPEN:
            raise ErasureRefused(f"erasure request {request_id} is {request.status}: it cannot be extended")
        if request.extension_reason:
            raise ErasureRefused(f"erasure request {request_id} was extended already")
        with self.database.begin() as connection:
            connection.execute(sa.update(erasure_requests).where(erasure_requests.c.id == request_id).values(
                due_at=self._bind(request.due_at + by), extension_reason=reason.strip()))
        return self.get(request_id)

    def complete(self, request_id: int, outcome: str, partially_blocked: bool = False,
                 within: Callable[[sa.Connection], None] | None = None) -> ErasureRequest:
        """The request done: its address replaced by the keyed hash, its outcome recorded; `within`
        does its part in the same transaction (the erasure run destroys the subject's data key)."""
        if not self.hash_key:
            raise ErasureRefused("completing a request needs the hash key (RETENTION_ERASURE_HASH_KEY)")
        with self.database.begin() as connection:
            row = connection.execute(sa.select(erasure_requests.c.email, erasure_requests.c.status).where(
                erasure_requests.c.id == request_id).with_for_update()).first()
            if row is None:
                raise ErasureRefused(f"no erasure request {request_id}")
            if row.status not in OPEN:
                raise AlreadyComplete(f"erasure request {request_id} is {row.status} already")
            if within is not None:
                within(connection)
            connection.execute(sa.update(erasure_requests).where(erasure_requests.c.id == request_id).values(
                email=None, subject_hash=subject_hash(row.email, self.hash_key), outcome=outcome,
                status=PARTIALLY_BLOCKED if partially_blocked else COMPLETED,
                completed_at=self._bind(self.database.now())))
        return self.get(request_id)

    def address(self, request_id: int) -> str:
        """The address of an open request, for the erasure run alone."""
        with self.database.connect() as connection:
            row = connection.execute(sa.select(erasure_requests.c.email, erasure_requests.c.status).where(
                erasure_requests.c.id == request_id)).first()
        if row is None:
            raise ErasureRefused(f"no erasure request {request_id}")
        if row.status not in OPEN or row.email is None:
            raise AlreadyComplete(f"erasure request {request_id} is {row.status}: its address is gone")
        return normalized(row.email)

    def get(self, request_id: int) -> ErasureRequest:
        found = self.list(request_id)
        if not found:
            raise ErasureRefused(f"no erasure request {request_id}")
        return found[0]

    def list(self, request_id: int | None = None) -> list[ErasureRequest]:
        columns = [erasure_requests.c[name] for name in ErasureRequest.__dataclass_fields__]
        query = sa.select(*columns).order_by(erasure_requests.c.due_at, erasure_requests.c.id)
        if request_id is not None:
            query = query.where(erasure_requests.c.id == request_id)
        with self.database.connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(query)]
        for row in rows:
            for column in ("received_at", "due_at", "completed_at"):
                if row[column] is not None:
                    row[column] = self.database.read_time(row[column])
        return [ErasureRequest(**row) for row in rows]

    def past_due(self) -> list[ErasureRequest]:
        """Open requests whose deadline has passed by the database's now."""
        now = self.database.now()
        return [request for request in self.list() if request.past_due(now)]

    def _bind(self, moment: datetime) -> datetime:
        return self.database.bind_time(moment)
