"""Sensors that turn SLA breaches into runs: data kept past its allowed lag gets a catch-up run;
slow and failing runs open breaches of their own."""

from datetime import timedelta

import dagster as dg

from retention_pipelines.dagster_wiring.common import DOMAIN_TAG, job_name, operator_errors
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.windows import run_request, windows_of, windows_to_cover
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.engine.oversight.sla import RETENTION_LAG, RUN_DURATION, RUN_FAILURES, Breach, Breaches
from retention_pipelines.logs import get_logger, log_context
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.policies.model import DEFAULT_ESCALATE_AT, escalation_level, format_duration
from retention_pipelines.redaction import without_personal_data
from retention_pipelines.stores import StoreUnavailable
from retention_pipelines.stores.notifier import CLOSED, ESCALATED, OPENED, Alert

CATCH_UP_TAG = "retention/catch_up_for_breach"
log = get_logger("sensors")
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]


def alert(context, stores: RetentionStores, message: Alert) -> None:
    """Tell a person; an alert that cannot be delivered is logged and does not stop the sensor."""
    context.log.warning(message.text)
    try:
        stores.notifier.send(message)
    except StoreUnavailable as exc:
        context.log.error(str(exc))
        log.error(f"alert not delivered: {exc}", extra={"domain": message.domain, "kind": message.kind})


def open_breach(context, stores: RetentionStores, domain: str, kind: str, observed: timedelta | int,
                limit: timedelta | int, opened: str, details: dict, escalate_at=DEFAULT_ESCALATE_AT,
                run_id: str | None = None) -> Breach:
    """Open (or keep open) the domain's breach of this kind, and alert when it opens and each time
    it escalates (at the `escalate_at` multiples of the limit) — never on the ticks in between."""
    amount = observed.total_seconds() if isinstance(observed, timedelta) else float(observed)
    allowed = limit.total_seconds() if isinstance(limit, timedelta) else float(limit)
    breaches = Breaches(stores.database)
    breach = breaches.open(domain, kind, observed, limit, escalation_level(amount, allowed, escalate_at))
    if run_id:
        breaches.attach_run(breach.id, run_id)
    details = {**details, "breach_id": breach.id}
    if breach.newly_opened:
        alert(context, stores, Alert(domain, kind, OPENED, f"{opened}: breach {breach.id} opened", details,
                                     breach.level))
    elif breach.escalated:
        alert(context, stores, Alert(domain, kind, ESCALATED, f"{opened}: breach {breach.id} still open, "
                                     f"escalated to level {breach.level}", details, breach.level))
    return breach


def record_catch_up(stores: RetentionStores, run: dg.DagsterRun) -> None:
    """A catch-up run, however it ended, is recorded on its breach (the lag sensor may never see
    it in flight: a catch-up often finishes between two ticks)."""
    breach_id = run.tags.get(CATCH_UP_TAG)
    if breach_id and breach_id.isdigit():
        Breaches(stores.database).attach_run(int(breach_id), run.run_id)


def close_breach(context, stores: RetentionStores, domain: str, kind: str, why: str) -> None:
    lasted = Breaches(stores.database).close(domain, kind)
    if lasted is not None:
        alert(context, stores, Alert(domain, kind, CLOSED, f"{why}; breach closed after {format_duration(lasted)}",
                                     {"lasted_seconds": lasted.total_seconds()}))


def build_retention_lag_sensor(policies: list[DomainPolicy], policy_version: str, jobs: list,
                               interval_seconds: int = 300) -> dg.SensorDefinition:
    """Every few minutes, each domain's retention lag (how long its oldest row outside a legal
    hold has been kept past its deadline), from one query on the clock index. Over the policy's
    `sla.max_lag`, the domain's one open `retention_lag` breach is opened (never a second) and a
    catch-up run requested (the windows since its last recorded one) — unless a run of the domain is queued or in
    flight, so that no tick adds a second one. Back under the limit, the breach is closed with how
    long it lasted."""

    @dg.sensor(name="retention_lag_sensor", jobs=jobs, minimum_interval_seconds=interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING, description=build_retention_lag_sensor.__doc__)
    def retention_lag_sensor(context: dg.SensorEvaluationContext, retention_stores: RetentionStores):
        for policy in policies:
            with log_context(domain=policy.name), operator_errors():
                lag = retention_stores.engine(policy, policy_version).retention_lag()
                if lag <= policy.sla.max_lag:
                    close_breach(context, retention_stores, policy.name, RETENTION_LAG,
                                 f"retention lag back under {format_duration(policy.sla.max_lag)}")
                    continue
                breach = open_breach(
                    context, retention_stores, policy.name, RETENTION_LAG, lag, policy.sla.max_lag,
                    f"data kept {format_duration(lag)} past its deadline, over the SLA's "
                    f"{format_duration(policy.sla.max_lag)}; catch-up run requested",
                    {"lag_seconds": lag.total_seconds(), "threshold_seconds": policy.sla.max_lag.total_seconds()},
                    policy.sla.escalate_at)
                log.warning(f"{policy.name}: retention lag {format_duration(lag)} over the SLA",
                            extra={"lag_seconds": lag.total_seconds(), "breach_id": breach.id,
                                   "escalation_level": breach.level})
            running = context.instance.get_runs(filters=dg.RunsFilter(tags={DOMAIN_TAG: policy.name},
                                                                      statuses=IN_FLIGHT), limit=1)
            if running:
                if running[0].tags.get(CATCH_UP_TAG) == str(breach.id):
                    Breaches(retention_stores.database).attach_run(breach.id, running[0].run_id)
                continue
            attempt = context.instance.get_runs_count(filters=dg.RunsFilter(tags={CATCH_UP_TAG: str(breach.id)}))
            yield run_request(
                windows_to_cover(context.instance, policy), job_name=job_name(policy.name),
                run_key=f"catch-up:{policy.name}:{breach.id}:{attempt}",
                tags={DOMAIN_TAG: policy.name, CATCH_UP_TAG: str(breach.id)},
            )

    return retention_lag_sensor


def build_run_sensors(policies: list[DomainPolicy], jobs: list, policy_version: str) -> list[dg.SensorDefinition]:
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
        run_id = context.dagster_run.run_id
        stats = context.instance.get_run_stats(run_id)
        took = timedelta(seconds=max((stats.end_time or 0) - (stats.start_time or 0), 0))
        with log_context(run_id=run_id, domain=policy.name), operator_errors():
            log.info(f"{policy.name}: run finished in {format_duration(took)}",
                     extra={"duration_seconds": took.total_seconds()})
            record_catch_up(retention_stores, context.dagster_run)
            close_breach(context, retention_stores, policy.name, RUN_FAILURES, f"run {run_id} succeeded")
            if took > policy.sla.max_run_duration:
                open_breach(context, retention_stores, policy.name, RUN_DURATION, took, policy.sla.max_run_duration,
                            f"run {run_id} took {format_duration(took)}, over the SLA's "
                            f"{format_duration(policy.sla.max_run_duration)}",
                            {"duration_seconds": took.total_seconds()}, policy.sla.escalate_at, run_id=run_id)
            else:
                close_breach(context, retention_stores, policy.name, RUN_DURATION,
                             f"run {run_id} finished within its time")

    @dg.run_failure_sensor(name="retention_run_failure_sensor", monitored_jobs=jobs,
                           default_status=dg.DefaultSensorStatus.RUNNING,
                           description="Records each failed retention run; opens a breach after too many in a row.")
    def retention_run_failure_sensor(context: dg.RunFailureSensorContext, retention_stores: RetentionStores):
        policy = by_domain.get(context.dagster_run.tags.get(DOMAIN_TAG))
        if policy is None:
            return
        run_id, limit = context.dagster_run.run_id, policy.sla.max_consecutive_failures
        # Enough history to see the failures in a row reach the highest escalation multiple.
        recent = context.instance.get_runs(filters=dg.RunsFilter(
            job_name=job_name(policy.name), statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]),
            limit=int(limit * max([1.0, *policy.sla.escalate_at])) + 1)
        in_a_row = next((i for i, run in enumerate(recent) if run.status != dg.DagsterRunStatus.FAILURE), len(recent))
        message = without_personal_data(context.failure_event.message or "no message")
        context.log.warning(f"{policy.name}: run {run_id} failed ({in_a_row} in a row): {message}")
        with log_context(run_id=run_id, domain=policy.name), operator_errors():
            log.warning(f"{policy.name}: run {run_id} failed ({in_a_row} in a row): {message}",
                        extra={"failures_in_a_row": in_a_row})
            record_catch_up(retention_stores, context.dagster_run)
            if in_a_row >= limit:
                open_breach(context, retention_stores, policy.name, RUN_FAILURES, in_a_row, limit,
                            f"{in_a_row} runs failed in a row (the SLA tolerates {limit - 1}); last: run {run_id}",
                            {"failures_in_a_row": in_a_row}, policy.sla.escalate_at, run_id=run_id)
                # Automation has given up on this window: a person takes it (one item per
                # partition, each further failure counting an attempt).
                partition = windows_of(context.dagster_run) or job_name(policy.name)
                ManualQueue(retention_stores.database, policy_version).add(
                    policy.name, partition, "run_failed", f"{in_a_row} runs failed in a row; last: {message}"[:500],
                    policy.sla.resolve_within, run_id)

    return [retention_run_finished_sensor, retention_run_failure_sensor]
