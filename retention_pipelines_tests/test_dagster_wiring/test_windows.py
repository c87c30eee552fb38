"""Which windows a domain's run covers: from the first after the last recorded one to the latest,
whatever the history holds; the schedule, the sensors and the CLI all ask windows.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from hypothesis import given
from hypothesis import strategies as st

from retention_pipelines.dagster_wiring.common import domain_partitions
from retention_pipelines.dagster_wiring.domain_factory import build_domain_defs
from retention_pipelines.dagster_wiring.windows import (
    RANGE_END_TAG,
    RANGE_START_TAG,
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


def test_the_schedule_asks_for_the_windows_since_the_last_recorded_one():
    domain = build_domain_defs(HOURLY, POLICIES.policy_version)
    [schedule] = domain.schedules
    assert schedule.cron_schedule == f"{HOURLY.schedule.minute_of_hour} * * * *"
    with dg.instance_for_test() as instance:
        record(instance, HOURLY, ["2026-12-06-05:00"])
        # Entered and left, as Dagster's daemon does: left open, it keeps its instance current for later code.
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=NOW) as context:
            request = schedule.evaluate_tick(context).run_requests[0]
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2026-12-06-06:00", "2026-12-06-09:00")
