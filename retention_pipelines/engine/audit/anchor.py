"""Anchoring: every chain's head written to the archive store, out of the database's reach.

An anchor is a JSON document listing each chain's last position, row and hash, written as an
object of its own that nothing writes over (`audit_anchors/YYYY/MM/DD/HHMMSS.ffffffZ-<random>.json`,
the database's time): the store refuses a second put under its key, and locks it until written +
RETENTION_AUDIT_ANCHOR_KEEP_DAYS where the archive has an Object Lock mode. Each anchor's key and
SHA-256 are recorded in the database as it is written (retention_audit_anchors). The verifier
(verify.py) reads every anchor back and checks the chains against them, which catches a chain
recomputed wholesale in the database; and checks the anchors against their record
(anchor_check.py), which catches an anchor deleted, replaced or slipped in. Anchors written before
they were write-once, one a day (`audit_anchors/YYYY/MM/DD.json`, the day's later anchor written
over the earlier), are read as well.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from retention_pipelines.logs import get_logger
from retention_pipelines.schema import audit_anchors, audit_chain_heads
from retention_pipelines.stores import AppDatabase, ArchiveStore
from retention_pipelines.stores.settings import AUDIT_ANCHOR_KEEP_DAYS

log = get_logger("audit_chain")

ANCHOR_PREFIX = "audit_anchors/"
# /2: positions and links of the batch chains. /1: of the row chains before the log moved to batches,
# checked against the blocks kept from then (verify.py).
ANCHOR_FORMAT = "retention-audit-anchor/2"
LEGACY_ANCHOR_FORMAT = "retention-audit-anchor/1"
# A day's anchor as it was written before anchors were write-once: no record of it is expected.
DAY_ANCHOR_KEY = re.compile(r"audit_anchors/\d{4}/\d{2}/\d{2}\.json")


@dataclass(frozen=True)
class AnchoredHead:
    """One chain head as an anchor recorded it."""

    key: str
    position: int
    last_id: int | None
    last_hash: str
    legacy: bool = False  # recorded a row chain from before the batches


def anchor_key(written_at: datetime, suffix: str | None = None) -> str:
    """The key of an anchor written at `written_at`: the time to the microsecond sorts the anchors,
    and a random suffix keeps two anchors of the same instant (SQLite's clock counts whole
    seconds) apart."""
    return f"{ANCHOR_PREFIX}{written_at:%Y/%m/%d/%H%M%S.%f}Z-{suffix or secrets.token_hex(6)}.json"


def anchor(database: AppDatabase, archive_store: ArchiveStore, intact: bool | None = None,
           keep_for: timedelta | None = None) -> str:
    """Write every chain's head to the archive store as a new anchor (the database's time, in UTC),
    never over another one; locked until written + keep_for (default RETENTION_AUDIT_ANCHOR_KEEP_DAYS)
    where the store has an Object Lock mode. Returns its key."""
    now = database.now()
    with database.connect() as connection:
        heads = connection.execute(sa.select(audit_chain_heads).order_by(audit_chain_heads.c.domain)).all()
    document = {"format": ANCHOR_FORMAT, "written_at": now.isoformat(), "verified_intact": intact,
                "heads": [{"domain": h.domain, "last_seq": int(h.last_seq), "last_id": int(h.last_id),
                           "last_hash": h.last_hash, "sealed_through": int(h.sealed_through),
                           "sealed_at": database.read_time(h.sealed_at).isoformat() if h.sealed_at else None}
                          for h in heads if h.last_seq]}
    data = json.dumps(document, indent=1, sort_keys=True).encode()
    key = anchor_key(now)
    retain_until = archive_store.retain_until(lambda: now, keep_for or timedelta(days=AUDIT_ANCHOR_KEEP_DAYS))
    # Recorded in the transaction that commits only once the store holds the object: a put that
    # fails leaves no record of an anchor that is not there.
    with database.begin() as connection:
        connection.execute(sa.insert(audit_anchors).values(
            object_key=key, sha256=hashlib.sha256(data).hexdigest(), written_at=database.bind_time(now)))
        archive_store.put_new(key, data, retain_until=retain_until)
    log.info(f"audit chain: {len(document['heads'])} chain heads anchored at {archive_store.uri(key)}",
             extra={"step": "anchor", "domains": len(document["heads"])})
    return key


def read_anchors(archive_store: ArchiveStore, digests: dict[str, str] | None = None
                 ) -> tuple[dict[str, dict[int, list[AnchoredHead]]], list[tuple[str, str]]]:
    """Every head the anchors recorded, by domain and chain position; and (key, why) of each anchor
    that cannot be read. `digests`, when given, gets the SHA-256 of every anchor object read, by
    key (for anchor_check.py, so that no anchor is read twice)."""
    anchors: dict[str, dict[int, list[AnchoredHead]]] = {}
    unreadable = []
    for key in _anchor_keys(archive_store):
        data = archive_store.get(key)
        if digests is not None:
            digests[key] = hashlib.sha256(data).hexdigest()
        try:
            document = json.loads(data)
            if document.get("format") not in (ANCHOR_FORMAT, LEGACY_ANCHOR_FORMAT):
                raise ValueError(f"format {document.get('format')!r}")
            legacy = document["format"] == LEGACY_ANCHOR_FORMAT
            for entry in document["heads"]:
                anchors.setdefault(entry["domain"], {}).setdefault(int(entry["last_seq"]), []).append(
                    AnchoredHead(key, int(entry["last_seq"]), entry.get("last_id"), entry["last_hash"], legacy))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            unreadable.append((key, str(exc) or type(exc).__name__))
    return anchors, unreadable


def _anchor_keys(archive_store: ArchiveStore) -> Iterator[str]:
    for key in archive_store.keys(ANCHOR_PREFIX):
        if key.endswith(".json"):
            yield key


__all__ = ["ANCHOR_PREFIX", "DAY_ANCHOR_KEY", "AnchoredHead", "anchor", "anchor_key", "read_anchors"]
