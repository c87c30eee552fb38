"""One factory turns a domain's policy into its Dagster assets, checks, job and schedule.

    <domain>/expired_records → <domain>/archive → <domain>/deletion → <domain>/audit

A new domain is a new entry in retention_policies.yaml, not new code here.
"""


import contextlib
import warnings
from datetime import datetime

import dagster as dg
import sqlalchemy as sa

from retention_pipelines.defs.resources import RetentionStores
from retention_pipelines.engine import Acted, ArchiveVerificationFailed, Archived, Audited, Found
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.policies.model import format_duration
from retention_pipelines.redaction import without_personal_data
from retention_pipelines.schema import SchemaBehindError
from retention_pipelines.stores import DomainLocked, LockLost, PolicyMismatch, StoreUnavailable

DOMAIN_TAG = "retention/domain"
DRY_RUN_TAG = "retention/dry_run"

NO_ROWS_PAST_DEADLINE_CHECK = "no_rows_past_deadline"
ARCHIVE_MATCHES_MANIFESTS_CHECK = "archive_objects_match_manifests"
AUDIT_MATCHES_ACTED_ON_CHECK = "audit_rows_match_rows_acted_on"
NOTHING_ACTED_ON_EARLY_CHECK = "nothing_acted_on_before_its_deadline"
EVERY_OBJECT_DELETED_CHECK = "every_object_deleted"
NO_ORPHANS_CHECK = "no_orphans"

# The engine's own errors carry operator-ready messages (what failed, naming the store, the
# domain or the field): they end the step as a Failure with that message, not a traceback.
OPERATOR_ERRORS = (StoreUnavailable, PolicyMismatch, SchemaBehindError, DomainLocked, LockLost,
                   ArchiveVerificationFailed)
URIS_IN_METADATA = 50

# Checks carry the domain's partitions so that each evaluates one window's outputs; Dagster 1.13
# marks that as preview. Its warning would be printed on every load of the code location.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning)


@contextlib.contextmanager
def operator_errors():
    try:
        yield
    except OPERATOR_ERRORS as exc:
        raise dg.Failure(description=without_personal_data(str(exc)),
                         allow_retries=not isinstance(exc, (PolicyMismatch, SchemaBehindError))) from None
    except sa.exc.DBAPIError as exc:  # the database went away or refused mid-run: batches are whole or untouched
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise dg.Failure(description=without_personal_data(f"database error: {reason}; every committed batch is "
                                                           "audited, a rerun finishes the rest")) from None


def is_dry_run(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> bool:
    return context.run.tags.get(DRY_RUN_TAG, "false").lower() == "true"


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "—"


def domain_partitions(policy: DomainPolicy) -> dg.TimeWindowPartitionsDefinition:
    """Windows of deadline time. end_offset=1 makes the window in progress a partition too: its run
    takes everything due up to the database's now, so the latest partition always brings the
    domain into compliance."""
    start = policy.partitions.start
    if policy.partitions.cadence == "hourly":
        return dg.HourlyPartitionsDefinition(start_date=f"{start:%Y-%m-%d}-00:00", end_offset=1)
    return dg.DailyPartitionsDefinition(start_date=f"{start:%Y-%m-%d}", end_offset=1)


def build_domain_defs(policy: DomainPolicy, policy_version: str) -> dg.Definitions:
    name = policy.name
    partitions = domain_partitions(policy)
    keys = {step: dg.AssetKey([name, step]) for step in ("expired_records", "archive", "deletion", "audit")}
    common = {"partitions_def": partitions, "group_name": name, "kinds": {"sql"}}
    what = policy.description.strip() or f"Rows of {policy.table}"
    deadline = f"`{policy.clock_column}` + {policy.retain_for}"

    def engine(context, stores: RetentionStores):
        return stores.engine(policy, policy_version, context.log)

    def hold_lock_unless_dry_run(context, stores: RetentionStores):
        """A dry run cleans nothing, so it neither takes nor waits for the domain's lock."""
        return None if is_dry_run(context) else stores.hold_domain_lock(name)

    @dg.asset(key=keys["expired_records"], **common, description=(
        f"{what}\n\nThe rows of `{policy.table}` whose deadline ({deadline}) has passed by the partition's "
        "cutoff: the earlier of the window's end and the database's now. Counts only; takes the "
        "domain's lock for the whole run."))
    def expired_records(context: dg.AssetExecutionContext, retention_stores: RetentionStores) -> dg.Output[Found]:
        window = context.partition_time_window
        with operator_errors():
            hold_lock_unless_dry_run(context, retention_stores)
            found = engine(context, retention_stores).find(window.start, window.end)
        return dg.Output(found, metadata={
            "policy_version": policy_version, "dry_run": is_dry_run(context),
            "cutoff": _iso(found.cutoff), "database_now": _iso(found.database_now),
            "window_start": _iso(window.start), "window_end": _iso(window.end),
            "rows_found": found.rows, "rows_due_in_window": found.due_in_window,
            "rows_overdue_caught_up": found.overdue, "rows_under_legal_hold": found.held,
        })

    @dg.asset(key=keys["archive"], **common, ins={"found": dg.AssetIn(keys["expired_records"])}, description=(
        f"Archive copies of the due rows of `{policy.table}`: gzip'd JSON lines with a manifest (rows, "
        "sha256), each read back and verified before any of its rows is deleted. "
        + ("" if policy.archive.enabled else "This domain is not archived: nothing is written.")))
    def archive(context: dg.AssetExecutionContext, retention_stores: RetentionStores, found: Found) -> dg.Output[Archived]:
        with operator_errors():
            hold_lock_unless_dry_run(context, retention_stores)
            archived = engine(context, retention_stores).archive(found, is_dry_run(context))
        uris = [b.uri for b in archived.batches]
        return dg.Output(archived, metadata={
            "policy_version": policy_version, "dry_run": archived.dry_run, "archive_enabled": archived.enabled,
            "rows_archived": archived.rows, "archive_objects": len(uris),
            "archive_uris": dg.MetadataValue.json(uris[:URIS_IN_METADATA]),
            "archive_uris_not_listed": max(0, len(uris) - URIS_IN_METADATA),
            "duration_seconds": round(archived.seconds, 3),
        })

    @dg.asset(key=keys["deletion"], **common,
              ins={"found": dg.AssetIn(keys["expired_records"]), "archived": dg.AssetIn(keys["archive"])},
              description=(
                  f"The due rows of `{policy.table}` {policy.action_name}, batch by batch: each batch and "
                  "its audit rows in one transaction, so no row is ever gone without its audit entry. "
                  "Rows under an unreleased legal hold are left alone and reported once."))
    def deletion(context: dg.AssetExecutionContext, retention_stores: RetentionStores, found: Found,
                 archived: Archived) -> dg.Output[Acted]:
        with operator_errors():
            lock = hold_lock_unless_dry_run(context, retention_stores)
            acted = engine(context, retention_stores).act(found, archived, context.run_id, is_dry_run(context), lock)
        return dg.Output(acted, metadata={
            "policy_version": policy_version, "dry_run": acted.dry_run, "action": acted.action,
            "cutoff": _iso(found.cutoff), f"rows_{acted.action}": acted.acted_on,
            "rows_skipped_legal_hold": acted.skipped_legal_hold, "rows_failed": acted.failed, "batches": acted.batches,
            "longest_batch_ms": round(acted.longest_batch_seconds * 1000, 1),
            "duration_seconds": round(acted.seconds, 3),
        })

    @dg.asset(key=keys["audit"], **common, ins={"acted": dg.AssetIn(keys["deletion"])}, description=(
        "The run's audit entries counted back from `retention_audit_log`: one per row acted on, "
        "record ids only. Auditors read the totals here."))
    def audit(context: dg.AssetExecutionContext, retention_stores: RetentionStores, acted: Acted) -> dg.Output[Audited]:
        with operator_errors():
            audited = engine(context, retention_stores).audit(acted, context.run_id)
        return dg.Output(audited, metadata={
            "policy_version": policy_version, "dry_run": acted.dry_run, "run_id": context.run_id,
            "audit_rows": audited.audit_rows, f"rows_{acted.action}": audited.acted_on,
            "skipped_legal_hold_rows": audited.skipped_legal_hold_rows, "consistent": audited.consistent,
        })

    @dg.asset_check(asset=keys["deletion"], name=NO_ROWS_PAST_DEADLINE_CHECK, blocking=True, partitions_def=partitions,
                    additional_ins={"found": dg.AssetIn(keys["expired_records"])}, description=(
                        f"No row of `{policy.table}` outside a legal hold is left past its deadline: none due "
                        f"before the run's cutoff or before now − the allowed lag ({policy.sla.max_lag}), "
                        "whichever is earlier. Blocks the audit seal when it fails."))
    def no_rows_past_deadline(context: dg.AssetCheckExecutionContext, retention_stores: RetentionStores,
                              deletion: Acted, found: Found) -> dg.AssetCheckResult:
        with operator_errors():
            domain_engine = engine(context, retention_stores)
            limit = min(found.cutoff, retention_stores.database.now() - policy.sla.max_lag)
            remaining = domain_engine.count_remaining(limit)
        return dg.AssetCheckResult(
            passed=remaining == 0,
            # A dry run changes nothing, so rows remain by design: reported, never blocking.
            severity=dg.AssetCheckSeverity.WARN if deletion.dry_run else dg.AssetCheckSeverity.ERROR,
            metadata={"rows_past_deadline": remaining, "deadline_limit": _iso(limit), "dry_run": deletion.dry_run},
        )

    @dg.asset_check(asset=keys["deletion"], name=EVERY_OBJECT_DELETED_CHECK, partitions_def=partitions,
                    description=(
                        "Every row the run meant to act on was acted on: none was left because its object "
                        "in storage could not be deleted after retries (those rows stay untouched, each "
                        "with a `blob_delete_failed` audit entry). Fails the run rather than pretend success."))
    def every_object_deleted(deletion: Acted) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=deletion.failed == 0, metadata={"rows_failed": deletion.failed})

    @dg.asset_check(asset=keys["archive"], name=ARCHIVE_MATCHES_MANIFESTS_CHECK, partitions_def=partitions,
                    description="Every archive object the run wrote exists and matches its manifest's sha256 and row count.")
    def archive_objects_match_manifests(context: dg.AssetCheckExecutionContext, retention_stores: RetentionStores,
                                        archive: Archived) -> dg.AssetCheckResult:
        if archive.dry_run:
            return dg.AssetCheckResult(passed=True, metadata={"objects_checked": 0, "dry_run": True})
        with operator_errors():
            problems = engine(context, retention_stores).verify_archive(archive)
        return dg.AssetCheckResult(passed=not problems, metadata={
            "objects_checked": len(archive.batches), "problems": dg.MetadataValue.json(problems[:URIS_IN_METADATA])})

    @dg.asset_check(asset=keys["audit"], name=AUDIT_MATCHES_ACTED_ON_CHECK, partitions_def=partitions,
                    additional_ins={"acted": dg.AssetIn(keys["deletion"])},
                    description="The audit log holds exactly one entry of this run per row it deleted or redacted.")
    def audit_rows_match_rows_acted_on(context: dg.AssetCheckExecutionContext, retention_stores: RetentionStores,
                                       audit: Audited, acted: Acted) -> dg.AssetCheckResult:
        with operator_errors():
            recount = engine(context, retention_stores).audit(acted, context.run.run_id)
        # A dry run acts on nothing, so it must have written no audit row at all.
        passed = recount.audit_rows == 0 if acted.dry_run else recount.consistent
        return dg.AssetCheckResult(passed=passed, metadata={
            "audit_rows": recount.audit_rows, "rows_acted_on": recount.acted_on, "dry_run": acted.dry_run})

    @dg.asset_check(asset=keys["audit"], name=NOTHING_ACTED_ON_EARLY_CHECK, partitions_def=partitions,
                    additional_ins={"acted": dg.AssetIn(keys["deletion"])}, description=(
                        f"From the audit log: no row this run {policy.action_name} was younger than its "
                        f"retention period ({format_duration(policy.retain_for)}) when it was acted on — "
                        "not one second earlier."))
    def nothing_acted_on_before_its_deadline(context: dg.AssetCheckExecutionContext, retention_stores: RetentionStores,
                                             audit: Audited, acted: Acted) -> dg.AssetCheckResult:
        with operator_errors():
            early = engine(context, retention_stores).count_acted_on_early(acted, context.run.run_id)
        return dg.AssetCheckResult(passed=early == 0, metadata={"entries_before_deadline": early,
                                                                "retain_for": format_duration(policy.retain_for)})

    job = dg.define_asset_job(
        f"{name}_retention_job",
        selection=dg.AssetSelection.assets(*keys.values()),
        partitions_def=partitions,
        tags={DOMAIN_TAG: name},
        # One process per run: the domain lock taken by the first step is held to the last.
        executor_def=dg.in_process_executor,
        description=f"Retention of {name}: find → archive → {policy.action_name[:-1]} → audit, for one window.",
    )
    schedule = dg.build_schedule_from_partitioned_job(
        job, name=f"{name}_retention_schedule", minute_of_hour=policy.schedule.minute_of_hour,
        hour_of_day=policy.schedule.hour_of_day, default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Runs {name}'s retention for the current {policy.partitions.cadence} window.",
    )
    domain = dg.Definitions(
        assets=[expired_records, archive, deletion, audit],
        asset_checks=[no_rows_past_deadline, archive_objects_match_manifests, audit_rows_match_rows_acted_on,
                      nothing_acted_on_before_its_deadline, every_object_deleted],
        jobs=[job], schedules=[schedule],
    )
    return dg.Definitions.merge(domain, build_orphans_defs(policy, policy_version)) if policy.blob_key_column else domain


def build_orphans_defs(policy: DomainPolicy, policy_version: str) -> dg.Definitions:
    """For a domain with objects in storage: a daily report of objects and rows that lost each other."""
    name = policy.name
    key = dg.AssetKey([name, "orphans"])

    @dg.asset(key=key, group_name=name, kinds={"s3"}, check_specs=[dg.AssetCheckSpec(
        NO_ORPHANS_CHECK, asset=key,
        description="No object without its row, no row without its object. A warning: orphans are reported, "
                    "never removed.")], description=(
        f"Objects in hot storage that no row of `{policy.table}` points at (`{policy.blob_key_column}`), and rows "
        "pointing at an object that is not there. Counts for a person to look into: nothing is deleted "
        "on this basis."))
    def orphans(context: dg.AssetExecutionContext, retention_stores: RetentionStores) -> dg.MaterializeResult:
        with operator_errors():
            found = retention_stores.engine(policy, policy_version, context.log).find_orphans()
        counts = {"objects_without_row": found.objects_without_row, "rows_without_object": found.rows_without_object}
        return dg.MaterializeResult(
            metadata={**counts, "objects": found.objects, "rows_with_object": found.rows_with_object},
            check_results=[dg.AssetCheckResult(check_name=NO_ORPHANS_CHECK, passed=not any(counts.values()),
                                               severity=dg.AssetCheckSeverity.WARN, metadata=counts)])

    job = dg.define_asset_job(f"{name}_orphans_job", selection=dg.AssetSelection.assets(key),
                              tags={DOMAIN_TAG: name}, description=f"Report {name}'s orphaned objects and rows.")
    schedule = dg.ScheduleDefinition(name=f"{name}_orphans_schedule", job=job, cron_schedule="45 3 * * *",
                                     default_status=dg.DefaultScheduleStatus.RUNNING)
    return dg.Definitions(assets=[orphans], jobs=[job], schedules=[schedule])


def job_name(domain: str) -> str:
    return f"{domain}_retention_job"


__all__ = ["DOMAIN_TAG", "DRY_RUN_TAG", "build_domain_defs", "domain_partitions", "job_name"]
