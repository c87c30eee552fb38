"""`retention report --month YYYY-MM [--out DIR]`: the monthly compliance report, written locally
(the Dagster asset compliance/report writes the same files to the archive store)."""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

from retention_pipelines.cli.common import EXIT_FAILED, CliError, open_current_database
from retention_pipelines.cli.output import say, show_table
from retention_pipelines.cli.progress import stage_progress
from retention_pipelines.engine.audit.verify import verify
from retention_pipelines.engine.report.figures import ALL_DOMAINS, ReportRefused, build_report, month_bounds
from retention_pipelines.policies import load_policies
from retention_pipelines.stores import archive_store_from_url, load_settings


def cmd_report(args: argparse.Namespace) -> int:
    month = args.month.strip()
    try:
        month_bounds(month)
    except ReportRefused as exc:
        raise CliError(f"--month {exc}") from None
    out = Path(args.out) if args.out else Path(f"compliance-report-{month}")
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file: name a folder")
    settings = load_settings()
    policies = load_policies()
    database = open_current_database(settings)
    stages = [*([] if args.no_chain else ["verifying the audit chain"]), "reading the month", "drawing", "writing"]
    with stage_progress(f"report {month}", stages) as stage:
        try:
            if not args.no_chain:
                stage("verifying the audit chain")
            chain = None if args.no_chain else verify(
                database, archive_store_from_url(settings.resolved_archive_url())).as_status()
            stage("reading the month")
            report = build_report(database, policies, month, chain_status=chain,
                                  erasure_due=timedelta(days=settings.erasure_due_days))
        except ReportRefused as exc:
            raise CliError(f"--month {exc}") from None
        finally:
            database.dispose()

        from retention_pipelines.engine.report.render import html_name, render_report  # matplotlib: only here

        stage("drawing")
        files = render_report(report)
        stage("writing")
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                (out / name).write_bytes(data)
        except OSError as exc:
            raise CliError(f"--out {out}: cannot write the report: {exc.strerror or exc}", EXIT_FAILED) from None
    totals = [t for t in report.totals() if t.domain == ALL_DOMAINS][0]
    erasure = report.erasure_summary()
    show_table([{"domain": t.domain, **t.actions, "queue_items": t.queue_items, "sla_breaches": t.sla_breaches,
                  "legal_holds_active": t.legal_holds_active} for t in report.totals()])
    say(f"erasure requests: {erasure['requests']} (deadline met {erasure['met']}, missed {erasure['missed']}, "
          f"open {erasure['open']}, partially blocked {erasure['partially_blocked']}); "
          f"audit chain: {report.chain.label}; {totals.actions['removed']} records removed or redacted"
          + (f" (month in progress: as of {report.as_of:%Y-%m-%d %H:%M} UTC)" if report.in_progress else ""),
        erasure_requests=erasure, audit_chain=report.chain.label, records_removed=totals.actions["removed"],
        in_progress=report.in_progress)
    say(f"compliance report for {month} written to {out.resolve()}: {html_name(month)} and "
        f"{len(files) - 1} CSV files", month=month, folder=str(out.resolve()), files=sorted(str(f) for f in files))
    return 0


def add_report_commands(commands) -> None:
    report = commands.add_parser("report", help="the monthly compliance report (HTML and CSVs), written locally")
    report.add_argument("--month", required=True, help="the month, YYYY-MM (UTC), e.g. 2026-11")
    report.add_argument("--out", metavar="DIR", help="folder to write to (default ./compliance-report-YYYY-MM/)")
    report.add_argument("--no-chain", action="store_true",
                        help="skip verifying the audit log's hash chains (the report then says 'not verified')")
    report.set_defaults(handler=cmd_report)
