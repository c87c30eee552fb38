"""Which windows a run of a domain covers: decided here for the schedule, the sensors and the CLI.

A run's cutoff is the end of its last window (or the database's now), and it takes every row due
before it, so a run enforces every earlier window as well. Its partition range says so: from the
first window after the last one the domain's history records, to the latest. The UI then shows a
window Missing only where no run has covered it.

The history starts with the domain's first run, which records the latest window only: recording a
window is eight events in Dagster's storage (planned and materialized, per asset), some 24 ms each
on the embedded SQLite instance, and a year of hourly windows would keep that first run busy for
half an hour. The windows before it are recorded from then on, newest first, by one more run per
schedule tick over at most HISTORY_WINDOWS_PER_RUN of them (`history_to_record`), queued behind the
run of the latest windows (a lower priority) and tagged HISTORY_TAG. Such a run is a real run: its
cutoff is the end of its last window, it takes whatever is still due before it and its
`no_rows_past_deadline` check proves none is left, so what it records is what it enforced.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from retention_pipelines.dagster_wiring.common import domain_partitions
from retention_pipelines.policies import DomainPolicy

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# A week of hourly windows (half a year of daily ones): some 1,300 events, half a minute of Dagster's
# bookkeeping, so an hourly domain's year of history is recorded within three days of its first run.
HISTORY_WINDOWS_PER_RUN = 168
HISTORY_TAG = "retention/history"
# The queue launches the run of the latest windows first: the history waits, compliance does not.
HISTORY_TAGS = {HISTORY_TAG: "earlier windows", "dagster/priority": "-1"}


def windows_to_cover(instance: dg.DagsterInstance, policy: DomainPolicy, current_time: datetime | None = None,
                     recorded: set[str] | None = None) -> dg.PartitionKeyRange:
    """From the first window after the last recorded one (or the latest window, for a domain
    without history) to the latest window, as of `current_time` (default now)."""
    # Asked on every sensor tick: the windows are stepped through from the last recorded one, never
    # listed (a year of hourly windows is some 8,800 keys).
    partitions = domain_partitions(policy)
    # end_offset=1: the latest window is the one in progress, the one that holds the moment.
    latest = partitions.get_partition_key_for_timestamp((current_time or datetime.now(UTC)).timestamp())
    recorded = recorded_windows(instance, policy) if recorded is None else recorded
    last_recorded = max((key for key in recorded if key <= latest), default=None)
    if last_recorded is None or last_recorded == latest:
        return dg.PartitionKeyRange(latest, latest)
    first = partitions.get_next_partition_key(last_recorded) or latest
    return dg.PartitionKeyRange(first, latest)


def history_to_record(instance: dg.DagsterInstance, policy: DomainPolicy, limit: int = HISTORY_WINDOWS_PER_RUN,
                      recorded: set[str] | None = None) -> dg.PartitionKeyRange | None:
    """The windows just before the first recorded one, at most `limit` of them; None when the history
    reaches back to the domain's first window, or has not started."""
    first_recorded = min(recorded_windows(instance, policy) if recorded is None else recorded, default=None)
    partitions = domain_partitions(policy)
    if first_recorded is None or first_recorded == partitions.get_first_partition_key():
        return None
    # The domain's windows are UTC hours or days, all of one length: stepping back is arithmetic.
    before = partitions.time_window_for_partition_key(first_recorded).start
    length = before - partitions.get_prev_partition_window(before).start
    start = max(before - limit * length, partitions.start)
    return dg.PartitionKeyRange(partitions.get_partition_key_for_timestamp(start.timestamp()),
                                partitions.get_partition_key_for_timestamp((before - length).timestamp()))


def recorded_windows(instance: dg.DagsterInstance, policy: DomainPolicy) -> set[str]:
    """The windows the domain's history records as enforced (one read of the instance: a schedule
    tick hands it to both functions above). A window's key is its start, written
    with fixed-width fields: text order is time order."""
    return instance.get_materialized_partitions(dg.AssetKey([policy.name, "deletion"]))


def window_tags(windows: dg.PartitionKeyRange) -> dict[str, str]:
    """The run tags that make a run cover `windows`: one partition, or a range of them."""
    if windows.start == windows.end:
        return {"dagster/partition": windows.start}
    return {RANGE_START_TAG: windows.start, RANGE_END_TAG: windows.end}


def run_request(windows: dg.PartitionKeyRange, tags: dict[str, str] | None = None, **kwargs) -> dg.RunRequest:
    """A request for a run covering `windows`."""
    if windows.start == windows.end:
        return dg.RunRequest(partition_key=windows.start, tags=tags or {}, **kwargs)
    return dg.RunRequest(tags={**(tags or {}), **window_tags(windows)}, **kwargs)


def windows_of(run: dg.DagsterRun) -> str | None:
    """The windows a run covered, as operators read them: `2026-12-06-09:00` or `…-07:00…2026-12-06-09:00`."""
    if RANGE_START_TAG in run.tags:
        return f"{run.tags[RANGE_START_TAG]}…{run.tags.get(RANGE_END_TAG, '')}"
    return run.tags.get("dagster/partition")
