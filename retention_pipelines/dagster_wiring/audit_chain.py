"""The audit log's hash chains, daily: verify every chain, anchor the heads; the evidence index, every 15 minutes."""

from datetime import timedelta

import dagster as dg

from retention_pipelines.dagster_wiring.common import RUN_TAGS, operator_errors
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.runbooks import runbook
from retention_pipelines.engine.audit.anchor import anchor
from retention_pipelines.engine.audit.evidence import index_records
from retention_pipelines.engine.audit.verify import verify

AUDIT_CHAIN_KEY = dg.AssetKey(["audit", "chain"])
INTACT_CHECK = "audit_chain_intact"
LINKS_IN_METADATA = 20


def build_audit_chain_defs() -> dg.Definitions:
    @dg.asset(key=AUDIT_CHAIN_KEY, group_name="audit", check_specs=[dg.AssetCheckSpec(
        INTACT_CHECK, asset=AUDIT_CHAIN_KEY, metadata=runbook("audit_chain.md"), description=(
            "Every batch of the audit log is where its domain's hash chain says, with the records and content it "
            "was written with; no batch or record deleted or added; every chain agrees with its head and with every "
            "anchor in the archive store. A failure names the first broken link of each domain (ids and "
            "positions)."))],
        description=(
            "The tamper-evident audit log: every chain (each batch linked as it was written) checked against the "
            "audit log, and the chain heads written to the archive store as a new anchor "
            "(audit_anchors/YYYY/MM/DD/<time>-<random>.json), written once and never over, locked for "
            "RETENTION_AUDIT_ANCHOR_KEEP_DAYS under the archive's Object Lock mode."))
    def chain(context: dg.AssetExecutionContext, retention_stores: RetentionStores):
        database, archive_store = retention_stores.database, retention_stores.archive_store
        index_records(database)
        verification = verify(database, archive_store)
        keep_for = timedelta(days=retention_stores.settings().audit_anchor_keep_days)
        key = anchor(database, archive_store, intact=verification.intact, keep_for=keep_for)
        for link in verification.broken:
            context.log.error(f"audit chain broken: {link.message}")
        yield dg.AssetCheckResult(
            check_name=INTACT_CHECK, passed=verification.intact, severity=dg.AssetCheckSeverity.ERROR, metadata={
                "rows_checked": verification.rows_checked, "domains": len(verification.domains),
                "broken_domains": len(verification.broken),
                "first_broken_links": dg.MetadataValue.json(
                    [link.as_metadata() for link in verification.broken[:LINKS_IN_METADATA]]),
                "anchors_checked": verification.anchors_checked, "rows_outside_chain": verification.outside_chain,
            })
        yield dg.MaterializeResult(metadata={
            "rows_checked": verification.rows_checked,
            "rows_outside_chain": verification.outside_chain, "broken_domains": len(verification.broken),
            "verify_seconds": round(verification.seconds, 3),
            "anchor": dg.MetadataValue.url(archive_store.uri(key)),
            "chains": dg.MetadataValue.json({c.domain: {"positions": c.positions, "intact": c.intact}
                                             for c in verification.domains}),
        })

    @dg.op(description="Add the audit entries written since the last time to the evidence index (`retention "
                       "audit show`). Runs do not do this themselves: an index entry per record would cost each "
                       "of them a third of its speed.")
    def index_evidence(retention_stores: RetentionStores) -> dg.Output[int]:
        with operator_errors():
            indexed = index_records(retention_stores.database)
        return dg.Output(indexed, metadata={"rows_indexed": indexed})

    @dg.job(name="audit_index_job", tags=RUN_TAGS, description="Index new audit entries by record.")
    def index_job():
        index_evidence()

    index_schedule = dg.ScheduleDefinition(
        name="audit_index_schedule", job=index_job, cron_schedule="*/15 * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every 15 minutes: new audit entries indexed, so that what a run wrote is findable by record "
                    "within a quarter of an hour.")

    job = dg.define_asset_job("audit_chain_job", selection=dg.AssetSelection.assets(AUDIT_CHAIN_KEY),
                              tags=RUN_TAGS, description="Verify and anchor the audit log's hash chains.")
    schedule = dg.ScheduleDefinition(name="audit_chain_schedule", job=job, cron_schedule="30 2 * * *",
                                     default_status=dg.DefaultScheduleStatus.RUNNING,
                                     description="Daily: verify and anchor the audit log's hash chains.")
    return dg.Definitions(assets=[chain], jobs=[job, index_job], schedules=[schedule, index_schedule])
