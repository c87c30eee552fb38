"""The code location as Dagster loads it: one factory, the same graph for every enabled domain."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from retention_pipelines.dagster_wiring.archive_retention import NO_ARCHIVE_KEPT_BEYOND_KEEP_FOR_CHECK
from retention_pipelines.dagster_wiring.common import DOMAIN_TAG, RUN_TAGS
from retention_pipelines.dagster_wiring.domain_checks import (
    ARCHIVE_MATCHES_MANIFESTS_CHECK,
    AUDIT_MATCHES_ACTED_ON_CHECK,
    EVERY_OBJECT_DELETED_CHECK,
    NO_ROWS_PAST_DEADLINE_CHECK,
    NOTHING_ACTED_ON_EARLY_CHECK,
)
from retention_pipelines.dagster_wiring.orphans import NO_ORPHANS_CHECK
from retention_pipelines.definitions import defs
from retention_pipelines.policies import load_policies

ROOT = Path(__file__).resolve().parents[2]
POLICIES = load_policies()
ENABLED = [name for name, policy in POLICIES.domains.items() if policy.enabled]
STEPS = ("expired_records", "archive", "deletion", "audit")


def test_the_shipped_policy_enables_all_four_domains():
    assert set(ENABLED) == {"quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist"}


@pytest.mark.parametrize("domain", ENABLED)
def test_each_domain_is_four_assets_in_a_line(domain):
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys() if key.path[0] == domain}
    orphans = {f"{domain}/orphans"} if POLICIES.domains[domain].blob_key_column else set()
    expiry = {f"{domain}/archive_expiry"} if POLICIES.domains[domain].archive.enabled else set()
    assert keys == {f"{domain}/{step}" for step in STEPS} | orphans | expiry

    def parents(step):
        return {p.to_user_string() for p in graph.get(dg.AssetKey([domain, step])).parent_keys}

    assert parents("archive") == {f"{domain}/expired_records"}
    assert f"{domain}/archive" in parents("deletion")
    assert parents("audit") == {f"{domain}/deletion"}


@pytest.mark.parametrize("domain", ENABLED)
def test_each_domain_has_its_checks_job_and_schedule(domain):
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys if k.asset_key.path[0] == domain}
    expiry = ({(f"{domain}/archive_expiry", NO_ARCHIVE_KEPT_BEYOND_KEEP_FOR_CHECK)}
              if POLICIES.domains[domain].archive.enabled else set())
    assert checks == expiry | {(f"{domain}/deletion", NO_ROWS_PAST_DEADLINE_CHECK),
                      (f"{domain}/archive", ARCHIVE_MATCHES_MANIFESTS_CHECK),
                      (f"{domain}/audit", AUDIT_MATCHES_ACTED_ON_CHECK),
                      (f"{domain}/audit", NOTHING_ACTED_ON_EARLY_CHECK),
                      (f"{domain}/deletion", EVERY_OBJECT_DELETED_CHECK)} | (
                     {(f"{domain}/orphans", NO_ORPHANS_CHECK)} if POLICIES.domains[domain].blob_key_column else set())
    blocking = {k.name for k in graph.asset_check_keys if k.asset_key.path[0] == domain
                and graph.get_check_spec(k).blocking}
    assert blocking == {NO_ROWS_PAST_DEADLINE_CHECK}
    policy = POLICIES.domains[domain]
    job = defs.resolve_job_def(f"{domain}_retention_job")
    assert job.tags[DOMAIN_TAG] == domain
    expected = dg.HourlyPartitionsDefinition if policy.partitions.cadence == "hourly" else dg.DailyPartitionsDefinition
    assert isinstance(job.partitions_def, expected)
    schedule = defs.resolve_schedule_def(f"{domain}_retention_schedule")
    hour = "*" if policy.schedule.hour_of_day is None else str(policy.schedule.hour_of_day)
    assert schedule.cron_schedule == f"{policy.schedule.minute_of_hour} {hour} * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_a_disabled_domain_gets_no_assets_job_or_schedule(tmp_path, monkeypatch):
    from retention_pipelines.definitions import build_definitions
    from retention_pipelines.policies import default_policy_path

    path = tmp_path / "policies.yaml"
    path.write_text(default_policy_path().read_text().replace("  meal_plans:\n", "  meal_plans:\n    enabled: false\n",
                                                              1))
    monkeypatch.setenv("RETENTION_POLICIES_FILE", str(path))
    paused = build_definitions()
    assert "meal_plans_retention_job" not in {job.name for job in paused.resolve_all_job_defs()}
    assert "quiz_responses_retention_job" in {job.name for job in paused.resolve_all_job_defs()}
    assert not [key for key in paused.resolve_asset_graph().get_all_asset_keys() if key.path[0] == "meal_plans"]


def test_dagster_validates_the_code_location(tmp_path):
    result = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate",
                             "-w", str(ROOT / "workspace.yaml")], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "DAGSTER_HOME": str(tmp_path), "HOME": str(tmp_path),
                                 "RETENTION_ENV": "demo"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Validation successful" in result.stderr + result.stdout


def test_the_all_domains_sensor_requests_each_domains_latest_partition_once():
    sensor = defs.resolve_sensor_def("retention_all_domains_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    with dg.instance_for_test() as instance:
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    requests = {r.job_name: r for r in result.run_requests}
    assert set(requests) == {f"{name}_retention_job" for name in ENABLED}
    for name in ENABLED:
        request = requests[f"{name}_retention_job"]
        partitions = defs.resolve_job_def(f"{name}_retention_job").partitions_def
        assert request.partition_key == partitions.get_last_partition_key()
        assert request.run_key == f"{name}:{request.partition_key}"  # once per partition, never a storm
        assert request.tags[DOMAIN_TAG] == name


def test_a_retried_run_re_executes_every_step_of_every_job_and_only_a_crashed_run_is_retried():
    """The daemon retries a crashed run on another process or pod: from the failure it would need the
    dead run's step outputs, kept on a disk a deploy wipes, so every job re-executes all steps. A step
    that failed on its own is not retried, whichever instance settings launched the run."""
    jobs = [job for job in defs.get_repository_def().get_all_jobs() if not job.name.startswith("__")]
    assert {f"{domain}_retention_job" for domain in ENABLED} <= {job.name for job in jobs}
    wanted = {"dagster/retry_strategy": "ALL_STEPS", "dagster/retry_on_asset_or_op_failure": "false"}
    assert RUN_TAGS == wanted
    assert {job.name: {key: job.tags.get(key) for key in wanted} for job in jobs} == {job.name: wanted for job in jobs}


def test_dagster_yaml_allows_one_run_per_domain():
    import yaml

    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    [limit] = config["concurrency"]["runs"]["tag_concurrency_limits"]
    assert limit == {"key": DOMAIN_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    with dg.instance_for_test(overrides={"concurrency": config["concurrency"]}) as instance:
        assert instance.get_concurrency_config().run_queue_config.tag_concurrency_limits[0]["limit"] == 1


@pytest.mark.parametrize("domain", ENABLED)
def test_each_deletion_asset_has_a_freshness_policy_from_the_sla(domain):
    from datetime import timedelta

    policy = POLICIES.domains[domain]
    node = defs.resolve_asset_graph().get(dg.AssetKey([domain, "deletion"]))
    freshness = node.freshness_policy
    cadence = timedelta(hours=1) if policy.partitions.cadence == "hourly" else timedelta(days=1)
    assert freshness is not None and freshness.fail_window.to_timedelta() == cadence + policy.sla.max_lag
