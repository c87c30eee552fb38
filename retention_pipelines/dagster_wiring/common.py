"""What the domain wiring shares: run tags, partitions, and turning engine errors into Failures."""

import contextlib
from datetime import datetime

import dagster as dg
import sqlalchemy as sa

from retention_pipelines.engine import ArchiveVerificationFailed
from retention_pipelines.errors import first_line
from retention_pipelines.logs import log_context
from retention_pipelines.policies import DomainPolicy
from retention_pipelines.redaction import without_personal_data
from retention_pipelines.schema import SchemaBehindError
from retention_pipelines.stores import ConfigurationError, DomainLocked, LockLost, PolicyMismatch, StoreUnavailable

DOMAIN_TAG = "retention/domain"
# The erasure run's steps change rows of every erasable domain: its pool keeps one of them at a time
# (deploy/dagster.yaml, concurrency.pools.default_limit), whatever launched the run.
# Dagster gives a step one pool, and the erasure is one step over every domain, so it cannot also
# hold the domains' pools: between an erasure and a domain's retention run, the domain's lock
# decides who goes first (the one that takes it), and the other waits for it, up to
# RETENTION_ERASURE_LOCK_WAIT_SECONDS or RETENTION_LOCK_WAIT_SECONDS. The pool and the lock do not
# contradict each other: a step claims its pool slot before it asks for a lock, a retention run
# waiting for its domain's lock keeps the slot (the domain's next retention run stays behind it),
# and a retention run holds one domain's lock and waits for no other, so it never waits on an
# erasure that waits on it.
APP_DATABASE_POOL = "app_database"
# A dry run is its own job of ops (`<domain>_dry_run_job`, …): it reports what it would do in its run's
# metadata and materializes nothing, so the assets' history, partitions and checks show real runs
# only. The asset jobs refuse a run tagged as a dry run rather than run it for real.
DRY_RUN_TAG = "retention/dry_run"
# Every job's runs, whatever instance launches them (deploy/dagster.yaml, the Helm chart's, a laptop's):
# - a run the daemon retries (its process died, its node or container went away) re-executes all
#   its steps. Re-executing from the failure would read the dead run's step outputs from the disk it
#   ran on, which a deploy wipes and another pod never sees; every step is idempotent (a rerun
#   finishes the job without doing anything twice), so all steps again is safe;
# - only a crashed run is retried, not one whose step failed on its own (a refused lock, a broken
#   archive): the run_failures sensor counts that one and a human looks at it.
RUN_TAGS = {"dagster/retry_strategy": "ALL_STEPS", "dagster/retry_on_asset_or_op_failure": "false"}

# The engine's own errors carry operator-ready messages (what failed, naming the store, the
# domain or the field): they end the step as a Failure with that message, not a traceback.
OPERATOR_ERRORS = (StoreUnavailable, PolicyMismatch, SchemaBehindError, DomainLocked, LockLost,
                   ArchiveVerificationFailed, ConfigurationError)
URIS_IN_METADATA = 50



@contextlib.contextmanager
def operator_errors():
    try:
        yield
    except OPERATOR_ERRORS as exc:
        raise dg.Failure(description=without_personal_data(str(exc)),
                         allow_retries=not isinstance(exc, (PolicyMismatch, SchemaBehindError,
                                                            ConfigurationError))) from None
    except sa.exc.DBAPIError as exc:  # the database went away or refused mid-run: batches are whole or untouched
        raise dg.Failure(description=f"database error: {first_line(exc)}; every committed batch is audited, "
                                     "a rerun finishes the rest") from None


@contextlib.contextmanager
def domain_step(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, domain: str):
    """A step of a domain's run: its log lines carry the run, the domain and the partition, and
    the engine's errors end it as a Failure with their message."""
    partition = context.partition_key if context.has_partition_key else None
    if partition is None and getattr(context, "has_partition_key_range", False):
        partition = f"{context.partition_key_range.start}…{context.partition_key_range.end}"
    with log_context(run_id=context.run.run_id, domain=domain, partition=partition), operator_errors():
        yield


def is_dry_run(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> bool:
    return context.run.tags.get(DRY_RUN_TAG, "false").lower() == "true"


def refuse_dry_run(context: dg.AssetExecutionContext, dry_run_job: str) -> None:
    """An asset job asked for a dry run stops before it touches anything: its assets record only
    what was done, and a dry run has a job of its own."""
    if is_dry_run(context):
        raise dg.Failure(description=f"{context.job_name} changes rows and records it in the assets' history; "
                                     f"a dry run is the job {dry_run_job}, which reports without materializing",
                         allow_retries=False)


def domain_pool(domain: str) -> str:
    """The pool of every step that acts on the domain: the instance gives each pool one slot
    (concurrency.pools.default_limit in both dagster.yaml), so two runs of a domain never act at
    once whatever launched them (job, asset page, `dagster asset materialize`, backfill); the
    second waits for the slot instead of failing on the domain's lock. An erasure run is not in
    this pool (APP_DATABASE_POOL says why): the lock orders it against the domain's runs."""
    return f"{domain}_retention"


def dry_run_job_name(domain: str) -> str:
    return f"{domain}_dry_run_job"


def iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "—"


def domain_partitions(policy: DomainPolicy) -> dg.TimeWindowPartitionsDefinition:
    """Windows of deadline time. end_offset=1 makes the window in progress a partition too: its run
    takes everything due up to the database's now, so the latest partition always brings the
    domain into compliance."""
    start = policy.partitions.start
    if policy.partitions.cadence == "hourly":
        return dg.HourlyPartitionsDefinition(start_date=f"{start:%Y-%m-%d}-00:00", end_offset=1)
    return dg.DailyPartitionsDefinition(start_date=f"{start:%Y-%m-%d}", end_offset=1)


def job_name(domain: str) -> str:
    return f"{domain}_retention_job"
