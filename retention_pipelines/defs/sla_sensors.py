"""Sensors that turn SLA breaches into runs: data kept past its allowed lag gets a catch-up run;
slow and failing runs open breaches of their own."""

from datetime import timedelta

import dagster as dg

from retention_pipelines.defs.common import DOMAIN_TAG, domain_partitions, job_name, operator_errors
from retention_pipelines.defs.resources import RetentionStores
from retention_pipelines.engine.sla import RETENTION_LAG, RUN_DURATION, RUN_FAILURES, Breaches
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.policies.model import format_duration
from retention_pipelines.redaction import without_personal_data
from retention_pipelines.stores import StoreUnavailable
from retention_pipelines.stores.notifier import Alert

CATCH_UP_TAG = "retention/catch_up_for_breach"
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]


def alert(context, stores: RetentionStores, message: Alert) -> None:
    """Tell a person; an alert that cannot be delivered is logged and does not stop the sensor."""
    context.log.warning(f"{message.domain}: {message.kind} {message.event}: {message.summary}")
    try:
        stores.notifier.send(message)
    except StoreUnavailable as exc:
        context.log.error(str(exc))


def build_retention_lag_sensor(policies: list[DomainPolicy], policy_version: str, jobs: list,
                               interval_seconds: int = 300) -> dg.SensorDefinition:
    """Every few minutes, each domain's retention lag (how long its oldest row outside a legal
    hold has been kept past its deadline), from one query on the clock index. Over the policy's
    `sla.max_lag`, the domain's one open `retention_lag` breach is opened (never a second) and a
    catch-up run of its latest partition requested — unless a run of the domain is queued or in
    flight, so that no tick adds a second one. Back under the limit, the breach is closed with how
    long it lasted."""

    @dg.sensor(name="retention_lag_sensor", jobs=jobs, minimum_interval_seconds=interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING, description=build_retention_lag_sensor.__doc__)
    def retention_lag_sensor(context: dg.SensorEvaluationContext, retention_stores: RetentionStores):
        breaches = Breaches(retention_stores.database)
        for policy in policies:
            with operator_errors():
                lag = retention_stores.engine(policy, policy_version, context.log).retention_lag()
                if lag <= policy.sla.max_lag:
                    lasted = breaches.close(policy.name, RETENTION_LAG)
                    if lasted is not None:
                        alert(context, retention_stores, Alert(
                            policy.name, RETENTION_LAG, "closed",
                            f"retention lag back under {format_duration(policy.sla.max_lag)}; breach closed after "
                            f"{format_duration(lasted)}", {"lasted_seconds": lasted.total_seconds()}))
                    continue
                breach = breaches.open(policy.name, RETENTION_LAG, lag, policy.sla.max_lag)
            if breach.newly_opened:
                alert(context, retention_stores, Alert(
                    policy.name, RETENTION_LAG, "opened",
                    f"data kept {format_duration(lag)} past its deadline, over the SLA's "
                    f"{format_duration(policy.sla.max_lag)}: breach {breach.id} opened, catch-up run requested",
                    {"breach_id": breach.id, "lag_seconds": lag.total_seconds(),
                     "threshold_seconds": policy.sla.max_lag.total_seconds()}))
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


def build_run_sensors(policies: list[DomainPolicy], jobs: list) -> list[dg.SensorDefinition]:
    """Runs of the domain jobs, as they end: one over `sla.max_run_duration` opens a
    `run_duration` breach (closed by the next run within it); `sla.max_consecutive_failures`
    failed runs in a row open a `run_failures` breach (closed by the next success)."""
    by_domain = {policy.name: policy for policy in policies}

    @dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="retention_run_finished_sensor",
                          monitored_jobs=jobs, default_status=dg.DefaultSensorStatus.RUNNING,
                          description="Checks each finished retention run against its domain's run-time SLA.")
    def retention_run_finished_sensor(context: dg.RunStatusSensorContext, retention_stores: RetentionStores):
        policy = by_domain.get(context.dagster_run.tags.get(DOMAIN_TAG))
        if policy is None:
            return
        stats = context.instance.get_run_stats(context.dagster_run.run_id)
        took = timedelta(seconds=max((stats.end_time or 0) - (stats.start_time or 0), 0))
        breaches = Breaches(retention_stores.database)
        with operator_errors():
            if breaches.close(policy.name, RUN_FAILURES) is not None:
                alert(context, retention_stores, Alert(policy.name, RUN_FAILURES, "closed",
                                                       f"run {context.dagster_run.run_id} succeeded"))
            if took > policy.sla.max_run_duration:
                breach = breaches.open(policy.name, RUN_DURATION, took, policy.sla.max_run_duration)
                breaches.attach_run(breach.id, context.dagster_run.run_id)
                if breach.newly_opened:
                    alert(context, retention_stores, Alert(
                        policy.name, RUN_DURATION, "opened",
                        f"run {context.dagster_run.run_id} took {format_duration(took)}, over the SLA's "
                        f"{format_duration(policy.sla.max_run_duration)}", {"duration_seconds": took.total_seconds()}))
            elif breaches.close(policy.name, RUN_DURATION) is not None:
                alert(context, retention_stores, Alert(policy.name, RUN_DURATION, "closed",
                                                       f"run {context.dagster_run.run_id} finished within its time"))

    @dg.run_failure_sensor(name="retention_run_failure_sensor", monitored_jobs=jobs,
                           default_status=dg.DefaultSensorStatus.RUNNING,
                           description="Records each failed retention run; opens a breach after too many in a row.")
    def retention_run_failure_sensor(context: dg.RunFailureSensorContext, retention_stores: RetentionStores):
        policy = by_domain.get(context.dagster_run.tags.get(DOMAIN_TAG))
        if policy is None:
            return
        limit = policy.sla.max_consecutive_failures
        recent = context.instance.get_runs(filters=dg.RunsFilter(
            job_name=job_name(policy.name), statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]),
            limit=limit)
        in_a_row = next((i for i, run in enumerate(recent) if run.status != dg.DagsterRunStatus.FAILURE), len(recent))
        context.log.warning(f"{policy.name}: run {context.dagster_run.run_id} failed ({in_a_row} in a row): "
                            f"{without_personal_data(context.failure_event.message or 'no message')}")
        if in_a_row >= limit:
            with operator_errors():
                breaches = Breaches(retention_stores.database)
                breach = breaches.open(policy.name, RUN_FAILURES, in_a_row, limit)
                breaches.attach_run(breach.id, context.dagster_run.run_id)
            if breach.newly_opened:
                alert(context, retention_stores, Alert(
                    policy.name, RUN_FAILURES, "opened", f"{in_a_row} runs failed in a row (the SLA tolerates "
                    f"{limit - 1}); last: run {context.dagster_run.run_id}", {"failures_in_a_row": in_a_row}))

    return [retention_run_finished_sensor, retention_run_failure_sensor]
