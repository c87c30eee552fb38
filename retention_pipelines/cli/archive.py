"""`retention archive expire`: a domain's archive expiry now, or its dry run, through Dagster (it
appears in the UI)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import uuid

from retention_pipelines.cli.common import (
    EXIT_FAILED,
    CliError,
    dagster_instance,
    failure_message,
    open_current_database,
)
from retention_pipelines.cli.output import show_table
from retention_pipelines.cli.progress import ARCHIVE_EXPIRED, run_progress
from retention_pipelines.policies import load_policies
from retention_pipelines.redaction import without_personal_data


def cmd_expire(args: argparse.Namespace) -> int:
    import dagster as dg

    from retention_pipelines.dagster_wiring.archive_retention import (
        archive_expiry_dry_run_job_name,
        archive_expiry_job_name,
    )
    from retention_pipelines.definitions import defs

    policies = load_policies()
    policy = policies.domains[args.domain]  # a known one (refuse_unknown_domains)
    if not policy.enabled or not policy.archive.enabled:
        raise CliError(f"domain {args.domain} has no archive to expire (enabled, archive.enabled in the policy file)")
    database = open_current_database()  # refused before the run starts
    job = defs.resolve_job_def((archive_expiry_dry_run_job_name if args.dry_run else archive_expiry_job_name)(
        args.domain))
    run_id = str(uuid.uuid4())
    try:
        with dagster_instance() as instance, \
                (contextlib.nullcontext() if args.dry_run else run_progress(
                    database, run_id, f"{args.domain} archive expiry", actions=ARCHIVE_EXPIRED, unit=" objects")):
            result = job.execute_in_process(instance=instance, raise_on_error=False, run_id=run_id,
                                            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    finally:
        database.dispose()
    metadata = {}
    for event in result.get_asset_materialization_events():
        metadata.update({k: v.value for k, v in event.materialization.metadata.items()})
    for event in result.all_events:  # a dry run's figures are its step's output metadata
        if args.dry_run and event.event_type_value == "STEP_OUTPUT":
            metadata.update({k: v.value for k, v in event.step_output_data.metadata.items()})
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    failures = [failure_message(e) for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    ok = result.success and all(c.passed or c.severity == dg.AssetCheckSeverity.WARN for c in checks.values())
    show_table([{
        "domain": args.domain, "status": "ok" if ok else "FAILED", "dry_run": args.dry_run,
        "keep_for": metadata.get("keep_for", "—"), "past_keep_for": metadata.get("objects_past_keep_for", 0),
        "deleted": metadata.get("objects_would_delete" if args.dry_run else "objects_deleted", 0),
        "locked": metadata.get("objects_skipped_object_lock", 0), "refused": metadata.get("objects_refused", 0),
        "audit_entries": metadata.get("audit_entries", 0), "run_id": result.run_id[:8],
    }])
    overdue = {name: getattr(c.metadata.get("objects_past_keep_for_and_grace"), "value", "some")
               for name, c in checks.items()}
    warned = [f"check {name} {'failed' if c.severity == dg.AssetCheckSeverity.ERROR else 'warns'}: "
              f"{overdue[name]} objects kept past keep_for and a day" for name, c in checks.items() if not c.passed]
    for message in failures + warned:
        print(f"{args.domain}: {without_personal_data(message)}", file=sys.stderr)
    return 0 if ok else EXIT_FAILED


def add_archive_commands(commands) -> None:
    archive = commands.add_parser("archive", help="the archive store").add_subparsers(
        dest="archive_command", required=True, metavar="COMMAND")
    expire = archive.add_parser("expire", help="delete a domain's archive objects past archive.keep_for, audited "
                                               "(the daily archive expiry job, now)")
    expire.add_argument("--domain", required=True)
    expire.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    expire.set_defaults(handler=cmd_expire)
