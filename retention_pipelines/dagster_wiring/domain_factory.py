"""One factory turns a domain's policy into its Dagster assets, checks, job and schedule.

    <domain>/expired_records → <domain>/archive → <domain>/deletion → <domain>/audit

A new domain is a new entry in retention_policies.yaml, not new code here.
"""

from datetime import timedelta

import dagster as dg

from retention_pipelines.dagster_wiring.common import (
    APP_DATABASE_POOL,
    DOMAIN_TAG,
    RUN_TAGS,
    URIS_IN_METADATA,
    domain_partitions,
    domain_step,
    is_dry_run,
    iso,
    job_name,
)
from retention_pipelines.dagster_wiring.domain_checks import build_domain_checks
from retention_pipelines.dagster_wiring.orphans import build_orphans_defs
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine import Acted, Archived, Audited, Found
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.policies.model import format_duration


def build_domain_defs(policy: DomainPolicy, policy_version: str) -> dg.Definitions:
    name = policy.name
    partitions = domain_partitions(policy)
    keys = {step: dg.AssetKey([name, step]) for step in ("expired_records", "archive", "deletion", "audit")}
    common = {"partitions_def": partitions, "group_name": name, "kinds": {"sql"}}
    what = policy.description.strip() or f"Rows of {policy.table}"
    deadline = f"`{policy.clock_column}` + {format_duration(policy.retain_for)}"

    def engine(stores: RetentionStores):
        return stores.engine(policy, policy_version)

    def hold_lock_unless_dry_run(context, stores: RetentionStores):
        """A dry run cleans nothing, so it neither takes nor waits for the domain's lock."""
        return None if is_dry_run(context) else stores.hold_domain_lock(name)

    @dg.asset(key=keys["expired_records"], **common, description=(
        f"{what}\n\nThe rows of `{policy.table}` whose deadline ({deadline}) has passed by the partition's "
        "cutoff: the earlier of the window's end and the database's now. Counts only; takes the "
        "domain's lock for the whole run."))
    def expired_records(context: dg.AssetExecutionContext, retention_stores: RetentionStores) -> dg.Output[Found]:
        window = context.partition_time_window
        with domain_step(context, name):
            hold_lock_unless_dry_run(context, retention_stores)
            found = engine(retention_stores).find(window.start, window.end)
        return dg.Output(found, metadata={
            "policy_version": policy_version, "dry_run": is_dry_run(context),
            "cutoff": iso(found.cutoff), "database_now": iso(found.database_now),
            "window_start": iso(window.start), "window_end": iso(window.end),
            "rows_found": found.rows, "rows_due_in_window": found.due_in_window,
            "rows_overdue_caught_up": found.overdue, "rows_under_legal_hold": found.held,
        })

    @dg.asset(key=keys["archive"], **common, pool=APP_DATABASE_POOL, ins={"found": dg.AssetIn(keys["expired_records"])},
              description=(
        f"Archive copies of the due rows of `{policy.table}`: JSON lines, each row encrypted with its subject's "
        "key (erasing the subject makes it unreadable), with a manifest (rows, sha256); each object read back, "
        "decrypted and verified before any of its rows is deleted. "
        + ("" if policy.archive.enabled else "This domain is not archived: nothing is written.")))
    def archive(context: dg.AssetExecutionContext, retention_stores: RetentionStores,
                found: Found) -> dg.Output[Archived]:
        with domain_step(context, name):
            hold_lock_unless_dry_run(context, retention_stores)
            archived = engine(retention_stores).archive(found, is_dry_run(context), context.run_id)
        uris = [b.uri for b in archived.batches]
        return dg.Output(archived, metadata={
            "policy_version": policy_version, "dry_run": archived.dry_run, "archive_enabled": archived.enabled,
            "rows_archived": archived.rows, "archive_objects": len(uris),
            "archive_uris": dg.MetadataValue.json(uris[:URIS_IN_METADATA]),
            "archive_uris_not_listed": max(0, len(uris) - URIS_IN_METADATA),
            "duration_seconds": round(archived.seconds, 3),
        })

    # The UI shows a domain overdue at a glance: no deletion run within one window plus the
    # allowed lag fails its freshness, half of that lag warns.
    cadence = timedelta(hours=1) if policy.partitions.cadence == "hourly" else timedelta(days=1)
    freshness = dg.FreshnessPolicy.time_window(fail_window=cadence + policy.sla.max_lag,
                                               warn_window=cadence + policy.sla.max_lag / 2)

    @dg.asset(key=keys["deletion"], **common, freshness_policy=freshness, pool=APP_DATABASE_POOL,
              ins={"found": dg.AssetIn(keys["expired_records"]), "archived": dg.AssetIn(keys["archive"])},
              description=(
                  f"The due rows of `{policy.table}` {policy.action_name}, batch by batch: each batch and "
                  "its audit rows in one transaction, so no row is ever gone without its audit entry. "
                  "Rows under an unreleased legal hold are left alone and reported once."))
    def deletion(context: dg.AssetExecutionContext, retention_stores: RetentionStores, found: Found,
                 archived: Archived) -> dg.Output[Acted]:
        with domain_step(context, name):
            lock = hold_lock_unless_dry_run(context, retention_stores)
            acted = engine(retention_stores).act(found, archived, context.run_id, is_dry_run(context), lock)
        return dg.Output(acted, metadata={
            "policy_version": policy_version, "dry_run": acted.dry_run, "action": acted.action,
            "cutoff": iso(found.cutoff), f"rows_{acted.action}": acted.acted_on,
            "rows_skipped_legal_hold": acted.skipped_legal_hold, "rows_failed": acted.failed, "batches": acted.batches,
            "longest_batch_ms": round(acted.longest_batch_seconds * 1000, 1),
            "duration_seconds": round(acted.seconds, 3),
        })

    @dg.asset(key=keys["audit"], **common, ins={"acted": dg.AssetIn(keys["deletion"])}, description=(
        "The run's audit entries counted back from `retention_audit_log`: one per row acted on, "
        "record ids only. Auditors read the totals here; the run's figures (rows acted on, failures, "
        "duration, the lag left after it) are numeric, so the UI plots them, and go to the Pushgateway "
        "when RETENTION_PUSHGATEWAY_URL is set."))
    def audit(context: dg.AssetExecutionContext, retention_stores: RetentionStores, acted: Acted) -> dg.Output[Audited]:
        with domain_step(context, name):
            domain_engine = engine(retention_stores)
            audited = domain_engine.audit(acted, context.run_id)
            lag = domain_engine.retention_lag()
        pushed = retention_stores.push_metrics(context, name, acted, lag)
        return dg.Output(audited, metadata={
            "policy_version": policy_version, "dry_run": acted.dry_run, "run_id": context.run_id,
            "audit_rows": audited.audit_rows, f"rows_{acted.action}": audited.acted_on,
            "skipped_legal_hold_rows": audited.skipped_legal_hold_rows, "consistent": audited.consistent,
            "rows_failed": acted.failed, "duration_seconds": round(acted.seconds, 3),
            "retention_lag_seconds": round(lag.total_seconds(), 1), "metrics_pushed": pushed,
        })

    job = dg.define_asset_job(
        job_name(name),
        selection=dg.AssetSelection.assets(*keys.values()),
        partitions_def=partitions,
        # dagster/max_runtime: Dagster's run monitoring stops a run that outlives its SLA.
        tags={**RUN_TAGS, DOMAIN_TAG: name,
              "dagster/max_runtime": str(int(policy.sla.max_run_duration.total_seconds()))},
        # One process per run: the domain lock taken by the first step is held to the last.
        executor_def=dg.in_process_executor,
        description=f"Retention of {name}: find → archive → {'redact' if policy.redact else 'delete'} → audit, "
                    "for one window.",
    )
    schedule = dg.build_schedule_from_partitioned_job(
        job, name=f"{name}_retention_schedule", minute_of_hour=policy.schedule.minute_of_hour,
        hour_of_day=policy.schedule.hour_of_day, default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Runs {name}'s retention for the current {policy.partitions.cadence} window.",
    )
    domain = dg.Definitions(
        assets=[expired_records, archive, deletion, audit],
        asset_checks=build_domain_checks(policy, policy_version, keys, partitions),
        jobs=[job], schedules=[schedule],
    )
    if not policy.blob_key_column:
        return domain
    return dg.Definitions.merge(domain, build_orphans_defs(policy, policy_version))
