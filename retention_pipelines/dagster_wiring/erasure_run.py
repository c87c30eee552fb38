"""The erasure run in Dagster: one dynamic partition per request for erasure, one asset per domain
that names its subjects, and the outcome that destroys the subject's archive key and completes
the request. Built from the policy file: a domain with a `subject_column` is erased, no code.

The assets are one step (a multi-asset): a run erases the domains and completes the request in one
process, and hands nothing over between steps, so a run retried from its failure in a fresh process
or pod starts again from the database, never from a pickle on a disk that is gone. A dry run is a
job of its own (`gdpr_erasure_dry_run_job`) that reports in its run's metadata and materializes
nothing."""

import dagster as dg

from retention_pipelines.dagster_wiring.common import (
    APP_DATABASE_POOL,
    RUN_TAGS,
    domain_step,
    operator_errors,
    refuse_dry_run,
)
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.runbooks import runbook
from retention_pipelines.engine.gdpr.erasure_run import DomainErasure, ErasureIncomplete
from retention_pipelines.engine.gdpr.requests import COMPLETED, OPEN, PARTIALLY_BLOCKED, ErasureRequests
from retention_pipelines.policies import DomainPolicy

ERASURE_PARTITIONS = dg.DynamicPartitionsDefinition(name="erasure_requests")
ERASURE_JOB = "gdpr_erasure_job"
ERASURE_DRY_RUN_JOB = "gdpr_erasure_dry_run_job"
ERASURE_STEP = "gdpr_erasure"  # the run's one step, the multi-asset of every domain and the outcome
OUTCOME_KEY = dg.AssetKey(["gdpr", "erasure_outcome"])
SUBJECT_ERASED_CHECK = "subject_erased"
DRY_RUN_STATUS = "dry run: nothing changed"
MAX_ATTEMPTS = 3  # runs the sensor launches for one request; then its deadline breach calls a person
RECHECK_TAG = "retention/erasure_recheck"  # a partially blocked request's check again: when it was due


def domain_key(domain: str) -> dg.AssetKey:
    """A domain's erasure asset; its dry-run figures are under the same name in the dry run's metadata."""
    return dg.AssetKey(["gdpr", "erasure", domain])


def domain_of(metadata_key: str) -> str | None:
    """The domain whose figures an entry of the dry run's metadata holds; None for the run's own."""
    path = dg.AssetKey.from_user_string(metadata_key).path
    return path[2] if len(path) == 3 and path[:2] == ["gdpr", "erasure"] else None


def build_erasure_run_defs(policies: list[DomainPolicy], policy_version: str,
                           sensor_interval_seconds: int = 60) -> dg.Definitions:
    erasable = [policy for policy in policies if policy.subject_column]
    domain_keys = {policy.name: domain_key(policy.name) for policy in erasable}
    specs = [dg.AssetSpec(domain_keys[policy.name], group_name="gdpr", kinds={"sql"}, skippable=True,
                          description=_domain_description(policy)) for policy in erasable]
    specs.append(dg.AssetSpec(
        OUTCOME_KEY, deps=list(domain_keys.values()), group_name="gdpr", kinds={"sql"}, skippable=True, description=(
            "The request's outcome, once every domain is done: every domain is read again for what is left "
            "of the subject; then, in one transaction, the subject's data key is destroyed (every archived "
            "copy of their rows and PDFs becomes unreadable) and the request is completed, its address "
            "replaced by a keyed hash. Partially blocked when a legal hold kept a record (each has a "
            "`legal_hold_conflict` item in the manual queue) or a domain's policy keeps records until their "
            "deadline (`on_erasure: keep_until_deadline`; checked again then). Materialized without its "
            "domains, it erases every domain first all the same. Request ids only.")))

    @dg.multi_asset(
        name=ERASURE_STEP, specs=specs, partitions_def=ERASURE_PARTITIONS, pool=APP_DATABASE_POOL, can_subset=True,
        check_specs=[dg.AssetCheckSpec(
            SUBJECT_ERASED_CHECK, asset=OUTCOME_KEY, metadata=runbook(f"{SUBJECT_ERASED_CHECK}.md"), description=(
            "The request ended completed (nothing of the subject left in any domain) or partially blocked "
            "(records under a legal hold or kept until their deadline by policy), with the subject's "
            "archive key destroyed unless a hold needs it."))],
        description="erase the subject from each domain, in policy order, each under its lock → complete the "
                    "request, in one step")
    def erasure(context: dg.AssetExecutionContext, retention_stores: RetentionStores):
        selected = set(context.selected_asset_keys)
        checks = {key.name for key in context.selected_asset_check_keys}
        with domain_step(context, "gdpr"):
            refuse_dry_run(context, ERASURE_DRY_RUN_JOB)
            if OUTCOME_KEY not in selected and (checks or not selected):
                # The check evaluates the outcome: alone it would have to erase and complete to have anything to check.
                raise dg.Failure(description=f"{SUBJECT_ERASED_CHECK} evaluates the outcome of an erasure: materialize "
                                             f"{OUTCOME_KEY.to_user_string()}, and the check runs with it",
                                 allow_retries=False)
            request_id = int(context.partition_key)
            subject_erasure = retention_stores.subject_erasure(policy_version, policies)
        # The outcome reads every domain for what is left of the subject, and completes the request
        # only once each is erased: selected, it erases every domain (a subset with the outcome runs
        # them all), and records those of them that are selected.
        wanted = [policy for policy in erasable if OUTCOME_KEY in selected or domain_keys[policy.name] in selected]
        parts = []
        for policy in wanted:
            with domain_step(context, policy.name):
                lock = retention_stores.hold_domain_lock(policy.name,
                                                         retention_stores.settings().erasure_lock_wait_seconds)
                part = subject_erasure.erase_domain(retention_stores.engine(policy, policy_version), request_id,
                                                    context.run_id, False, lock)
            parts.append(part)
            if domain_keys[policy.name] in selected:
                yield dg.MaterializeResult(asset_key=domain_keys[policy.name], metadata={
                    "request_id": request_id, "dry_run": False, **_domain_figures(part),
                    "held_record_ids": dg.MetadataValue.json(part.held), "policy_version": policy_version})
        if OUTCOME_KEY not in selected:
            return
        with domain_step(context, "gdpr"):
            try:
                # The outcome names the domains by name, whatever order they were erased in.
                outcome = subject_erasure.complete(request_id, sorted(parts, key=lambda p: p.domain), context.run_id)
            except ErasureIncomplete as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from None
        yield dg.MaterializeResult(asset_key=OUTCOME_KEY, metadata={
            "request_id": request_id, **_totals(parts), "dry_run": False,
            "status": outcome.status, "outcome": outcome.outcome,
            "archive_keys_destroyed": outcome.keys_destroyed, "archive_key_kept_for_a_hold": outcome.key_kept_for_hold,
            "records_kept_until_deadline": sum(len(k.record_ids) for k in outcome.kept_by_policy),
            "kept_until_deadline": dg.MetadataValue.json({k.domain: {
                "records": len(k.record_ids), "until": k.until.isoformat()} for k in outcome.kept_by_policy}),
        })
        if SUBJECT_ERASED_CHECK in checks:
            yield dg.AssetCheckResult(
                asset_key=OUTCOME_KEY, check_name=SUBJECT_ERASED_CHECK,
                passed=outcome.status in (COMPLETED, PARTIALLY_BLOCKED), severity=dg.AssetCheckSeverity.ERROR,
                metadata={"status": outcome.status})

    job = dg.define_asset_job(
        ERASURE_JOB, selection=dg.AssetSelection.assets(*domain_keys.values(), OUTCOME_KEY),
        partitions_def=ERASURE_PARTITIONS, executor_def=dg.in_process_executor, tags=RUN_TAGS,
        description="Erase one request's subject from every domain that names subjects, then complete the request. "
                    f"Its dry run is {ERASURE_DRY_RUN_JOB}.")

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
        # runs are told by their tag, so that the runs of one round do not stop the next. A dry run
        # is another job's run: it neither counts as an attempt nor stops one.
        rounds = [(r, "") for r in open_requests] + [
            (r, r.details.recheck_after.isoformat()) for r in every if r.recheck_due(now)]
        for request, recheck in rounds:
            key = str(request.id)
            earlier = context.instance.get_runs(dg.RunsFilter(job_name=ERASURE_JOB, tags={"dagster/partition": key}))
            real = [run for run in earlier if run.tags.get(RECHECK_TAG, "") == recheck]
            if any(not run.is_finished for run in earlier) or any(run.is_success for run in real):
                continue  # in flight, or done (the request completes in the run that succeeds)
            if len(real) >= MAX_ATTEMPTS:
                continue
            round_key = f"-recheck-{recheck}" if recheck else ""
            runs.append(dg.RunRequest(partition_key=key, run_key=f"erasure-{key}{round_key}-{len(real) + 1}",
                                      tags={"retention/erasure_request": key,
                                            **({RECHECK_TAG: recheck} if recheck else {})}))
        return dg.SensorResult(run_requests=runs,
                               dynamic_partitions_requests=[ERASURE_PARTITIONS.build_add_request(new)] if new else [])

    return dg.Definitions(assets=[erasure], jobs=[job, _dry_run_job(erasable, policies, policy_version)],
                          sensors=[erasure_request_sensor])


def _dry_run_job(erasable: list[DomainPolicy], policies: list[DomainPolicy], policy_version: str) -> dg.JobDefinition:
    """What the erasure run would do for the request, in the run's own metadata: each domain's figures
    under its asset's name, and their totals; nothing erased, locked, completed or materialized, no
    key made or destroyed."""

    @dg.op(name="gdpr_erasure_dry_run", out=dg.Out(dg.Nothing), description=(
        "Counts what the erasure run would erase, archive and keep in each domain for the request; writes, "
        "locks, completes and materializes nothing."))
    def erasure_dry_run(context: dg.OpExecutionContext, retention_stores: RetentionStores):
        request_id = int(context.partition_key)
        with domain_step(context, "gdpr"):
            subject_erasure = retention_stores.subject_erasure(policy_version, policies)
        parts = []
        for policy in erasable:
            with domain_step(context, policy.name):
                parts.append(subject_erasure.erase_domain(retention_stores.engine(policy, policy_version), request_id,
                                                          context.run_id, dry_run=True, lock=None))
        yield dg.Output(None, metadata={
            "request_id": request_id, **_totals(parts), "dry_run": True, "status": DRY_RUN_STATUS,
            "policy_version": policy_version,
            **{domain_key(part.domain).to_user_string(): dg.MetadataValue.json(_domain_figures(part))
               for part in parts}})

    @dg.job(name=ERASURE_DRY_RUN_JOB, partitions_def=ERASURE_PARTITIONS, tags=RUN_TAGS,
            executor_def=dg.in_process_executor,
            description=f"Dry run of {ERASURE_JOB}: what it would erase in each domain for the request, in this "
                        "run's metadata; changes nothing and leaves the assets' history as it is.")
    def erasure_dry_run_job():
        erasure_dry_run()

    return erasure_dry_run_job


def _domain_figures(part: DomainErasure) -> dict:
    """A domain's part of the erasure, as its asset's metadata names it (the dry run's too)."""
    return {"rows_erased": part.erased, "rows_archived": part.archived,
            "records_kept_under_legal_hold": len(part.held), "held_record_ids": list(part.held),
            "rows_waiting_in_manual_queue": part.failed, "records_kept_until_deadline": len(part.kept)}


def _totals(parts: list[DomainErasure]) -> dict:
    return {"rows_erased": sum(p.erased for p in parts),
            "records_kept_under_legal_hold": sum(len(p.held) for p in parts),
            "records_kept_until_deadline": sum(len(p.kept) for p in parts)}


def _domain_description(policy: DomainPolicy) -> str:
    what = "redacted (the row stays, the address replaced)" if policy.redact else "deleted"
    when = ("whatever their deadline" if policy.on_erasure == "erase" else
            "once past their deadline, none earlier (the policy keeps them until then: "
            f"{' '.join((policy.on_erasure_reason or '').split())})")
    return (f"The request's subject erased from `{policy.table}` (by `{policy.subject_column}`, addresses "
            f"compared as normalised): rows {what} {when}"
            + (", archived first (encrypted with the subject's key)" if policy.archive.enabled else "")
            + ", each with an `erased` audit entry, under the domain's lock. Records under a legal hold stay "
            "and get a `legal_hold_conflict` item in the manual queue.")
