"""The manual-resolution queue in Dagster: a retry job for operators, a sensor that escalates
overdue items, and the queue's health as an asset plotted over time."""


import dagster as dg
from pydantic import Field

from retention_pipelines.dagster_wiring.common import RUN_TAGS, operator_errors
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.runbooks import runbook
from retention_pipelines.dagster_wiring.sla_sensors import alert, close_breach, open_breach
from retention_pipelines.engine.oversight.queue import ACTIVE, ManualQueue, QueueRefused
from retention_pipelines.engine.resolution.retry import retry_item
from retention_pipelines.logs import get_logger, log_context
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.policies.model import format_duration
from retention_pipelines.stores.notifier import CLOSED, ESCALATED, OPENED, Alert

RETRY_JOB = "manual_queue_retry"
QUEUE_ITEM = "manual_queue_item"  # the alert kind of an overdue item
QUEUE_OVERDUE = "queue_overdue"  # the breach kind: a domain has items past their due date
NO_OVERDUE_ITEMS_CHECK = "no_overdue_items"
HEALTH_KEY = dg.AssetKey(["manual_queue", "health"])

log = get_logger("queue")


class QueueRetryConfig(dg.Config):
    item_ids: list[int] = Field(description="The ids of the queue items to retry (`retention queue list`).")
    by: str = Field(default="dagster-ui", description="Who is retrying: a handle, not an e-mail address.")


def build_manual_queue_defs(policies: list[DomainPolicy], policy_version: str,
                            sensor_interval_seconds: int = 300) -> dg.Definitions:
    by_domain = {policy.name: policy for policy in policies}
    domain_order = {policy.name: position for position, policy in enumerate(policies)}

    @dg.op(description="Runs each item's record (or, for a failed run or archive, its whole domain) through "
                       "the domain's engine under the domain's lock; resolves the item when nothing is left "
                       "to do, else counts one more attempt. Fails if any item stays open.")
    def retry_queue_items(context: dg.OpExecutionContext, config: QueueRetryConfig,
                          retention_stores: RetentionStores) -> dg.Output[list[dict]]:
        queue = ManualQueue(retention_stores.database, policy_version)
        with operator_errors():  # an erasure's item is retried through it: built once for every item
            erasure = retention_stores.subject_erasure(policy_version)
        outcomes, items = [], []
        for item_id in dict.fromkeys(config.item_ids):
            try:
                item = queue.retryable(item_id)
                if item.domain not in by_domain:
                    raise QueueRefused(f"queue item {item_id} belongs to {item.domain}, which is not an enabled domain")
            except QueueRefused as exc:
                outcomes.append({"item": item_id, "resolved": False, "message": str(exc)})
                continue
            items.append(item)
        # The run keeps each domain's lock until it ends, so it takes them in policy order, as an
        # erasure run does: two runs that each hold a lock the other waits for would wait out
        # RETENTION_LOCK_WAIT_SECONDS and fail, where in one order the second simply waits its turn.
        for item in sorted(items, key=lambda item: (domain_order[item.domain], item.id)):
            with log_context(run_id=context.run_id, domain=item.domain), operator_errors():
                lock = retention_stores.hold_domain_lock(item.domain)
                engine = retention_stores.engine(by_domain[item.domain], policy_version)
                outcome = retry_item(queue, item, engine, context.run_id, config.by, lock, erasure=erasure)
            log.info(f"queue item {item.id}: {'resolved' if outcome.resolved else 'still open'}: {outcome.message}",
                     extra={"queue_item": item.id, "resolved": outcome.resolved})
            outcomes.append({"item": item.id, "resolved": outcome.resolved, "message": outcome.message})
        left = [o for o in outcomes if not o["resolved"]]
        if left:
            raise dg.Failure(description="; ".join(f"item {o['item']}: {o['message']}" for o in left),
                             metadata={"outcomes": dg.MetadataValue.json(outcomes)}, allow_retries=False)
        return dg.Output(outcomes, metadata={"items_resolved": len(outcomes),
                                             "outcomes": dg.MetadataValue.json(outcomes)})

    @dg.job(name=RETRY_JOB, executor_def=dg.in_process_executor, tags=RUN_TAGS, description=(
        "Retry manual-queue items from the launchpad: set `ops.retry_queue_items.config.item_ids`. "
        "The same engine as the scheduled runs; each item is resolved when its retry finishes the job."))
    def manual_queue_retry():
        retry_queue_items()

    @dg.sensor(name="manual_queue_escalation_sensor", minimum_interval_seconds=sensor_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING, description=(
                   "Escalates queue items past their due date: level 1 when overdue, then one level at each "
                   "`sla.escalate_at` multiple of the time they were given (`sla.resolve_within`), alerting once "
                   "per level, and once more when an item that had alerted is closed. A domain with overdue "
                   "items has an open `queue_overdue` breach."))
    def manual_queue_escalation_sensor(context: dg.SensorEvaluationContext, retention_stores: RetentionStores):
        queue = ManualQueue(retention_stores.database, policy_version)
        with operator_errors():
            closed = queue.take_closed_to_announce()
        for item in closed:
            alert(context, retention_stores, Alert(
                item.domain, QUEUE_ITEM, CLOSED, f"queue item {item.id} ({item.reason}) {item.status} by "
                f"{item.resolved_by}", {"item_id": item.id, "reason": item.reason}, item.escalation_level,
                subject=str(item.id)))
        for policy in policies:
            with log_context(domain=policy.name), operator_errors():
                for item in queue.escalate(policy.name, policy.sla.escalate_at):
                    late = queue.clock() - item.due_at
                    alert(context, retention_stores, Alert(
                        policy.name, QUEUE_ITEM, OPENED if item.escalation_level == 1 else ESCALATED,
                        f"queue item {item.id} ({item.reason}) is {format_duration(late)} past due: level "
                        f"{item.escalation_level}", {"item_id": item.id, "reason": item.reason,
                                                     "overdue_seconds": late.total_seconds()},
                        item.escalation_level, subject=str(item.id)))
                overdue = queue.list(domain=policy.name, overdue=True)
                if not overdue:
                    close_breach(context, retention_stores, policy.name, QUEUE_OVERDUE, "no queue item is past due")
                    continue
                oldest = queue.clock() - min(item.created_at for item in overdue)
                open_breach(context, retention_stores, policy.name, QUEUE_OVERDUE, oldest, policy.sla.resolve_within,
                            f"{len(overdue)} queue items past due, the oldest open for {format_duration(oldest)}",
                            {"overdue_items": len(overdue), "oldest_seconds": oldest.total_seconds()},
                            policy.sla.escalate_at)
        return dg.SkipReason("escalation and breaches only; this sensor launches no runs")

    @dg.asset(key=HEALTH_KEY, group_name="manual_queue", kinds={"sql"}, check_specs=[dg.AssetCheckSpec(
        NO_OVERDUE_ITEMS_CHECK, asset=HEALTH_KEY, metadata=runbook(f"manual_queue.md#{NO_OVERDUE_ITEMS_CHECK}"),
        description="No queue item past its due date: a warning while overdue items are at level 1, an error "
                    "once any has escalated further.")], description=(
        "The manual-resolution queue's figures, every 15 minutes: depth by domain and status, the ages of the "
        "open items (oldest, p50, p95), overdue and escalated items, and items resolved in the last 24 hours. "
        "All numeric, so the UI plots the queue over time."))
    def manual_queue_health(context: dg.AssetExecutionContext,
                            retention_stores: RetentionStores) -> dg.MaterializeResult:
        with operator_errors():
            figures = ManualQueue(retention_stores.database, policy_version).health()
        depth = {f"depth/{domain}/{status}": figures["depth"].get(domain, {}).get(status, 0)
                 for domain in by_domain for status in ACTIVE}
        counts = {key: value for key, value in figures.items() if key != "depth"}
        return dg.MaterializeResult(metadata={**counts, **depth}, check_results=[dg.AssetCheckResult(
            check_name=NO_OVERDUE_ITEMS_CHECK, passed=figures["overdue"] == 0,
            severity=dg.AssetCheckSeverity.ERROR if figures["escalated"] else dg.AssetCheckSeverity.WARN,
            metadata={"overdue": figures["overdue"], "escalated": figures["escalated"]})])

    health_job = dg.define_asset_job("manual_queue_health_job", selection=dg.AssetSelection.assets(HEALTH_KEY),
                                     tags=RUN_TAGS, description="Measure the manual-resolution queue.")
    return dg.Definitions(
        assets=[manual_queue_health], jobs=[manual_queue_retry, health_job], sensors=[manual_queue_escalation_sensor],
        schedules=[dg.ScheduleDefinition(name="manual_queue_health_schedule", job=health_job,
                                         cron_schedule="*/15 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING,
                                         description="Measures the manual-resolution queue every 15 minutes.")],
    )


__all__ = ["QUEUE_ITEM", "QUEUE_OVERDUE", "RETRY_JOB", "build_manual_queue_defs"]
