"""`retention policies schedule [FILE] [--format markdown|csv]`: the record of processing (GDPR Art.
30(1)) from the policy file: each domain's data, its time limits in the database and in the archive,
purpose, lawful basis, categories of data and recipients. The cells are the compliance report's own
(its processing.csv), so that what is filed and what is reported agree."""

from __future__ import annotations

import argparse

from tabulate import tabulate

from retention_pipelines.cli.common import CliError
from retention_pipelines.cli.output import OUTPUT, show_table
from retention_pipelines.policies import load_policies
from retention_pipelines.policies.processing import record_of_processing

FORMATS = ("markdown", "csv")


def cmd_schedule(args: argparse.Namespace) -> int:
    if args.json and args.format:
        raise CliError(f"--format {args.format} and --json are two ways of printing the schedule: give one")
    policies = load_policies(args.file)
    entries = record_of_processing(policies)
    if OUTPUT.as_json:
        show_table([entry.fields() for entry in entries])
        OUTPUT.document["policy_version"] = policies.policy_version
        return 0

    from retention_pipelines.engine.report.render import processing_table, to_csv  # jinja2: only here

    table = processing_table(entries)
    if args.format == "csv":
        print(to_csv(table).decode(), end="")
        return 0
    print(f"## Record of processing (GDPR Art. 30(1)), policy version {policies.policy_version}\n")
    print(markdown(table.columns, table.rows))
    return 0


def markdown(columns: tuple[str, ...], rows: tuple[tuple[str, ...], ...]) -> str:
    """A Markdown (GitHub) table; a `|` inside a cell is escaped so that it stays in its cell."""
    escaped = [[value.replace("|", "\\|") for value in row] for row in rows]
    return tabulate(escaped, headers=list(columns), tablefmt="github", disable_numparse=True)


def add_schedule_command(policies) -> None:
    schedule = policies.add_parser(
        "schedule", help="print the record of processing (GDPR Art. 30(1)): each domain's time limits, purpose, "
                         "lawful basis, data categories and recipients")
    schedule.add_argument("file", nargs="?", help="policy file (default: RETENTION_POLICIES_FILE or the shipped one)")
    schedule.add_argument("--format", choices=FORMATS,
                          help="markdown (default): a table to paste into the record; csv: one row per domain")
    schedule.set_defaults(handler=cmd_schedule)
