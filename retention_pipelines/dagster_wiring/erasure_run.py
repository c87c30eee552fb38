"""The erasure run in Dagster: one dynamic partition per request for erasure, one asset per domain
that names its subjects, and the outcome that destroys the subject's archive key and completes
the request. Built from the policy file: a domain with a `subject_column` is erased, no code."""

import dagster as dg

from retention_pipelines.dagster_wiring.common import (
    APP_DATABASE_POOL,
    DRY_RUN_TAG,
    RUN_TAGS,
    domain_step,
    is_dry_run,
    operator_errors,
)
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.engine.gdpr.erasure_run import DomainErasure, ErasureIncomplete
from retention_pipelines.engine.gdpr.requests import COMPLETED, OPEN, PARTIALLY_BLOCKED, ErasureRequests
from retention_pipelines.policies import DomainPolicy

ERASURE_PARTITIONS = dg.DynamicPartitionsDefinition(name="erasure_requests")
ERASURE_JOB = "gdpr_erasure_job"
OUTCOME_KEY = dg.AssetKey(["gdpr", "erasure_outcome"])
SUBJECT_ERASED_CHECK = "subject_erased"
MAX_ATTEMPTS = 3  # runs the sensor launches for one request; then its deadline breach calls a person
RECHECK_TAG = "retention/erasure_recheck"  # a partially blocked request's check again: when it was due


def build_erasure_run_defs(policies: list[DomainPolicy], policy_version: str,
                           sensor_interval_seconds: int = 60) -> dg.Definitions:
    erasable = [policy for policy in policies if policy.subject_column]
    domain_assets = [_domain_erasure_asset(policy, policy_version) for policy in erasable]
    domain_keys = {policy.name: dg.AssetKey(["gdpr", "erasure", policy.name]) for policy in erasable}

    @dg.asset(key=OUTCOME_KEY, partitions_def=ERASURE_PARTITIONS, group_name="gdpr", kinds={"sql"},
              ins={name: dg.AssetIn(key) for name, key in domain_keys.items()},
              check_specs=[dg.AssetCheckSpec(SUBJECT_ERASED_CHECK, asset=OUTCOME_KEY, description=(
                  "The request ended completed (nothing of the subject left in any domain) or partially blocked "
                  "(records under a legal hold or kept until their deadline by policy), with the subject's "
                  "archive key destroyed unless a hold needs it."))],
              description=(
                  "The request's outcome, once every domain is done: every domain is read again for what is left "
                  "of the subject; then, in one transaction, the subject's data key is destroyed (every archived "
                  "copy of their rows and PDFs becomes unreadable) and the request is completed, its address "
                  "replaced by a keyed hash. Partially blocked when a legal hold kept a record (each has a "
                  "`legal_hold_conflict` item in the manual queue) or a domain's policy keeps records until their "
                  "deadline (`on_erasure: keep_until_deadline`; checked again then). Request ids only."))
    def erasure_outcome(context: dg.AssetExecutionContext, retention_stores: RetentionStores,
                        **parts: DomainErasure) -> dg.MaterializeResult:
        request_id = int(context.partition_key)
        held = sum(len(part.held) for part in parts.values())
        figures = {"request_id": request_id, "rows_erased": sum(p.erased for p in parts.values()),
                   "records_kept_under_legal_hold": held, "dry_run": is_dry_run(context),
                   "records_kept_until_deadline": sum(len(p.kept) for p in parts.values())}
        if is_dry_run(context):
            return dg.MaterializeResult(metadata={**figures, "status": "dry run: nothing changed"}, check_results=[
                dg.AssetCheckResult(check_name=SUBJECT_ERASED_CHECK, passed=True, metadata={"dry_run": True})])
        with domain_step(context, "gdpr"):
            try:
                outcome = retention_stores.subject_erasure(policy_version, policies).complete(
                    request_id, list(parts.values()), context.run_id)
            except ErasureIncomplete as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from None
        return dg.MaterializeResult(metadata={
            **figures, "status": outcome.status, "outcome": outcome.outcome,
            "archive_keys_destroyed": outcome.keys_destroyed, "archive_key_kept_for_a_hold": outcome.key_kept_for_hold,
            "records_kept_until_deadline": sum(len(k.record_ids) for k in outcome.kept_by_policy),
            "kept_until_deadline": dg.MetadataValue.json({k.domain: {
                "records": len(k.record_ids), "until": k.until.isoformat()} for k in outcome.kept_by_policy}),
        }, check_results=[dg.AssetCheckResult(
            check_name=SUBJECT_ERASED_CHECK, passed=outcome.status in (COMPLETED, PARTIALLY_BLOCKED),
            severity=dg.AssetCheckSeverity.ERROR, metadata={"status": outcome.status})])

    job = dg.define_asset_job(
        ERASURE_JOB, selection=dg.AssetSelection.assets(*domain_keys.values(), OUTCOME_KEY),
        partitions_def=ERASURE_PARTITIONS, executor_def=dg.in_process_executor, tags=RUN_TAGS,
        description="Erase one request's subject from every domain that names subjects, then complete the request.")

    @dg.sensor(name="erasure_request_sensor", job=job, minimum_interval_seconds=sensor_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING, description=(
                   "Adds a partition for each new request for erasure and launches its erasure run; relaunches a "
                   f"request whose run failed, up to {MAX_ATTEMPTS} runs (then its deadline breach calls a person). "
                   "Launches the run again for a partially blocked request once the records it waited for should "
                   "have gone (the last kept record's deadline, or a held record erased): it completes the request "
                   "when nothing of the subject is left."))
    def erasure_request_sensor(context: dg.SensorEvaluationContext, retention_stores: RetentionStores):
        with operator_errors():
            every = ErasureRequests(retention_stores.database).list()
            now = retention_stores.database.now()
        open_requests = [r for r in every if r.status in OPEN]
        known = set(context.instance.get_dynamic_partitions(ERASURE_PARTITIONS.name))
        new = [str(r.id) for r in open_requests if str(r.id) not in known]
        runs = []
        # An open request's runs, then each check again of a partially blocked one, apart: a round's
        # runs are told by their tag, so that the runs of one round do not stop the next.
        rounds = [(r, "") for r in open_requests] + [
            (r, r.details.recheck_after.isoformat()) for r in every if r.recheck_due(now)]
        for request, recheck in rounds:
            key = str(request.id)
            earlier = context.instance.get_runs(dg.RunsFilter(job_name=ERASURE_JOB, tags={"dagster/partition": key}))
            live = [run for run in earlier if run.tags.get(DRY_RUN_TAG, "false") != "true"]
            real = [run for run in live if run.tags.get(RECHECK_TAG, "") == recheck]
            if any(not run.is_finished for run in live) or any(run.is_success for run in real):
                continue  # in flight, or done (the request completes in the run that succeeds)
            if len(real) >= MAX_ATTEMPTS:
                continue
            round_key = f"-recheck-{recheck}" if recheck else ""
            runs.append(dg.RunRequest(partition_key=key, run_key=f"erasure-{key}{round_key}-{len(real) + 1}",
                                      tags={"retention/erasure_request": key,
                                            **({RECHECK_TAG: recheck} if recheck else {})}))
        return dg.SensorResult(run_requests=runs,
                               dynamic_partitions_requests=[ERASURE_PARTITIONS.build_add_request(new)] if new else [])

    return dg.Definitions(assets=[*domain_assets, erasure_outcome], jobs=[job], sensors=[erasure_request_sensor])


def _domain_erasure_asset(policy: DomainPolicy, policy_version: str) -> dg.AssetsDefinition:
    name = policy.name
    what = "redacted (the row stays, the address replaced)" if policy.redact else "deleted"
    when = ("whatever their deadline" if policy.on_erasure == "erase" else
            "once past their deadline, none earlier (the policy keeps them until then: "
            f"{' '.join((policy.on_erasure_reason or '').split())})")

    @dg.asset(key=dg.AssetKey(["gdpr", "erasure", name]), partitions_def=ERASURE_PARTITIONS, group_name="gdpr",
              kinds={"sql"}, pool=APP_DATABASE_POOL, description=(
                  f"The request's subject erased from `{policy.table}` (by `{policy.subject_column}`, addresses "
                  f"compared as normalised): rows {what} {when}"
                  + (", archived first (encrypted with the subject's key)" if policy.archive.enabled else "")
                  + ", each with an `erased` audit entry, under the domain's lock. Records under a legal hold stay "
                  "and get a `legal_hold_conflict` item in the manual queue."))
    def domain_erasure(context: dg.AssetExecutionContext,
                       retention_stores: RetentionStores) -> dg.Output[DomainErasure]:
        request_id = int(context.partition_key)
        dry_run = is_dry_run(context)
        with domain_step(context, name):
            lock = None if dry_run else retention_stores.hold_domain_lock(
                name, retention_stores.settings().erasure_lock_wait_seconds)
            part = retention_stores.subject_erasure(policy_version).erase_domain(
                retention_stores.engine(policy, policy_version), request_id, context.run_id, dry_run, lock)
        return dg.Output(part, metadata={
            "request_id": request_id, "dry_run": dry_run, "rows_erased": part.erased, "rows_archived": part.archived,
            "records_kept_under_legal_hold": len(part.held), "held_record_ids": dg.MetadataValue.json(part.held),
            "rows_waiting_in_manual_queue": part.failed, "records_kept_until_deadline": len(part.kept),
            "policy_version": policy_version,
        })

    return domain_erasure
