"""For each archived domain: its archive objects deleted once past `archive.keep_for`, every day.

    <domain>/archive_expiry  (check: no_archive_kept_beyond_keep_for)

Built from the policy like the domain's other assets: a new archived domain is a policy entry.
A dry run is a job of its own (`<domain>_archive_expiry_dry_run_job`) that materializes nothing.
"""

import dagster as dg

from retention_pipelines.dagster_wiring.common import (
    DOMAIN_TAG,
    RUN_TAGS,
    domain_pool,
    domain_step,
    iso,
    refuse_dry_run,
)
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.runbooks import runbook
from retention_pipelines.engine.retention.archive_expiry import GRACE, ArchiveRetention, Expiry
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.policies.model import format_duration

NO_ARCHIVE_KEPT_BEYOND_KEEP_FOR_CHECK = "no_archive_kept_beyond_keep_for"
# Daily, after the domains' nightly retention runs (02:20, 02:30) and the orphans report (03:45).
ARCHIVE_EXPIRY_CRON = "15 4 * * *"


def archive_expiry_job_name(domain: str) -> str:
    return f"{domain}_archive_expiry_job"


def archive_expiry_dry_run_job_name(domain: str) -> str:
    return f"{domain}_archive_expiry_dry_run_job"


def build_archive_retention_defs(policies: list[DomainPolicy], policy_version: str) -> dg.Definitions:
    """The archive expiry of every archived domain among `policies`."""
    archived = [policy for policy in policies if policy.archive.enabled]
    return dg.Definitions.merge(*(_domain_archive_expiry(policy, policy_version) for policy in archived)) \
        if archived else dg.Definitions()


def _domain_archive_expiry(policy: DomainPolicy, policy_version: str) -> dg.Definitions:
    name = policy.name
    key = dg.AssetKey([name, "archive_expiry"])
    keep_for = format_duration(policy.archive.keep_for)
    dry_run_job_name = archive_expiry_dry_run_job_name(name)

    def archive_retention(stores: RetentionStores) -> ArchiveRetention:
        return ArchiveRetention(policy, policy_version, stores.database, stores.archive_store)

    @dg.asset(key=key, group_name=name, kinds={"s3"}, pool=domain_pool(name), description=(
        f"{name}'s archive objects (`{name}/` in the archive store: batches with their manifests"
        + (", archived PDFs" if policy.blob_key_column else "") + f") deleted once kept {keep_for} "
        "(archive.keep_for) after they were written, by the store's own timestamp against the database's "
        "now. Each deletion has its `archive_expired` audit entry, committed before the object goes. "
        "An object under an S3 Object Lock is skipped and counted, and tried again the next day; one holding a "
        "record under a legal hold is kept, counted and put in the manual queue. "
        f"Takes the domain's lock; its step is in the domain's pool (`{domain_pool(name)}`), so it waits for a "
        "retention run of the domain instead of failing on the lock."))
    def archive_expiry(context: dg.AssetExecutionContext, retention_stores: RetentionStores) -> dg.MaterializeResult:
        with domain_step(context, name):
            refuse_dry_run(context, dry_run_job_name)
            lock = retention_stores.hold_domain_lock(name)
            expiry = archive_retention(retention_stores).expire(context.run_id, False, lock)
        return dg.MaterializeResult(metadata=expiry_metadata(expiry, policy_version, keep_for))

    @dg.asset_check(asset=key, name=NO_ARCHIVE_KEPT_BEYOND_KEEP_FOR_CHECK,
                    metadata=runbook(f"{NO_ARCHIVE_KEPT_BEYOND_KEEP_FOR_CHECK}.md"), description=(
        f"No archive object of {name} is kept beyond its keep_for ({keep_for}) plus "
        f"{format_duration(GRACE)} of grace for the daily job. Fails (error) on any such object; only a warning "
        "when every one of them is under an S3 Object Lock still in force, which nobody here can lift, or kept "
        "for a legal hold on a record in it (each in the manual queue). Counts and ages only, no keys."))
    def no_archive_kept_beyond_keep_for(context: dg.AssetCheckExecutionContext,
                                        retention_stores: RetentionStores) -> dg.AssetCheckResult:
        with domain_step(context, name):
            overdue = archive_retention(retention_stores).count_overdue()
        return dg.AssetCheckResult(
            passed=overdue.overdue == 0,
            severity=dg.AssetCheckSeverity.ERROR if overdue.overdue_unlocked else dg.AssetCheckSeverity.WARN,
            metadata={"objects": overdue.objects, "objects_past_keep_for_and_grace": overdue.overdue,
                      "of_which_under_object_lock": overdue.overdue_under_lock,
                      "of_which_kept_for_legal_hold": overdue.overdue_under_hold,
                      "oldest_object_age_days": round(overdue.oldest_age.total_seconds() / 86400, 2),
                      "keep_for": keep_for, "grace": format_duration(overdue.grace)})

    job = dg.define_asset_job(
        archive_expiry_job_name(name), selection=dg.AssetSelection.assets(key),
        # One run per domain at a time (dagster.yaml), as for its retention runs: both take its lock.
        tags={**RUN_TAGS, DOMAIN_TAG: name,
              "dagster/max_runtime": str(int(policy.sla.max_run_duration.total_seconds()))},
        executor_def=dg.in_process_executor,
        description=f"Delete {name}'s archive objects kept {keep_for}, each with its audit entry. "
                    f"Its dry run is {dry_run_job_name}.")

    # A dry run deletes, audits, queues and materializes nothing: it neither takes the domain's
    # lock nor waits in its pool, so it runs beside a retention run of the domain.
    @dg.op(name=f"{name}_archive_expiry_dry_run", out=dg.Out(dg.Nothing), description=(
        f"Counts the archive objects of {name} past keep_for ({keep_for}) that the archive expiry would "
        "delete; deletes, audits, locks and materializes nothing."))
    def archive_expiry_dry_run(context: dg.OpExecutionContext, retention_stores: RetentionStores):
        with domain_step(context, name):
            expiry = archive_retention(retention_stores).expire(context.run_id, dry_run=True, lock=None)
        yield dg.Output(None, metadata=expiry_metadata(expiry, policy_version, keep_for))

    @dg.job(name=dry_run_job_name, tags=RUN_TAGS, executor_def=dg.in_process_executor, description=(
        f"Dry run of {archive_expiry_job_name(name)}: what it would delete now, in this run's metadata; "
        "changes nothing and leaves the asset's history as it is."))
    def dry_run_job():
        archive_expiry_dry_run()

    schedule = dg.ScheduleDefinition(name=f"{name}_archive_expiry_schedule", job=job,
                                     cron_schedule=ARCHIVE_EXPIRY_CRON,
                                     default_status=dg.DefaultScheduleStatus.RUNNING,
                                     description=f"Expires {name}'s archive objects past keep_for, daily.")
    return dg.Definitions(assets=[archive_expiry], asset_checks=[no_archive_kept_beyond_keep_for],
                          jobs=[job, dry_run_job], schedules=[schedule])


def expiry_metadata(expiry: Expiry, policy_version: str, keep_for: str) -> dict:
    """A run's figures: deleted by a real run, would be deleted by a dry run (the other one 0)."""
    return {
        "policy_version": policy_version, "dry_run": expiry.dry_run, "keep_for": keep_for,
        "database_now": iso(expiry.database_now), "objects_past_keep_for": expiry.objects_due,
        "objects_deleted": 0 if expiry.dry_run else expiry.objects_deleted,
        "objects_would_delete": expiry.objects_deleted if expiry.dry_run else 0,
        "objects_skipped_object_lock": expiry.objects_skipped_locked,
        "objects_kept_for_legal_hold": expiry.objects_skipped_held, "objects_refused": expiry.objects_refused,
        "audit_entries": expiry.audit_entries, "manual_queue_items": expiry.queued,
        "oldest_written_at_past_keep_for": iso(expiry.oldest_due_written_at),
        "duration_seconds": round(expiry.seconds, 3),
    }
