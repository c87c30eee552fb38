"""The erasure run in Dagster: one dynamic partition per request for erasure, one asset per domain
that names its subjects, and the outcome that destroys the subject's archive key and completes
the request. Built from the policy file: a domain with a `subject_column` is erased, no code.

The assets are one step (a multi-asset): a run erases the domains and completes the request in one
process, and hands nothing over between steps, so a run retried from its failure in a fresh process
or pod starts again from the database, never from a pickle on a disk that is gone. A dry run is a
job of its own (`gdpr_erasure_dry_run_job`) that reports in its run's metadata and materializes
nothing.

The sensor launches one run for many requests (`gdpr_erasure_batch_job`, up to
RETENTION_ERASURE_BATCH_SIZE): one op that erases and completes each request in turn exactly as the
multi-asset does, and records each in its own partition of the same assets and check (runtime
materializations and check evaluations), so that the UI and the history purge read a request's
evidence the same whichever job made it. A request that fails does not stop the others."""

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from datetime import timedelta

import dagster as dg
import sqlalchemy as sa

from retention_pipelines.dagster_wiring.common import (
    APP_DATABASE_POOL,
    RUN_TAGS,
    domain_step,
    operator_errors,
    refuse_dry_run,
)
from retention_pipelines.dagster_wiring.erasure_rounds import ErasureRunFacts, Launch, Round, launches
from retention_pipelines.dagster_wiring.resources import RetentionStores
from retention_pipelines.dagster_wiring.runbooks import runbook
from retention_pipelines.engine.gdpr.erasure_run import DomainErasure, ErasureIncomplete, SubjectErasure
from retention_pipelines.engine.gdpr.requests import (
    COMPLETED,
    OPEN,
    PARTIALLY_BLOCKED,
    ErasureRequest,
    ErasureRequests,
)
from retention_pipelines.logs import get_logger, log_context, only_warnings
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.redaction import without_personal_data
from retention_pipelines.schema import SchemaBehindError
from retention_pipelines.stores import ConfigurationError, DomainLocked, LockLost, PolicyMismatch, StoreUnavailable

# The erasure sensor targets the batch job, an op job that needs the stores: Dagster, binding them to
# the sensor's copy of the job, passes the sensor's own empty list of owners on, and its beta check of
# that parameter then warns on every load, a line on the stderr of every command. No owner is set here.
warnings.filterwarnings("ignore", message="Parameter `owners` of initializer `SensorDefinition.__init__`",
                        category=dg.BetaWarning)

ERASURE_PARTITIONS = dg.DynamicPartitionsDefinition(name="erasure_requests")
ERASURE_JOB = "gdpr_erasure_job"
ERASURE_DRY_RUN_JOB = "gdpr_erasure_dry_run_job"
ERASURE_BATCH_JOB = "gdpr_erasure_batch_job"  # what the sensor launches: many requests, each on its own
ERASURE_BATCH_OP = "gdpr_erasure_batch"
ERASURE_STEP = "gdpr_erasure"  # the run's one step, the multi-asset of every domain and the outcome
OUTCOME_KEY = dg.AssetKey(["gdpr", "erasure_outcome"])
SUBJECT_ERASED_CHECK = "subject_erased"
DRY_RUN_STATUS = "dry run: nothing changed"
MAX_ATTEMPTS = 3  # runs the sensor launches for one request; then its deadline breach calls a person
RECHECK_TAG = "retention/erasure_recheck"  # a partially blocked request's check again: when it was due
PARTITION_TAG = "dagster/partition"
BATCH_SIZE_TAG = "retention/erasure_requests"  # how many requests a batch run erases
# Errors that are no request's own (a store down, a domain's lock held past the wait, the schema or
# the policy file out of step): every request after it would meet it again, so the batch stops.
RUN_WIDE_ERRORS = (StoreUnavailable, PolicyMismatch, SchemaBehindError, DomainLocked, LockLost, ConfigurationError,
                   sa.exc.DBAPIError)
CLOCK_MARGIN = timedelta(hours=1)
log = get_logger("erasure")


class ErasureRoundConfig(dg.Config):
    request_id: int
    recheck: str = ""  # "" while the request is open; else when its check again was due (ISO 8601)
    attempt: int = 1  # the round's how-manieth run, for the operator reading the run's config


class ErasureBatchConfig(dg.Config):
    requests: list[ErasureRoundConfig]


def rounds_of(job_name: str, tags: dict, run_config: dict | None) -> frozenset[Round]:
    """The rounds an erasure run erases: its partition's (a single-request run), or those its
    config lists (a batch run); none for any other run."""
    if job_name == ERASURE_JOB:
        partition = tags.get(PARTITION_TAG, "")
        return frozenset({Round(int(partition), tags.get(RECHECK_TAG, ""))}) if partition.isdigit() else frozenset()
    if job_name == ERASURE_BATCH_JOB:
        listed = ((run_config or {}).get("ops", {}).get(ERASURE_BATCH_OP, {}).get("config", {}).get("requests", []))
        return frozenset(Round(int(item["request_id"]), item.get("recheck", "")) for item in listed)
    return frozenset()


def erasure_runs(instance: dg.DagsterInstance, created_after) -> list[ErasureRunFacts]:
    """The erasure runs created since the moment, single-request and batch: one query per job."""
    facts = []
    for job in (ERASURE_JOB, ERASURE_BATCH_JOB):
        for run in instance.get_runs(dg.RunsFilter(job_name=job, created_after=created_after)):
            rounds = rounds_of(run.job_name, run.tags, run.run_config)
            if rounds:
                facts.append(ErasureRunFacts(rounds, run.is_finished, run.is_success))
    return facts


def wanted_rounds(every: list[ErasureRequest], now) -> list[Round]:
    """The open requests' rounds, nearest deadline first (the list's order), then each partially
    blocked request's check again once due."""
    return ([Round(r.id) for r in every if r.status in OPEN]
            + [Round(r.id, r.details.recheck_after.isoformat()) for r in every if r.recheck_due(now)])


def batch_run_request(chosen: list[Launch]) -> dg.RunRequest:
    """One run for the chosen rounds. Its key names them and their attempts: a tick that chose the
    same again (before the run showed in the instance) launches nothing twice."""
    listed = [{"request_id": launch.round.request_id, "recheck": launch.round.recheck, "attempt": launch.attempt}
              for launch in chosen]
    digest = hashlib.sha256(json.dumps([[launch.round.request_id, launch.round.recheck, launch.attempt]
                                        for launch in chosen]).encode()).hexdigest()[:16]
    return dg.RunRequest(run_key=f"erasure-batch-{digest}", tags={BATCH_SIZE_TAG: str(len(chosen))},
                         run_config={"ops": {ERASURE_BATCH_OP: {"config": {"requests": listed}}}})


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
                part = _erase_domain(retention_stores, subject_erasure, policy, policy_version, request_id,
                                     context.run_id, retention_stores.settings().erasure_lock_wait_seconds)
            parts.append(part)
            if domain_keys[policy.name] in selected:
                yield dg.MaterializeResult(asset_key=domain_keys[policy.name],
                                           metadata=_domain_metadata(part, request_id, policy_version))
        if OUTCOME_KEY not in selected:
            return
        with domain_step(context, "gdpr"):
            try:
                # The outcome names the domains by name, whatever order they were erased in.
                outcome = subject_erasure.complete(request_id, sorted(parts, key=lambda p: p.domain), context.run_id)
            except ErasureIncomplete as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from None
        yield dg.MaterializeResult(asset_key=OUTCOME_KEY, metadata=_outcome_metadata(request_id, parts, outcome))
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

    batch_job = _batch_job(erasable, policies, policy_version, domain_keys)

    @dg.sensor(name="erasure_request_sensor", job=batch_job, minimum_interval_seconds=sensor_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING, description=(
                   "Adds a partition for each new request for erasure and launches one run of "
                   f"{ERASURE_BATCH_JOB} for the requests that are ready, up to RETENTION_ERASURE_BATCH_SIZE; "
                   f"relaunches a request whose run failed it, up to {MAX_ATTEMPTS} runs (then its deadline breach "
                   "calls a person). Launches the run again for a partially blocked request once the records it "
                   "waited for should have gone (the last kept record's deadline, or a held record erased): it "
                   "completes the request when nothing of the subject is left. Never a request with a run in "
                   "flight."))
    def erasure_request_sensor(context: dg.SensorEvaluationContext, retention_stores: RetentionStores):
        with operator_errors():
            batch_size = retention_stores.settings().erasure_batch_size
            requests = ErasureRequests(retention_stores.database)
            first = requests.list()
        # Every run of a round wanted now was created after the round began: the oldest open
        # request's receipt, or the earliest check again. The database's clock stamps those and
        # Dagster's processes stamp runs: CLOCK_MARGIN covers the two clocks' difference.
        begun = [r.received_at for r in first if r.status in OPEN] + [
            r.details.recheck_after for r in first if r.recheckable and r.details.recheck_after is not None]
        runs = erasure_runs(context.instance, min(begun) - CLOCK_MARGIN) if begun else []
        # The requests read again after the runs: a run that finished before that read has its
        # requests completed in it already, so a finished run naming a request still wanted failed it.
        with operator_errors():
            every = requests.list()
            now = retention_stores.database.now()
        known = set(context.instance.get_dynamic_partitions(ERASURE_PARTITIONS.name))
        new = [str(r.id) for r in every if r.status in OPEN and str(r.id) not in known]
        chosen = launches(wanted_rounds(every, now), runs, batch_size, MAX_ATTEMPTS)
        return dg.SensorResult(run_requests=[batch_run_request(chosen)] if chosen else [],
                               dynamic_partitions_requests=[ERASURE_PARTITIONS.build_add_request(new)] if new else [])

    return dg.Definitions(assets=[erasure], jobs=[job, batch_job, _dry_run_job(erasable, policies, policy_version)],
                          sensors=[erasure_request_sensor])


def _erase_domain(retention_stores: RetentionStores, subject_erasure: SubjectErasure, policy: DomainPolicy,
                  policy_version: str, request_id: int, run_id: str, lock_wait_seconds: float) -> DomainErasure:
    """One domain's part of a request's erasure, under the domain's lock (the engine decides the rest)."""
    lock = retention_stores.hold_domain_lock(policy.name, lock_wait_seconds)
    return subject_erasure.erase_domain(retention_stores.engine(policy, policy_version), request_id, run_id, False,
                                        lock)


def _still_wanted(request: ErasureRequest, round_: ErasureRoundConfig) -> bool:
    """Whether the round is still to do: a crashed batch retried as a whole skips what it did."""
    if not round_.recheck:
        return request.status in OPEN
    return request.recheckable and request.details.recheck_after is not None and (
        request.details.recheck_after.isoformat() == round_.recheck)


@dataclass
class _BatchTally:
    """What a batch run did with its requests, for its failure message and its metadata."""

    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # request id → why, its first line
    skipped: list[int] = field(default_factory=list)  # done already (a crashed batch retried as a whole)
    untried: list[int] = field(default_factory=list)  # after an error that is no request's own
    stopped: str | None = None  # that error

    def figures(self, requests: int) -> dict:
        return {"requests": requests, "requests_done": len(self.done), "requests_failed": len(self.failed),
                "requests_skipped_done_already": len(self.skipped), "requests_not_tried": len(self.untried),
                "failed_request_ids": dg.MetadataValue.json(sorted(self.failed)),
                "not_tried_request_ids": dg.MetadataValue.json(self.untried)}

    def failure(self, requests: int) -> str:
        shown = "; ".join(f"{request_id}: {why}" for request_id, why in list(self.failed.items())[:10])
        return (f"{len(self.failed)} of {requests} requests for erasure failed ({shown}"
                + ("; …" if len(self.failed) > 10 else "") + ")"
                + (f"; the batch stopped there, {len(self.untried)} requests not tried: {self.stopped}"
                   if self.stopped else "")
                + f"; {len(self.done)} done. The erasure sensor relaunches each, up to {MAX_ATTEMPTS} runs")


def _batch_job(erasable: list[DomainPolicy], policies: list[DomainPolicy], policy_version: str,
               domain_keys: dict[str, dg.AssetKey]) -> dg.JobDefinition:
    """Many requests in one run: each erased from every domain, completed, and recorded in its own
    partition of the erasure assets and of the `subject_erased` check, as its own run would."""

    def erase_request(context: dg.OpExecutionContext, retention_stores: RetentionStores,
                      subject_erasure: SubjectErasure, request_id: int, lock_wait: float):
        """One request, as the multi-asset erases it: every domain under its lock, then the outcome;
        its events in its partition. Raises what stops it."""
        partition = str(request_id)
        parts = []
        for policy in erasable:
            with log_context(run_id=context.run_id, domain=policy.name, partition=partition):
                part = _erase_domain(retention_stores, subject_erasure, policy, policy_version, request_id,
                                     context.run_id, lock_wait)
            parts.append(part)
            yield dg.AssetMaterialization(domain_keys[policy.name], partition=partition,
                                          metadata=_domain_metadata(part, request_id, policy_version))
        with log_context(run_id=context.run_id, domain="gdpr", partition=partition):
            outcome = subject_erasure.complete(request_id, sorted(parts, key=lambda p: p.domain), context.run_id)
        yield dg.AssetMaterialization(OUTCOME_KEY, partition=partition,
                                      metadata=_outcome_metadata(request_id, parts, outcome))
        yield dg.AssetCheckEvaluation(
            OUTCOME_KEY, SUBJECT_ERASED_CHECK, passed=outcome.status in (COMPLETED, PARTIALLY_BLOCKED),
            severity=dg.AssetCheckSeverity.ERROR, partition=partition, metadata={"status": outcome.status})
        context.log.info(f"erasure request {request_id}: {outcome.status}; {_totals(parts)['rows_erased']} rows "
                         "erased")

    @dg.op(name=ERASURE_BATCH_OP, pool=APP_DATABASE_POOL, out=dg.Out(dg.Nothing), description=(
        "Erases each request of the batch in turn, as gdpr_erasure_job does one (every domain in policy order, "
        "each under its lock, then the outcome), recording each request's domains, outcome and subject_erased "
        "check in its own partition. A request that fails is recorded as failed and the batch goes on; the run "
        "then fails, naming it, and the sensor relaunches it."))
    def erasure_batch(context: dg.OpExecutionContext, config: ErasureBatchConfig, retention_stores: RetentionStores):
        with log_context(run_id=context.run_id, domain="gdpr"), operator_errors():
            refuse_dry_run(context, ERASURE_DRY_RUN_JOB)
            subject_erasure = retention_stores.subject_erasure(policy_version, policies)
            lock_wait = retention_stores.settings().erasure_lock_wait_seconds
        # A batch stores some seven events a request (its partition's materializations and check, a
        # line), and Dagster's PostgreSQL storages open a connection for every write (a process
        # between runs holds none): some 4 ms each, a fifth of a request's time. The run keeps one
        # connection open for its life instead, as Dagster's webserver does (a no-op on SQLite); no
        # statement timeout, as without it.
        context.instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=2)
        tally = _BatchTally()
        # The engine's lines below WARNING (a few per domain of each request) are left out: each
        # request's figures are its partition's materializations, and one line a request says how it
        # ended; warnings and errors stay.
        with only_warnings():
            for index, round_ in enumerate(config.requests):
                request_id = round_.request_id
                try:
                    if not _still_wanted(subject_erasure.requests.get(request_id), round_):
                        tally.skipped.append(request_id)
                        context.log.info(f"erasure request {request_id}: done already, nothing to do")
                        continue
                    yield from erase_request(context, retention_stores, subject_erasure, request_id, lock_wait)
                    tally.done.append(request_id)
                except Exception as exc:  # noqa: BLE001 - one request's failure must not stop the others
                    text = str(exc).strip()
                    why = without_personal_data(text.splitlines()[0] if text else type(exc).__name__)
                    tally.failed[request_id] = why
                    log.warning(f"erasure request {request_id} failed: {why}",
                                extra={"step": "erase", "request_id": request_id})
                    # The request's own partition says it failed and why; its domains' materializations
                    # so far stand, as in its own run (what was erased is erased and audited).
                    yield dg.AssetCheckEvaluation(
                        OUTCOME_KEY, SUBJECT_ERASED_CHECK, passed=False, severity=dg.AssetCheckSeverity.ERROR,
                        partition=str(request_id), metadata={"status": "failed", "error": why})
                    if isinstance(exc, RUN_WIDE_ERRORS):
                        tally.stopped = why
                        tally.untried = [r.request_id for r in config.requests[index + 1:]]
                        break
                finally:
                    # Each request holds the domains' locks from its first domain to its completion,
                    # as its own run would; between two requests a domain's retention run may go.
                    retention_stores.release_domain_locks()
        figures = tally.figures(len(config.requests))
        context.log.info("erasure batch: " + ", ".join(f"{k}={v}" for k, v in figures.items()
                                                      if not k.endswith("_ids")))
        if tally.failed:
            # The run fails when any of its requests failed, once every other request is done and
            # recorded: a red run is what the runs list, run-failure alerting and an operator's
            # morning look all catch, where one failed check among hundreds of partitions in a green
            # run is easily missed. Not retried as a whole (allow_retries=False): the sensor
            # relaunches each failed request, counting its attempts; the requests done stay done.
            raise dg.Failure(description=tally.failure(len(config.requests)), metadata=figures,
                             allow_retries=False)
        yield dg.Output(None, metadata=figures)

    @dg.job(name=ERASURE_BATCH_JOB, tags=RUN_TAGS, executor_def=dg.in_process_executor, description=(
        f"Erase many requests' subjects in one run, each as {ERASURE_JOB} erases one, each recorded in its own "
        "partition; launched by erasure_request_sensor. A request that fails does not stop the others."))
    def erasure_batch_job():
        erasure_batch()

    return erasure_batch_job


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


def _domain_metadata(part: DomainErasure, request_id: int, policy_version: str) -> dict:
    return {"request_id": request_id, "dry_run": False, **_domain_figures(part),
            "held_record_ids": dg.MetadataValue.json(part.held), "policy_version": policy_version}


def _outcome_metadata(request_id: int, parts: list[DomainErasure], outcome) -> dict:
    return {
        "request_id": request_id, **_totals(parts), "dry_run": False,
        "status": outcome.status, "outcome": outcome.outcome,
        "archive_keys_destroyed": outcome.keys_destroyed, "archive_key_kept_for_a_hold": outcome.key_kept_for_hold,
        "records_kept_until_deadline": sum(len(k.record_ids) for k in outcome.kept_by_policy),
        "kept_until_deadline": dg.MetadataValue.json({k.domain: {
            "records": len(k.record_ids), "until": k.until.isoformat()} for k in outcome.kept_by_policy}),
    }


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
