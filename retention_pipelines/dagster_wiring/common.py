"""What the domain wiring shares: run tags, partitions, and turning engine errors into Failures."""

import contextlib
import warnings
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
# The steps that delete, redact or archive rows of the app database: the instance limits how many run
# at once across all runs (deploy/dagster.yaml, concurrency.pools), so that backfills and catch-up
# runs never crowd the app out of its own database.
APP_DATABASE_POOL = "app_database"
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

# Checks carry the domain's partitions so that each evaluates one window's outputs; Dagster 1.13
# marks that as preview. Its warning would be printed on every load of the code location.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                        category=dg.PreviewWarning)


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
    with log_context(run_id=context.run.run_id, domain=domain, partition=partition), operator_errors():
        yield


def is_dry_run(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> bool:
    return context.run.tags.get(DRY_RUN_TAG, "false").lower() == "true"


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
