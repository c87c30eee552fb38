"""The checks of a domain's assets: the compliance invariants, evaluated against the database."""

import dagster as dg

from retention_pipelines.dagster_wiring.common import URIS_IN_METADATA, domain_step, iso
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine import Acted, Archived, Audited, Found
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.policies.model import format_duration

NO_ROWS_PAST_DEADLINE_CHECK = "no_rows_past_deadline"
ARCHIVE_MATCHES_MANIFESTS_CHECK = "archive_objects_match_manifests"
AUDIT_MATCHES_ACTED_ON_CHECK = "audit_rows_match_rows_acted_on"
NOTHING_ACTED_ON_EARLY_CHECK = "nothing_acted_on_before_its_deadline"
EVERY_OBJECT_DELETED_CHECK = "every_object_deleted"
NO_ORPHANS_CHECK = "no_orphans"


def build_domain_checks(policy: DomainPolicy, policy_version: str, keys: dict[str, dg.AssetKey],
                        partitions: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    def engine(stores: RetentionStores):
        return stores.engine(policy, policy_version)

    @dg.asset_check(asset=keys["deletion"], name=NO_ROWS_PAST_DEADLINE_CHECK, blocking=True, partitions_def=partitions,
                    additional_ins={"found": dg.AssetIn(keys["expired_records"])}, description=(
                        f"No row of `{policy.table}` outside a legal hold is left past its deadline: none due "
                        "before the run's cutoff or before now − the allowed lag "
                        f"({format_duration(policy.sla.max_lag)}), "
                        "whichever is earlier. Rows the run could not finish, waiting for a person in the manual "
                        "queue (on its own deadline), are counted apart, and so are rows whose clock is NULL "
                        "(kept, as the policy's clock_nulls says). Blocks the audit seal when it fails."))
    def no_rows_past_deadline(context: dg.AssetCheckExecutionContext, retention_stores: RetentionStores,
                              deletion: Acted, found: Found) -> dg.AssetCheckResult:
        with domain_step(context, policy.name):
            domain_engine = engine(retention_stores)
            limit = min(found.cutoff, retention_stores.database.now() - policy.sla.max_lag)
            remaining = domain_engine.count_remaining(limit)
            queued = domain_engine.count_remaining(limit, waiting_for_a_person=True)
            without_clock = domain_engine.count_without_clock()
        return dg.AssetCheckResult(
            passed=remaining == 0,
            # A dry run changes nothing, so rows remain by design: reported, never blocking.
            severity=dg.AssetCheckSeverity.WARN if deletion.dry_run else dg.AssetCheckSeverity.ERROR,
            metadata={"rows_past_deadline": remaining, "rows_waiting_in_manual_queue": queued,
                      # NULL clocks are kept (clock_nulls: keep): shown, never kept unseen.
                      "rows_without_clock": without_clock,
                      "deadline_limit": iso(limit), "dry_run": deletion.dry_run},
        )

    @dg.asset_check(asset=keys["deletion"], name=EVERY_OBJECT_DELETED_CHECK, partitions_def=partitions,
                    description=(
                        "Every row the run meant to act on was acted on: none was left because its object "
                        "in storage could not be deleted after retries (those rows stay untouched, each "
                        "with a `blob_delete_failed` audit entry). Fails the run rather than pretend success."))
    def every_object_deleted(deletion: Acted) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=deletion.failed == 0, metadata={"rows_failed": deletion.failed})

    @dg.asset_check(asset=keys["archive"], name=ARCHIVE_MATCHES_MANIFESTS_CHECK, partitions_def=partitions,
                    description="Every archive object the run wrote exists and matches its manifest's sha256 "
                                "and row count.")
    def archive_objects_match_manifests(context: dg.AssetCheckExecutionContext, retention_stores: RetentionStores,
                                        archive: Archived) -> dg.AssetCheckResult:
        if archive.dry_run:
            return dg.AssetCheckResult(passed=True, metadata={"objects_checked": 0, "dry_run": True})
        with domain_step(context, policy.name):
            problems = engine(retention_stores).verify_archive(archive)
        return dg.AssetCheckResult(passed=not problems, metadata={
            "objects_checked": len(archive.batches), "problems": dg.MetadataValue.json(problems[:URIS_IN_METADATA])})

    @dg.asset_check(asset=keys["audit"], name=AUDIT_MATCHES_ACTED_ON_CHECK, partitions_def=partitions,
                    additional_ins={"acted": dg.AssetIn(keys["deletion"])},
                    description="The audit log holds exactly one entry of this run per row it deleted or redacted.")
    def audit_rows_match_rows_acted_on(context: dg.AssetCheckExecutionContext, retention_stores: RetentionStores,
                                       audit: Audited, acted: Acted) -> dg.AssetCheckResult:
        with domain_step(context, policy.name):
            recount = engine(retention_stores).audit(acted, context.run.run_id)
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
        with domain_step(context, policy.name):
            early = engine(retention_stores).count_acted_on_early(acted, context.run.run_id)
        return dg.AssetCheckResult(passed=early == 0, metadata={"entries_before_deadline": early,
                                                                "retain_for": format_duration(policy.retain_for)})

    return [no_rows_past_deadline, every_object_deleted, archive_objects_match_manifests,
            audit_rows_match_rows_acted_on, nothing_acted_on_before_its_deadline]
