"""Which windows a domain's run covers: from the first after the last recorded one to the latest,
whatever the history holds; the schedule, the sensors and the CLI all ask windows.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
from hypothesis import given
from hypothesis import strategies as st

from retention_pipelines.dagster_wiring.common import domain_partitions
from retention_pipelines.dagster_wiring.domain_factory import build_domain_defs
from retention_pipelines.dagster_wiring.windows import (
    HISTORY_TAG,
    HISTORY_WINDOWS_PER_RUN,
    RANGE_END_TAG,
    RANGE_START_TAG,
    history_to_record,
    run_request,
    windows_of,
    windows_to_cover,
)
from retention_pipelines.policies import load_policies

POLICIES = load_policies()
HOURLY, DAILY = POLICIES.domains["quiz_responses"], POLICIES.domains["meal_plans"]
NOW = datetime(2026, 12, 6, 9, 20, tzinfo=UTC)


def record(instance: dg.DagsterInstance, policy, keys) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey([policy.name, "deletion"]),
                                                                    partition=key))


def starting(policy, first_day: date):
    """`policy` with its first window on `first_day`."""
    return policy.model_copy(update={"partitions": policy.partitions.model_copy(update={"start": first_day})})


def test_a_domain_without_history_starts_it_with_the_latest_window():
    with dg.DagsterInstance.ephemeral() as instance:
        windows = windows_to_cover(instance, HOURLY, NOW)
    assert (windows.start, windows.end) == ("2026-12-06-09:00", "2026-12-06-09:00")


@given(policy=st.sampled_from([HOURLY, DAILY]), back=st.integers(0, 60),
       recorded=st.sets(st.integers(1, 80), max_size=12))
def test_every_window_after_the_last_recorded_one_is_covered_and_none_before(policy, back, recorded):
    now = NOW - (timedelta(hours=back) if policy is HOURLY else timedelta(days=back))
    keys = domain_partitions(policy).get_partition_keys(current_time=now)
    recorded_keys = [keys[-i] for i in recorded if i <= len(keys)]
    with dg.DagsterInstance.ephemeral() as instance:
        record(instance, policy, recorded_keys)
        windows = windows_to_cover(instance, policy, now)
    assert windows.end == keys[-1]
    covered = keys[keys.index(windows.start):]
    if not recorded_keys or keys[-1] in recorded_keys:
        assert covered == [keys[-1]]
    else:
        last = max(recorded_keys, key=keys.index)
        assert covered == keys[keys.index(last) + 1:]  # nothing after the last recorded one left out


def test_a_range_is_asked_for_by_its_tags_and_read_back_from_them():
    single, several = dg.PartitionKeyRange("a", "a"), dg.PartitionKeyRange("a", "c")
    assert run_request(single).partition_key == "a"
    request = run_request(several, tags={"x": "1"})
    assert request.partition_key is None and request.tags == {"x": "1", RANGE_START_TAG: "a", RANGE_END_TAG: "c"}
    assert request.partition_key_range == several
    run = dg.DagsterRun(job_name="j", run_id="r", tags=request.tags)
    assert windows_of(run) == "a…c"


@given(policy=st.sampled_from([HOURLY, DAILY]), age=st.integers(0, 400), limit=st.integers(1, 120),
       skipped=st.integers(0, 30))
def test_the_history_is_recorded_back_to_the_first_window_newest_first_and_never_twice(policy, age, limit, skipped):
    """Ticks after a domain's first run: each records the windows just before the earliest recorded
    one, at most `limit`, until every window from the first to the latest is recorded."""
    policy = starting(policy, (NOW - (timedelta(hours=age) if policy is HOURLY else timedelta(days=age))).date())
    keys = domain_partitions(policy).get_partition_keys(current_time=NOW)
    first_run = keys[max(0, len(keys) - 1 - skipped):]  # the first run may have covered a range
    with dg.DagsterInstance.ephemeral() as instance:
        assert history_to_record(instance, policy, limit) is None  # no history: nothing to extend
        record(instance, policy, first_run)
        recorded, ticks = list(first_run), 0
        while (windows := history_to_record(instance, policy, limit)) is not None:
            ranged = keys[keys.index(windows.start):keys.index(windows.end) + 1]
            assert 1 <= len(ranged) <= limit
            assert keys.index(windows.end) + 1 == keys.index(recorded[0])  # adjoins the earliest recorded
            assert set(ranged).isdisjoint(recorded)
            record(instance, policy, ranged)
            recorded, ticks = ranged + recorded, ticks + 1
    assert recorded == keys  # every window, none twice, no gap
    assert ticks == -(-(len(keys) - len(first_run)) // limit)  # as few runs as the limit allows


def test_the_schedule_asks_for_the_windows_since_the_last_recorded_one_and_for_the_history_before():
    domain = build_domain_defs(HOURLY, POLICIES.policy_version)
    [schedule] = domain.schedules
    assert schedule.cron_schedule == f"{HOURLY.schedule.minute_of_hour} * * * *"
    with dg.instance_for_test() as instance:
        record(instance, HOURLY, ["2026-12-06-05:00"])
        # Entered and left, as Dagster's daemon does: left open, it keeps its instance current for later code.
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=NOW) as context:
            latest, history = schedule.evaluate_tick(context).run_requests
    assert (latest.tags[RANGE_START_TAG], latest.tags[RANGE_END_TAG]) == ("2026-12-06-06:00", "2026-12-06-09:00")
    assert (history.tags[RANGE_START_TAG], history.tags[RANGE_END_TAG]) == (
        (datetime(2026, 12, 6, 5, tzinfo=UTC) - timedelta(hours=HISTORY_WINDOWS_PER_RUN)).strftime("%Y-%m-%d-%H:%M"),
        "2026-12-06-04:00")
    assert latest.run_key != history.run_key
    assert history.tags[HISTORY_TAG] and int(history.tags["dagster/priority"]) < 0 and HISTORY_TAG not in latest.tags


def test_the_schedule_of_a_domain_whose_history_is_whole_asks_for_one_run():
    policy = starting(HOURLY, date(2026, 12, 6))
    [schedule] = build_domain_defs(policy, POLICIES.policy_version).schedules
    with dg.instance_for_test() as instance:
        record(instance, policy, ["2026-12-06-00:00"])
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=NOW) as context:
            [request] = schedule.evaluate_tick(context).run_requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2026-12-06-01:00", "2026-12-06-09:00")
