"""The anchors in the archive store checked against the record of the anchors written.

Every anchor written is recorded, in the transaction that commits once the store holds it, with
the SHA-256 of its bytes (retention_audit_anchors). An anchor recorded but gone from the store, or
whose bytes no longer hash to its record, or that the store keeps in several versions, was deleted
or replaced there; an anchor in the store that was never recorded was put there from outside (or
its record deleted). A day's anchor of the format before anchors were write-once has no record and
is not asked for one.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from retention_pipelines.engine.audit.anchor import ANCHOR_PREFIX, DAY_ANCHOR_KEY
from retention_pipelines.schema import audit_anchors
from retention_pipelines.stores import AppDatabase, ArchiveStore

MISSING = "anchor_missing_object"
REPLACED = "anchor_replaced"
UNRECORDED = "anchor_unrecorded"


@dataclass(frozen=True)
class AnchorProblem:
    kind: str
    key: str
    message: str


def anchor_problems(database: AppDatabase, archive_store: ArchiveStore, digests: dict[str, str]) -> list[AnchorProblem]:
    """What is wrong with the anchors, in key order. `digests`: the SHA-256 of every anchor object
    the store listed, by key (read_anchors fills it); the record is read after the listing, so that
    an anchor written meanwhile is found recorded and then, asked for again, in the store."""
    with database.connect() as connection:
        recorded = {row.object_key: row for row in connection.execute(sa.select(audit_anchors))}
    written_over = archive_store.keys_written_over(ANCHOR_PREFIX) if recorded else set()
    problems = []
    for key in sorted(set(recorded) | set(digests)):
        record = recorded.get(key)
        if record is None:
            if not DAY_ANCHOR_KEY.fullmatch(key):
                problems.append(AnchorProblem(UNRECORDED, key, f"anchor {key} is in the archive store but not in the "
                                                               "record of anchors written: put there from outside, "
                                                               "or its record deleted"))
            continue
        written_at = database.read_time(record.written_at).isoformat()
        if key not in digests:
            if not archive_store.exists(key):  # else written since the store was listed
                problems.append(AnchorProblem(MISSING, key, f"anchor {key}, written at {written_at}, is missing "
                                                            "from the archive store: it was deleted"))
        elif digests[key] != record.sha256:
            problems.append(AnchorProblem(REPLACED, key, f"anchor {key}, written at {written_at}, was replaced: its "
                                                         "bytes no longer have the SHA-256 recorded when it was "
                                                         "written"))
        elif key in written_over:
            problems.append(AnchorProblem(REPLACED, key, f"anchor {key}, written at {written_at}, was replaced: the "
                                                         "store keeps more than one version of it"))
    return problems


__all__ = ["MISSING", "REPLACED", "UNRECORDED", "AnchorProblem", "anchor_problems"]
