"""Verifying: every chain checked against the audit log and against the anchors.

`verify` reads the batches in id order and their record rows in batch order, two streams in one
snapshot, recomputes every batch's link (links.py) and names the first broken link of each domain:
a batch whose records or fields changed, records deleted or added, a batch deleted (positions
missing), a batch whose link does not follow its predecessor's, a chain shorter or longer than its
head, record rows that belong to no batch. Given the archive store, it checks the chain against
every anchor there too (anchor.py), which catches a chain recomputed wholesale in the database,
and the anchors against the record of those written (anchor_check.py), which catches an anchor
deleted, replaced or slipped in.
Anchors written before the log moved to batches are checked against the old chain's blocks, which
the migration verified and kept, and to whose last hash each migrated domain's first batch links.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa

from retention_pipelines.engine.audit.anchor import AnchoredHead, read_anchors
from retention_pipelines.engine.audit.anchor_check import anchor_problems
from retention_pipelines.engine.audit.links import FIELDS, GENESIS, python_link, utc_text
from retention_pipelines.schema import audit_chain, audit_chain_heads
from retention_pipelines.stores import AppDatabase, ArchiveStore, Dialect

FETCH_ROWS = 20_000  # rows per round trip of the verifier's server-side cursors
# Batches of a domain held back waiting for an earlier position: more than any number of writers
# linking at once, fewer than would fill memory when a position is missing for good.
REORDER_LIMIT = 1_000
PROBLEMS_KEPT = 100  # per domain; more are counted


@dataclass(frozen=True)
class BrokenLink:
    """One place where a chain does not hold. Ids and positions only: never a record's content."""

    domain: str
    kind: str
    message: str
    position: int | None = None
    audit_id: int | None = None  # the batch's id

    def as_metadata(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class DomainChain:
    domain: str
    positions: int = 0  # the head's last position
    rows_checked: int = 0  # record rows
    problems: int = 0
    first_broken: BrokenLink | None = None

    @property
    def intact(self) -> bool:
        return self.first_broken is None


@dataclass
class Verification:
    rows_checked: int = 0
    domains: list[DomainChain] = field(default_factory=list)
    broken: list[BrokenLink] = field(default_factory=list)  # the first broken link of each broken domain
    outside_chain: int = 0  # record rows of no batch: whose domain, no row says
    anchors_checked: int = 0
    seconds: float = 0.0

    @property
    def intact(self) -> bool:
        return not self.broken

    def as_status(self) -> dict:
        """What the compliance report shows of it."""
        return {"intact": self.intact, "rows_checked": self.rows_checked, "outside_chain": self.outside_chain,
                "first_broken": self.broken[0].message if self.broken else None}


@dataclass(frozen=True)
class _Checked:
    """A batch whose link was recomputed, waiting for its place in the chain."""

    seq: int
    id: int
    prev_link: str
    link: str
    problem: tuple[str, str] | None


class _DomainWalk:
    """One domain's chain, checked batch by batch in id order."""

    def __init__(self, domain: str, head, genesis: str, anchors: dict[int, list[AnchoredHead]],
                 old_ends: dict[int, str]):
        self.domain, self.head, self.anchors, self.old_ends = domain, head, anchors, old_ends
        self.chain = DomainChain(domain, positions=head.last_seq if head is not None else 0)
        self.found: list[tuple[float, int, BrokenLink]] = []
        self.seq, self.link, self.last_id = 0, genesis, None
        self.anchored: set[int] = set()
        self.waiting: dict[int, _Checked] = {}  # batches that came before a position ahead of them

    def problem(self, kind: str, message: str, position: int | None = None, audit_id: int | None = None) -> None:
        self.chain.problems += 1
        if len(self.found) < PROBLEMS_KEPT:
            key = position if position is not None else float("inf")
            self.found.append((key, self.chain.problems,
                               BrokenLink(self.domain, kind, f"domain {self.domain}, {message}", position, audit_id)))

    def batch(self, batch: dict, records: list[tuple[int, str, object]]) -> None:
        """A batch and its record rows, in batch id order. Ids are drawn before a batch is linked,
        so a domain's positions may come a little out of id order (two lanes of a run link in
        either order): a batch waits here until the positions before it have come."""
        seq, batch_id = batch["seq"], batch["id"]
        self.chain.rows_checked += len(records)
        problem = None
        if python_link(batch["prev_link"], batch, records) != batch["link"]:
            if len(records) < batch["records"]:
                problem = ("row_deleted", f"batch id {batch_id} (chain position {seq}): {batch['records']} "
                                          f"records were written, {len(records)} are left")
            elif len(records) > batch["records"]:
                problem = ("inserted", f"batch id {batch_id} (chain position {seq}): {batch['records']} records "
                                       f"were written, {len(records)} are there now")
            else:
                problem = ("content_changed", f"batch id {batch_id} (chain position {seq}): content changed")
        checked = _Checked(seq, batch_id, batch["prev_link"], batch["link"], problem)
        if seq <= self.seq or seq in self.waiting:
            self.problem("hash_broken", f"batch id {batch_id} claims chain position {seq}, which another batch "
                                        "holds", position=seq, audit_id=batch_id)
            return
        self.waiting[seq] = checked
        while self.seq + 1 in self.waiting:
            self._follow(self.waiting.pop(self.seq + 1))
        if len(self.waiting) > REORDER_LIMIT:  # a position is missing, not late: report it and go on
            self._follow(self.waiting.pop(min(self.waiting)))
            while self.seq + 1 in self.waiting:
                self._follow(self.waiting.pop(self.seq + 1))

    def _follow(self, batch: _Checked) -> None:
        """The next batch in position order."""
        seq, batch_id = batch.seq, batch.id
        if seq > self.seq + 1:
            self.problem("position_missing", f"chain positions {self.seq + 1}–{seq - 1} missing: positions jump "
                                             f"from {self.seq} to {seq}", position=self.seq + 1)
        if batch.prev_link != self.link:
            self.problem("hash_broken", f"batch id {batch_id} (chain position {seq}) does not follow its "
                                        "predecessor's link", position=seq, audit_id=batch_id)
        if batch.problem is not None:
            self.problem(*batch.problem, position=seq, audit_id=batch_id)
        for anchored in self.anchors.get(seq, ()):
            self.anchored.add(seq)
            if anchored.last_hash != batch.link:
                self.problem("anchor_mismatch", f"chain position {seq} (batch id {batch_id}) has another link than "
                                                f"anchor {anchored.key} recorded: the chain was rewritten",
                             position=seq, audit_id=batch_id)
        self.seq, self.link, self.last_id = seq, batch.link, batch_id

    def finish(self, old_anchors: dict[int, list[AnchoredHead]]) -> DomainChain:
        for seq in sorted(self.waiting):
            self._follow(self.waiting.pop(seq))
        head, end = self.head, self.seq
        if head is None:
            if end:
                self.problem("head_mismatch", f"a chain of {end} positions without a head", position=end)
        elif end < head.last_seq:
            self.problem("head_mismatch", f"the head says last position {head.last_seq} (batch id {head.last_id}) "
                                          f"but the chain ends at {end}: the last batches were deleted",
                         position=end + 1, audit_id=head.last_id)
        elif end > head.last_seq:
            self.problem("head_mismatch", f"chain positions after the head's last position {head.last_seq}",
                         position=head.last_seq + 1)
        elif head.last_hash != self.link or (end and head.last_id != self.last_id):
            self.problem("head_mismatch", f"the head's link or batch id differs from chain position {end}",
                         position=end, audit_id=head.last_id)
        for position in sorted(set(self.anchors) - self.anchored):
            for anchored in self.anchors[position]:
                self.problem("anchor_missing", f"anchor {anchored.key} recorded chain position {position} (batch "
                                               f"id {anchored.last_id}); the chain ends at {end}",
                             position=position, audit_id=anchored.last_id)
        for position, entries in sorted(old_anchors.items()):
            for anchored in entries:
                if self.old_ends.get(position) != anchored.last_hash:
                    self.problem("anchor_mismatch", f"anchor {anchored.key} recorded position {position} of the "
                                                    "chain before the log moved to batches; its blocks no longer "
                                                    "say so: they were rewritten", position=0)
        self.chain.first_broken = min(self.found)[2] if self.found else None
        return self.chain


def verify(database: AppDatabase, archive_store: ArchiveStore | None = None,
           domains: Iterable[str] | None = None) -> Verification:
    """Check every chain (or these domains') from its first position to its head against the audit
    log, and against the anchors in the archive store when one is given. Writes nothing. One pass
    over batches and records in one snapshot, streaming: memory holds one batch's records."""
    started = time.monotonic()
    only = sorted(set(domains)) if domains is not None else None
    digests: dict[str, str] = {}
    anchors, unreadable = read_anchors(archive_store, digests) if archive_store is not None else ({}, [])
    result = Verification(anchors_checked=sum(len(entries) for positions in anchors.values()
                                              for entries in positions.values()))
    dialect = database.dialect
    with database.connect() as connection:
        dialect.read_in_one_snapshot(connection)
        heads = {row.domain: row for row in connection.execute(sa.select(audit_chain_heads))}
        old_ends = _old_chain_ends(connection)
        walks: dict[str, _DomainWalk] = {}

        def walk_of(domain: str) -> _DomainWalk:
            if domain not in walks:
                ends = old_ends.get(domain, {})
                genesis = ends[max(ends)] if ends else GENESIS.hex()
                new = {p: [a for a in entries if not a.legacy] for p, entries in anchors.get(domain, {}).items()}
                walks[domain] = _DomainWalk(domain, heads.get(domain), genesis,
                                            {p: entries for p, entries in new.items() if entries}, ends)
            return walks[domain]

        for domain in sorted(set(heads) | set(anchors)):
            if only is None or domain in only:
                walk_of(domain)
        raw = connection.connection.dbapi_connection
        records = _records(dialect, raw, only)
        pending = next(records, None)
        orphans: set[int] = set()  # batch ids that record rows name and no batch has
        for batch in _batches(dialect, raw, only):
            while pending is not None and pending[0] < batch["id"]:
                result.outside_chain += 1
                orphans.add(pending[0])
                pending = next(records, None)
            rows = []
            while pending is not None and pending[0] == batch["id"]:
                rows.append((pending[1], pending[2], pending[3]))
                pending = next(records, None)
            walk_of(batch["domain"]).batch(batch, rows)
        while pending is not None:
            result.outside_chain += 1
            orphans.add(pending[0])
            pending = next(records, None)
        connection.rollback()
    for domain in sorted(walks):
        old_anchors = {p: [a for a in entries if a.legacy] for p, entries in anchors.get(domain, {}).items()}
        chain = walks[domain].finish({p: entries for p, entries in old_anchors.items() if entries})
        result.domains.append(chain)
        result.rows_checked += chain.rows_checked
        if chain.first_broken is not None:
            result.broken.append(chain.first_broken)
    if orphans:
        shown = ", ".join(str(batch_id) for batch_id in sorted(orphans)[:5])
        result.broken.append(BrokenLink("", "inserted", f"{result.outside_chain} record rows name batches that are "
                                                        f"not in any chain (batch ids {shown}"
                                                        f"{', …' if len(orphans) > 5 else ''})"))
    for key, why in unreadable:
        result.broken.append(BrokenLink("", "anchor_unreadable", f"anchor {key} cannot be read: {why}"))
    if archive_store is not None:
        result.broken += [BrokenLink("", problem.kind, problem.message)
                          for problem in anchor_problems(database, archive_store, digests)]
    result.seconds = time.monotonic() - started
    return result


def _old_chain_ends(connection: sa.Connection) -> dict[str, dict[int, str]]:
    """The chains from before the log moved to batches: each block's last position and hash, by domain."""
    rows = connection.execute(sa.select(audit_chain.c.domain, audit_chain.c.first_seq + audit_chain.c.rows - 1,
                                        audit_chain.c.last_hash))
    ends: dict[str, dict[int, str]] = {}
    for domain, position, last_hash in rows:
        ends.setdefault(domain, {})[int(position)] = last_hash
    return ends


def _in(dialect: Dialect, only: list[str] | None) -> tuple[str, dict]:
    if only is None:
        return "", {}
    return (f" WHERE b.domain IN ({', '.join(dialect.param(f'd{n}') for n in range(len(only)))})",
            {f"d{n}": name for n, name in enumerate(only)})


def _batches(dialect: Dialect, raw, only: list[str] | None) -> Iterator[dict]:
    where, params = _in(dialect, only)
    columns = ["id", *(name for name in FIELDS), "prev_link", "link"]
    select = ", ".join(dialect.utc_text("b.occurred_at") if name == "occurred_at" else f"b.{name}" for name in columns)
    cursor = dialect.server_cursor(raw, "audit_verify_batches", FETCH_ROWS)
    try:
        cursor.execute(f"SELECT {select} FROM retention_audit_batches b{where} ORDER BY b.id", params)
        for row in cursor:
            batch = dict(zip(columns, row, strict=True))
            batch["occurred_at"] = utc_text(batch["occurred_at"])
            yield batch
    finally:
        cursor.close()


def _records(dialect: Dialect, raw, only: list[str] | None) -> Iterator[tuple]:
    where, params = _in(dialect, only)
    join = " JOIN retention_audit_batches b ON b.id = r.batch_id" if only is not None else ""
    cursor = dialect.server_cursor(raw, "audit_verify_records", FETCH_ROWS)
    try:
        cursor.execute("SELECT r.batch_id, r.id, r.record_id, r.deadline "
                       f"FROM retention_audit_records r{join}{where} ORDER BY r.batch_id", params)
        yield from cursor
    finally:
        cursor.close()


__all__ = ["BrokenLink", "DomainChain", "Verification", "verify"]
