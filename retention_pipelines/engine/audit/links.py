"""The links of the audit log's hash chains: what a batch's link is, in SQL and in Python alike.

The audit log is one row per batch (`retention_audit_batches`: what was done, under which run,
policy version and archive object) and one narrow row per record (`retention_audit_records`: the
batch, the record id, its deadline). Each domain's batches form one chain, position (`seq`) 1, 2, …:

    link(batch) = sha256(link(previous batch) + canonical(batch))     (GENESIS before position 1)

canonical(batch) is UTF-8 text: each of the batch's FIELDS, then each record row's own id (what
readers order the log by and the evidence index points at), record id and deadline, rows in id
order. A value is written `<length>:<value>` (its length in characters) and a NULL `-`, so that no
choice of values can spell another batch's text. Timestamps are UTC text 'YYYY-MM-DDTHH:MM:SS.ffffffZ'.

The link is computed in the transaction that writes the batch, by the database on PostgreSQL (the
statement that deletes or redacts the rows computes it over what it RETURNs: `sql_link`) and here
otherwise (`python_link`), chained under a lock on the domain's head. The verifier computes it here,
from the rows as they are now.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa

from retention_pipelines.stores import Dialect

GENESIS = hashlib.sha256(b"retention_audit_log chain genesis").digest()
# The batch's own fields, in the order its text spells them. `records` is how many it has.
FIELDS = ("domain", "seq", "action", "run_id", "occurred_at", "policy_version", "archive_uri", "actor", "detail",
          "records")


def utc_text(value: str | datetime | None) -> str | None:
    """A timestamp in the link's spelling, from a datetime or from SQLite's naive UTC text."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    # Spelt field by field: strftime's %Y leaves years before 1000 unpadded, PostgreSQL's YYYY pads them.
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
            f"{moment.second:02d}.{moment.microsecond:06d}Z")


def _field(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return f"{len(text)}:{text}"


def canonical(batch: dict, records: Iterable[tuple[int, str, str | None]]) -> bytes:
    """The batch's text: its FIELDS (occurred_at already in utc_text's spelling), then its record
    rows as (row id, record id, deadline in utc_text's spelling), in row id order."""
    text = "".join(f"{len(str(row_id))}:{row_id}{len(record_id)}:{record_id}"
                   + ("-" if deadline is None else f"{len(deadline)}:{deadline}")
                   for row_id, record_id, deadline in sorted(records, key=lambda record: record[0]))
    return ("".join(_field(batch[name]) for name in FIELDS) + text).encode()


def python_link(previous: str, batch: dict, records: Iterable[tuple[int, str, str | None]]) -> str:
    """The batch's link (hex) after the link `previous` (hex)."""
    return hashlib.sha256(bytes.fromhex(previous) + canonical(batch, records)).hexdigest()


# the same in PostgreSQL ------------------------------------------------------------------------------
def _sql_field(value: sa.ColumnElement) -> sa.ColumnElement:
    text = sa.cast(value, sa.Text)
    return sa.case((text.is_(None), sa.literal("-")),
                   else_=sa.cast(sa.func.length(text), sa.Text).concat(":").concat(text))


def sql_utc_text(moment: sa.ColumnElement) -> sa.ColumnElement:
    return sa.func.to_char(sa.func.timezone("UTC", moment), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')


def sql_link(dialect: Dialect, previous: sa.ColumnElement, batch: dict[str, sa.ColumnElement],
             row_id: sa.ColumnElement, record_id: sa.ColumnElement,
             deadline_text: sa.ColumnElement) -> sa.ColumnElement:
    """An aggregate over the batch's record rows (one row each: `row_id`, `record_id`,
    `deadline_text`): its link (hex) after `previous` (hex), PostgreSQL computing what python_link
    computes. `batch` maps each of FIELDS to an expression (occurred_at in sql_utc_text's spelling)."""
    head = sa.literal("", sa.Text)
    for name in FIELDS:
        head = head.concat(_sql_field(batch[name]))
    records = dialect.ordered_text_agg(
        _sql_field(row_id).concat(_sql_field(record_id)).concat(_sql_field(deadline_text)), row_id)
    text = head.concat(sa.func.coalesce(records, ""))
    return sa.func.encode(sa.func.sha256(sa.func.decode(previous, "hex").concat(sa.func.convert_to(text, "UTF8"))),
                          "hex")


__all__ = ["FIELDS", "GENESIS", "canonical", "python_link", "sql_link", "sql_utc_text", "utc_text"]
