"""Verifying: every chain checked against the audit log and against the anchors.

`verify` reads the audit log once, in id order, streaming, recomputes every row's hash (links.py)
and names the first broken link of each domain: a row whose content changed, a row deleted, a row
inserted below the head, chain positions missing, a block whose hash does not follow its
predecessor, a chain shorter or longer than its head. Given the archive store, it checks the chain
against every anchor there too (anchor.py), which catches a chain recomputed wholesale in the
database, and the anchors against the record of those written (anchor_check.py), which catches an
anchor deleted, replaced or slipped in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa

from retention_pipelines.engine.audit.anchor import AnchoredHead, read_anchors
from retention_pipelines.engine.audit.anchor_check import anchor_problems
from retention_pipelines.engine.audit.links import (
    GENESIS,
    ROW_HASH_BYTES,
    content_reader,
    content_sql,
    link_hash,
    unpack_ids,
)
from retention_pipelines.schema import audit_chain_heads, audit_log
from retention_pipelines.stores import AppDatabase, ArchiveStore

FETCH_ROWS = 20_000  # rows per round trip of the verifier's server-side cursor
PROBLEMS_KEPT = 100  # per domain; more are counted


@dataclass(frozen=True)
class BrokenLink:
    """One place where a chain does not hold. Ids and positions only: never a record's content."""

    domain: str
    kind: str
    message: str
    position: int | None = None
    audit_id: int | None = None

    def as_metadata(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class DomainChain:
    domain: str
    positions: int = 0  # the head's last position
    rows_checked: int = 0
    unsealed: int = 0  # rows above the head, not yet sealed
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
    unsealed: int = 0
    anchors_checked: int = 0
    seconds: float = 0.0

    @property
    def intact(self) -> bool:
        return not self.broken

    def as_status(self) -> dict:
        """What the compliance report shows of it."""
        return {"intact": self.intact, "rows_checked": self.rows_checked, "unsealed": self.unsealed,
                "first_broken": self.broken[0].message if self.broken else None}


class _DomainWalk:
    """One domain's chain, checked block by block as the audit log's rows come in id order."""

    def __init__(self, domain: str, head, anchors: dict[int, list[AnchoredHead]], next_blocks: Callable):
        self.domain, self.head, self.anchors, self._next_blocks = domain, head, anchors, next_blocks
        self.through = head.sealed_through if head is not None else 0
        self.chain = DomainChain(domain, positions=head.last_seq if head is not None else 0)
        self.found: list[tuple[float, int, BrokenLink]] = []
        self.block = None  # the block being checked
        self.ids: tuple[int, ...] = ()
        self.hashes = b""
        self.i = 0  # the next row of the block
        self.state: bytes | None = None  # the chain's hash so far in the block; None once it broke there
        self.block_no, self.end_seq, self.last_hash, self.last_id = 0, 0, GENESIS.hex(), 0
        self.anchored_ends: set[int] = set()
        self._queued: list = []
        self._exhausted = False

    # problems
    def problem(self, kind: str, message: str, position: int | None = None, audit_id: int | None = None,
                order: float | None = None) -> None:
        self.chain.problems += 1
        if len(self.found) < PROBLEMS_KEPT:
            key = order if order is not None else (position if position is not None else float("inf"))
            self.found.append((key, self.chain.problems,
                               BrokenLink(self.domain, kind, f"domain {self.domain}, {message}", position, audit_id)))

    # blocks
    def _load_next(self) -> bool:
        self._finish_block()
        if not self._queued and not self._exhausted:
            self._queued = list(self._next_blocks(self.domain, self.block_no))
            self._queued.reverse()
            self._exhausted = not self._queued
        if not self._queued:
            self.block, self.ids, self.i = None, (), 0
            return False
        block = self._queued.pop()
        ids, hashes = unpack_ids(bytes(block.ids)), bytes(block.row_hashes)
        first, last = block.first_seq, block.first_seq + block.rows - 1
        if block.first_seq > self.end_seq + 1 or (block.block != self.block_no + 1
                                                  and block.first_seq == self.end_seq + 1):
            self.problem("position_missing", f"chain positions {self.end_seq + 1}–{block.first_seq - 1} missing: "
                                             f"positions jump from {self.end_seq} to {block.first_seq}",
                         position=self.end_seq + 1)
        elif block.first_seq <= self.end_seq:
            self.problem("hash_broken", f"the block of chain positions {first}–{last} overlaps its predecessor, "
                                        f"which ends at position {self.end_seq}", position=first,
                         audit_id=block.first_id)
        if block.prev_hash != self.last_hash:
            self.problem("hash_broken", f"the block of chain positions {first}–{last} (audit row ids "
                                        f"{block.first_id}–{block.last_id}) does not follow its predecessor's hash",
                         position=first, audit_id=block.first_id)
        if (len(ids) != block.rows or len(hashes) != block.rows * ROW_HASH_BYTES or not ids
                or any(b <= a for a, b in zip(ids, ids[1:])) or ids[0] <= self.last_id):
            self.problem("hash_broken", f"the block of chain positions {first}–{last} lists its rows out of order "
                                        "or has been altered", position=first, audit_id=block.first_id)
        for anchored in self.anchors.get(last, ()):
            self.anchored_ends.add(last)
            if anchored.last_hash != block.last_hash:
                self.problem("anchor_mismatch", f"chain position {last} (audit row id {block.last_id}) has another "
                                                f"hash than anchor {anchored.key} recorded: the chain was rewritten",
                             position=last, audit_id=block.last_id)
        self.block, self.ids, self.hashes, self.i = block, ids, hashes, 0
        self.state = bytes.fromhex(block.prev_hash)
        self.block_no, self.end_seq, self.last_hash = block.block, last, block.last_hash
        self.last_id = ids[-1] if ids else self.last_id
        return True

    def _finish_block(self) -> None:
        if self.block is None:
            return
        for i in range(self.i, len(self.ids)):  # rows of the block the log no longer has
            self._deleted(self.ids[i], self.block.first_seq + i)
        self.i = len(self.ids)
        if self.state is not None and self.state.hex() != self.block.last_hash:
            last = self.block.first_seq + self.block.rows - 1
            self.problem("hash_broken", f"audit row id {self.block.last_id} (chain position {last}): the hash kept "
                                        "for it does not follow its predecessor", position=last,
                         audit_id=self.block.last_id)
        self.block = None

    def _deleted(self, audit_id: int, position: int) -> None:
        self.problem("row_deleted", f"audit row id {audit_id} (chain position {position}) deleted, or moved to "
                                    "another domain", position, audit_id)
        self.state = None

    # rows
    def row(self, row: tuple, content_of: Callable[[tuple], tuple]) -> None:
        audit_id = row[0]
        while True:
            if self.i >= len(self.ids):
                if not self._load_next():
                    self._inserted(audit_id)
                    return
                continue
            expected = self.ids[self.i]
            if audit_id == expected:
                break
            if audit_id < expected:
                self._inserted(audit_id)
                return
            self._deleted(expected, self.block.first_seq + self.i)
            self.i += 1
        self.chain.rows_checked += 1
        if self.state is not None:
            state = link_hash(self.state, content_of(row))
            offset = self.i * ROW_HASH_BYTES
            if state[:ROW_HASH_BYTES] == self.hashes[offset:offset + ROW_HASH_BYTES]:
                self.state = state
            else:
                position = self.block.first_seq + self.i
                self.problem("content_changed", f"audit row id {audit_id} (chain position {position}): content "
                                                "changed", position, audit_id)
                self.state = None
        self.i += 1

    def _inserted(self, audit_id: int) -> None:
        before = (self.block.first_seq + self.i - 1) if self.block is not None else self.end_seq
        self.problem("inserted", f"audit row id {audit_id}: inserted after sealing (unsealed row below the sealed "
                                 f"head, between chain positions {before} and {before + 1})",
                     audit_id=audit_id, order=before + 0.5)

    def finish(self) -> DomainChain:
        while self._load_next():  # the blocks after the last row the log still has
            pass
        head, end = self.head, self.end_seq
        if head is None:
            if end:
                self.problem("head_mismatch", f"a chain of {end} positions without a head", position=end)
        elif end < head.last_seq:
            self.problem("head_mismatch", f"the head says last position {head.last_seq} (audit row id "
                                          f"{head.last_id}) but the chain ends at {end}: the last rows were deleted",
                         position=end + 1, audit_id=head.last_id)
        elif end > head.last_seq:
            self.problem("head_mismatch", f"chain positions after the head's last position {head.last_seq}",
                         position=head.last_seq + 1)
        elif head.last_hash != self.last_hash or (end and head.last_id != self.last_id):
            self.problem("head_mismatch", f"the head's hash or row id differs from chain position {end}",
                         position=end, audit_id=head.last_id)
        for position in sorted(set(self.anchors) - self.anchored_ends):
            for anchored in self.anchors[position]:
                if position > end:
                    self.problem("anchor_missing", f"anchor {anchored.key} recorded chain position {position} "
                                                   f"(audit row id {anchored.last_id}), the chain ends at {end}",
                                 position=position, audit_id=anchored.last_id)
                else:
                    self.problem("anchor_mismatch", f"anchor {anchored.key} recorded a block ending at chain "
                                                    f"position {position} (audit row id {anchored.last_id}); no "
                                                    "block ends there now: the chain was rewritten",
                                 position=position, audit_id=anchored.last_id)
        self.chain.first_broken = min(self.found)[2] if self.found else None
        return self.chain


def verify(database: AppDatabase, archive_store: ArchiveStore | None = None,
           domains: Iterable[str] | None = None) -> Verification:
    """Check every chain (or these domains') from its first position to its head against the audit
    log, and against the anchors in the archive store when one is given. Seals nothing. One pass
    over the log in id order, in one snapshot, streaming: constant memory however long the log."""
    started = time.monotonic()
    only = sorted(set(domains)) if domains is not None else None
    digests: dict[str, str] = {}
    anchors, unreadable = read_anchors(archive_store, digests) if archive_store is not None else ({}, [])
    result = Verification(anchors_checked=sum(len(entries) for positions in anchors.values()
                                              for entries in positions.values()))
    dialect = database.dialect
    content_of = content_reader(dialect)
    with database.connect() as connection:
        dialect.read_in_one_snapshot(connection)  # for the heads, the blocks and the rows
        heads = {row.domain: row for row in connection.execute(sa.select(audit_chain_heads))}
        raw = connection.connection.dbapi_connection
        block_query = (f"SELECT block, first_seq, rows, first_id, last_id, ids, row_hashes, prev_hash, last_hash "
                       f"FROM retention_audit_chain WHERE domain = {dialect.param('domain')} "
                       f"AND block > {dialect.param('after')} ORDER BY block LIMIT 8")

        def next_blocks(domain: str, after: int) -> list:
            cursor = raw.cursor()
            try:
                cursor.execute(block_query, {"domain": domain, "after": after})
                return [_Block(*row) for row in cursor.fetchall()]
            finally:
                cursor.close()

        walks: dict[str, _DomainWalk] = {}

        def walk_of(domain: str) -> _DomainWalk:
            if domain not in walks:
                walks[domain] = _DomainWalk(domain, heads.get(domain), anchors.get(domain, {}), next_blocks)
            return walks[domain]

        for domain in sorted(set(heads) | set(anchors)):
            if only is None or domain in only:
                walk_of(domain)
        upto = max((head.sealed_through for head in heads.values()), default=0)
        where = [f"a.id <= {dialect.param('upto')}"]
        if only is not None:
            where.append(f"a.domain IN ({', '.join(dialect.param(f'd{n}') for n in range(len(only)))})")
        params = {"upto": upto, **{f"d{n}": name for n, name in enumerate(only or [])}}
        cursor = dialect.server_cursor(raw, "audit_chain_verify", FETCH_ROWS)
        try:
            cursor.execute(f"SELECT {content_sql(dialect, 'a')} FROM retention_audit_log a "
                           f"WHERE {' AND '.join(where)} ORDER BY a.id", params)
            for row in cursor:
                walk = walks.get(row[1]) or walk_of(row[1])
                if row[0] > walk.through:
                    walk.chain.unsealed += 1
                else:
                    walk.row(row, content_of)
        finally:
            cursor.close()
        above = sa.select(audit_log.c.domain, sa.func.count()).where(audit_log.c.id > upto)
        if only is not None:
            above = above.where(audit_log.c.domain.in_(only))
        for domain, count in connection.execute(above.group_by(audit_log.c.domain)).all():
            walk_of(domain).chain.unsealed += int(count)
        for domain in sorted(walks):
            chain = walks[domain].finish()
            result.domains.append(chain)
            result.rows_checked += chain.rows_checked
            result.unsealed += chain.unsealed
            if chain.first_broken is not None:
                result.broken.append(chain.first_broken)
        connection.rollback()
    for key, why in unreadable:
        result.broken.append(BrokenLink("", "anchor_unreadable", f"anchor {key} cannot be read: {why}"))
    if archive_store is not None:
        result.broken += [BrokenLink("", problem.kind, problem.message)
                          for problem in anchor_problems(database, archive_store, digests)]
    result.seconds = time.monotonic() - started
    return result


@dataclass(frozen=True)
class _Block:
    block: int
    first_seq: int
    rows: int
    first_id: int
    last_id: int
    ids: bytes
    row_hashes: bytes
    prev_hash: str
    last_hash: str


__all__ = ["BrokenLink", "DomainChain", "Verification", "verify"]
