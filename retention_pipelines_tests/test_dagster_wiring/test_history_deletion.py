"""delete_runs deletes exactly the runs it is given, with their event logs, and leaves the instance as
`instance.delete_run` would, on SQLite (an event log file per run) and on PostgreSQL: for any subset
of a small history, two copies of one instance, one purged each way, hold the same rows and answer
the same, but for the asset check executions of the runs deleted, which go, the latest of each check
kept. A storage it does not know goes through `delete_run`. trim_run_details takes from successful
runs only how they ran and the outputs their materializations and check evaluations repeat."""

from __future__ import annotations

import tempfile
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.test_utils import create_run_for_test
from hypothesis import given
from hypothesis import strategies as st

from retention_pipelines.dagster_wiring.history_deletion import delete_runs, deletes_in_bulk, trim_run_details
from retention_pipelines_tests.support.dagster_history import copy_instance, failing_job, instance_at, stored_rows

PARTITIONS = dg.StaticPartitionsDefinition(["a", "b"])
CONCURRENCY_KEY = "app_database"


@dg.asset(partitions_def=PARTITIONS)
def windowed() -> None:
    """Stands for a domain's partitioned assets."""


@dg.asset(check_specs=[dg.AssetCheckSpec("fine", asset="overview")])
def overview():
    """Stands for an unpartitioned asset with a check (the health asset)."""
    yield dg.MaterializeResult(metadata={"failing": 0})
    yield dg.AssetCheckResult(check_name="fine", passed=True)


@dg.op
def observe(context) -> None:
    context.log_event(dg.AssetObservation(asset_key="watched", metadata={"rows": 3}))


@dg.job
def observing_job():
    observe()


def the_history(instance: dg.DagsterInstance) -> list[str]:
    """Runs of every kind whose rows delete_run removes: tags, events, asset events with tags,
    asset check executions, an observation, a failed run, a run still holding a concurrency slot, a
    run with no events; each partition and the unpartitioned asset materialized twice, so that a deleted run may
    or may not hold a latest materialization."""
    runs = []
    for partition in ("a", "b", "a"):
        runs.append(dg.materialize([windowed], instance=instance, partition_key=partition).run_id)
    for _ in range(2):
        runs.append(dg.materialize([overview], instance=instance).run_id)
    runs.append(observing_job.execute_in_process(instance=instance).run_id)
    runs.append(failing_job.execute_in_process(instance=instance, raise_on_error=False).run_id)
    unfinished = create_run_for_test(instance, job_name="observing_job", status=DagsterRunStatus.STARTED,
                                     tags={"retention/domain": "quiz_responses"})
    runs.append(unfinished.run_id)
    # A run that died without giving its slot back.
    instance.event_log_storage.set_concurrency_slots(CONCURRENCY_KEY, 1)
    instance.event_log_storage.claim_concurrency_slot(CONCURRENCY_KEY, runs[0], "windowed")
    return runs


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def history(request, tmp_path_factory, postgres_server):
    """A closed instance with the history above: its folder, its database (PostgreSQL) and run ids."""
    folder = tmp_path_factory.mktemp("history") / "instance"
    folder.mkdir()
    url = postgres_server.create_database(f"history_{folder.parent.name}".replace("-", "_")) \
        if request.param == "postgresql" else None
    with instance_at(folder, url) as instance:
        runs = the_history(instance)
        events = {run_id: [record.storage_id for record in instance.get_records_for_run(run_id).records]
                  for run_id in runs}
        tags = {run_id: instance.get_run_by_id(run_id).tags for run_id in runs}
    return folder, url, runs, events, tags


def answers(instance: dg.DagsterInstance) -> dict:
    """What the UI and the purge read of the history."""
    materializations = instance.get_event_records(dg.EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION))
    observations = instance.get_event_records(dg.EventRecordsFilter(DagsterEventType.ASSET_OBSERVATION))
    latest = {key: instance.get_latest_materialization_event(key) for key in (windowed.key, overview.key)}
    return {
        "runs": [(r.storage_id, r.dagster_run.run_id, r.dagster_run.status, dict(r.dagster_run.tags))
                 for r in instance.get_run_records()],
        "materializations": [(r.storage_id, r.run_id) for r in materializations],
        "observations": [(r.storage_id, r.run_id) for r in observations],
        "latest": {key: event and (event.run_id, event.timestamp) for key, event in latest.items()},
        "partitions": instance.get_materialized_partitions(windowed.key),
        "slots": instance.event_log_storage.get_concurrency_info(CONCURRENCY_KEY),
    }


def check_executions(instance: dg.DagsterInstance) -> list[tuple[int, str]]:
    return [(record.id, record.run_id) for record in instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(overview.key, "fine"), limit=100)]


@given(chosen=st.sets(st.integers(0, 7)))
def test_the_bulk_path_deletes_exactly_the_chosen_runs_and_leaves_what_delete_run_leaves(history, postgres_server,
                                                                                         chosen):
    folder, url, runs, events, tags = history
    going = [runs[n] for n in sorted(chosen)]
    with tempfile.TemporaryDirectory() as scratch:
        bulk_folder, one_by_one_folder = Path(scratch) / "bulk", Path(scratch) / "one_by_one"
        bulk_url = copy_instance(folder, url, postgres_server, bulk_folder)
        one_by_one_url = copy_instance(folder, url, postgres_server, one_by_one_folder)
        with instance_at(bulk_folder, bulk_url) as bulk, instance_at(one_by_one_folder, one_by_one_url) as one_by_one:
            assert deletes_in_bulk(bulk)
            delete_runs(bulk, going)
            for run_id in going:
                one_by_one.delete_run(run_id)

            assert {r.dagster_run.run_id for r in bulk.get_run_records()} == set(runs) - set(going)
            for run_id in runs:
                if run_id in going:
                    assert bulk.get_run_by_id(run_id) is None and bulk.all_logs(run_id) == [], run_id
                else:
                    kept = bulk.get_records_for_run(run_id).records
                    assert [record.storage_id for record in kept] == events[run_id], run_id
                    assert bulk.get_run_by_id(run_id).tags == tags[run_id], run_id
            assert answers(bulk) == answers(one_by_one)
            left_by_delete_run = check_executions(one_by_one)
            latest = max(left_by_delete_run)
            assert check_executions(bulk) == [execution for execution in left_by_delete_run
                                              if execution[1] not in going or execution == latest]
        without_checks = [{place: rows for place, rows in stored_rows(*instance).items()
                           if place[1] != "asset_check_executions"}
                          for instance in ((bulk_folder, bulk_url), (one_by_one_folder, one_by_one_url))]
        assert without_checks[0] == without_checks[1]


def test_a_storage_that_deletes_its_own_way_deletes_each_run_through_delete_run(history, postgres_server,
                                                                               tmp_path, monkeypatch):
    folder, url, runs, _, _ = history
    asked = []
    original = SqlEventLogStorage.delete_events

    def delete_events(storage, run_id):
        asked.append(run_id)
        original(storage, run_id)

    copy_url = copy_instance(folder, url, postgres_server, tmp_path / "copy")
    with instance_at(tmp_path / "copy", copy_url) as instance:
        monkeypatch.setattr(type(instance.event_log_storage), "delete_events", delete_events)
        assert not deletes_in_bulk(instance)
        delete_runs(instance, runs[:3])
        assert asked == runs[:3]
        assert {r.dagster_run.run_id for r in instance.get_run_records()} == set(runs[3:])
        assert all(instance.all_logs(run_id) == [] for run_id in runs[:3])


KEPT_BY_TRIMMING = {"PIPELINE_START", "PIPELINE_SUCCESS", "PIPELINE_FAILURE", "STEP_START", "STEP_SUCCESS",
                    "STEP_FAILURE", "ASSET_MATERIALIZATION", "ASSET_MATERIALIZATION_PLANNED", "ASSET_OBSERVATION",
                    "ASSET_CHECK_EVALUATION", "ASSET_CHECK_EVALUATION_PLANNED", "LOGS_CAPTURED", None}


def event_types(instance: dg.DagsterInstance, run_id: str) -> list[str | None]:
    return [record.dagster_event.event_type_value if record.dagster_event else None
            for record in instance.all_logs(run_id)]


def test_trimming_keeps_what_successful_runs_are_read_for_and_leaves_failed_runs_whole(history, postgres_server,
                                                                                      tmp_path):
    folder, url, runs, _, _ = history
    copy_url = copy_instance(folder, url, postgres_server, tmp_path / "copy")
    with instance_at(tmp_path / "copy", copy_url) as instance:
        before = {run_id: event_types(instance, run_id) for run_id in runs}
        read = answers(instance), check_executions(instance)
        statuses = {run_id: instance.get_run_by_id(run_id).status for run_id in runs}

        trimmed = trim_run_details(instance, runs)

        after = {run_id: event_types(instance, run_id) for run_id in runs}
        assert trimmed == sum(len(before[run_id]) - len(after[run_id]) for run_id in runs) > 0
        for run_id in runs:
            if statuses[run_id] is not DagsterRunStatus.SUCCESS:
                assert after[run_id] == before[run_id], run_id
                continue
            op_run = "ASSET_MATERIALIZATION" not in before[run_id] and "ASSET_CHECK_EVALUATION" not in before[run_id]
            kept = KEPT_BY_TRIMMING | ({"STEP_OUTPUT", "HANDLED_OUTPUT"} if op_run else set())
            assert after[run_id] == [event for event in before[run_id] if event in kept], run_id
        assert "STEP_OUTPUT" in after[runs[5]]  # the op job's record is its output
        assert (answers(instance), check_executions(instance)) == read
        assert trim_run_details(instance, runs) == 0
