"""One domain launched by every path an operator has, on the production instance (deploy/dagster.yaml)
with `dagster-webserver` and `dagster-daemon run`, nothing mocked:

- its job through the webserver's GraphQL (the launchpad's call, into the run queue), an asset
  backfill of three windows (one run over their range), and `dagster asset materialize` (in its own
  process, outside the queue), all at once: no run fails, their steps never overlap (each waits
  for the domain's pool slot), each row is deleted and audited once, every window covered shows
  materialized;
- its dry-run job: the assets' history and partition status stay as they were;
- a run that failed, retried from its failure by the webserver in a fresh process with the
  instance's local storage wiped (a new pod): it succeeds.

Screenshots of the partition page after the real runs and after the dry run: test-artifacts/ui/.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta

import dagster as dg

from retention_pipelines.dagster_wiring.common import domain_partitions, domain_pool, dry_run_job_name, job_name
from retention_pipelines.policies import load_policies
from retention_pipelines.stores import domain_locks
from retention_pipelines_tests.support.app_rows import audit_entries, insert_quiz_rows, remaining_ids
from retention_pipelines_tests.support.browser import chromium, page
from retention_pipelines_tests.support.dagster_deployment import (
    LAUNCH_BACKFILL,
    Daemon,
    Webserver,
    launch_job,
    partition_statuses,
    script,
    wait_for_backfill_runs,
    wait_for_run,
)
from retention_pipelines_tests.support.repository import REPOSITORY
from retention_pipelines_tests.support.servers import free_port

DOMAIN = "quiz_responses"
STEPS = ("expired_records", "archive", "deletion", "audit")
ASSETS = [dg.AssetKey([DOMAIN, step]) for step in STEPS]
ARTIFACTS = REPOSITORY / "test-artifacts" / "ui"
REEXECUTE = """
mutation Reexecute($params: ReexecutionParams!) {
  launchPipelineReexecution(reexecutionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""


def step_span(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    """When the run's retention step started and ended (its events' timestamps)."""
    events = {entry.dagster_event.event_type_value: entry.timestamp for entry in instance.all_logs(run_id)
              if entry.dagster_event and entry.step_key == f"{DOMAIN}_retention"}
    return events["STEP_START"], events.get("STEP_SUCCESS", events.get("STEP_FAILURE"))


def materialized(instance: dg.DagsterInstance) -> tuple[int, dict[str, set[str]]]:
    """How many materializations the domain's deletion asset has, and each asset's materialized windows."""
    count = len(instance.fetch_materializations(ASSETS[2], limit=10_000).records)
    return count, {key.path[-1]: instance.get_materialized_partitions(key) for key in ASSETS}


def test_every_launch_path_queues_behind_the_domains_one_slot_and_a_dry_run_leaves_history_alone(deployment,
                                                                                                  tmp_path):
    env, database, home = deployment["env"], deployment["database"], deployment["home"]
    env = {**env, "RETENTION_LOCK_WAIT_SECONDS": "0"}  # a run that meets a held lock fails at once
    due = insert_quiz_rows(database, [timedelta(hours=30, minutes=i) for i in range(60)])
    policy = load_policies().domains[DOMAIN]
    keys = domain_partitions(policy).get_partition_keys(current_time=database.now())
    backfilled, latest = keys[-6:-3], keys[-1]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    # Each pool's limit set once, as a deployment does (README): given on a pool's first claim
    # instead, two claims racing at that moment can each get a slot.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for domain in load_policies().domains:
            instance.event_log_storage.set_concurrency_slots(domain_pool(domain), 1)
    webserver = Webserver(env, tmp_path / "webserver.log", free_port()).start()
    daemon = Daemon(env, tmp_path / "daemon.log").start()
    try:
        webserver.wait_ready()
        # Three paths at once.
        job_run = launch_job(webserver, job_name(DOMAIN), latest)
        backfill = webserver.graphql(LAUNCH_BACKFILL, {"params": {
            "assetSelection": [{"path": key.path} for key in ASSETS], "partitionNames": backfilled,
        }})["launchPartitionBackfill"]
        assert backfill["__typename"] == "LaunchBackfillSuccess", backfill
        command = [script("dagster"), "asset", "materialize", "-m", "retention_pipelines.definitions",
                   "--select", ",".join(key.to_user_string() for key in ASSETS), "--partition", latest]
        outside_the_queue = subprocess.run(command, cwd=REPOSITORY, env=env, capture_output=True, text=True,
                                           timeout=300)
        assert outside_the_queue.returncode == 0, outside_the_queue.stdout[-3000:] + outside_the_queue.stderr[-3000:]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = [wait_for_run(instance, job_run, daemon)]
            deadline_runs = wait_for_backfill_runs(instance, backfill["backfillId"], 1, daemon)
            runs += deadline_runs
            runs += instance.get_runs(dg.RunsFilter(job_name="__ASSET_JOB", tags={"dagster/partition": latest}))
            assert len(runs) == 3, [(run.job_name, run.tags) for run in runs]
            assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS] * 3, \
                [(run.run_id, run.status) for run in runs]
            [backfill_run] = deadline_runs
            assert (backfill_run.tags["dagster/asset_partition_range_start"],
                    backfill_run.tags["dagster/asset_partition_range_end"]) == (backfilled[0], backfilled[-1])
            spans = sorted(step_span(instance, run.run_id) for run in runs)
            assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:], strict=False)), spans
            count, windows = materialized(instance)
        assert set(due).isdisjoint(remaining_ids(database))
        acted = [entry["record_id"] for entry in audit_entries(database) if entry["action"] == "deleted"]
        assert sorted(acted) == sorted(due)  # each row once, whichever run took it
        assert all(windows[step] >= {*backfilled, latest} for step in STEPS), windows
        shown = partition_statuses(webserver, ASSETS[2], keys)  # as the partition page colours them
        assert {shown[key] for key in {*backfilled, latest}} == {"MATERIALIZED"}, shown
        assert shown[keys[0]] == "MISSING"  # a window no run covered stays Missing

        driver = chromium()
        try:
            partitions_page = f"{webserver.url}/assets/{DOMAIN}/deletion?view=partitions"
            page(driver, partitions_page, [latest[:10]], ARTIFACTS / "6-partitions-after-real-runs.png")

            # The dry run: what it would do, in its run's metadata; the assets' history as it was.
            waiting = insert_quiz_rows(database, [timedelta(hours=30)] * 5)
            dry = launch_job(webserver, dry_run_job_name(DOMAIN), latest)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                assert wait_for_run(instance, dry, daemon).status == dg.DagsterRunStatus.SUCCESS
                assert materialized(instance) == (count, windows)
                assert instance.get_latest_materialization_event(ASSETS[2]).run_id != dry
                would = {k: v.value for entry in instance.all_logs(dry) if entry.dagster_event
                         and entry.dagster_event.event_type_value == "STEP_OUTPUT"
                         for k, v in entry.dagster_event.step_output_data.metadata.items()}
            assert (would["dry_run"], would["rows_deleted"]) == (True, 5), would
            assert set(waiting) <= remaining_ids(database)
            page(driver, partitions_page, [latest[:10]], ARTIFACTS / "7-partitions-after-a-dry-run.png")
        finally:
            driver.quit()

        # A failed run, retried from its failure by the webserver in a new process, local storage gone.
        # The daemon's schedule and lag sensor may have a run of their own on the domain: wait it out.
        held = domain_locks(env["RETENTION_REDIS_URL"], tmp_path / "locks", 60).acquire(DOMAIN, wait_seconds=180)
        try:
            failed = launch_job(webserver, job_name(DOMAIN), latest)
            with dg.DagsterInstance.from_config(str(home)) as instance:
                assert wait_for_run(instance, failed, daemon).status == dg.DagsterRunStatus.FAILURE
        finally:
            held.release()
        shutil.rmtree(home / "storage", ignore_errors=True)
        retried = webserver.graphql(REEXECUTE, {"params": {"parentRunId": failed, "strategy": "FROM_FAILURE"}})[
            "launchPipelineReexecution"]
        assert retried["__typename"] == "LaunchRunSuccess", retried
        with dg.DagsterInstance.from_config(str(home)) as instance:
            run = wait_for_run(instance, retried["run"]["runId"], daemon)
        assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
        assert set(waiting).isdisjoint(remaining_ids(database))
    finally:
        daemon.stop()
        webserver.stop()
    for name in ("6-partitions-after-real-runs", "7-partitions-after-a-dry-run"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000, name
