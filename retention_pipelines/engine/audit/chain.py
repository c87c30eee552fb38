"""The tamper-evident audit log: a hash chain per domain over `retention_audit_log`, sealed after
the rows are written.

Nothing is added to the transactions that write audit rows (the batch DELETE … RETURNING + INSERT,
the legal-hold reports, the manual queue): a sealer comes afterwards and chains each domain's rows
in id order, each row's hash over the previous row's hash and the row's own content:

    hash(row) = sha256(hash(previous row) + canonical(row))      (GENESIS before a domain's first row)

canonical(row) is the compact JSON array (UTF-8) of the row's CONTENT_COLUMNS, timestamps as UTC
'YYYY-MM-DDTHH:MM:SS.ffffffZ'. The chain is kept in `retention_audit_chain`, one block per sealed
chunk (CHUNK_ROWS rows): the rows' ids, the first 16 bytes of each row's hash (enough to name the
first row that no longer matches) and the full hash before and after the block. The audit log
itself is never updated: it stays append-only, so the database role that writes it can be refused
UPDATE and DELETE on it, and a sealed row costs 24 bytes of chain and one INSERT per 10,000 rows.

Audit-row ids are not committed in id order (a run's batches commit side by side, a person's queue
action at any time). The sealer therefore takes only rows up to a *settled horizon*: the highest
committed id, once every transaction that could still commit a lower one has ended (on PostgreSQL,
the transactions holding a write lock on the audit log when the horizon was read; SQLite has one
writer at a time). So every row of a domain with an id at or below its head's `sealed_through` is
in its chain: one found there outside the chain was inserted behind the sealer's back.

`verify` reads the audit log once, in id order, streaming, recomputes every row's hash and names
the first broken link of each domain: a row whose content changed, a row deleted, a row inserted
below the head, chain positions missing, a block whose hash does not follow its predecessor, a
chain shorter or longer than its head. `anchor` writes every chain head to the archive store once
a day; `verify` checks the chain against every anchor, which catches a chain recomputed wholesale
in the database.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa

from retention_pipelines.logs import get_logger
from retention_pipelines.schema import audit_chain, audit_chain_heads, audit_log, conflict_insert
from retention_pipelines.stores import AppDatabase, ArchiveStore

log = get_logger("audit_chain")

GENESIS = hashlib.sha256(b"retention_audit_log chain genesis").digest()
CONTENT_COLUMNS = ("id", "domain", "record_id", "action", "run_id", "occurred_at", "policy_version", "archive_uri",
                   "deadline", "actor", "detail")
TIME_COLUMNS = ("occurred_at", "deadline")
ROW_HASH_BYTES = 16  # of each row's hash kept in its block; the full hash is kept at each block's end
CHUNK_ROWS = 10_000  # rows per block, sealed in one transaction: memory stays constant, a kill loses one
FETCH_ROWS = 20_000  # rows per round trip of the verifier's server-side cursor
SETTLE_SECONDS = 30.0  # how long the sealer waits for open writers of the audit log before giving up
ANCHOR_PREFIX = "audit_anchors/"
ANCHOR_FORMAT = "retention-audit-anchor/1"
PROBLEMS_KEPT = 100  # per domain; more are counted

_sha256, _canonical = hashlib.sha256, orjson.dumps


def canonical(content: tuple) -> bytes:
    """A row's content as compact JSON in UTF-8: byte for byte what the standard library writes with
    json.dumps(list(content), ensure_ascii=False, separators=(",", ":")).encode(), four times as fast."""
    return _canonical(content)


def link_hash(previous: bytes, content: tuple) -> bytes:
    """A row's hash: sha256 over the previous row's hash (32 bytes) and the row's canonical content."""
    return _sha256(previous + _canonical(content)).digest()


# reading rows' content, the same way for the sealer and the verifier ------------------------------
def _content_sql(dialect: str, alias: str) -> str:
    def column(name: str) -> str:
        if name in TIME_COLUMNS and dialect == "postgresql":
            # Formatted by the server: no datetime object per row on the client.
            return f"""to_char({alias}.{name} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
        return f"{alias}.{name}"

    return ", ".join(column(name) for name in CONTENT_COLUMNS)


def _param(dialect: str, name: str) -> str:
    return f"%({name})s" if dialect == "postgresql" else f":{name}"


def _utc_text(value: str | datetime | None) -> str | None:
    """SQLite keeps timestamps as naive UTC text, to the millisecond or the microsecond."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return f"{moment:%Y-%m-%dT%H:%M:%S.%f}Z"


_OCCURRED, _DEADLINE = CONTENT_COLUMNS.index("occurred_at"), CONTENT_COLUMNS.index("deadline")


def _content_reader(dialect: str) -> Callable[[tuple], tuple]:
    if dialect == "postgresql":
        return tuple

    def sqlite_content(values: tuple) -> tuple:
        values = list(values)
        values[_OCCURRED], values[_DEADLINE] = _utc_text(values[_OCCURRED]), _utc_text(values[_DEADLINE])
        return tuple(values)

    return sqlite_content


def _pack_ids(ids: list[int]) -> bytes:
    return struct.pack(f">{len(ids)}q", *ids)


def _unpack_ids(packed: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(packed) // 8}q", packed)


# sealing --------------------------------------------------------------------------------------------
@dataclass
class SealReport:
    """What one seal did: rows appended to each domain's chain. settled is False when writers of
    the audit log stayed open past the wait, in which case nothing was sealed (the next seal will)."""

    sealed: dict[str, int] = field(default_factory=dict)
    horizon: int = 0
    settled: bool = True
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(self.sealed.values())


def seal(database: AppDatabase, domains: Iterable[str] | None = None, *, chunk_rows: int = CHUNK_ROWS,
         settle_seconds: float = SETTLE_SECONDS,
         after_chunk: Callable[[str, int], None] | None = None) -> SealReport:
    """Chain every settled, unsealed audit row of these domains (default: every domain in the audit
    log), chunk_rows rows per transaction, each chunk one block committed with its head. Idempotent
    and safe to kill: a rerun goes on from the head. `after_chunk(domain, rows)` is called inside
    each chunk's transaction, before it commits (a test's way to kill a seal halfway)."""
    started = time.monotonic()
    horizon = settled_horizon(database, settle_seconds)
    report = SealReport(horizon=horizon or 0, settled=horizon is not None)
    if horizon is None:
        log.warning(f"audit chain: writers of the audit log still open after {settle_seconds:g} s; nothing sealed "
                    "this time", extra={"step": "seal", "settle_seconds": settle_seconds})
    else:
        for domain in (list(domains) if domains is not None else _domains_in_log(database)):
            report.sealed[domain] = _seal_domain(database, domain, horizon, chunk_rows, after_chunk)
    report.seconds = time.monotonic() - started
    return report


def settled_horizon(database: AppDatabase, settle_seconds: float) -> int | None:
    """The highest audit-row id at or below which no row can still be committed; None when writers
    that could still commit one stayed open longer than settle_seconds."""
    with database.connect() as connection:
        horizon = int(connection.execute(sa.select(sa.func.max(audit_log.c.id))).scalar_one() or 0)
        if database.is_sqlite:
            return horizon  # one writer at a time: an open writer's ids are above every committed one
        # An INSERT takes its RowExclusiveLock on the table before its rows' ids are drawn and holds
        # it until its transaction ends: an id at or below the horizon that is not committed yet
        # belongs to a transaction holding that lock now (read after the horizon).
        writers = """SELECT DISTINCT virtualtransaction FROM pg_locks
                     WHERE locktype = 'relation' AND relation = 'retention_audit_log'::regclass
                       AND mode = 'RowExclusiveLock' AND granted AND pid <> pg_backend_pid()"""
        open_writers = connection.exec_driver_sql(writers).scalars().all()
        deadline = time.monotonic() + settle_seconds
        while open_writers:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)
            open_writers = connection.exec_driver_sql(
                writers + " AND virtualtransaction = ANY(%(open)s)", {"open": list(open_writers)}).scalars().all()
    return horizon


def _domains_in_log(database: AppDatabase) -> list[str]:
    with database.connect() as connection:
        return sorted(connection.execute(sa.select(audit_log.c.domain).distinct()).scalars())


def _new_head(connection: sa.Connection, domain: str) -> sa.Insert:
    return conflict_insert(connection.dialect.name, audit_chain_heads).values(
        domain=domain, last_block=0, last_seq=0, last_hash=GENESIS.hex(), sealed_through=0,
    ).on_conflict_do_nothing(index_elements=["domain"])


def _seal_domain(database: AppDatabase, domain: str, horizon: int, chunk_rows: int,
                 after_chunk: Callable[[str, int], None] | None) -> int:
    sealed = 0
    while True:
        rows, through = _seal_chunk(database, domain, horizon, chunk_rows, after_chunk)
        sealed += rows
        if through >= horizon:
            return sealed


def _seal_chunk(database: AppDatabase, domain: str, horizon: int, chunk_rows: int,
                after_chunk: Callable[[str, int], None] | None) -> tuple[int, int]:
    """One block and its head, in one transaction: (rows sealed, the id sealed through). Its rows
    are let go on return, before the next chunk is read: one chunk in memory at a time."""
    dialect = database.engine.dialect.name
    content_of = _content_reader(dialect)
    with database.begin() as connection:
        # The first statement writes, so that SQLite takes its write lock before the head is read;
        # on PostgreSQL the head's row lock serialises sealers of the same domain.
        connection.execute(_new_head(connection, domain))
        head = connection.execute(sa.select(audit_chain_heads).where(
            audit_chain_heads.c.domain == domain).with_for_update()).one()
        if head.sealed_through >= horizon:
            return 0, head.sealed_through
        rows, through = _unsealed_rows(connection, dialect, domain, head.sealed_through, horizon, chunk_rows)
        state, ids, hashes = bytes.fromhex(head.last_hash), [], []
        for row in rows:
            state = link_hash(state, content_of(row))
            ids.append(row[0])
            hashes.append(state[:ROW_HASH_BYTES])
        del rows
        if ids:
            connection.execute(sa.insert(audit_chain).values(
                domain=domain, block=head.last_block + 1, first_seq=head.last_seq + 1, rows=len(ids),
                first_id=ids[0], last_id=ids[-1], ids=_pack_ids(ids), row_hashes=b"".join(hashes),
                prev_hash=head.last_hash, last_hash=state.hex()))
        connection.execute(sa.update(audit_chain_heads).where(audit_chain_heads.c.domain == domain).values(
            last_block=head.last_block + (1 if ids else 0), last_seq=head.last_seq + len(ids),
            last_id=ids[-1] if ids else head.last_id, last_hash=state.hex(), sealed_through=through,
            sealed_at=sa.func.now()))
        if after_chunk is not None:
            after_chunk(domain, len(ids))
    return len(ids), through


def _unsealed_rows(connection: sa.Connection, dialect: str, domain: str, after: int, horizon: int,
                   chunk_rows: int) -> tuple[list[tuple], int]:
    """The domain's next rows after `after`, at most chunk_rows of them, and the id they reach.

    Read in windows of chunk_rows consecutive ids: each one an index range of the primary key
    however the planner's statistics stand (a LIMIT over a domain filter, whose selectivity the
    planner cannot know, made PostgreSQL sort the whole log for every chunk), and never more rows
    than the window's ids. Ids that no row has are skipped in one step."""
    window = (f"SELECT {_content_sql(dialect, 'a')} FROM retention_audit_log a "
              f"WHERE a.id > {_param(dialect, 'after')} AND a.id <= {_param(dialect, 'upto')} "
              f"AND a.domain = {_param(dialect, 'domain')} ORDER BY a.id")
    following = (f"SELECT min(id) FROM retention_audit_log WHERE id > {_param(dialect, 'after')} "
                 f"AND id <= {_param(dialect, 'upto')}")
    rows: list[tuple] = []
    cursor = connection.connection.dbapi_connection.cursor()  # plain tuples, in the same transaction
    try:
        while len(rows) < chunk_rows and after < horizon:
            upto = min(after + chunk_rows, horizon)
            cursor.execute(window, {"after": after, "upto": upto, "domain": domain})
            found = cursor.fetchall()
            if len(rows) + len(found) > chunk_rows:
                found = found[:chunk_rows - len(rows)]
                upto = found[-1][0]
            rows.extend(found)
            after = upto
            if not found and after < horizon:
                cursor.execute(following, {"after": after, "upto": horizon})
                next_id = cursor.fetchone()[0]
                after = horizon if next_id is None else next_id - 1
    finally:
        cursor.close()
    return rows, after


# verifying ------------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class _Anchor:
    key: str
    position: int
    last_id: int | None
    last_hash: str


class _DomainWalk:
    """One domain's chain, checked block by block as the audit log's rows come in id order."""

    def __init__(self, domain: str, head, anchors: dict[int, list[_Anchor]], next_blocks: Callable):
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
        ids, hashes = _unpack_ids(bytes(block.ids)), bytes(block.row_hashes)
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
    anchors, unreadable = _read_anchors(archive_store) if archive_store is not None else ({}, [])
    result = Verification(anchors_checked=sum(len(entries) for positions in anchors.values()
                                              for entries in positions.values()))
    dialect = database.engine.dialect.name
    content_of = _content_reader(dialect)
    with database.connect() as connection:
        if dialect == "postgresql":
            connection.execution_options(isolation_level="REPEATABLE READ")
        else:
            connection.exec_driver_sql("BEGIN")  # one snapshot for the heads, the blocks and the rows
        heads = {row.domain: row for row in connection.execute(sa.select(audit_chain_heads))}
        raw = connection.connection.dbapi_connection
        block_query = (f"SELECT block, first_seq, rows, first_id, last_id, ids, row_hashes, prev_hash, last_hash "
                       f"FROM retention_audit_chain WHERE domain = {_param(dialect, 'domain')} "
                       f"AND block > {_param(dialect, 'after')} ORDER BY block LIMIT 8")

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
        where = [f"a.id <= {_param(dialect, 'upto')}"]
        if only is not None:
            where.append(f"a.domain IN ({', '.join(_param(dialect, f'd{n}') for n in range(len(only)))})")
        params = {"upto": upto, **{f"d{n}": name for n, name in enumerate(only or [])}}
        cursor = raw.cursor("audit_chain_verify") if dialect == "postgresql" else raw.cursor()
        try:
            if dialect == "postgresql":
                cursor.itersize = FETCH_ROWS
            cursor.execute(f"SELECT {_content_sql(dialect, 'a')} FROM retention_audit_log a "
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


# anchors --------------------------------------------------------------------------------------------
def anchor_key(day: datetime) -> str:
    return f"{ANCHOR_PREFIX}{day:%Y/%m/%d}.json"


def anchor(database: AppDatabase, archive_store: ArchiveStore, intact: bool | None = None) -> str:
    """Write every chain's head to the archive store as the day's anchor (the database's date, in
    UTC; a later anchor of the same day replaces it). Returns its key."""
    now = database.now()
    with database.connect() as connection:
        heads = connection.execute(sa.select(audit_chain_heads).order_by(audit_chain_heads.c.domain)).all()
    document = {"format": ANCHOR_FORMAT, "written_at": now.isoformat(), "verified_intact": intact,
                "heads": [{"domain": h.domain, "last_seq": int(h.last_seq), "last_id": int(h.last_id),
                           "last_hash": h.last_hash, "sealed_through": int(h.sealed_through),
                           "sealed_at": database.read_time(h.sealed_at).isoformat() if h.sealed_at else None}
                          for h in heads if h.last_seq]}
    key = anchor_key(now)
    archive_store.put(key, json.dumps(document, indent=1, sort_keys=True).encode())
    log.info(f"audit chain: {len(document['heads'])} chain heads anchored at {archive_store.uri(key)}",
             extra={"step": "anchor", "domains": len(document["heads"])})
    return key


def _read_anchors(archive_store: ArchiveStore) -> tuple[dict[str, dict[int, list[_Anchor]]], list[tuple[str, str]]]:
    anchors: dict[str, dict[int, list[_Anchor]]] = {}
    unreadable = []
    for key in _anchor_keys(archive_store):
        try:
            document = json.loads(archive_store.get(key))
            if document.get("format") != ANCHOR_FORMAT:
                raise ValueError(f"format {document.get('format')!r}")
            for entry in document["heads"]:
                anchors.setdefault(entry["domain"], {}).setdefault(int(entry["last_seq"]), []).append(
                    _Anchor(key, int(entry["last_seq"]), entry.get("last_id"), entry["last_hash"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            unreadable.append((key, str(exc) or type(exc).__name__))
    return anchors, unreadable


def _anchor_keys(archive_store: ArchiveStore) -> Iterator[str]:
    for key in archive_store.keys(ANCHOR_PREFIX):
        if key.endswith(".json"):
            yield key


__all__ = ["ANCHOR_PREFIX", "BrokenLink", "CONTENT_COLUMNS", "DomainChain", "GENESIS", "SealReport", "Verification",
           "anchor", "anchor_key", "link_hash", "seal", "settled_horizon", "verify"]
