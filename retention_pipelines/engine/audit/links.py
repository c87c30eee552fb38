"""The links of the audit log's hash chains: what a batch's link is, in SQL and in Python alike.

The audit log is one row per batch (`retention_audit_batches`: what was done, under which run,
policy version and archive object) and one narrow row per record (`retention_audit_records`: the
batch, the record id, its deadline). Each domain's batches form one chain, position (`seq`) 1, 2, …:

    link(batch) = sha256(link(previous batch) + fields(batch) + digest(batch's record rows))

with GENESIS before position 1. fields(batch) is UTF-8 text: each of the batch's FIELDS written
`<length>:<value>` (its length in characters), a NULL `-`, so that no choice of values can spell
another batch's text; timestamps as UTC text 'YYYY-MM-DDTHH:MM:SS.ffffffZ'. digest(records) is the
sha256 of the record rows in row id order, in PostgreSQL's binary array form (`array_send`, a
length before every element, and so unambiguous): their row ids (int8), the lengths of their
record ids in characters (int4), the record ids themselves as one UTF-8 text, their deadlines
(timestamptz: microseconds since 2000-01-01 UTC). Binary, because spelling every record row as
text in the statement that deletes it cost that statement a third of its speed (benchmarks/).

The digest is computed by the database over the rows the statement that deletes or redacts them
RETURNs (`sql_records_digest`, PostgreSQL), or here (`records_digest`) by the writers that are not
one statement with their act; the link is computed in the same transaction under a lock on the
domain's head (`sql_link` / `link`). The verifier computes both here, from the rows as they are now.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa

from retention_pipelines.stores import Dialect

GENESIS = hashlib.sha256(b"retention_audit_log chain genesis").digest()
# The batch's own fields, in the order its text spells them. `records` is how many it has.
FIELDS = ("domain", "seq", "action", "run_id", "occurred_at", "policy_version", "archive_uri", "actor", "detail",
          "records")
# PostgreSQL's type oids of the digest's arrays, which array_send writes into them.
_INT8, _INT4, _TIMESTAMPTZ = 20, 23, 1184
_EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)


def utc_text(value: str | datetime | None) -> str | None:
    """A timestamp in the link's spelling, from a datetime or from SQLite's naive UTC text."""
    if value is None:
        return None
    moment = _utc(value).replace(tzinfo=None)
    # Spelt field by field: strftime's %Y leaves years before 1000 unpadded, PostgreSQL's YYYY pads them.
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
            f"{moment.second:02d}.{moment.microsecond:06d}Z")


def _utc(value: str | datetime) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _field(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return f"{len(text)}:{text}"


def fields_text(batch: dict) -> bytes:
    """The batch's FIELDS as the link spells them (occurred_at already in utc_text's spelling)."""
    return "".join(_field(batch[name]) for name in FIELDS).encode()


def _array(oid: int, size: int, values: list[int | None]) -> bytes:
    """array_send's form of a one-dimensional array of `size`-byte integers (None: NULL); nothing
    for no elements (array_agg of no rows is NULL). Packed in one call: a verifier packs millions."""
    if not values:
        return b""
    code = "q" if size == 8 else "i"
    head = struct.pack(">iiiii", 1, int(None in values), oid, len(values), 1)
    if None not in values:
        return head + struct.pack(f">{len(values) * ('i' + code)}",
                                  *itertools.chain.from_iterable((size, value) for value in values))
    return head + b"".join(b"\xff\xff\xff\xff" if value is None else struct.pack(f">i{code}", size, value)
                           for value in values)


def _microseconds(value: str | datetime) -> int:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    elapsed = (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)) - _EPOCH_2000
    return (elapsed.days * 86_400 + elapsed.seconds) * 1_000_000 + elapsed.microseconds


def records_digest(records: Iterable[tuple[int, str, str | datetime | None]]) -> bytes:
    """The digest of a batch's record rows, (row id, record id, deadline) each, in row id order: a
    deadline is a datetime or SQLite's naive UTC text."""
    rows = sorted(records, key=lambda record: record[0])
    ids = _array(_INT8, 8, [row_id for row_id, _, _ in rows])
    lengths = _array(_INT4, 4, [len(record_id) for _, record_id, _ in rows])
    text = "".join(record_id for _, record_id, _ in rows).encode()
    deadlines = _array(_TIMESTAMPTZ, 8, [None if deadline is None else _microseconds(deadline)
                                         for _, _, deadline in rows])
    return hashlib.sha256(ids + lengths + text + deadlines).digest()


def link(previous: str, batch: dict, digest: bytes) -> str:
    """The batch's link (hex) after the link `previous` (hex), given its records' digest."""
    return hashlib.sha256(bytes.fromhex(previous) + fields_text(batch) + digest).hexdigest()


def python_link(previous: str, batch: dict, records: Iterable[tuple[int, str, str | datetime | None]]) -> str:
    """The batch's link (hex) after `previous` (hex), from its record rows (as records_digest takes them)."""
    return link(previous, batch, records_digest(records))


# the same in PostgreSQL ------------------------------------------------------------------------------
def _sql_field(value: sa.ColumnElement) -> sa.ColumnElement:
    text = sa.cast(value, sa.Text)
    return sa.case((text.is_(None), sa.literal("-")),
                   else_=sa.cast(sa.func.length(text), sa.Text).concat(":").concat(text))


def sql_utc_text(moment: sa.ColumnElement) -> sa.ColumnElement:
    return sa.func.to_char(sa.func.timezone("UTC", moment), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')


def sql_records_digest(dialect: Dialect, row_id: sa.ColumnElement, record_id: sa.ColumnElement,
                       deadline: sa.ColumnElement) -> sa.ColumnElement:
    """An aggregate over a batch's record rows (one row each: `row_id` int8, `record_id` text,
    `deadline` timestamptz): records_digest, computed by PostgreSQL."""
    empty = sa.literal(b"", sa.LargeBinary)
    parts = [
        sa.func.array_send(dialect.ordered_agg("array_agg", row_id, row_id)),
        sa.func.array_send(dialect.ordered_agg("array_agg", sa.func.length(record_id), row_id)),
        sa.func.convert_to(dialect.ordered_agg("string_agg", record_id, row_id, sa.literal("", sa.Text)), "UTF8"),
        sa.func.array_send(dialect.ordered_agg("array_agg", sa.cast(deadline, sa.DateTime(timezone=True)), row_id)),
    ]
    joined = empty
    for part in parts:
        joined = joined.op("||")(sa.func.coalesce(part, empty))
    return sa.func.sha256(joined, type_=sa.LargeBinary)


def sql_link(previous: sa.ColumnElement, batch: dict[str, sa.ColumnElement],
             digest: sa.ColumnElement) -> sa.ColumnElement:
    """The batch's link (hex) after `previous` (hex), PostgreSQL computing what `link` computes.
    `batch` maps each of FIELDS to an expression (occurred_at in sql_utc_text's spelling)."""
    text = sa.literal("", sa.Text)
    for name in FIELDS:
        text = text.concat(_sql_field(batch[name]))
    return sa.func.encode(sa.func.sha256(sa.func.decode(previous, "hex").op("||")(
        sa.func.convert_to(text, "UTF8")).op("||")(digest)), "hex")


__all__ = ["FIELDS", "GENESIS", "fields_text", "link", "python_link", "records_digest", "sql_link",
           "sql_records_digest", "sql_utc_text", "utc_text"]
