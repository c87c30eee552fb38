"""The deployment as operators use it: `dagster-webserver` and `dagster-daemon run` on the production
instance (deploy/dagster.yaml, PostgreSQL storage); a domain's schedule turned off and on through the
webserver's GraphQL API and run by the daemon at its minute; a backfill of three partitions launched
through the API and run by the daemon as one run over their range; a run submitted with `retention
run --submit`, through the run queue; then the UI in a real headless Chromium: the asset catalog, a
domain's deletion asset (its materializations and metadata, its checks) and its partitions.
Screenshots are saved under test-artifacts/ui/. Nothing is mocked."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import yaml

from retention_pipelines.dagster_wiring.common import domain_partitions, job_name
from retention_pipelines.dagster_wiring.windows import HISTORY_TAG, windows_of
from retention_pipelines.policies import load_policies
from retention_pipelines_tests.support.app_rows import insert_quiz_rows, remaining_ids
from retention_pipelines_tests.support.browser import NUX_TITLE, chromium, page
from retention_pipelines_tests.support.cli import RETENTION_SCRIPT
from retention_pipelines_tests.support.dagster_deployment import (
    LAUNCH_BACKFILL,
    REPOSITORY_SELECTOR,
    Daemon,
    Webserver,
    wait_for_backfill_runs,
    wait_for_run,
)
from retention_pipelines_tests.support.repository import REPOSITORY
from retention_pipelines_tests.support.servers import free_port

ARTIFACTS = REPOSITORY / "test-artifacts" / "ui"
DOMAIN = "quiz_responses"
SCHEDULE_STATE = """
query State($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) { ... on Schedule { cronSchedule scheduleState { id status } } }
}"""
STOP_SCHEDULE = """
mutation Stop($id: String!) {
  stopRunningSchedule(id: $id) { __typename ... on ScheduleStateResult { scheduleState { status } } }
}"""
START_SCHEDULE = """
mutation Start($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) { __typename ... on ScheduleStateResult { scheduleState { status } } }
}"""



def submitted_with_the_cli(env: dict[str, str], webserver: Webserver) -> dict:
    """`retention run quiz_responses --submit <webserver> --json`, the installed console script."""
    done = subprocess.run([str(RETENTION_SCRIPT), "run", DOMAIN, "--submit", webserver.url, "--json"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    [row] = json.loads(done.stdout)["rows"]
    return row


def policies_scheduled_soon(folder: Path) -> tuple[Path, int]:
    """The shipped policy file with quiz_responses' schedule at the minute after next (UTC), so that
    the daemon's scheduler launches its run while the test waits."""
    from datetime import UTC, datetime

    source = Path(load_policies().domains[DOMAIN].source)
    document = yaml.safe_load(source.read_text())
    minute = (datetime.now(UTC) + timedelta(minutes=2)).minute
    document["domains"][DOMAIN]["schedule"]["minute_of_hour"] = minute
    path = folder / "policies.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path, minute


def wait_for_scheduled_run(instance: dg.DagsterInstance, schedule: str, daemon: Daemon,
                           seconds: float = 300) -> dg.DagsterRun:
    """The tick's run of the latest windows, once finished (not the run recording earlier windows
    the tick may add, which waits behind it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runs = [run for run in instance.get_runs(dg.RunsFilter(tags={"dagster/schedule_name": schedule}))
                if HISTORY_TAG not in run.tags]
        if runs and runs[0].is_finished:
            return runs[0]
        if not daemon.alive():
            raise AssertionError(f"dagster-daemon exited:\n{daemon.tail()}")
        time.sleep(2)
    raise AssertionError(f"no run of {schedule} finished in {seconds:g} s\n{daemon.tail()}")


def test_a_backfill_through_the_api_then_the_ui_in_a_browser(deployment, tmp_path):
    env, database = deployment["env"], deployment["database"]
    due = insert_quiz_rows(database, [timedelta(hours=30, minutes=i) for i in range(12)])
    policy_file, minute = policies_scheduled_soon(tmp_path)
    env = {**env, "RETENTION_POLICIES_FILE": str(policy_file)}
    policy = load_policies().domains[DOMAIN]
    partitions = domain_partitions(policy).get_partition_keys()[-5:-2]  # three complete past hours
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    webserver = Webserver(env, tmp_path / "webserver.log", free_port()).start()
    daemon = Daemon(env, tmp_path / "daemon.log").start()
    try:
        webserver.wait_ready()
        assert webserver.graphql("query { shouldShowNux }")["shouldShowNux"] is False
        # The domain's schedule, turned off and on again through the API; the daemon runs it at its minute.
        schedule = f"{DOMAIN}_retention_schedule"
        selector = {"selector": {**REPOSITORY_SELECTOR, "scheduleName": schedule}}
        state = webserver.graphql(SCHEDULE_STATE, selector)["scheduleOrError"]
        assert state["cronSchedule"] == f"{minute} * * * *", state
        stopped = webserver.graphql(STOP_SCHEDULE, {"id": state["scheduleState"]["id"]})["stopRunningSchedule"]
        assert stopped["scheduleState"]["status"] == "STOPPED", stopped
        started = webserver.graphql(START_SCHEDULE, selector)["startSchedule"]
        assert started["scheduleState"]["status"] == "RUNNING", started
        with dg.DagsterInstance.from_config(str(deployment["home"])) as instance:
            scheduled = wait_for_scheduled_run(instance, schedule, daemon)
        assert scheduled.status == dg.DagsterRunStatus.SUCCESS, (scheduled.run_id, scheduled.status)

        launched = webserver.graphql(LAUNCH_BACKFILL, {"params": {
            "selector": {"partitionSetName": f"{job_name(DOMAIN)}_partition_set",
                         "repositorySelector": REPOSITORY_SELECTOR},
            "partitionNames": partitions}})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        with dg.DagsterInstance.from_config(str(deployment["home"])) as instance:
            # The assets' backfill policy makes it one run over the three windows' range.
            runs = wait_for_backfill_runs(instance, launched["backfillId"], 1, daemon)
            assert instance.get_materialized_partitions(dg.AssetKey([DOMAIN, "deletion"])) >= set(partitions)
        assert [windows_of(run) for run in runs] == [f"{partitions[0]}…{partitions[-1]}"]
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs), [(r.run_id, r.status) for r in runs]
        assert not set(due) & remaining_ids(database)

        # The CLI's --submit goes through the instance's run queue: the daemon launches the run.
        submitted = submitted_with_the_cli(env, webserver)
        assert (submitted["status"], submitted["url"]) == ("queued", f"{webserver.url}/runs/{submitted['run_id']}")
        with dg.DagsterInstance.from_config(str(deployment["home"])) as instance:
            run = wait_for_run(instance, submitted["run_id"], daemon)
        assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
        assert (run.job_name, run.tags["dagster/partition"]) == (job_name(DOMAIN), submitted["partition"])

        driver = chromium()
        try:
            catalog = page(driver, f"{webserver.url}/assets", [DOMAIN, "email_blacklist", "meal_plans"],
                           ARTIFACTS / "1-asset-catalog.png")
            assert "magic_link_tokens" in catalog
            assert NUX_TITLE not in catalog, "the first-visit dialog covers the first page"
            events = page(driver, f"{webserver.url}/assets/{DOMAIN}/deletion?view=events",
                          ["rows_deleted", "policy_version"], ARTIFACTS / "2-deletion-materializations.png")
            assert "rows_skipped_legal_hold" in events
            checks = page(driver, f"{webserver.url}/assets/{DOMAIN}/deletion?view=checks",
                          ["no_rows_past_deadline"], ARTIFACTS / "3-deletion-checks.png")
            assert "Passed" in checks or "Succeeded" in checks, checks[:2000]
            page(driver, f"{webserver.url}/assets/{DOMAIN}/deletion?view=partitions", [partitions[0][:10]],
                 ARTIFACTS / "4-deletion-partitions.png")
            page(driver, submitted["url"], [submitted["run_id"][:8], "Success"], ARTIFACTS / "5-submitted-run.png")
        finally:
            driver.quit()
    finally:
        daemon.stop()
        webserver.stop()
    for name in ("1-asset-catalog", "2-deletion-materializations", "3-deletion-checks", "4-deletion-partitions",
                 "5-submitted-run"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000, name
