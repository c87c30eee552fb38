"""Requests for erasure in Dagster: their deadlines, watched every hour."""

import dagster as dg

from retention_pipelines.dagster_wiring.common import RUN_TAGS, operator_errors
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.runbooks import runbook
from retention_pipelines.dagster_wiring.sla_sensors import close_breach, open_breach
from retention_pipelines.engine.gdpr.requests import COMPLETED, OPEN, PARTIALLY_BLOCKED, ErasureRequests
from retention_pipelines.policies.model import format_duration

REQUESTS_KEY = dg.AssetKey(["gdpr", "erasure_requests"])
NO_REQUEST_PAST_DUE_CHECK = "no_request_past_due"
ERASURE_DOMAIN = "gdpr"  # the breach book's domain for what spans every domain
ERASURE_OVERDUE = "erasure_overdue"  # the breach kind: a request for erasure open past its deadline


def build_erasure_defs(sensor_interval_seconds: int = 300) -> dg.Definitions:
    @dg.asset(key=REQUESTS_KEY, group_name="gdpr", kinds={"sql"}, check_specs=[dg.AssetCheckSpec(
        NO_REQUEST_PAST_DUE_CHECK, asset=REQUESTS_KEY, metadata=runbook("erasure_overdue.md"),
        description="No request for erasure is open past its deadline (GDPR Art. 12(3): a month, or the "
                    "recorded extension).")], description=(
        "The requests for erasure (gdpr_erasure_requests), every hour: how many are open, completed and "
        "partially blocked (by a legal hold, or by a domain that keeps records until their deadline), how many "
        "are past due, and the days left on the nearest deadline. Request ids only; no address."))
    def erasure_requests(context: dg.AssetExecutionContext, retention_stores: RetentionStores) -> dg.MaterializeResult:
        with operator_errors():
            every = ErasureRequests(retention_stores.database).list()
            now = retention_stores.database.now()
        late = [request for request in every if request.past_due(now)]
        open_requests = [r for r in every if r.status in OPEN]
        return dg.MaterializeResult(metadata={
            "open": len(open_requests), "completed": sum(r.status == COMPLETED for r in every),
            "partially_blocked": sum(r.status == PARTIALLY_BLOCKED for r in every), "past_due": len(late),
            "kept_until_deadline": sum(r.status == PARTIALLY_BLOCKED and bool(r.kept_by_policy) for r in every),
            "nearest_deadline_days_left": min((r.days_left(now) for r in open_requests), default=0.0),
        }, check_results=[dg.AssetCheckResult(
            check_name=NO_REQUEST_PAST_DUE_CHECK, passed=not late, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"past_due_request_ids": dg.MetadataValue.json([r.id for r in late])})])

    @dg.sensor(name="erasure_deadline_sensor", minimum_interval_seconds=sensor_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING, description=(
                   "Opens an `erasure_overdue` breach while any request for erasure is open past its deadline "
                   "(escalating at 2× and 4× the time it was given), and closes it when none is."))
    def erasure_deadline_sensor(context: dg.SensorEvaluationContext, retention_stores: RetentionStores):
        with operator_errors():
            late = ErasureRequests(retention_stores.database).past_due()
            if not late:
                close_breach(context, retention_stores, ERASURE_DOMAIN, ERASURE_OVERDUE, "no request is past due")
            else:
                now = retention_stores.database.now()
                oldest = min(late, key=lambda request: request.received_at)
                open_breach(context, retention_stores, ERASURE_DOMAIN, ERASURE_OVERDUE, now - oldest.received_at,
                            oldest.due_at - oldest.received_at,
                            f"{len(late)} requests for erasure past due; request {oldest.id} received "
                            f"{format_duration(now - oldest.received_at)} ago",
                            {"past_due_request_ids": [request.id for request in late]})
        return dg.SkipReason("breaches only; this sensor launches no runs")

    job = dg.define_asset_job("erasure_requests_job", selection=dg.AssetSelection.assets(REQUESTS_KEY),
                              tags=RUN_TAGS, description="Check the deadlines of the requests for erasure.")
    schedule = dg.ScheduleDefinition(name="erasure_requests_schedule", job=job, cron_schedule="20 * * * *",
                                     default_status=dg.DefaultScheduleStatus.RUNNING,
                                     description="Checks erasure deadlines every hour.")
    return dg.Definitions(assets=[erasure_requests], jobs=[job], sensors=[erasure_deadline_sensor],
                          schedules=[schedule])
