"""Anchoring: every chain's head written to the archive store once a day, out of the database's reach.

An anchor is a JSON document per day (`audit_anchors/YYYY/MM/DD.json`) listing each chain's last
position, row and hash. The verifier (verify.py) reads every anchor back and checks the chains
against them, which catches a chain recomputed wholesale in the database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from retention_pipelines.logs import get_logger
from retention_pipelines.schema import audit_chain_heads
from retention_pipelines.stores import AppDatabase, ArchiveStore

log = get_logger("audit_chain")

ANCHOR_PREFIX = "audit_anchors/"
ANCHOR_FORMAT = "retention-audit-anchor/1"


@dataclass(frozen=True)
class AnchoredHead:
    """One chain head as an anchor recorded it."""

    key: str
    position: int
    last_id: int | None
    last_hash: str


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


def read_anchors(archive_store: ArchiveStore) -> tuple[dict[str, dict[int, list[AnchoredHead]]],
                                                      list[tuple[str, str]]]:
    """Every head the anchors recorded, by domain and chain position; and (key, why) of each anchor
    that cannot be read."""
    anchors: dict[str, dict[int, list[AnchoredHead]]] = {}
    unreadable = []
    for key in _anchor_keys(archive_store):
        try:
            document = json.loads(archive_store.get(key))
            if document.get("format") != ANCHOR_FORMAT:
                raise ValueError(f"format {document.get('format')!r}")
            for entry in document["heads"]:
                anchors.setdefault(entry["domain"], {}).setdefault(int(entry["last_seq"]), []).append(
                    AnchoredHead(key, int(entry["last_seq"]), entry.get("last_id"), entry["last_hash"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            unreadable.append((key, str(exc) or type(exc).__name__))
    return anchors, unreadable


def _anchor_keys(archive_store: ArchiveStore) -> Iterator[str]:
    for key in archive_store.keys(ANCHOR_PREFIX):
        if key.endswith(".json"):
            yield key


__all__ = ["ANCHOR_PREFIX", "AnchoredHead", "anchor", "anchor_key", "read_anchors"]
