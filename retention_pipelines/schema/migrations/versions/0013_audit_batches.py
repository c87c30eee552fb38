"""The audit log becomes one row per batch and one narrow row per record, chained as it is written.

Revision ID: 0013
Revises: 0012

Until now every entry was a full row of `retention_audit_log`, chained afterwards by a sealer.
From here the writer's transaction writes a batch row (`retention_audit_batches`, with its link in
the domain's chain) and a record row per entry (`retention_audit_records`); `retention_audit_log`
becomes a view with the same columns (and `batch_id`), for every reader.

The entries already written move over, their chain verified first: every sealed row is hashed again
and compared with the blocks of `retention_audit_chain` (the rows' own hashing, copied here so that
this migration stays what it was whatever the code becomes). A broken chain stops the migration,
naming the domain and the row: an audit log is not moved into a new chain that would hide what was
done to it. Consecutive entries of a domain that share what they did become one batch, chained from
the domain's last sealed hash; record ids are kept. The old blocks stay, read-only: the anchors
written before recorded their positions and hashes.
"""

import hashlib
import json
import struct
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

GENESIS = hashlib.sha256(b"retention_audit_log chain genesis").hexdigest()
OLD_CONTENT = ("id", "domain", "record_id", "action", "run_id", "occurred_at", "policy_version", "archive_uri",
               "deadline", "actor", "detail")
STAMP = ("action", "run_id", "occurred_at", "policy_version", "archive_uri", "actor", "detail")
FIELDS = ("domain", "seq", "action", "run_id", "occurred_at", "policy_version", "archive_uri", "actor", "detail",
          "records")
ROW_HASH_BYTES = 16
# The downgrade writes every entry back as a row of the old table before it drops these: no data is
# lost (schema/downgrade.py reads this).
CARRIED_BACK = ("retention_audit_batches", "retention_audit_records", "retention_audit_held_once")
CHUNK = 5_000

VIEW = """CREATE VIEW retention_audit_log AS
SELECT r.id, b.domain, r.record_id, b.action, b.run_id, b.occurred_at, b.policy_version, b.archive_uri,
       r.deadline, b.actor, b.detail, r.batch_id
FROM retention_audit_records r JOIN retention_audit_batches b ON b.id = r.batch_id"""


class AuditChainBroken(Exception):
    pass


def _utc_text(value):
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return f"{moment:%Y-%m-%dT%H:%M:%S.%f}Z"


def _link_time(value):
    """A timestamp as the new links spell it (engine/audit/links.py utc_text): every field padded."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
            f"{moment.second:02d}.{moment.microsecond:06d}Z")


def _field(value) -> str:
    return "-" if value is None else f"{len(str(value))}:{value}"


def _array(oid: int, elements: list) -> bytes:
    """PostgreSQL's array_send form of a one-dimensional array; nothing for none."""
    if not elements:
        return b""
    head = struct.pack(">iiiii", 1, int(any(element is None for element in elements)), oid, len(elements), 1)
    return head + b"".join(b"\xff\xff\xff\xff" if element is None else struct.pack(">i", len(element)) + element
                           for element in elements)


def _microseconds(value) -> int:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return (moment - datetime(2000, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _link(previous: str, batch: dict, records: list) -> str:
    """As engine/audit/links.py computes it: the batch's fields, then the digest of its record rows
    (row id, record id, deadline), by row id, in array_send's binary form."""
    rows = sorted(records, key=lambda record: record[0])
    digest = hashlib.sha256(
        _array(20, [struct.pack(">q", row_id) for row_id, _, _ in rows])
        + _array(23, [struct.pack(">i", len(record_id)) for _, record_id, _ in rows])
        + "".join(record_id for _, record_id, _ in rows).encode()
        + _array(1184, [None if deadline is None else struct.pack(">q", _microseconds(deadline))
                        for _, _, deadline in rows])).digest()
    text = "".join(_field(batch[name]) for name in FIELDS)
    return hashlib.sha256(bytes.fromhex(previous) + text.encode() + digest).hexdigest()


def _old_hash(previous: bytes, row: tuple) -> bytes:
    content = list(row)
    for name in ("occurred_at", "deadline"):
        content[OLD_CONTENT.index(name)] = _utc_text(content[OLD_CONTENT.index(name)])
    return hashlib.sha256(previous + json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()).digest()


def _rows(connection, domain: str):
    """The domain's old rows in id order, a chunk at a time."""
    after = 0
    columns = ", ".join(OLD_CONTENT)
    while True:
        chunk = connection.execute(sa.text(
            f"SELECT {columns} FROM retention_audit_log WHERE domain = :domain AND id > :after ORDER BY id LIMIT :n"),
            {"domain": domain, "after": after, "n": CHUNK}).all()
        if not chunk:
            return
        yield from chunk
        after = chunk[-1][0]


def _verify_old_chain(connection, domain: str, head) -> None:
    blocks = connection.execute(sa.text(
        "SELECT first_seq, rows, ids, row_hashes, prev_hash, last_hash FROM retention_audit_chain "
        "WHERE domain = :domain ORDER BY block"), {"domain": domain}).all()
    expected: list[tuple[int, int, bytes]] = []  # (audit id, position, hash prefix) in chain order
    state, position = GENESIS, 0
    for first_seq, rows, ids, row_hashes, prev_hash, last_hash in blocks:
        if first_seq != position + 1 or prev_hash != state:
            raise AuditChainBroken(f"domain {domain}: the sealed chain's block at position {first_seq} does not "
                                   "follow its predecessor")
        ids, row_hashes = bytes(ids), bytes(row_hashes)
        for i in range(rows):
            expected.append((int.from_bytes(ids[8 * i:8 * i + 8], "big", signed=True), first_seq + i,
                             row_hashes[ROW_HASH_BYTES * i:ROW_HASH_BYTES * (i + 1)]))
        state, position = last_hash, first_seq + rows - 1
    if head is not None and (head.last_seq != position or head.last_hash != state):
        raise AuditChainBroken(f"domain {domain}: the chain's head does not match its last sealed block")
    sealed_through = head.sealed_through if head is not None else 0
    running, i = bytes.fromhex(GENESIS), 0
    for row in _rows(connection, domain):
        audit_id = row[0]
        if audit_id > sealed_through:
            continue
        if i >= len(expected) or audit_id < expected[i][0]:
            raise AuditChainBroken(f"domain {domain}: audit row id {audit_id} was inserted after sealing")
        if audit_id > expected[i][0]:
            raise AuditChainBroken(f"domain {domain}: audit row id {expected[i][0]} (chain position "
                                   f"{expected[i][1]}) deleted")
        running = _old_hash(running, row)
        if running[:ROW_HASH_BYTES] != expected[i][2]:
            raise AuditChainBroken(f"domain {domain}: audit row id {audit_id} (chain position {expected[i][1]}): "
                                   "content changed")
        i += 1
    if i < len(expected):
        raise AuditChainBroken(f"domain {domain}: audit row id {expected[i][0]} (chain position {expected[i][1]}) "
                               "deleted")
    if position and running.hex() != state:
        raise AuditChainBroken(f"domain {domain}: the sealed chain does not end at its head's hash")


def _move(connection, domain: str, previous: str) -> tuple[int, int, str]:
    """The domain's old rows as batches chained from `previous`: (batches, last batch id, last link)."""
    batches_table = sa.table("retention_audit_batches", *(sa.column(name) for name in (
        "domain", "seq", "action", "run_id", "occurred_at", "policy_version", "archive_uri", "actor", "detail",
        "records", "prev_link", "link")), sa.column("id"))
    records_table = sa.table("retention_audit_records", sa.column("id"), sa.column("batch_id"),
                             sa.column("record_id"), sa.column("deadline"))
    seq, last_id, link = 0, None, previous
    current: list = []

    def flush() -> None:
        nonlocal seq, last_id, link
        if not current:
            return
        first = current[0]
        stamp = {name: first[OLD_CONTENT.index(name)] for name in STAMP}
        seq += 1
        batch = {**stamp, "domain": domain, "seq": seq, "records": len(current),
                 "occurred_at": _link_time(stamp["occurred_at"])}
        new = _link(link, batch, [(row[0], row[2], row[8]) for row in current])
        last_id = connection.execute(sa.insert(batches_table).values(
            **{**batch, "occurred_at": stamp["occurred_at"]}, prev_link=link, link=new,
        ).returning(batches_table.c.id)).scalar_one()
        connection.execute(sa.insert(records_table), [
            {"id": row[0], "batch_id": last_id, "record_id": row[2], "deadline": row[8]} for row in current])
        link = new
        current.clear()

    for row in _rows(connection, domain):
        stamp = tuple(row[OLD_CONTENT.index(name)] for name in STAMP)
        if current and stamp != tuple(current[0][OLD_CONTENT.index(name)] for name in STAMP):
            flush()
        current.append(row)
    flush()
    return seq, last_id, link


def upgrade() -> None:
    connection = op.get_bind()
    postgres = connection.dialect.name == "postgresql"
    # Verified before anything is created: a broken chain stops the migration with nothing changed
    # (SQLite's driver commits each CREATE as it goes).
    heads = {head.domain: head for head in connection.execute(sa.text(
        "SELECT domain, last_seq, last_hash, sealed_through FROM retention_audit_chain_heads")).all()}
    domains = sorted(set(heads) | set(connection.execute(sa.text(
        "SELECT DISTINCT domain FROM retention_audit_log")).scalars()))
    for domain in domains:
        _verify_old_chain(connection, domain, heads.get(domain))
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "retention_audit_batches",
        sa.Column("id", id_type, primary_key=True, autoincrement=True),
        sa.Column("domain", sa.String(63), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("policy_version", sa.String(96), nullable=False),
        sa.Column("archive_uri", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("prev_link", sa.String(64), nullable=False),
        sa.Column("link", sa.String(64), nullable=False),
        sa.UniqueConstraint("domain", "seq", name="retention_audit_batches_position"),
    )
    op.create_index("retention_audit_batches_run", "retention_audit_batches", ["run_id"])
    op.create_index("retention_audit_batches_occurred", "retention_audit_batches", ["occurred_at"])
    if postgres:
        # No primary key: its btree would cost each record row what the DELETE it audits costs. The
        # BRIN summaries follow the write order of ids and batches for next to nothing.
        op.create_table(
            "retention_audit_records",
            sa.Column("id", sa.BigInteger(), nullable=False),
            sa.Column("batch_id", sa.BigInteger(), nullable=False),
            sa.Column("record_id", sa.Text(), nullable=False),
            sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        )
        op.create_index("retention_audit_records_batch", "retention_audit_records", ["batch_id"],
                        postgresql_using="brin")
        op.create_index("retention_audit_records_id", "retention_audit_records", ["id"], postgresql_using="brin")
    else:
        op.create_table(
            "retention_audit_records",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("batch_id", sa.BigInteger(), nullable=False),
            sa.Column("record_id", sa.Text(), nullable=False),
            sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        )
        op.create_index("retention_audit_records_batch", "retention_audit_records", ["batch_id"])
    op.create_table(
        "retention_audit_held_once",
        sa.Column("domain", sa.String(63), primary_key=True),
        sa.Column("record_id", sa.Text(), primary_key=True),
    )
    connection.execute(sa.text(
        "INSERT INTO retention_audit_held_once (domain, record_id) SELECT DISTINCT domain, record_id "
        "FROM retention_audit_log WHERE action = 'skipped_legal_hold'"))

    for domain in domains:
        head = heads.get(domain)
        previous = head.last_hash if head is not None and head.last_seq else GENESIS
        seq, last_id, link = _move(connection, domain, previous)
        values = {"domain": domain, "seq": seq, "last_id": last_id, "link": link}
        if head is None:
            connection.execute(sa.text(
                "INSERT INTO retention_audit_chain_heads (domain, last_block, last_seq, last_id, last_hash, "
                "sealed_through, sealed_at) VALUES (:domain, :seq, :seq, :last_id, :link, :last_id_or_0, "
                "CURRENT_TIMESTAMP)"), {**values, "last_id_or_0": last_id or 0})
        else:
            connection.execute(sa.text(
                "UPDATE retention_audit_chain_heads SET last_block = :seq, last_seq = :seq, last_id = :last_id, "
                "last_hash = :link, sealed_through = :last_id_or_0, sealed_at = CURRENT_TIMESTAMP "
                "WHERE domain = :domain"), {**values, "last_id_or_0": last_id or 0})
    # A new record row's id is its batch's id × 2^20 + its place: new batches' ids start where those
    # ids pass every old one.
    past_old = (connection.execute(sa.text("SELECT max(id) FROM retention_audit_log")).scalar() or 0) // 2**20 + 1
    moved = connection.execute(sa.text("SELECT max(id) FROM retention_audit_batches")).scalar() or 0
    if postgres and max(past_old - 1, moved) >= 1:  # setval(n): the next id drawn is n + 1
        connection.execute(sa.text("SELECT setval(pg_get_serial_sequence('retention_audit_batches', 'id'), :at)"),
                           {"at": max(past_old - 1, moved)})
    # (SQLite's writer draws past both itself.)
    op.drop_table("retention_audit_log")
    connection.execute(sa.text(VIEW))


def downgrade() -> None:
    connection = op.get_bind()
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "retention_audit_log_rows",
        sa.Column("id", id_type, primary_key=True, autoincrement=True),
        sa.Column("domain", sa.String(63), nullable=False),
        sa.Column("record_id", sa.Text(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("policy_version", sa.String(96), nullable=False),
        sa.Column("archive_uri", sa.Text(), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    connection.execute(sa.text(
        f"INSERT INTO retention_audit_log_rows ({', '.join(OLD_CONTENT)}) "
        f"SELECT {', '.join(OLD_CONTENT)} FROM retention_audit_log"))
    connection.execute(sa.text("DROP VIEW retention_audit_log"))
    op.drop_table("retention_audit_held_once")
    op.drop_table("retention_audit_records")
    op.drop_table("retention_audit_batches")
    op.rename_table("retention_audit_log_rows", "retention_audit_log")
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text(
            "SELECT setval(pg_get_serial_sequence('retention_audit_log', 'id'), "
            "GREATEST((SELECT max(id) FROM retention_audit_log), 1))"))
    op.create_index("retention_audit_log_occurred_brin", "retention_audit_log", ["occurred_at"],
                    postgresql_using="brin")
    op.create_index("retention_audit_log_held_once", "retention_audit_log", ["domain", "record_id"], unique=True,
                    postgresql_where=sa.text("action = 'skipped_legal_hold'"),
                    sqlite_where=sa.text("action = 'skipped_legal_hold'"))
    # The heads go back to the last sealed block: what was written since is unsealed, for the sealer.
    connection.execute(sa.text("DELETE FROM retention_audit_chain_heads"))
    connection.execute(sa.text(
        "INSERT INTO retention_audit_chain_heads (domain, last_block, last_seq, last_id, last_hash, sealed_through, "
        "sealed_at) SELECT c.domain, c.block, c.first_seq + c.rows - 1, c.last_id, c.last_hash, c.last_id, c.sealed_at "
        "FROM retention_audit_chain c WHERE c.block = (SELECT max(block) FROM retention_audit_chain d "
        "WHERE d.domain = c.domain)"))
