"""What each step of a retention run hands to the next, and to the people reading the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from retention_pipelines.engine.retention.selection import DUE, Selection


class ArchiveVerificationFailed(Exception):
    """An archive object read back does not match what was written: its rows are left in place."""

    def __init__(self, message: str, uri: str | None = None):
        super().__init__(message)
        self.uri = uri  # the archive object, for the manual-resolution queue


@dataclass(frozen=True)
class Found:
    """What is due: the cutoff (a deadline, from the database's clock) and counts, no ids."""

    domain: str
    database_now: datetime
    window_start: datetime | None
    window_end: datetime | None
    cutoff: datetime
    clock_cutoff: datetime
    due_in_window: int
    overdue: int
    held: int
    selection: Selection = DUE  # what the run works on: what archive and act read

    @property
    def rows(self) -> int:
        return self.due_in_window + self.overdue


@dataclass(frozen=True)
class ArchivedBatch:
    key: str
    manifest_key: str
    uri: str
    rows: int
    sha256: str


@dataclass
class Archived:
    enabled: bool
    dry_run: bool
    batches: list[ArchivedBatch] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(b.rows for b in self.batches)


@dataclass(frozen=True)
class Batch:
    """One batch of the act step, acted on in one transaction: exactly the rows `pks` (an archived
    object's, `archive_uri` naming it and `blobs` its manifest's objects), or, when `pks` is None,
    the next `limit` due rows of `lane` (a KeyRange)."""

    pks: list | None = None
    lane: object | None = None
    limit: int = 0
    archive_uri: str | None = None
    blobs: dict | None = None


@dataclass(frozen=True)
class Refusal:
    """A row a batch left for a person: the queue reason, and why in words."""

    reason: str
    why: str


@dataclass(frozen=True)
class BatchDone:
    """A batch's transaction: the rows acted on, the rows refused by record id, and for a lane's
    batch the (clock, key) of the last row it chose (None when the lane had none left)."""

    acted_on: int
    refused: dict[str, Refusal]
    last: tuple | None = None


@dataclass(frozen=True)
class BatchOutcome:
    """What the act step counts of a batch: rows acted on, rows refused, its seconds, and where a
    lane's walk goes on from."""

    acted_on: int
    failed: int
    seconds: float
    last: tuple | None = None


@dataclass
class Acted:
    action: str
    dry_run: bool
    since: datetime | None = None  # the database's now before the first batch: audit rows are newer
    acted_on: int = 0
    failed: int = 0  # rows left untouched because their object could not be deleted
    skipped_legal_hold: int = 0
    batches: int = 0
    # Every batch transaction's wall time, in the order they finished (a few thousand floats for
    # the largest run): the benchmarks' p99, and the batch sizer's evidence.
    batch_seconds: list[float] = field(default_factory=list)
    paused_seconds: float = 0.0  # the workers' rests while the database was busy (engine/retention/pacing.py)
    seconds: float = 0.0

    @property
    def longest_batch_seconds(self) -> float:
        return max(self.batch_seconds, default=0.0)


@dataclass(frozen=True)
class Audited:
    run_id: str
    audit_rows: int
    acted_on: int
    skipped_legal_hold_rows: int

    @property
    def consistent(self) -> bool:
        return self.audit_rows == self.acted_on


@dataclass(frozen=True)
class Orphans:
    objects_without_row: int
    rows_without_object: int
    objects: int
    rows_with_object: int


@dataclass(frozen=True)
class RunReport:
    found: Found
    archived: Archived
    acted: Acted
    audited: Audited | None
