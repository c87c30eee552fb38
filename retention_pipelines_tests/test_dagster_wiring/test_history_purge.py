"""dagster_history_purge_job: a dry run counts and deletes nothing; the real run deletes old finished
runs with their event logs and the partitions of completed, reported requests, and keeps recent
runs, unfinished ones, the runs holding an asset partition's latest materialization and the runs
and partitions of requests still open or not yet in a report; a batch erasure run stays until every
request it names is reported, and keeps each of their partitions while it stays. `decide` keeps
exactly what the rule says, over many runs."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.test_utils import create_run_for_test
from hypothesis import given
from hypothesis import strategies as st

from retention_pipelines.dagster_wiring.erasure_run import (
    ERASURE_BATCH_JOB,
    ERASURE_BATCH_OP,
    ERASURE_JOB,
    ERASURE_PARTITIONS,
    OUTCOME_KEY,
    ErasureBatchConfig,
)
from retention_pipelines.dagster_wiring.history_purge import (
    PURGE_JOB,
    PURGE_SCHEDULE,
    Decision,
    HistoryAges,
    PurgeConfig,
    RunFacts,
    build_history_purge_defs,
    decide,
    partitions_to_delete,
)
from retention_pipelines.dagster_wiring.report import REPORT_KEY
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.gdpr.requests import COMPLETED, OPEN, RECEIVED
from retention_pipelines_tests.support.dagster_history import backdate_run, erasure_request, failing_job
from retention_pipelines_tests.support.dagster_runs import output_metadata

PARTITIONS = dg.StaticPartitionsDefinition(["a", "b"])


@dg.asset(partitions_def=PARTITIONS)
def windowed() -> None:
    """Stands for a domain's partitioned assets."""


@dg.asset
def overview() -> None:
    """Stands for an unpartitioned asset (the queue's health, the requests' deadlines)."""


@dg.asset(key=OUTCOME_KEY, partitions_def=ERASURE_PARTITIONS)
def outcome() -> None:
    """Stands for the erasure run's assets."""


ERASURE_RUNS = dg.Definitions(assets=[outcome], jobs=[dg.define_asset_job(
    ERASURE_JOB, selection=[OUTCOME_KEY], partitions_def=ERASURE_PARTITIONS)])


@dg.op(name=ERASURE_BATCH_OP, out=dg.Out(dg.Nothing))
def erase_batch(config: ErasureBatchConfig):
    """Stands for the erasure sensor's batch run: the outcome of each of its requests in its partition."""
    for round_ in config.requests:
        yield dg.AssetMaterialization(OUTCOME_KEY, partition=str(round_.request_id))
    yield dg.Output(None)


@dg.job(name=ERASURE_BATCH_JOB)
def erasure_batch_job():
    erase_batch()


@dg.op
def seal() -> None:
    """Stands for an op job's run, which materializes nothing."""


@dg.job
def sealing_job():
    seal()


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance


def purge_defs(database_url: str | None = None) -> dg.Definitions:
    return dg.Definitions.merge(build_history_purge_defs(), dg.Definitions(
        resources={"retention_stores": RetentionStores(database_url=database_url)}))


def purge(instance, pg_url: str, dry_run: bool) -> dict:
    result = purge_defs(pg_url).resolve_job_def(PURGE_JOB).execute_in_process(
        instance=instance, run_config={"ops": {"dagster_history_purge": {"config": {"dry_run": dry_run}}}})
    assert result.success
    return output_metadata(result)


def materialized(instance, asset, partition: str | None = None, days: float = 0) -> str:
    result = dg.materialize([asset], instance=instance, partition_key=partition)
    backdate_run(instance, result.run_id, days)
    return result.run_id


def erasure_run(instance, request_id: int, days: float) -> str:
    result = ERASURE_RUNS.resolve_job_def(ERASURE_JOB).execute_in_process(instance=instance,
                                                                         partition_key=str(request_id))
    backdate_run(instance, result.run_id, days)
    return result.run_id


def batch_run(instance, request_ids: list[int], days: float) -> str:
    result = erasure_batch_job.execute_in_process(instance=instance, run_config={"ops": {ERASURE_BATCH_OP: {
        "config": {"requests": [{"request_id": request_id} for request_id in request_ids]}}}})
    backdate_run(instance, result.run_id, days)
    return result.run_id


def op_run(instance, days: float) -> str:
    result = sealing_job.execute_in_process(instance=instance)
    backdate_run(instance, result.run_id, days)
    return result.run_id


def test_the_purge_deletes_what_is_past_its_age_and_keeps_what_auditors_read(instance, pg_url, pg_database,
                                                                               monkeypatch):
    monkeypatch.setenv("RETENTION_PURGE_LATEST_MATERIALIZATIONS_AFTER_DAYS", "400")
    monkeypatch.setenv("RETENTION_PURGE_RUN_DETAILS_AFTER_DAYS", "36525")  # the kept runs' logs compared whole
    now = datetime.now(UTC)
    last_month = (now.replace(day=1) - timedelta(days=1)).replace(day=10)
    reported = erasure_request(pg_database, COMPLETED, last_month)
    reported_too = erasure_request(pg_database, COMPLETED, last_month)
    unreported = erasure_request(pg_database, COMPLETED, now)  # this month: its report is not made yet
    still_open = erasure_request(pg_database, RECEIVED, None)

    @dg.asset(key=REPORT_KEY, partitions_def=dg.StaticPartitionsDefinition([f"{last_month:%Y-%m}-01"]))
    def report() -> None:
        """Stands for the month's compliance report."""

    report_run = materialized(instance, report, f"{last_month:%Y-%m}-01", days=500)
    instance.add_dynamic_partitions(ERASURE_PARTITIONS.name, [str(reported), str(reported_too), str(unreported),
                                                              str(still_open)])

    old_routine = op_run(instance, days=91)
    recent_routine = op_run(instance, days=89)
    replaced = materialized(instance, windowed, "a", days=200)  # partition a was materialized again since
    latest_of_a = materialized(instance, windowed, "a", days=120)
    latest_of_b_past_its_age = materialized(instance, windowed, "b", days=401)
    replaced_overview = materialized(instance, overview, days=100)
    latest_overview = materialized(instance, overview, days=95)
    erasure_reported = erasure_run(instance, reported, days=401)
    erasure_unreported = erasure_run(instance, unreported, days=401)
    erasure_open = erasure_run(instance, still_open, days=401)
    batch_reported = batch_run(instance, [reported, reported_too], days=401)
    # Named by a batch with a request not yet reported: the batch stays, and reported_too's partition with it.
    batch_unreported = batch_run(instance, [reported_too, unreported], days=401)
    unfinished = create_run_for_test(instance, job_name="sealing_job", status=DagsterRunStatus.STARTED).run_id
    backdate_run(instance, unfinished, 300)
    every = [report_run, old_routine, recent_routine, replaced, latest_of_a, latest_of_b_past_its_age,
             replaced_overview, latest_overview, erasure_reported, erasure_unreported, erasure_open, batch_reported,
             batch_unreported, unfinished]
    gone = {old_routine, replaced, latest_of_b_past_its_age, replaced_overview, erasure_reported, batch_reported}
    events = {run_id: len(instance.all_logs(run_id)) for run_id in every}
    assert all(count for run_id, count in events.items() if run_id != unfinished)

    counted = purge(instance, pg_url, dry_run=True)
    assert counted["dry_run"] is True
    assert (counted["runs_would_delete"], counted["runs_deleted"]) == (len(gone), 0)
    assert (counted["erasure_partitions_would_delete"], counted["erasure_partitions_deleted"]) == (1, 0)
    assert counted["runs_examined"] == len(every) - 1  # all but the recent routine run are past 90 days
    assert (counted["kept_unfinished"], counted["kept_latest_materialization"],
            counted["kept_erasure_not_reported"]) == (1, 3, 3)
    assert {run_id: len(instance.all_logs(run_id)) for run_id in every} == events
    assert len(instance.get_dynamic_partitions(ERASURE_PARTITIONS.name)) == 4

    done = purge(instance, pg_url, dry_run=False)
    assert (done["runs_deleted"], done["runs_would_delete"], done["erasure_partitions_deleted"]) == (len(gone), 0, 1)
    assert done["event_rows_trimmed"] == 0
    for run_id in every:
        if run_id in gone:
            assert instance.get_run_by_id(run_id) is None and instance.all_logs(run_id) == [], run_id
        else:
            assert instance.get_run_by_id(run_id) is not None and len(instance.all_logs(run_id)) == events[run_id]
    assert set(instance.get_dynamic_partitions(ERASURE_PARTITIONS.name)) == {str(reported_too), str(unreported),
                                                                             str(still_open)}
    # What the UI shows of the assets is as it was: each partition's latest materialization is there.
    assert instance.get_materialized_partitions(windowed.key) == {"a"}
    assert instance.get_latest_materialization_event(overview.key).run_id == latest_overview

    again = purge(instance, pg_url, dry_run=False)
    assert (again["runs_deleted"], again["erasure_partitions_deleted"]) == (0, 0)


def test_the_purge_trims_the_event_logs_of_successful_runs_past_their_details_age(instance, pg_url):
    engine_events = {}
    for name, days in (("trimmed", 8), ("recent", 6)):
        engine_events[name] = op_run(instance, days)
    failed = failing_job.execute_in_process(instance=instance, raise_on_error=False).run_id
    backdate_run(instance, failed, 8)
    logs = {run_id: instance.all_logs(run_id) for run_id in [*engine_events.values(), failed]}

    assert purge(instance, pg_url, dry_run=True)["event_rows_trimmed"] == 0
    assert {run_id: instance.all_logs(run_id) for run_id in logs} == logs
    done = purge(instance, pg_url, dry_run=False)

    trimmed = engine_events["trimmed"]
    left = [record for record in logs[trimmed] if record.dagster_event.event_type_value not in (
        "ENGINE_EVENT", "RESOURCE_INIT_STARTED", "RESOURCE_INIT_SUCCESS")]
    assert instance.all_logs(trimmed) == left and done["event_rows_trimmed"] == len(logs[trimmed]) - len(left) > 0
    assert done["run_details_after_days"] == 7
    for run_id in (engine_events["recent"], failed):
        assert instance.all_logs(run_id) == logs[run_id]


def test_the_schedule_deletes_daily_and_a_run_by_hand_is_a_dry_run():
    schedule = purge_defs().resolve_schedule_def(PURGE_SCHEDULE)
    assert schedule.cron_schedule == "0 5 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    [request] = schedule.evaluate_tick(dg.build_schedule_context()).run_requests
    assert request.run_config["ops"] == {"dagster_history_purge": {"config": {"dry_run": False}}}
    assert PurgeConfig().dry_run is True


AGES = HistoryAges(runs=timedelta(days=10), erasure_runs=timedelta(days=14), latest_materializations=timedelta(days=17))
NOW = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
runs = st.lists(st.builds(
    RunFacts, run_id=st.uuids().map(str), created_at=st.integers(0, 20 * 24).map(lambda h: NOW - timedelta(hours=h)),
    finished=st.booleans(), holds_latest=st.booleans(), holds_report=st.booleans(), erasure=st.booleans(),
    request_ids=st.lists(st.integers(1, 4), max_size=3).map(tuple)), min_size=5, max_size=40)


@given(runs=runs, reported=st.frozensets(st.integers(1, 4)))
def test_exactly_the_finished_runs_past_their_age_and_not_holding_what_auditors_read_go(runs, reported):
    chosen = {run.run_id for run in runs if decide(run, NOW, AGES, reported) is Decision.PURGE}
    expected = set()
    for run in runs:
        days = (NOW - run.created_at) / timedelta(days=1)
        if not run.finished or run.holds_report or days < (14 if run.erasure else 10):
            continue
        if run.holds_latest and days < 17:
            continue
        if run.erasure and (not run.request_ids or any(r not in reported for r in run.request_ids)):
            continue
        expected.add(run.run_id)
    assert chosen == expected


def test_a_partition_goes_only_when_its_request_is_reported_and_none_of_its_runs_is_left():
    assert partitions_to_delete(["1", "2", "3", "4"], frozenset({1, 2, 4}), {"2"}) == ["1", "4"]
    assert RECEIVED in OPEN
