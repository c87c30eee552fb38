"""An audit log as it was before migration 0013: one full row per entry in the table
`retention_audit_log`, chained afterwards by a sealer, one block per chunk of rows. Written here
the way the sealer of that time wrote it, independently of the migration that reads it."""

from __future__ import annotations

import hashlib
import json
import struct
from datetime import UTC, datetime

import sqlalchemy as sa

GENESIS = hashlib.sha256(b"retention_audit_log chain genesis").digest()
CONTENT = ("id", "domain", "record_id", "action", "run_id", "occurred_at", "policy_version", "archive_uri",
           "deadline", "actor", "detail")


def _utc(value) -> str | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return f"{moment:%Y-%m-%dT%H:%M:%S.%f}Z"


def write_legacy_rows(connection: sa.Connection, rows: list[dict]) -> list[int]:
    """Rows of the old table (CONTENT's columns but id); their ids."""
    table = sa.table("retention_audit_log", *(sa.column(name) for name in CONTENT))
    return [connection.execute(sa.insert(table).values(row).returning(table.c.id)).scalar_one() for row in rows]


def seal_legacy(connection: sa.Connection, through: int, chunk: int = 4) -> dict[str, tuple[int, str]]:
    """Every row with an id up to `through` chained, per domain in id order, `chunk` rows a block, and
    each domain's head written: {domain: (last position, last hash)}."""
    rows = connection.execute(sa.text(f"SELECT {', '.join(CONTENT)} FROM retention_audit_log "
                                      "WHERE id <= :through ORDER BY id"), {"through": through}).all()
    heads = {}
    for domain in sorted({row[1] for row in rows}):
        mine = [row for row in rows if row[1] == domain]
        state, position, block = GENESIS, 0, 0
        for start in range(0, len(mine), chunk):
            part, before, hashes = mine[start:start + chunk], state, []
            for row in part:
                content = [_utc(value) if name in ("occurred_at", "deadline") else value
                           for name, value in zip(CONTENT, row, strict=True)]
                state = hashlib.sha256(state + json.dumps(content, ensure_ascii=False, separators=(",", ":"))
                                       .encode()).digest()
                hashes.append(state[:16])
            block += 1
            connection.execute(sa.text(
                "INSERT INTO retention_audit_chain (domain, block, first_seq, rows, first_id, last_id, ids, "
                "row_hashes, prev_hash, last_hash) VALUES (:domain, :block, :first_seq, :rows, :first_id, :last_id, "
                ":ids, :hashes, :prev, :last)"), {
                "domain": domain, "block": block, "first_seq": position + 1, "rows": len(part),
                "first_id": part[0][0], "last_id": part[-1][0],
                "ids": struct.pack(f">{len(part)}q", *(row[0] for row in part)), "hashes": b"".join(hashes),
                "prev": before.hex(), "last": state.hex()})
            position += len(part)
        connection.execute(sa.text(
            "INSERT INTO retention_audit_chain_heads (domain, last_block, last_seq, last_id, last_hash, "
            "sealed_through) VALUES (:domain, :block, :seq, :last_id, :hash, :through)"), {
            "domain": domain, "block": block, "seq": position, "last_id": mine[-1][0], "hash": state.hex(),
            "through": through})
        heads[domain] = (position, state.hex())
    return heads
