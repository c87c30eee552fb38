"""Progress of long work on the operator's terminal. A run: the records it has acted on, as its
audit batches say (the truth of what is done, read back from the database: a batch row carries its
count of records, so a poll reads one row per batch, found by the run's index, never one per
record), against the rows its find step counted, with the rate and the time left. Work of a few
long stages (the report): the stage it is in, with the time each took. Shown only on a terminal
and never with --json: a script reads the result, not a bar."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import sqlalchemy as sa

from retention_pipelines.cli.output import OUTPUT
from retention_pipelines.engine.audit.entries import Action
from retention_pipelines.schema import audit_batches
from retention_pipelines.stores import AppDatabase

POLL_SECONDS = 0.5
# What each kind of long work writes once per record (or archive object) it has done.
ACTED = (Action.DELETED.value, Action.REDACTED.value, Action.REDACTED_BLOB_MISSING.value, Action.ERASED.value)
RESTORED = (Action.RESTORED.value,)
ARCHIVE_EXPIRED = (Action.ARCHIVE_EXPIRED.value,)


def shown() -> bool:
    return sys.stderr.isatty() and not OUTPUT.as_json


@contextlib.contextmanager
def run_progress(database: AppDatabase, run_id: str, what: str, total: Callable[[], int | None] = lambda: None,
                 actions: tuple[str, ...] = ACTED, unit: str = " records") -> Iterator[None]:
    """A bar for the run `run_id` while the block runs it, counting the records of its audit batches of `actions`;
    `total()` is how many it will write, asked again until known (None: not yet, or never: then the
    bar counts without an end)."""
    if not shown():
        yield
        return
    from tqdm import tqdm  # one of dagster's own dependencies: rate and time left, drawn in place

    since = database.bind_time(database.now() - timedelta(seconds=1))
    counted = sa.select(sa.func.coalesce(sa.func.sum(audit_batches.c.records), 0)).where(
        audit_batches.c.run_id == run_id, audit_batches.c.action.in_(actions), audit_batches.c.occurred_at >= since)
    stop = threading.Event()
    bar = tqdm(total=None, desc=what, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def done() -> int:
        with database.connect() as connection:
            return int(connection.execute(counted).scalar_one())

    def follow() -> None:
        while not stop.wait(POLL_SECONDS):
            with contextlib.suppress(sa.exc.SQLAlchemyError):  # a busy moment: the next poll catches up
                if bar.total is None:
                    bar.total = total()
                bar.update(done() - bar.n)

    follower = threading.Thread(target=follow, name=f"progress-{run_id[:8]}", daemon=True)
    follower.start()
    try:
        yield
    finally:
        stop.set()
        follower.join()
        with contextlib.suppress(sa.exc.SQLAlchemyError):  # a run quicker than one poll still ends at its total
            if bar.total is None:
                bar.total = total()
            bar.update(done() - bar.n)
        bar.close()


@contextlib.contextmanager
def stage_progress(what: str, stages: list[str]) -> Iterator[Callable[[str], None]]:
    """A bar over `stages`, the names of the work's stages in order: the block calls the function
    it is given with each stage's name as the stage starts; the bar counts the stages done."""
    if not shown():
        yield lambda stage: None
        return
    from tqdm import tqdm

    bar = tqdm(total=len(stages), desc=what, unit=" stages", file=sys.stderr, dynamic_ncols=True)
    started: list[str] = []

    def start(stage: str) -> None:
        if started:
            bar.update(1)
        started.append(stage)
        bar.set_postfix_str(stage)

    try:
        yield start
        if started:
            bar.update(1)
            bar.set_postfix_str("done")
    finally:
        bar.close()
