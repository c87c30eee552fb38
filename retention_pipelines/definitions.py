"""The code location: every enabled domain of the policy file, built by one factory."""

import dagster as dg

from retention_pipelines.dagster_wiring.all_domains import build_all_domains_sensor
from retention_pipelines.dagster_wiring.archive_retention import build_archive_retention_defs
from retention_pipelines.dagster_wiring.audit_chain import build_audit_chain_defs
from retention_pipelines.dagster_wiring.domain_factory import build_domain_defs
from retention_pipelines.dagster_wiring.erasure import build_erasure_defs
from retention_pipelines.dagster_wiring.erasure_run import build_erasure_run_defs
from retention_pipelines.dagster_wiring.health import build_health_defs
from retention_pipelines.dagster_wiring.history_purge import build_history_purge_defs
from retention_pipelines.dagster_wiring.manual_queue import build_manual_queue_defs
from retention_pipelines.dagster_wiring.report import build_report_defs
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.sla_sensors import build_retention_lag_sensor, build_run_sensors
from retention_pipelines.logs import ensure_logging
from retention_pipelines.policies import load_policies
from retention_pipelines.stores import load_settings


def build_definitions() -> dg.Definitions:
    ensure_logging()
    # Read first: a deployment missing a store or key fails to load, the UI naming each missing variable.
    sensor_interval = load_settings().lag_sensor_interval_seconds
    policies = load_policies()
    enabled = [policy for policy in policies.domains.values() if policy.enabled]
    domains = [build_domain_defs(policy, policies.policy_version) for policy in enabled]
    retention_jobs = [job for domain in domains for job in domain.jobs if job.name.endswith("_retention_job")]
    return dg.Definitions.merge(
        *domains,
        build_health_defs(enabled),
        build_audit_chain_defs(),
        build_archive_retention_defs(enabled, policies.policy_version),
        build_erasure_defs(sensor_interval),
        build_erasure_run_defs(enabled, policies.policy_version),
        build_manual_queue_defs(enabled, policies.policy_version, sensor_interval),
        build_report_defs(policies),
        build_history_purge_defs(),
        dg.Definitions(
            sensors=[build_all_domains_sensor(enabled, retention_jobs),
                     build_retention_lag_sensor(enabled, policies.policy_version, retention_jobs,
                                                sensor_interval),
                     *build_run_sensors(enabled, retention_jobs, policies.policy_version)],
            resources={"retention_stores": RetentionStores()},
            # One process per run, also for assets materialized from the UI outside their job:
            # the domain lock taken by a run's first step is then held to its last.
            executor=dg.in_process_executor,
        ),
    )


defs = build_definitions()
