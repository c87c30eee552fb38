"""A manual-queue item, retried: its record (or, for a failed run or archive, its whole domain) runs
through the same engine as a scheduled run, under the domain's lock. The item is resolved when
nothing of it is left to do; otherwise it stays as it was, with one more attempt counted."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import sqlalchemy as sa

from retention_pipelines.engine.oversight.queue import RECORD_REASONS, ManualQueue, QueueItem
from retention_pipelines.engine.retention.archive_expiry import HELD_REASON as ARCHIVE_HELD_REASON
from retention_pipelines.engine.retention.archive_expiry import QUEUE_REASON as ARCHIVE_QUEUE_REASON
from retention_pipelines.engine.retention.archive_expiry import ArchiveRetention, is_archive_key
from retention_pipelines.engine.retention.results import ArchiveVerificationFailed
from retention_pipelines.engine.retention.run import RetentionEngine
from retention_pipelines.engine.retention.selection import DUE
from retention_pipelines.errors import first_line
from retention_pipelines.stores import HeldLock, LockLost, StoreUnavailable

if TYPE_CHECKING:
    from retention_pipelines.engine.gdpr.erasure_run import SubjectErasure

# What a retry can run into that leaves the item for another try; anything else is a bug and raises.
RETRY_ERRORS = (StoreUnavailable, ArchiveVerificationFailed, LockLost, sa.exc.DBAPIError)


@dataclass(frozen=True)
class RetryOutcome:
    item_id: int
    domain: str
    reason: str
    resolved: bool
    message: str


def retry_item(queue: ManualQueue, item: QueueItem, engine: RetentionEngine, run_id: str, by: str,
               lock: HeldLock | None = None, erasure: SubjectErasure | None = None) -> RetryOutcome:
    """One attempt at the item, by what it is about; resolved when nothing of it is left to do,
    else left as it was with one more attempt and why. An erasure's item is erased through
    `erasure`, which its caller makes as for the erasure runs."""
    if item.reason in (ARCHIVE_QUEUE_REASON, ARCHIVE_HELD_REASON) and is_archive_key(item.domain, item.record_id):
        attempt = _retry_archive_object
    elif item.reason == "legal_hold_conflict" or item.erasure_request_id is not None:
        # An erasure's record (its hold released, retryable checked; or one the erasure run could not
        # finish): erased by id now, whatever its retention deadline.
        if erasure is None:
            raise ValueError(f"queue item {item.id} is an erasure's: its retry needs the subject erasure")
        attempt = partial(_erase_record, erasure)
    else:
        attempt = _retry_records
    try:
        done, what = attempt(item, engine, run_id, lock)
    except RETRY_ERRORS as exc:
        done, what = False, first_line(exc)
    if not done:
        queue.retry_failed(item.id, by, what, run_id)
        return RetryOutcome(item.id, item.domain, item.reason, False, what)
    queue.resolve(item.id, by, f"retried in run {run_id}: {what}", run_id)
    return RetryOutcome(item.id, item.domain, item.reason, True, what)


def _retry_records(item: QueueItem, engine: RetentionEngine, run_id: str, lock: HeldLock | None) -> tuple[bool, str]:
    """The item's record (or, for a failed run or archive, its whole domain) through a run."""
    one_record = item.reason in RECORD_REASONS
    selection = DUE.retry([item.record_id] if one_record else None)
    report = engine.run(run_id, lock=lock, selection=selection)
    left = engine.count_remaining(engine.database.now(), None, selection) if one_record else 0
    if report.acted.failed:
        return False, f"{report.acted.failed} rows could not be {report.acted.action} yet"
    if left:
        return False, "the record is still due and was not acted on"
    if not report.acted.acted_on:
        return True, "nothing was left to do"
    return True, f"{report.acted.acted_on} rows {report.acted.action}"


def _erase_record(erasure: SubjectErasure, item: QueueItem, engine: RetentionEngine, run_id: str,
                  lock: HeldLock | None) -> tuple[bool, str]:
    return erasure.erase_record(engine, item, run_id, lock)


def _retry_archive_object(item: QueueItem, engine: RetentionEngine, run_id: str,
                          lock: HeldLock | None) -> tuple[bool, str]:
    """An archive object the store refused to delete: its unit goes through the archive expiry
    again (still only once past keep_for, audited once); done when the object is gone."""
    expiry = ArchiveRetention(engine.policy, engine.policy_version, engine.database,
                              engine.archive_store).expire(run_id, lock=lock, key=item.record_id)
    if engine.archive_store.exists(item.record_id):
        why = ("it holds a record under a legal hold" if expiry.objects_skipped_held else
               "it is under an Object Lock or legal hold" if expiry.objects_skipped_locked else
               "the store refused the delete" if expiry.objects_refused else "it is not past its keep_for")
        return False, f"the archive object is still there: {why}"
    return True, "the archive object was deleted" if expiry.objects_deleted else "the archive object was already gone"
