"""`retention audit …`: the evidence the audit log holds."""

from __future__ import annotations

import argparse

from retention_pipelines.cli.common import EXIT_FAILED, open_current_database, print_table
from retention_pipelines.engine.evidence import record_evidence
from retention_pipelines.policies import load_policies
from retention_pipelines.policies.model import format_duration


def _why(entry: dict, policies) -> str:
    """The rule the entry was made under, when the current policy file is the version it names."""
    policy = policies.domains.get(entry["domain"])
    if entry["actor"]:
        return f"by {entry['actor']}"
    if policy is None or entry["policy_version"] != policies.policy_version:
        return f"policy version {entry['policy_version']}"
    if entry["action"] == "archive_expired":  # an archive object, kept its archive.keep_for
        return f"written + {format_duration(policy.archive.keep_for)} ({policies.policy_version})"
    return f"{policy.clock_column} + {format_duration(policy.retain_for)} ({policies.policy_version})"


def cmd_show(args: argparse.Namespace) -> int:
    policies = load_policies()
    database = open_current_database()
    try:
        entries = record_evidence(database, args.record_id, args.domain)
    finally:
        database.dispose()
    if not entries:
        where = f" in {args.domain}" if args.domain else ""
        print(f"no audit entry for record {args.record_id}{where}")
        return EXIT_FAILED
    print_table([{
        "when": entry["occurred_at"].isoformat(timespec="seconds"), "domain": entry["domain"],
        "action": entry["action"], "why": _why(entry, policies),
        "deadline": entry["deadline"].isoformat(timespec="seconds") if entry["deadline"] else "",
        "run_id": entry["run_id"], "archived_at": entry["archive_uri"] or "",
    } for entry in entries])
    return 0


def add_audit_commands(commands) -> None:
    audit = commands.add_parser("audit", help="the evidence in the audit log").add_subparsers(
        dest="audit_command", required=True, metavar="COMMAND")
    show = audit.add_parser("show", help="every audit entry of one record: when, why, by which run, archived where")
    show.add_argument("--record-id", required=True)
    show.add_argument("--domain")
    show.set_defaults(handler=cmd_show)
