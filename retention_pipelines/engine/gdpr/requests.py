"""Requests for erasure (GDPR Art. 17): received, due within a month (Art. 12(3)), possibly
extended with a reason, completed.

A request holds the subject's e-mail address only while it is open: completing it replaces the
address by a keyed hash (HMAC-SHA256 under a secret key), so that the record of the request stays
(when it came, when it was due, when and how it ended) and a repeat request from the same address
can be recognised, but the address itself is gone. Addresses are compared only as
`normalise_address` (engine/identity/subjects.py) makes them. Nothing here logs, prints or raises with an
address in it.

The outcome is kept as JSON: the summary people read, and what a verifying run found left of the
subject by policy (domains, record ids, until when), from which a partially blocked request is
checked again and completed once those records have gone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta

import sqlalchemy as sa

from retention_pipelines.engine.archive import keys
from retention_pipelines.engine.identity.subjects import normalise_address
from retention_pipelines.redaction import EMAIL
from retention_pipelines.schema import erasure_requests
from retention_pipelines.stores import AppDatabase

RECEIVED, COMPLETED, PARTIALLY_BLOCKED = "received", "completed", "partially_blocked"
# Art. 12(3): the month may be extended "by two further months where necessary".
MAX_EXTENSION_DAYS = 60
# Art. 12(3): one month, extended by two further months at most: no deadline beyond 90 days of receipt.
MAX_TOTAL_DAYS = 90
OPEN = (RECEIVED,)
# One address: something@something.tld, no spaces, no second @, at most 254 characters (RFC 5321).
ADDRESS = re.compile(r"^[^\s@]{1,64}@[^\s@]+\.[^\s@]{2,}$")
KEPT_BY_POLICY = "kept until deadline by policy"


class ErasureRefused(ValueError):
    """A request that cannot be taken or changed; the message never contains the address."""


class AlreadyComplete(ErasureRefused):
    """The request was completed (by another run, at the same moment)."""


@dataclass(frozen=True)
class KeptByPolicy:
    """Records of the subject a domain keeps until their deadline, even on erasure (its policy's
    `on_erasure: keep_until_deadline`): ids only, and until when the last of them is kept."""

    domain: str
    record_ids: tuple[str, ...]
    until: datetime
    reason: str  # the policy's on_erasure_reason

    def summary(self) -> str:
        return (f"{self.domain}: {len(self.record_ids)} {KEPT_BY_POLICY} (until {self.until:%Y-%m-%d %H:%M} UTC: "
                f"{self.reason})")


@dataclass(frozen=True)
class Outcome:
    """How a request ended, as its `outcome` column keeps it (JSON). `verified`: written by an
    erasure run that looked in every domain for what is left of the subject (SubjectErasure), so
    that a partially blocked request can be checked again by its hash. A request closed before the
    outcome was JSON reads back as its text alone, not verified: its hash may be of the older
    normalisation, which no scan compares with."""

    summary: str
    kept_by_policy: tuple[KeptByPolicy, ...] = ()
    # When a partially blocked request is checked again (the last kept record's deadline); None:
    # only when someone runs it again.
    recheck_after: datetime | None = None
    completed_on_recheck_at: datetime | None = None  # a partially blocked request found complete later
    verified: bool = False

    def text(self) -> str:
        return json.dumps(asdict(self), default=lambda value: value.isoformat(), sort_keys=True)

    @classmethod
    def read(cls, stored: str | None) -> Outcome | None:
        if stored is None:
            return None
        try:
            data = json.loads(stored)
        except ValueError:
            data = None
        if not isinstance(data, dict) or "summary" not in data:
            return cls(stored, verified=False)
        def moment(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value)

        return cls(data["summary"], tuple(KeptByPolicy(k["domain"], tuple(k["record_ids"]), moment(k["until"]),
                                                       k["reason"]) for k in data.get("kept_by_policy", ())),
                   moment(data.get("recheck_after")), moment(data.get("completed_on_recheck_at")),
                   bool(data.get("verified")))


@dataclass(frozen=True)
class ErasureRequest:
    id: int
    received_at: datetime
    due_at: datetime
    status: str
    completed_at: datetime | None
    extension_reason: str | None
    outcome: str | None  # the summary of how it ended
    subject_hash: str | None = None  # once complete: the keyed hash of the address (never the address)
    details: Outcome | None = field(default=None, compare=False)  # the whole outcome

    def past_due(self, now: datetime) -> bool:
        return self.status in OPEN and self.due_at <= now

    def days_left(self, now: datetime) -> float:
        return round((self.due_at - now).total_seconds() / 86400, 1)

    @property
    def kept_by_policy(self) -> tuple[KeptByPolicy, ...]:
        return self.details.kept_by_policy if self.details else ()

    @property
    def recheckable(self) -> bool:
        """Partially blocked by a run that verified what is left: a rerun checks it again by hash."""
        return self.status == PARTIALLY_BLOCKED and self.details is not None and self.details.verified

    def recheck_due(self, now: datetime) -> bool:
        return self.recheckable and self.details.recheck_after is not None and self.details.recheck_after <= now


def normalized(address: str) -> str:
    """The address as every comparison sees it (`normalise_address`), refused unless it is one
    address."""
    address = normalise_address(address or "")
    if len(address) > 254 or not ADDRESS.match(address):
        raise ErasureRefused("not an e-mail address: give exactly one address")
    return address


def subject_hash(address: str, key: bytes) -> str:
    """The keyed hash that replaces an address once its request is complete: the same that names
    the subject's data key (engine/archive/keys.py)."""
    return keys.subject_hash(normalized(address), key)


class ErasureRequests:
    """The requests in the app database (gdpr_erasure_requests); the app may insert rows too."""

    def __init__(self, database: AppDatabase, hash_key: bytes | None = None,
                 due_within: timedelta = timedelta(days=30)):
        self.database, self.hash_key, self.due_within = database, hash_key, due_within

    def request(self, address: str) -> ErasureRequest:
        """A new request, due `due_within` after it is received (the database's now). A second
        open request for the same subject is refused: the first one covers it."""
        address = normalized(address)
        now = self.database.now()
        duplicate = ErasureRefused("an open erasure request for this address exists already: "
                                   "see `retention erasure status`")
        try:
            with self.database.begin() as connection:
                # Compared here, not in SQL: the app inserts addresses as it got them. Open requests
                # are few; the unique index on lower(email) still keeps two runs of this from
                # inserting the same normalised address at one moment.
                stored = connection.execute(sa.select(erasure_requests.c.email).where(
                    erasure_requests.c.status.in_(OPEN))).scalars()
                if any(normalise_address(other) == address for other in stored if other is not None):
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
        latest = request.received_at + timedelta(days=MAX_TOTAL_DAYS)
        if request.due_at + by > latest:
            room = max((latest - request.due_at).days, 0)
            raise ErasureRefused(f"erasure request {request_id} would then be due more than {MAX_TOTAL_DAYS} "
                                 "days after "
                                 f"it was received (GDPR Art. 12(3): three months at most); it can be extended by "
                                 f"{room} days at most")
        with self.database.begin() as connection:
            connection.execute(sa.update(erasure_requests).where(erasure_requests.c.id == request_id).values(
                due_at=self._bind(request.due_at + by), extension_reason=reason.strip()))
        return self.get(request_id)

    def complete(self, request_id: int, outcome: str | Outcome, partially_blocked: bool = False,
                 within: Callable[[sa.Connection], None] | None = None) -> ErasureRequest:
        """The request done: its address replaced by the keyed hash, its outcome recorded; `within`
        does its part in the same transaction (the erasure run destroys the subject's data key). A
        partially blocked request is completed again by a run that checked it again (`recheckable`):
        it keeps the time it was first answered, and the outcome says when it became complete."""
        if not self.hash_key:
            raise ErasureRefused("completing a request needs the hash key (RETENTION_ERASURE_HASH_KEY)")
        if isinstance(outcome, str):
            outcome = Outcome(outcome)
        with self.database.begin() as connection:
            row = connection.execute(sa.select(
                erasure_requests.c.email, erasure_requests.c.status, erasure_requests.c.subject_hash,
                erasure_requests.c.outcome, erasure_requests.c.completed_at).where(
                erasure_requests.c.id == request_id).with_for_update()).first()
            if row is None:
                raise ErasureRefused(f"no erasure request {request_id}")
            stored = Outcome.read(row.outcome)
            if not (row.status in OPEN or row.status == PARTIALLY_BLOCKED and stored is not None and stored.verified):
                raise AlreadyComplete(f"erasure request {request_id} is {row.status} already")
            if within is not None:
                within(connection)
            now = self.database.now()
            if row.status == PARTIALLY_BLOCKED and not partially_blocked:
                # What was kept stays on record: the months it was partially blocked read the same later.
                outcome = replace(outcome, completed_on_recheck_at=now,
                                  kept_by_policy=outcome.kept_by_policy or stored.kept_by_policy)
            connection.execute(sa.update(erasure_requests).where(erasure_requests.c.id == request_id).values(
                email=None,
                subject_hash=row.subject_hash if row.email is None else subject_hash(row.email, self.hash_key),
                outcome=outcome.text(), status=PARTIALLY_BLOCKED if partially_blocked else COMPLETED,
                completed_at=self._bind(self.database.read_time(row.completed_at) or now)))
        return self.get(request_id)

    def recheck_soon(self, request_id: int) -> None:
        """A record that kept a partially blocked request from completing is gone (its hold released
        and the record erased): the request is checked again at the next look of the sensor."""
        with self.database.begin() as connection:
            row = connection.execute(sa.select(erasure_requests.c.status, erasure_requests.c.outcome).where(
                erasure_requests.c.id == request_id).with_for_update()).first()
            stored = Outcome.read(row.outcome) if row is not None else None
            if row is None or row.status != PARTIALLY_BLOCKED or stored is None or not stored.verified:
                return
            connection.execute(sa.update(erasure_requests).where(erasure_requests.c.id == request_id).values(
                outcome=replace(stored, recheck_after=self.database.now()).text()))

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
        columns = [erasure_requests.c[name] for name in ErasureRequest.__dataclass_fields__ if name != "details"]
        query = sa.select(*columns).order_by(erasure_requests.c.due_at, erasure_requests.c.id)
        if request_id is not None:
            query = query.where(erasure_requests.c.id == request_id)
        with self.database.connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(query)]
        for row in rows:
            for column in ("received_at", "due_at", "completed_at"):
                if row[column] is not None:
                    row[column] = self.database.read_time(row[column])
            row["details"] = Outcome.read(row["outcome"])
            row["outcome"] = row["details"].summary if row["details"] else None
        return [ErasureRequest(**row) for row in rows]

    def past_due(self) -> list[ErasureRequest]:
        """Open requests whose deadline has passed by the database's now."""
        now = self.database.now()
        return [request for request in self.list() if request.past_due(now)]

    def _bind(self, moment: datetime) -> datetime:
        return self.database.bind_time(moment)
