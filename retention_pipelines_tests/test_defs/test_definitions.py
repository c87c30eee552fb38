"""The code location as Dagster loads it: one factory, four assets per enabled domain."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from retention_pipelines.defs.domain_factory import (
    ARCHIVE_MATCHES_MANIFESTS_CHECK, AUDIT_MATCHES_ACTED_ON_CHECK, DOMAIN_TAG, NO_ROWS_PAST_DEADLINE_CHECK,
)
from retention_pipelines.definitions import defs

ROOT = Path(__file__).resolve().parents[2]


def test_quiz_responses_is_four_assets_in_a_line():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {"quiz_responses/expired_records", "quiz_responses/archive", "quiz_responses/deletion",
                    "quiz_responses/audit"}
    parents = {key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
               for key in graph.get_all_asset_keys()}
    assert parents["quiz_responses/archive"] == {"quiz_responses/expired_records"}
    assert "quiz_responses/archive" in parents["quiz_responses/deletion"]
    assert parents["quiz_responses/audit"] == {"quiz_responses/deletion"}


def test_checks_job_and_schedule():
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {("quiz_responses/deletion", NO_ROWS_PAST_DEADLINE_CHECK),
                      ("quiz_responses/archive", ARCHIVE_MATCHES_MANIFESTS_CHECK),
                      ("quiz_responses/audit", AUDIT_MATCHES_ACTED_ON_CHECK)}
    job = defs.resolve_job_def("quiz_responses_retention_job")
    assert job.tags[DOMAIN_TAG] == "quiz_responses"
    assert isinstance(job.partitions_def, dg.HourlyPartitionsDefinition)
    schedule = defs.resolve_schedule_def("quiz_responses_retention_schedule")
    assert schedule.cron_schedule == "5 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_blocking_check_is_on_the_deletion_asset():
    graph = defs.resolve_asset_graph()
    blocking = {k.name for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert blocking == {NO_ROWS_PAST_DEADLINE_CHECK}


def test_disabled_domains_get_no_job():
    names = {job.name for job in defs.resolve_all_job_defs()}
    assert "quiz_responses_retention_job" in names
    assert not {"magic_link_tokens_retention_job", "meal_plans_retention_job"} & names


def test_dagster_validates_the_code_location(tmp_path):
    result = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate",
                             "-w", str(ROOT / "workspace.yaml")], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(tmp_path), "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful" in result.stderr + result.stdout
