"""The audit log's hash chains, daily: seal every domain, verify every chain, anchor the heads."""

from datetime import timedelta

import dagster as dg

from retention_pipelines.dagster_wiring.common import RUN_TAGS, operator_errors
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.runbooks import runbook
from retention_pipelines.engine.audit.anchor import anchor
from retention_pipelines.engine.audit.evidence import index_records
from retention_pipelines.engine.audit.seal import seal
from retention_pipelines.engine.audit.verify import verify

AUDIT_CHAIN_KEY = dg.AssetKey(["audit", "chain"])
INTACT_CHECK = "audit_chain_intact"
LINKS_IN_METADATA = 20


def build_audit_chain_defs() -> dg.Definitions:
    @dg.asset(key=AUDIT_CHAIN_KEY, group_name="audit", check_specs=[dg.AssetCheckSpec(
        INTACT_CHECK, asset=AUDIT_CHAIN_KEY, metadata=runbook("audit_chain.md"), description=(
            "Every audit row is where its domain's hash chain says, with the content it was sealed with; no row "
            "deleted or inserted behind the sealer's back; every chain agrees with its head and with every anchor "
            "in the archive store. A failure names the first broken link of each domain (ids and positions)."))],
        description=(
            "The tamper-evident audit log: the audit rows written since the last seal chained into their "
            "domain's hash chain, every chain checked against the audit log, and the chain heads written to the "
            "archive store as a new anchor (audit_anchors/YYYY/MM/DD/<time>-<random>.json), written once and never "
            "over, locked for RETENTION_AUDIT_ANCHOR_KEEP_DAYS under the archive's Object Lock mode."))
    def chain(context: dg.AssetExecutionContext, retention_stores: RetentionStores):
        database, archive_store = retention_stores.database, retention_stores.archive_store
        sealed = seal(database)
        index_records(database)
        if not sealed.settled:
            context.log.warning("audit chain: writers of the audit log stayed open; nothing sealed this time")
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
                "anchors_checked": verification.anchors_checked, "rows_not_yet_sealed": verification.unsealed,
            })
        yield dg.MaterializeResult(metadata={
            "rows_sealed": sealed.rows, "rows_checked": verification.rows_checked,
            "rows_not_yet_sealed": verification.unsealed, "broken_domains": len(verification.broken),
            "seal_seconds": round(sealed.seconds, 3), "verify_seconds": round(verification.seconds, 3),
            "anchor": dg.MetadataValue.url(archive_store.uri(key)),
            "chains": dg.MetadataValue.json({c.domain: {"positions": c.positions, "intact": c.intact}
                                             for c in verification.domains}),
        })

    @dg.op(description="Seal the audit rows written since the last seal into their domain's hash chain, and add "
                       "them to the evidence index (`retention audit show`). Runs do not do this themselves: it "
                       "would cost each of them a third of its speed.")
    def seal_and_index(context: dg.OpExecutionContext, retention_stores: RetentionStores) -> dg.Output[int]:
        database = retention_stores.database
        with operator_errors():
            sealed = seal(database)
            indexed = index_records(database)
        if not sealed.settled:
            context.log.warning("audit chain: writers of the audit log stayed open; nothing sealed this time")
        return dg.Output(sealed.rows, metadata={"rows_sealed": sealed.rows, "rows_indexed": indexed,
                                                "seconds": round(sealed.seconds, 3)})

    @dg.job(name="audit_seal_job", tags=RUN_TAGS,
            description="Seal new audit rows into the hash chains and index them by record.")
    def seal_job():
        seal_and_index()

    seal_schedule = dg.ScheduleDefinition(
        name="audit_seal_schedule", job=seal_job, cron_schedule="*/15 * * * *",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every 15 minutes: new audit rows sealed and indexed, so that what a run wrote is tamper-evident "
                    "and findable by record within a quarter of an hour.")

    job = dg.define_asset_job("audit_chain_job", selection=dg.AssetSelection.assets(AUDIT_CHAIN_KEY),
                              tags=RUN_TAGS, description="Seal, verify and anchor the audit log's hash chains.")
    schedule = dg.ScheduleDefinition(name="audit_chain_schedule", job=job, cron_schedule="30 2 * * *",
                                     default_status=dg.DefaultScheduleStatus.RUNNING,
                                     description="Daily: seal, verify and anchor the audit log's hash chains.")
    return dg.Definitions(assets=[chain], jobs=[job, seal_job], schedules=[schedule, seal_schedule])
