"""Requests for erasure in Dagster: their deadlines, watched every hour."""

import dagster as dg

from retention_pipelines.defs.common import operator_errors
from retention_pipelines.defs.resources import RetentionStores
from retention_pipelines.engine.erasure import COMPLETED, OPEN, PARTIALLY_BLOCKED, ErasureRequests

REQUESTS_KEY = dg.AssetKey(["gdpr", "erasure_requests"])
NO_REQUEST_PAST_DUE_CHECK = "no_request_past_due"


def build_erasure_defs() -> dg.Definitions:
    @dg.asset(key=REQUESTS_KEY, group_name="gdpr", kinds={"sql"}, check_specs=[dg.AssetCheckSpec(
        NO_REQUEST_PAST_DUE_CHECK, asset=REQUESTS_KEY,
        description="No request for erasure is open past its deadline (GDPR Art. 12(3): a month, or the "
                    "recorded extension).")], description=(
        "The requests for erasure (gdpr_erasure_requests), every hour: how many are open, completed and "
        "partially blocked by a legal hold, how many are past due, and the days left on the nearest "
        "deadline. Request ids only; no address."))
    def erasure_requests(context: dg.AssetExecutionContext, retention_stores: RetentionStores) -> dg.MaterializeResult:
        with operator_errors():
            requests = ErasureRequests(retention_stores.database)
            every = requests.list()
            late = requests.past_due()
            now = retention_stores.database.now()
        open_requests = [r for r in every if r.status in OPEN]
        return dg.MaterializeResult(metadata={
            "open": len(open_requests), "completed": sum(r.status == COMPLETED for r in every),
            "partially_blocked": sum(r.status == PARTIALLY_BLOCKED for r in every), "past_due": len(late),
            "nearest_deadline_days_left": min((r.days_left(now) for r in open_requests), default=0.0),
        }, check_results=[dg.AssetCheckResult(
            check_name=NO_REQUEST_PAST_DUE_CHECK, passed=not late, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"past_due_request_ids": dg.MetadataValue.json([r.id for r in late])})])

    job = dg.define_asset_job("erasure_requests_job", selection=dg.AssetSelection.assets(REQUESTS_KEY),
                              description="Check the deadlines of the requests for erasure.")
    return dg.Definitions(assets=[erasure_requests], jobs=[job], schedules=[dg.ScheduleDefinition(
        name="erasure_requests_schedule", job=job, cron_schedule="20 * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING, description="Checks erasure deadlines every hour.")])
