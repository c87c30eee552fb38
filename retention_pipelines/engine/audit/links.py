"""The links of the audit log's hash chains: what a row's hash is, and how its content is read.

Each domain's audit rows form one chain, in id order, each row's hash over the previous row's hash
and the row's own content:

    hash(row) = sha256(hash(previous row) + canonical(row))      (GENESIS before a domain's first row)

canonical(row) is the compact JSON array (UTF-8) of the row's CONTENT_COLUMNS, timestamps as UTC
'YYYY-MM-DDTHH:MM:SS.ffffffZ'. The chain is kept in `retention_audit_chain`, one block per sealed
chunk: the rows' ids, the first ROW_HASH_BYTES of each row's hash (enough to name the first row that
no longer matches) and the full hash before and after the block. The sealer (seal.py) and the
verifier (verify.py) read rows and compute links only through this module, so that both hash the
same bytes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from retention_pipelines.stores import Dialect

GENESIS = hashlib.sha256(b"retention_audit_log chain genesis").digest()
CONTENT_COLUMNS = ("id", "domain", "record_id", "action", "run_id", "occurred_at", "policy_version", "archive_uri",
                   "deadline", "actor", "detail")
TIME_COLUMNS = ("occurred_at", "deadline")
ROW_HASH_BYTES = 16  # of each row's hash kept in its block; the full hash is kept at each block's end

_sha256, _canonical = hashlib.sha256, orjson.dumps


def canonical(content: tuple) -> bytes:
    """A row's content as compact JSON in UTF-8: byte for byte what the standard library writes with
    json.dumps(list(content), ensure_ascii=False, separators=(",", ":")).encode(), four times as fast."""
    return _canonical(content)


def link_hash(previous: bytes, content: tuple) -> bytes:
    """A row's hash: sha256 over the previous row's hash (32 bytes) and the row's canonical content."""
    return _sha256(previous + _canonical(content)).digest()


# reading rows' content, the same way for the sealer and the verifier ------------------------------
def content_sql(dialect: Dialect, alias: str) -> str:
    """The select list of a row's CONTENT_COLUMNS, for raw SQL over `retention_audit_log {alias}`."""
    return ", ".join(dialect.utc_text(f"{alias}.{name}") if name in TIME_COLUMNS else f"{alias}.{name}"
                     for name in CONTENT_COLUMNS)


def _utc_text(value: str | datetime | None) -> str | None:
    """A timestamp kept as naive UTC text (to the millisecond or the microsecond), respelt canonically."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return f"{moment:%Y-%m-%dT%H:%M:%S.%f}Z"


_OCCURRED, _DEADLINE = CONTENT_COLUMNS.index("occurred_at"), CONTENT_COLUMNS.index("deadline")


def content_reader(dialect: Dialect) -> Callable[[tuple], tuple]:
    """What turns a row read with content_sql into the content that canonical() takes."""
    if dialect.has_column_types:
        return tuple  # the database formatted the timestamps itself (Dialect.utc_text)

    def respelt(values: tuple) -> tuple:
        values = list(values)
        values[_OCCURRED], values[_DEADLINE] = _utc_text(values[_OCCURRED]), _utc_text(values[_DEADLINE])
        return tuple(values)

    return respelt


# a block's ids, packed ------------------------------------------------------------------------------
def pack_ids(ids: list[int]) -> bytes:
    return struct.pack(f">{len(ids)}q", *ids)


def unpack_ids(packed: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(packed) // 8}q", packed)


__all__ = ["CONTENT_COLUMNS", "GENESIS", "ROW_HASH_BYTES", "TIME_COLUMNS", "canonical", "content_reader",
           "content_sql", "link_hash", "pack_ids", "unpack_ids"]
