"""`retention erasure …`: requests for erasure, received and followed to their deadline. The
address given is never printed back."""

from __future__ import annotations

import argparse
import contextlib
import sys
import uuid
from datetime import timedelta

from retention_pipelines.cli.common import (
    EXIT_FAILED,
    MAX_ID,
    CliError,
    dagster_instance,
    failure_message,
    number_from,
    open_current_database,
)
from retention_pipelines.cli.output import say, show_table
from retention_pipelines.cli.progress import run_progress
from retention_pipelines.engine.gdpr.requests import (
    MAX_EXTENSION_DAYS,
    PARTIALLY_BLOCKED,
    ErasureRefused,
    ErasureRequests,
)
from retention_pipelines.stores import load_settings


def _requests() -> ErasureRequests:
    settings = load_settings()
    return ErasureRequests(open_current_database(settings), settings.resolved_erasure_hash_key(),
                           timedelta(days=settings.erasure_due_days))


def cmd_request(args: argparse.Namespace) -> int:
    address = args.email
    if address == "-":  # from standard input: out of the shell's history and the process list
        lines = sys.stdin.read().splitlines()
        address = lines[0] if len(lines) == 1 else ""
        if not address.strip():
            raise CliError("--email -: standard input must hold the address alone, on one line")
    try:
        request = _requests().request(address)
    except ErasureRefused as exc:
        raise CliError(str(exc)) from None
    say(f"erasure request {request.id} received; due {request.due_at:%Y-%m-%d %H:%M} UTC", id=request.id,
        due_at=request.due_at)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    requests = _requests()
    try:
        found = [requests.get(args.id)] if args.id is not None else requests.list()
    except ErasureRefused as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    now = requests.database.now()
    show_table([{
        "id": r.id, "status": r.status, "received": f"{r.received_at:%Y-%m-%d %H:%M}",
        "due": f"{r.due_at:%Y-%m-%d %H:%M}", "days_left": r.days_left(now) if r.completed_at is None else "",
        "completed": f"{r.completed_at:%Y-%m-%d %H:%M}" if r.completed_at else "",
        "extended": r.extension_reason or "",
        # Partially blocked by a domain that keeps records until their deadline: until when, and where.
        "kept_until_deadline": "" if not r.kept_by_policy or r.status != PARTIALLY_BLOCKED else ", ".join(
            f"{k.domain} {k.until:%Y-%m-%d %H:%M}" for k in r.kept_by_policy),
        "outcome": r.outcome or "",
    } for r in found])
    return 0


def cmd_extend(args: argparse.Namespace) -> int:
    try:
        request = _requests().extend(args.id, timedelta(days=args.days), args.reason)
    except ErasureRefused as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    say(f"erasure request {request.id} now due {request.due_at:%Y-%m-%d %H:%M} UTC", id=request.id,
        due_at=request.due_at)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the erasure job for one request now, on the DAGSTER_HOME instance (what the sensor does);
    with --dry-run, its dry-run job, which reports in its run's metadata and changes nothing."""
    from retention_pipelines.dagster_wiring.erasure_run import (
        ERASURE_DRY_RUN_JOB,
        ERASURE_JOB,
        ERASURE_PARTITIONS,
        OUTCOME_KEY,
        domain_of,
    )
    from retention_pipelines.definitions import defs

    requests = _requests()
    try:
        request = requests.get(args.id)
    except ErasureRefused as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    job = defs.resolve_job_def(ERASURE_DRY_RUN_JOB if args.dry_run else ERASURE_JOB)
    run_id = str(uuid.uuid4())
    with dagster_instance() as instance, \
            (contextlib.nullcontext() if args.dry_run else run_progress(requests.database, run_id,
                                                                        f"erasure request {request.id}")):
        instance.add_dynamic_partitions(ERASURE_PARTITIONS.name, [str(request.id)])
        result = job.execute_in_process(instance=instance, partition_key=str(request.id), raise_on_error=False,
                                        run_id=run_id,
                                        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    domains, outcome = {}, {}
    for event in result.all_events:  # a dry run's figures are its step's output metadata
        if args.dry_run and event.event_type_value == "STEP_OUTPUT":
            for key, value in event.step_output_data.metadata.items():
                if domain_of(key):
                    domains[domain_of(key)] = value.value
                else:
                    outcome[key] = value.value
    for event in result.get_asset_materialization_events():
        metadata = {k: v.value for k, v in event.materialization.metadata.items()}
        if event.asset_key == OUTCOME_KEY:
            outcome = metadata
        else:
            domains[event.asset_key.path[-1]] = metadata
    show_table([{"domain": domain, "erased": metadata["rows_erased"], "archived": metadata["rows_archived"],
                 "kept_under_hold": metadata["records_kept_under_legal_hold"],
                 "kept_until_deadline": metadata["records_kept_until_deadline"],
                 "in_manual_queue": metadata["rows_waiting_in_manual_queue"]}
                for domain, metadata in sorted(domains.items())])  # by name, whatever order they were erased in
    failures = [failure_message(e) for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    if failures or not result.success:
        print("; ".join(failures) or "the erasure run failed", file=sys.stderr)
        return EXIT_FAILED
    verb = "would be erased (dry run: nothing changed)" if args.dry_run else outcome.get("status", "")
    say(f"erasure request {request.id}: {verb}" + (f"; {outcome['outcome']}" if outcome.get("outcome") else ""),
        id=request.id, status=outcome.get("status"), outcome=outcome.get("outcome"), dry_run=args.dry_run)
    return 0


def add_erasure_commands(commands) -> None:
    erasure = commands.add_parser("erasure", help="requests for erasure (GDPR Art. 17)").add_subparsers(
        dest="erasure_command", required=True, metavar="COMMAND")
    request = erasure.add_parser("request", help="receive a request for erasure")
    request.add_argument("--email", required=True,
                         help="the subject's address (never printed back); - reads it from standard input, "
                              "which keeps it out of the shell's history and the process list")
    request.set_defaults(handler=cmd_request)
    status = erasure.add_parser("status", help="requests, their deadlines and days left")
    status.add_argument("id", type=number_from(1, MAX_ID), nargs="?")
    status.set_defaults(handler=cmd_status)
    extend = erasure.add_parser("extend", help="extend a request's deadline, with the reason (Art. 12(3))")
    extend.add_argument("id", type=number_from(1, MAX_ID))
    extend.add_argument("--days", type=number_from(1, MAX_EXTENSION_DAYS, unit=" days"), required=True,
                        help=f"1 to {MAX_EXTENSION_DAYS} (GDPR Art. 12(3): two further months at most)")
    extend.add_argument("--reason", required=True, help="why; no personal data")
    extend.set_defaults(handler=cmd_extend)
    run = erasure.add_parser("run", help="erase a request's subject from every domain now (what the sensor launches)")
    run.add_argument("id", type=number_from(1, MAX_ID))
    run.add_argument("--dry-run", action="store_true", help="count what would be erased; change nothing")
    run.set_defaults(handler=cmd_run)
