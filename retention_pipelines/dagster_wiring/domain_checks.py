"""The checks of a domain's assets: the compliance invariants, evaluated against the database by the
step that does the run, on what it has just done."""

from dataclasses import dataclass

import dagster as dg

from retention_pipelines.dagster_wiring.common import URIS_IN_METADATA, iso
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.runbooks import runbook
from retention_pipelines.engine import Acted, Archived, Found, RetentionEngine
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.policies.model import format_duration

NO_ROWS_PAST_DEADLINE_CHECK = "no_rows_past_deadline"
ARCHIVE_MATCHES_MANIFESTS_CHECK = "archive_objects_match_manifests"
AUDIT_MATCHES_ACTED_ON_CHECK = "audit_rows_match_rows_acted_on"
NOTHING_ACTED_ON_EARLY_CHECK = "nothing_acted_on_before_its_deadline"
EVERY_OBJECT_DELETED_CHECK = "every_object_deleted"


def _check(name: str, asset: dg.AssetKey, **spec) -> dg.AssetCheckSpec:
    """A domain check, with its runbook: one page per check, named after it."""
    return dg.AssetCheckSpec(name, asset=asset, metadata=runbook(f"{name}.md"), **spec)


def domain_check_specs(policy: DomainPolicy, keys: dict[str, dg.AssetKey]) -> list[dg.AssetCheckSpec]:
    """Each check evaluates the run that materializes its asset, so it is not partitioned: its
    latest result is the latest run's, whichever windows that run covered."""
    return [
        _check(NO_ROWS_PAST_DEADLINE_CHECK, keys["deletion"], blocking=True, description=(
            f"No row of `{policy.table}` outside a legal hold is left past its deadline: none due "
            "before the run's cutoff or before now − the allowed lag "
            f"({format_duration(policy.sla.max_lag)}), whichever is earlier. Rows the run could not finish, "
            "waiting for a person in the manual queue (on its own deadline), are counted apart, and so are rows "
            "whose clock is NULL (kept, as the policy's clock_nulls says). When it fails the run stops before "
            "its audit asset, and the audit seal waits.")),
        _check(EVERY_OBJECT_DELETED_CHECK, keys["deletion"], description=(
            "Every row the run meant to act on was acted on: none was left because its object "
            "in storage could not be deleted after retries (those rows stay untouched, each "
            "with a `blob_delete_failed` audit entry) or because the database refused it (a foreign key: "
            "`delete_blocked`). Each such row is in the manual queue. Fails the run rather than pretend success.")),
        _check(ARCHIVE_MATCHES_MANIFESTS_CHECK, keys["archive"], description=(
            "Every archive object the run wrote exists and matches its manifest's sha256 and row count.")),
        _check(AUDIT_MATCHES_ACTED_ON_CHECK, keys["audit"], description=(
            "The audit log holds exactly one entry of this run per row it deleted or redacted.")),
        _check(NOTHING_ACTED_ON_EARLY_CHECK, keys["audit"], description=(
            f"From the audit log: no row this run {policy.action_name} was younger than its "
            f"retention period ({format_duration(policy.retain_for)}) when it was acted on — "
            "not one second earlier.")),
    ]


@dataclass
class DomainChecks:
    """The checks of one run of a domain, each computed from what the run returned."""

    policy: DomainPolicy
    keys: dict[str, dg.AssetKey]
    engine: RetentionEngine
    stores: RetentionStores
    run_id: str

    def no_rows_past_deadline(self, found: Found) -> dg.AssetCheckResult:
        limit = min(found.cutoff, self.stores.database.now() - self.policy.sla.max_lag)
        remaining = self.engine.count_remaining(limit)
        return self._result("deletion", NO_ROWS_PAST_DEADLINE_CHECK, remaining == 0, {
            "rows_past_deadline": remaining,
            "rows_waiting_in_manual_queue": self.engine.count_remaining(limit, waiting_for_a_person=True),
            # NULL clocks are kept (clock_nulls: keep): shown, never kept unseen.
            "rows_without_clock": self.engine.count_without_clock(), "deadline_limit": iso(limit)})

    def every_object_deleted(self, acted: Acted) -> dg.AssetCheckResult:
        return self._result("deletion", EVERY_OBJECT_DELETED_CHECK, acted.failed == 0, {"rows_failed": acted.failed})

    def archive_objects_match_manifests(self, archived: Archived) -> dg.AssetCheckResult:
        problems = self.engine.verify_archive(archived)
        return self._result("archive", ARCHIVE_MATCHES_MANIFESTS_CHECK, not problems, {
            "objects_checked": len(archived.batches), "problems": dg.MetadataValue.json(problems[:URIS_IN_METADATA])})

    def audit_rows_match_rows_acted_on(self, acted: Acted) -> dg.AssetCheckResult:
        recount = self.engine.audit(acted, self.run_id)
        return self._result("audit", AUDIT_MATCHES_ACTED_ON_CHECK, recount.consistent, {
            "audit_rows": recount.audit_rows, "rows_acted_on": recount.acted_on})

    def nothing_acted_on_before_its_deadline(self, acted: Acted) -> dg.AssetCheckResult:
        early = self.engine.count_acted_on_early(acted, self.run_id)
        return self._result("audit", NOTHING_ACTED_ON_EARLY_CHECK, early == 0, {
            "entries_before_deadline": early, "retain_for": format_duration(self.policy.retain_for)})

    def _result(self, step: str, check: str, passed: bool, metadata: dict) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(asset_key=self.keys[step], check_name=check, passed=passed,
                                   severity=dg.AssetCheckSeverity.ERROR, metadata=metadata)
