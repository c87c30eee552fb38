"""For a domain whose rows point at objects in storage: a daily report of orphans."""

import dagster as dg

from retention_pipelines.dagster_wiring.common import DOMAIN_TAG, RUN_TAGS, domain_step
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.runbooks import runbook
from retention_pipelines.policies import DomainPolicy

NO_ORPHANS_CHECK = "no_orphans"


def build_orphans_defs(policy: DomainPolicy, policy_version: str) -> dg.Definitions:
    """For a domain with objects in storage: a daily report of objects and rows that lost each other."""
    name = policy.name
    key = dg.AssetKey([name, "orphans"])

    @dg.asset(key=key, group_name=name, kinds={"s3"}, check_specs=[dg.AssetCheckSpec(
        NO_ORPHANS_CHECK, asset=key, metadata=runbook(f"{NO_ORPHANS_CHECK}.md"),
        description="No object without its row, no row without its object. A warning: orphans are reported, "
                    "never removed.")], description=(
        f"Objects in hot storage that no row of `{policy.table}` points at (`{policy.blob_key_column}`), and rows "
        "pointing at an object that is not there. Counts for a person to look into: nothing is deleted "
        "on this basis."))
    def orphans(context: dg.AssetExecutionContext, retention_stores: RetentionStores) -> dg.MaterializeResult:
        with domain_step(context, name):
            found = retention_stores.engine(policy, policy_version).find_orphans()
        counts = {"objects_without_row": found.objects_without_row, "rows_without_object": found.rows_without_object}
        return dg.MaterializeResult(
            metadata={**counts, "objects": found.objects, "rows_with_object": found.rows_with_object},
            check_results=[dg.AssetCheckResult(check_name=NO_ORPHANS_CHECK, passed=not any(counts.values()),
                                               severity=dg.AssetCheckSeverity.WARN, metadata=counts)])

    job = dg.define_asset_job(f"{name}_orphans_job", selection=dg.AssetSelection.assets(key),
                              tags={**RUN_TAGS, DOMAIN_TAG: name},
                              description=f"Report {name}'s orphaned objects and rows.")
    schedule = dg.ScheduleDefinition(name=f"{name}_orphans_schedule", job=job, cron_schedule="45 3 * * *",
                                     default_status=dg.DefaultScheduleStatus.RUNNING)
    return dg.Definitions(assets=[orphans], jobs=[job], schedules=[schedule])
