"""The monthly compliance report in Dagster: one partition per calendar month, made once the month
is over and kept in the archive store beside the archives it accounts for."""

from datetime import timedelta
from urllib.parse import unquote, urlparse

import dagster as dg

from retention_pipelines.dagster_wiring.common import RUN_TAGS, operator_errors
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.audit.verify import verify
from retention_pipelines.engine.report.figures import ALL_DOMAINS, build_report
from retention_pipelines.policies import PolicyFile

REPORT_KEY = dg.AssetKey(["compliance", "report"])
REPORT_JOB = "compliance_report_job"
REPORT_SCHEDULE = "compliance_report_schedule"


def report_partitions(policies: PolicyFile) -> dg.MonthlyPartitionsDefinition:
    """A partition per month since the earliest domain's first partition; end_offset=0 keeps the
    month in progress out: a month is reported after it ends. Keys look like '2026-11-01'."""
    first = min(policy.partitions.start for policy in policies.domains.values())
    return dg.MonthlyPartitionsDefinition(start_date=f"{first:%Y-%m}-01", end_offset=0)


def _link(uri: str) -> dg.MetadataValue:
    parsed = urlparse(uri)
    return dg.MetadataValue.path(unquote(parsed.path)) if parsed.scheme == "file" else dg.MetadataValue.url(uri)


def build_report_defs(policies: PolicyFile) -> dg.Definitions:
    partitions = report_partitions(policies)

    @dg.asset(key=REPORT_KEY, group_name="compliance", partitions_def=partitions, kinds={"html", "csv"},
              description=(
                  "The monthly compliance report: the retention schedule from the policy file (GDPR Art. 30(1)(f)) "
                  "with the record of processing beside it (purpose, lawful basis, data, recipients), "
                  "records removed or redacted per domain and day, legal-hold skips, SLA breaches and their "
                  "durations, manual-queue items and their resolution, requests for erasure with their deadlines "
                  "met or missed, the legal holds in force, and the audit chain's verification. One HTML page "
                  "with charts and a CSV per table, in the archive store under reports/YYYY-MM/. Every count of "
                  "records comes from the audit log; no personal data."))
    def compliance_report(context: dg.AssetExecutionContext, retention_stores: RetentionStores) -> dg.MaterializeResult:
        from retention_pipelines.engine.report.render import html_name, render_report, store_report

        month = context.partition_key[:7]
        with operator_errors():
            settings = retention_stores.settings()
            # Every chain verified against its anchors: every entry is chained as it is written.
            chain = verify(retention_stores.database, retention_stores.archive_store).as_status()
            report = build_report(retention_stores.database, policies, month, chain_status=chain,
                                  erasure_due=timedelta(days=settings.erasure_due_days))
            uris = store_report(render_report(report), retention_stores.archive_store, month)
        page = uris[html_name(month)]
        context.log.info(f"compliance report for {month}: {page}")
        totals = {row.domain: row for row in report.totals()}
        every = totals.pop(ALL_DOMAINS)
        erasure = report.erasure_summary()
        return dg.MaterializeResult(metadata={
            "report": _link(page), "files": dg.MetadataValue.json(uris), "audit_chain": report.chain.label,
            **every.actions, "queue_items": every.queue_items, "queue_items_open": every.queue_items_open,
            "sla_breaches": every.sla_breaches, "seconds_in_breach": every.seconds_in_breach,
            "legal_holds_active": every.legal_holds_active,
            **{f"erasure_{name}": count for name, count in erasure.items()},
            **{f"removed/{domain}": row.actions["removed"] for domain, row in totals.items()},
        })

    job = dg.define_asset_job(REPORT_JOB, selection=dg.AssetSelection.assets(REPORT_KEY), partitions_def=partitions,
                              tags=RUN_TAGS, description="Make the compliance report of one month.")
    # 06:00 UTC on the 1st: the last night's daily runs of the month (02:00–03:00) are done by then.
    schedule = dg.build_schedule_from_partitioned_job(
        job, name=REPORT_SCHEDULE, day_of_month=1, hour_of_day=6, minute_of_hour=0,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Makes the compliance report of the month that just ended, on the 1st of each month.")
    return dg.Definitions(assets=[compliance_report], jobs=[job], schedules=[schedule])
