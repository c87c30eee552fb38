"""`dg`, Dagster's project CLI, on this repository as a developer runs it from its root: pyproject's
[tool.dg] points it at retention_pipelines.definitions, the code location that the factories build
from the policy file, and it lists that code location, every enabled domain in it."""

from __future__ import annotations

import json
import tomllib

import pytest

from retention_pipelines.dagster_wiring.domain_checks import NO_ROWS_PAST_DEADLINE_CHECK
from retention_pipelines.definitions import defs
from retention_pipelines.policies import load_policies
from retention_pipelines.policies.loader import POLICIES_ENV
from retention_pipelines_tests.support.cli import dagster_home
from retention_pipelines_tests.support.dagster_deployment import dg
from retention_pipelines_tests.support.repository import REPOSITORY

POLICIES = load_policies()
ENABLED = [name for name, policy in POLICIES.domains.items() if policy.enabled]
STEPS = ("expired_records", "archive", "deletion", "audit")
SENSORS = {"retention_all_domains_sensor", "retention_lag_sensor", "retention_run_finished_sensor",
           "retention_run_failure_sensor", "erasure_request_sensor", "erasure_deadline_sensor",
           "manual_queue_escalation_sensor"}
LOADED = "All definitions loaded successfully."


def demo_env(folder) -> dict[str, str]:
    """The demo's settings, nothing of the caller's: its own Dagster instance (telemetry off, as the
    repository's dagster.yaml has it), home and RETENTION_HOME."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(folder), "DAGSTER_HOME": str(dagster_home(folder / "dagster_home")),
            "RETENTION_HOME": str(folder / "retention_home"), "RETENTION_ENV": "demo"}


@pytest.fixture(scope="module")
def listed(tmp_path_factory) -> dict:
    """`dg list defs --json`: what dg loads, as JSON."""
    result = dg(demo_env(tmp_path_factory.mktemp("dg_list")), "list", "defs", "--json")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(result.stdout)


def test_the_dg_project_is_the_code_location_and_no_folder_is_taken_for_a_defs_folder():
    config = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
    project = config["tool"]["dg"]["project"]
    assert config["tool"]["dg"]["directory_type"] == "project"
    assert project["root_module"] == "retention_pipelines"
    # The module every other loader names (workspace.yaml, the image's code server, [tool.dagster]).
    assert project["code_location_target_module"] == config["tool"]["dagster"]["module_name"]
    assert project["code_location_name"] == config["tool"]["dagster"]["code_location_name"] == "retention_pipelines"
    # The factories are no folder of module-level definitions: dg's defs module is the code location itself,
    # and nothing in the package wears the name of dg's default defs folder.
    assert project["defs_module"] == project["code_location_target_module"]
    assert not (REPOSITORY / "retention_pipelines" / "defs").exists()


def test_dg_check_defs_loads_the_code_location(tmp_path):
    result = dg(demo_env(tmp_path), "check", "defs")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert LOADED in result.stdout
    # dg's own warnings (a venv other than the project's, its configuration) end in how to suppress them.
    assert "To suppress this warning" not in result.stderr, result.stderr


def test_dg_check_defs_fails_on_a_policy_file_that_does_not_build(tmp_path):
    from retention_pipelines.policies import default_policy_path

    broken = tmp_path / "policies.yaml"
    broken.write_text(default_policy_path().read_text().replace("  meal_plans:\n",
                                                                "  meal_plans:\n    no_such_field: 1\n", 1))
    result = dg({**demo_env(tmp_path), POLICIES_ENV: str(broken)}, "check", "defs")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    shown = result.stdout + result.stderr
    assert "domain meal_plans, field no_such_field: unknown key" in shown, shown[-2000:]
    assert LOADED not in shown


@pytest.mark.parametrize("domain", ENABLED)
def test_dg_lists_each_domains_assets_checks_job_and_schedule(listed, domain):
    assets = {asset["asset_key"] for asset in listed["assets"]}
    assert {f"{domain}/{step}" for step in STEPS} <= assets
    checks = {(check["asset_key"], check["name"]) for check in listed["asset_checks"]}
    assert (f"{domain}/deletion", NO_ROWS_PAST_DEADLINE_CHECK) in checks
    assert f"{domain}_retention_job" in {job["name"] for job in listed["jobs"]}
    schedules = {schedule["name"]: schedule["cron_schedule"] for schedule in listed["schedules"]}
    policy = POLICIES.domains[domain]
    hour = "*" if policy.schedule.hour_of_day is None else str(policy.schedule.hour_of_day)
    assert schedules[f"{domain}_retention_schedule"] == f"{policy.schedule.minute_of_hour} {hour} * * *"


def test_dg_lists_the_sensors_and_the_stores_resource(listed):
    assert {sensor["name"] for sensor in listed["sensors"]} == SENSORS
    assert [(resource["name"], resource["type"]) for resource in listed["resources"]] == [
        ("retention_stores", "retention_pipelines.dagster_wiring.resources.RetentionStores")]


def test_dg_lists_exactly_what_the_code_location_defines(listed):
    """Nothing more (no folder autoloaded beside it) and nothing less than the Definitions object
    that Dagster's own loaders take from retention_pipelines.definitions."""
    graph = defs.resolve_asset_graph()
    assert {asset["asset_key"] for asset in listed["assets"]} == {
        key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {(check["asset_key"], check["name"]) for check in listed["asset_checks"]} == {
        (key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert {job["name"] for job in listed["jobs"]} == {
        job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")}
    repository = defs.get_repository_def()
    assert {schedule["name"] for schedule in listed["schedules"]} == {
        schedule.name for schedule in repository.schedule_defs}
    assert {sensor["name"] for sensor in listed["sensors"]} == {sensor.name for sensor in repository.sensor_defs}
