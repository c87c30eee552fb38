"""Sensors that turn SLA breaches into runs: data kept past its allowed lag gets a catch-up run."""

import dagster as dg

from retention_pipelines.defs.common import DOMAIN_TAG, domain_partitions, job_name, operator_errors
from retention_pipelines.defs.resources import RetentionStores
from retention_pipelines.engine.sla import RETENTION_LAG, Breaches
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.policies.model import format_duration

CATCH_UP_TAG = "retention/catch_up_for_breach"
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]


def build_retention_lag_sensor(policies: list[DomainPolicy], policy_version: str, jobs: list) -> dg.SensorDefinition:
    """Every few minutes, each domain's retention lag (how long its oldest row outside a legal
    hold has been kept past its deadline), from one query on the clock index. Over the policy's
    `sla.max_lag`, the domain's one open `retention_lag` breach is opened (never a second) and a
    catch-up run of its latest partition requested — unless a run of the domain is queued or in
    flight, so that no tick adds a second one. Back under the limit, the breach is closed with how
    long it lasted."""

    @dg.sensor(name="retention_lag_sensor", jobs=jobs, minimum_interval_seconds=300,
               default_status=dg.DefaultSensorStatus.RUNNING, description=build_retention_lag_sensor.__doc__)
    def retention_lag_sensor(context: dg.SensorEvaluationContext, retention_stores: RetentionStores):
        breaches = Breaches(retention_stores.database)
        for policy in policies:
            with operator_errors():
                lag = retention_stores.engine(policy, policy_version, context.log).retention_lag()
                if lag <= policy.sla.max_lag:
                    lasted = breaches.close(policy.name, RETENTION_LAG)
                    if lasted is not None:
                        context.log.info(f"{policy.name}: retention lag back under {format_duration(policy.sla.max_lag)}"
                                         f"; breach closed after {format_duration(lasted)}")
                    continue
                breach = breaches.open(policy.name, RETENTION_LAG, lag, policy.sla.max_lag)
            if breach.newly_opened:
                context.log.warning(f"{policy.name}: retention lag {format_duration(lag)} over the SLA's "
                                    f"{format_duration(policy.sla.max_lag)}: breach {breach.id} opened")
            running = context.instance.get_runs(filters=dg.RunsFilter(tags={DOMAIN_TAG: policy.name},
                                                                      statuses=IN_FLIGHT), limit=1)
            if running:
                if running[0].tags.get(CATCH_UP_TAG) == str(breach.id):
                    breaches.attach_run(breach.id, running[0].run_id)
                continue
            attempt = context.instance.get_runs_count(filters=dg.RunsFilter(tags={CATCH_UP_TAG: str(breach.id)}))
            yield dg.RunRequest(
                job_name=job_name(policy.name), partition_key=domain_partitions(policy).get_last_partition_key(),
                run_key=f"catch-up:{policy.name}:{breach.id}:{attempt}",
                tags={DOMAIN_TAG: policy.name, CATCH_UP_TAG: str(breach.id)},
            )

    return retention_lag_sensor
