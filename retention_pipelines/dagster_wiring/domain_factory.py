"""One factory turns a domain's policy into its Dagster assets, checks, jobs and schedule.

    <domain>/expired_records → <domain>/archive → <domain>/deletion → <domain>/audit

The four assets are one step (a multi-asset): a run finds, archives, acts and audits in one process
under the domain's lock, and hands nothing over between steps, so a run retried from its failure in
a fresh process or pod starts again from the database, never from a pickle on a disk that is gone.
A dry run is a job of its own (`<domain>_dry_run_job`) that materializes nothing.

A new domain is a new entry in retention_policies.yaml, not new code here.
"""

from datetime import timedelta

import dagster as dg

from retention_pipelines.dagster_wiring.common import (
    DOMAIN_TAG,
    RUN_TAGS,
    URIS_IN_METADATA,
    domain_partitions,
    domain_pool,
    domain_step,
    dry_run_job_name,
    iso,
    job_name,
    refuse_dry_run,
)
from retention_pipelines.dagster_wiring.domain_checks import DomainChecks, domain_check_specs
from retention_pipelines.dagster_wiring.orphans import build_orphans_defs
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.windows import (
    HISTORY_TAGS,
    history_to_record,
    recorded_windows,
    run_request,
    windows_to_cover,
)
from retention_pipelines.engine import Acted, Archived, Audited, Found
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.policies.model import format_duration

STEPS = ("expired_records", "archive", "deletion", "audit")


def build_domain_defs(policy: DomainPolicy, policy_version: str) -> dg.Definitions:
    name = policy.name
    partitions = domain_partitions(policy)
    keys = {step: dg.AssetKey([name, step]) for step in STEPS}
    what = policy.description.strip() or f"Rows of {policy.table}"
    deadline = f"`{policy.clock_column}` + {format_duration(policy.retain_for)}"
    # The UI shows a domain overdue at a glance: no deletion run within one window plus the
    # allowed lag fails its freshness, half of that lag warns.
    cadence = timedelta(hours=1) if policy.partitions.cadence == "hourly" else timedelta(days=1)
    freshness = dg.FreshnessPolicy.time_window(fail_window=cadence + policy.sla.max_lag,
                                               warn_window=cadence + policy.sla.max_lag / 2)
    common = {"group_name": name, "kinds": {"sql"}, "skippable": True}
    specs = [
        dg.AssetSpec(keys["expired_records"], **common, description=(
            f"{what}\n\nThe rows of `{policy.table}` whose deadline ({deadline}) has passed by the run's cutoff: "
            "the earlier of its last window's end and the database's now. Counts only.")),
        dg.AssetSpec(keys["archive"], deps=[keys["expired_records"]], **common, description=(
            f"Archive copies of the due rows of `{policy.table}`: JSON lines, each row encrypted with its subject's "
            "key (erasing the subject makes it unreadable), with a manifest (rows, sha256); each object read back, "
            "decrypted and verified before any of its rows is deleted. "
            + ("" if policy.archive.enabled else "This domain is not archived: nothing is written."))),
        dg.AssetSpec(keys["deletion"], deps=[keys["archive"]], freshness_policy=freshness, **common, description=(
            f"The due rows of `{policy.table}` {policy.action_name}, batch by batch: each batch and "
            "its audit rows in one transaction, so no row is ever gone without its audit entry. "
            "Rows under an unreleased legal hold are left alone and reported once.")),
        dg.AssetSpec(keys["audit"], deps=[keys["deletion"]], **common, description=(
            "The run's audit entries counted back from `retention_audit_log`: one per row acted on, "
            "record ids only. Auditors read the totals here; the run's figures (rows acted on, failures, "
            "duration, the lag left after it) are numeric, so the UI plots them, and go to the Pushgateway "
            "when RETENTION_PUSHGATEWAY_URL is set.")),
    ]

    def engine(stores: RetentionStores):
        return stores.engine(policy, policy_version)

    @dg.multi_asset(
        name=f"{name}_retention", specs=specs, check_specs=domain_check_specs(policy, keys), partitions_def=partitions,
        pool=domain_pool(name), can_subset=True,
        # A backfill of many windows is one run over their range: its cutoff, the end of the last
        # window, takes every row due in all of them, and each window is recorded as materialized.
        backfill_policy=dg.BackfillPolicy.single_run(),
        description=f"find → archive → {'redact' if policy.redact else 'delete'} → audit, in one step under "
                    f"{name}'s lock")
    def retention(context: dg.AssetExecutionContext, retention_stores: RetentionStores):
        selected = {key.path[-1] for key in context.selected_asset_keys}
        checks = {key.name for key in context.selected_asset_check_keys}
        with domain_step(context, name):
            refuse_dry_run(context, dry_run_job_name(name))
            if not selected:
                # A check evaluates what its run did: alone it would have to act on rows to have anything to check.
                raise dg.Failure(description=f"{name}'s checks evaluate a run of its assets: materialize "
                                             f"{name}'s assets, and the checks run with them", allow_retries=False)
            last = max(STEPS.index(step) for step in selected)  # a step is done when a later one needs it
            window = context.partition_time_window
            lock = retention_stores.hold_domain_lock(name)
            domain_engine = engine(retention_stores)
            evaluate = DomainChecks(policy, keys, domain_engine, retention_stores, context.run_id)
            found = domain_engine.find(window.start, window.end)
            if "expired_records" in selected:
                yield dg.MaterializeResult(asset_key=keys["expired_records"], metadata=found_metadata(
                    found, policy_version, window))
            if last < STEPS.index("archive"):
                return
            archived = domain_engine.archive(found, False, context.run_id)
            if "archive" in selected:
                yield dg.MaterializeResult(asset_key=keys["archive"], metadata=archived_metadata(
                    archived, policy_version))
            if "archive_objects_match_manifests" in checks:
                yield evaluate.archive_objects_match_manifests(archived)
            if last < STEPS.index("deletion"):
                return
            acted = domain_engine.act(found, archived, context.run_id, False, lock)
            if "deletion" in selected:
                yield dg.MaterializeResult(asset_key=keys["deletion"], metadata=acted_metadata(
                    found, acted, policy_version))
            if "every_object_deleted" in checks:
                yield evaluate.every_object_deleted(acted)
            deadline_check = evaluate.no_rows_past_deadline(found)
            if "no_rows_past_deadline" in checks:
                yield deadline_check
            if last < STEPS.index("audit") or not deadline_check.passed:
                return  # rows left past their deadline: the run fails (a blocking check) before its audit
            audited = domain_engine.audit(acted, context.run_id)
            lag = domain_engine.retention_lag()
        pushed = retention_stores.push_metrics(context, name, acted, lag)
        yield dg.MaterializeResult(asset_key=keys["audit"], metadata=audited_metadata(
            acted, audited, lag, pushed, policy_version, context.run_id))
        with domain_step(context, name):
            if "audit_rows_match_rows_acted_on" in checks:
                yield evaluate.audit_rows_match_rows_acted_on(acted)
            if "nothing_acted_on_before_its_deadline" in checks:
                yield evaluate.nothing_acted_on_before_its_deadline(acted)

    job = dg.define_asset_job(
        job_name(name),
        selection=dg.AssetSelection.assets(*keys.values()),
        partitions_def=partitions,
        # dagster/max_runtime: Dagster's run monitoring stops a run that outlives its SLA.
        tags={**RUN_TAGS, DOMAIN_TAG: name,
              "dagster/max_runtime": str(int(policy.sla.max_run_duration.total_seconds()))},
        executor_def=dg.in_process_executor,
        description=f"Retention of {name}: find → archive → {'redact' if policy.redact else 'delete'} → audit, "
                    f"for one window or a range of them. Its dry run is {dry_run_job_name(name)}.",
    )
    hour = "*" if policy.partitions.cadence == "hourly" else str(policy.schedule.hour_of_day or 0)

    @dg.schedule(name=f"{name}_retention_schedule", job=job, execution_timezone="UTC",
                 cron_schedule=f"{policy.schedule.minute_of_hour} {hour} * * *",
                 default_status=dg.DefaultScheduleStatus.RUNNING, description=(
                     f"Runs {name}'s retention over the windows since its last recorded one, to the current "
                     f"{policy.partitions.cadence} window; and, until the history reaches back to the first "
                     "window, one more run over the windows just before the earliest recorded one."))
    def schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        recorded = recorded_windows(context.instance, policy)
        latest = windows_to_cover(context.instance, policy, context.scheduled_execution_time, recorded)
        # A tick of several requests names each (Dagster's rule); within a tick a range names itself.
        requests = [run_request(latest, run_key=f"{latest.start}…{latest.end}")]
        if history := history_to_record(context.instance, policy, recorded=recorded):
            requests.append(run_request(history, tags=HISTORY_TAGS, run_key=f"{history.start}…{history.end}"))
        return requests

    domain = dg.Definitions(assets=[retention], jobs=[job, build_dry_run_job(policy, policy_version, partitions)],
                            schedules=[schedule])
    if not policy.blob_key_column:
        return domain
    return dg.Definitions.merge(domain, build_orphans_defs(policy, policy_version))


def build_dry_run_job(policy: DomainPolicy, policy_version: str,
                      partitions: dg.PartitionsDefinition) -> dg.JobDefinition:
    """What a run of the window would do, in the run's own metadata: the same figures as the
    assets', counted with the run's own queries, and nothing changed, locked or materialized."""
    name = policy.name

    @dg.op(name=f"{name}_dry_run", out=dg.Out(dg.Nothing), description=(
        f"Counts what {name}'s retention would find, archive and {'redact' if policy.redact else 'delete'} "
        "for the window; writes, locks and materializes nothing."))
    def dry_run(context: dg.OpExecutionContext, retention_stores: RetentionStores):
        window = context.partition_time_window
        with domain_step(context, name):
            domain_engine = retention_stores.engine(policy, policy_version)
            found = domain_engine.find(window.start, window.end)
            archived = domain_engine.archive(found, True, context.run_id)
            acted = domain_engine.act(found, archived, context.run_id, True, None)
        yield dg.Output(None, metadata={**found_metadata(found, policy_version, window),
                                        **archived_metadata(archived, policy_version),
                                        **acted_metadata(found, acted, policy_version), "dry_run": True})

    @dg.job(name=dry_run_job_name(name), partitions_def=partitions, tags=RUN_TAGS, executor_def=dg.in_process_executor,
            description=f"Dry run of {job_name(name)}: what it would do for the window, in this run's metadata; "
                        "changes nothing and leaves the assets' history as it is.")
    def dry_run_job():
        dry_run()

    return dry_run_job


def found_metadata(found: Found, policy_version: str, window: dg.TimeWindow) -> dict:
    return {"policy_version": policy_version, "dry_run": False,
            "cutoff": iso(found.cutoff), "database_now": iso(found.database_now),
            "window_start": iso(window.start), "window_end": iso(window.end),
            "rows_found": found.rows, "rows_due_in_window": found.due_in_window,
            "rows_overdue_caught_up": found.overdue, "rows_under_legal_hold": found.held}


def archived_metadata(archived: Archived, policy_version: str) -> dict:
    uris = [b.uri for b in archived.batches]
    return {"policy_version": policy_version, "dry_run": archived.dry_run, "archive_enabled": archived.enabled,
            "rows_archived": archived.rows, "archive_objects": len(uris),
            "archive_uris": dg.MetadataValue.json(uris[:URIS_IN_METADATA]),
            "archive_uris_not_listed": max(0, len(uris) - URIS_IN_METADATA),
            "duration_seconds": round(archived.seconds, 3)}


def acted_metadata(found: Found, acted: Acted, policy_version: str) -> dict:
    return {"policy_version": policy_version, "dry_run": acted.dry_run, "action": acted.action,
            "cutoff": iso(found.cutoff), f"rows_{acted.action}": acted.acted_on,
            "rows_skipped_legal_hold": acted.skipped_legal_hold, "rows_failed": acted.failed, "batches": acted.batches,
            "longest_batch_ms": round(acted.longest_batch_seconds * 1000, 1),
            "duration_seconds": round(acted.seconds, 3)}


def audited_metadata(acted: Acted, audited: Audited, lag: timedelta, pushed: bool, policy_version: str,
                     run_id: str) -> dict:
    return {"policy_version": policy_version, "dry_run": acted.dry_run, "run_id": run_id,
            "audit_rows": audited.audit_rows, f"rows_{acted.action}": audited.acted_on,
            "skipped_legal_hold_rows": audited.skipped_legal_hold_rows, "consistent": audited.consistent,
            "rows_failed": acted.failed, "duration_seconds": round(acted.seconds, 3),
            "retention_lag_seconds": round(lag.total_seconds(), 1), "metrics_pushed": pushed}
