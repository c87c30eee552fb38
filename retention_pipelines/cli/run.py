"""`retention run` and `retention demo`: domains' retention jobs, run now through Dagster so that
they appear in the UI."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from collections.abc import Sequence

from retention_pipelines import schema
from retention_pipelines.cli.common import (
    EXIT_FAILED,
    CliError,
    dagster_instance,
    failure_message,
    number_from,
    open_current_database,
    open_database,
)
from retention_pipelines.cli.output import say, show_table
from retention_pipelines.policies import PolicyFile, load_policies
from retention_pipelines.redaction import without_personal_data
from retention_pipelines.stores import load_settings
from retention_pipelines.stores.settings import MAX_LOCK_WAIT_SECONDS

DEMO_MAX_ROWS = 100_000  # a laptop's demo; larger tables are the benchmarks' (make bench)


def _domains(policies: PolicyFile, names: Sequence[str]) -> list[str]:
    if not names:
        return [name for name, policy in policies.domains.items() if policy.enabled]
    for name in names:  # each one known (refuse_unknown_domains)
        if not policies.domains[name].enabled:
            raise CliError(f"domain {name} is disabled in the policy file (enabled: false)")
    return list(dict.fromkeys(names))


def cmd_run(args: argparse.Namespace) -> int:
    policies = load_policies()
    domains = _domains(policies, [*args.domains, *(args.domain or ())])
    open_current_database().dispose()  # refuse before any run starts, not in each of them
    rows = [run_domain_job(domain, args.dry_run, args.wait) for domain in domains]
    show_table([{k: v for k, v in row.items() if k != "message"} for row in rows])
    for row in rows:
        if row["message"]:
            print(f"{row['domain']}: {without_personal_data(row['message'])}", file=sys.stderr)
    return 0 if all(row["status"] == "ok" for row in rows) else EXIT_FAILED


def run_domain_job(domain: str, dry_run: bool, wait_seconds: float | None = None) -> dict:
    """Execute the domain's job for its latest partition on the DAGSTER_HOME instance."""
    import dagster as dg

    from retention_pipelines.dagster_wiring.common import DRY_RUN_TAG, job_name
    from retention_pipelines.definitions import defs

    job = defs.resolve_job_def(job_name(domain))
    partition = job.partitions_def.get_last_partition_key()
    with dagster_instance() as instance, _environment("RETENTION_LOCK_WAIT_SECONDS",
                                                      None if wait_seconds is None else str(wait_seconds)):
        result = job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=False,
                                        tags={DRY_RUN_TAG: "true" if dry_run else "false"},
                                        # The terminal gets the summary table; step logs are in the UI.
                                        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    metadata = {}
    for event in result.get_asset_materialization_events():
        metadata.update({k: v.value for k, v in event.materialization.metadata.items()})
    # A WARN check (rows left by a dry run, by design) informs; only an ERROR check fails the run.
    failed_checks = [e.check_name for e in result.get_asset_check_evaluations()
                     if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    failures = [failure_message(e) for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    ok = result.success and not failed_checks
    acted = metadata.get("rows_redacted", metadata.get("rows_deleted", 0))
    return {
        "domain": domain, "partition": partition, "status": "ok" if ok else "FAILED",
        "dry_run": dry_run, "cutoff": metadata.get("cutoff", "—"), "found": metadata.get("rows_found", 0),
        "archived": metadata.get("rows_archived", 0), "acted_on": acted,
        "held": metadata.get("rows_skipped_legal_hold", 0), "failed": metadata.get("rows_failed", 0),
        "audit_rows": metadata.get("audit_rows", 0),
        "run_id": result.run_id[:8],
        "message": "; ".join(failures + [f"check {name} failed" for name in failed_checks]),
    }


@contextlib.contextmanager
def _environment(name: str, value: str | None):
    """A variable set for the runs of this command, the way production configures them (the runs'
    resources read the environment); restored afterwards. None leaves it as it is."""
    saved = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def cmd_demo(args: argparse.Namespace) -> int:
    # The command is the explicit ask for the demo: it and its runs fall back to RETENTION_HOME.
    with _environment("RETENTION_ENV", "demo"):
        return _build_and_run_demo(args.rows)


def _build_and_run_demo(rows: int) -> int:
    from retention_pipelines import demo

    settings = load_settings()
    if settings.database_url:
        raise CliError("`retention demo` builds its own SQLite database: unset RETENTION_DATABASE_URL")
    demo_file = (settings.home / "demo.db").resolve()
    if settings.blob_url or settings.archive_url:
        raise CliError("`retention demo` keeps its own files: unset RETENTION_BLOB_URL and RETENTION_ARCHIVE_URL")
    demo_file.unlink(missing_ok=True)
    for folder in ("archive", "blobs"):
        shutil.rmtree(settings.home / folder, ignore_errors=True)
    demo_file.parent.mkdir(parents=True, exist_ok=True)
    database = open_database(settings)
    demo.create_app_tables(database)
    schema.upgrade(database.engine)
    seeded = demo.seed(database, rows_per_table=rows, blob_folder=(settings.home / "blobs").resolve())
    database.dispose()
    say(f"demo database {demo_file}: " + ", ".join(f"{n} {t}" for t, n in seeded.items()), demo_database=str(demo_file),
        rows_seeded=seeded)
    return cmd_run(argparse.Namespace(domains=[], domain=None, dry_run=False, wait=None))


def add_run_commands(commands) -> None:
    run = commands.add_parser("run", help="run domains' retention jobs now (through Dagster)")
    run.add_argument("domains", nargs="*", metavar="DOMAIN", help="domains to run (default: every enabled one)")
    run.add_argument("--domain", action="append", metavar="DOMAIN", help="a domain to run, as DOMAIN (repeatable)")
    run.add_argument("--dry-run", action="store_true", help="walk and count, change nothing anywhere")
    run.add_argument("--wait", type=number_from(0, MAX_LOCK_WAIT_SECONDS, whole=False, unit=" seconds"),
                     metavar="SECONDS", help="wait this long for a busy domain's lock")
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser("demo", help="build the SQLite demo database and run every enabled domain")
    demo.add_argument("--rows", type=number_from(1, DEMO_MAX_ROWS), default=500,
                      help="rows per app table (default 500)")
    demo.set_defaults(handler=cmd_demo)
