"""What rows a run works on: one value, chosen by the caller and read by every step.

A scheduled run works on the rows past their deadline; an erasure on one subject's rows, whatever
their deadline; a manual-queue retry on the records its item names. The run's steps (find,
archive, act, audit) and the table's statements read the selection they are handed; nothing is
switched on a copy of the engine or the table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

ERASED_PLACEHOLDER_PATTERN = "erased-by-request-%@erased.invalid"  # LIKE pattern; % is the request id


@dataclass(frozen=True)
class SubjectRows:
    """An erasure's subject in one domain: the addresses, exactly as stored, of the rows that name
    them (never logged; None when erasing records by id), the request and its due date."""

    spellings: tuple[str, ...] | None
    request_id: int
    due_at: datetime

    @property
    def placeholder(self) -> str:
        """What replaces the address in a row that stays and cannot hold NULL: says which request
        erased it, nothing of whom."""
        return ERASED_PLACEHOLDER_PATTERN.replace("%", str(self.request_id))

    def __repr__(self) -> str:  # never the address, in a traceback or a log line
        return f"SubjectRows(request_id={self.request_id})"


@dataclass(frozen=True)
class Selection:
    """The rows a run works on: those past their deadline (`DUE`), or an erasure's subject's
    (`erasing`); a manual-queue item's retry (`retry`) limits either to the records it names.
    A retry counts its attempt on its item, so what it cannot finish makes no new item."""

    subject: SubjectRows | None = None  # an erasure's: its rows whatever their deadline
    record_ids: tuple[str, ...] | None = None  # only these records (None: every row selected)
    retrying: bool = False

    @classmethod
    def erasing(cls, subject: SubjectRows) -> Selection:
        return cls(subject=subject)

    def retry(self, record_ids: list[str] | tuple[str, ...] | None) -> Selection:
        """The same rows for a queue item's retry, limited to these records (None: not limited)."""
        return replace(self, record_ids=None if record_ids is None else tuple(record_ids), retrying=True)

    @property
    def erasure_request_id(self) -> int | None:
        return self.subject.request_id if self.subject is not None else None

    @property
    def audit_detail(self) -> str | None:
        """What each audit entry and queue item of the run says of why: the erasure's request."""
        return f"erasure request {self.subject.request_id}" if self.subject is not None else None


DUE = Selection()
