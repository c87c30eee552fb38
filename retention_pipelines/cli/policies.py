"""`retention policies validate`: a policy file checked, and optionally each enabled domain's table
against it in the live database; a warning for each field of the record of processing a domain
leaves out. `retention policies schedule`: policy_schedule.py."""

from __future__ import annotations

import argparse

import sqlalchemy as sa

from retention_pipelines.cli.common import open_database
from retention_pipelines.cli.output import say, show_table, warn
from retention_pipelines.cli.policy_schedule import add_schedule_command
from retention_pipelines.engine.identity.subjects import subject_index, subject_index_problem
from retention_pipelines.policies import DomainPolicy, PolicyFile, load_policies
from retention_pipelines.policies.model import format_duration
from retention_pipelines.policies.processing import missing_fields
from retention_pipelines.stores import AppDatabase, PolicyMismatch


def cmd_validate(args: argparse.Namespace) -> int:
    policies = load_policies(args.file)
    checked = _validate_against_database(policies) if args.database else None
    say(f"{args.file or 'policy file'}: valid, version {policies.policy_version}, {len(policies.domains)} domains"
        + (f"; every enabled domain's table fits it in {checked}" if checked else ""), valid=True,
        policy_version=policies.policy_version, database=str(checked) if checked else None)
    show_table([{
        "domain": p.name, "enabled": p.enabled, "table": p.table, "clock": p.clock_column,
        "retain_for": format_duration(p.retain_for), "action": p.action_name, "archive": p.archive.enabled,
        "partitions": p.partitions.cadence, "batch_size": p.batch_size,
    } for p in policies.domains.values()])
    source = next(iter(policies.domains.values())).source  # the file read, as every message names it
    for gap in missing_fields(policies):
        warn(f"{source}: {gap}")
    return 0


def _validate_against_database(policies: PolicyFile) -> str:
    """Each enabled domain against the live database (RETENTION_DATABASE_URL): what the engine and
    `retention health` require of its table (AppDatabase.policy_problems), and an index that serves
    its subject lookup where it names subjects; every problem, one line each, refused with exit code 2."""
    database = open_database()
    try:
        problems = [problem for policy in policies.domains.values() if policy.enabled
                    for problem in _problems(database, policy)]
    except sa.exc.OperationalError as exc:
        raise database.connect_error(exc) from None
    finally:
        database.dispose()
    if problems:
        raise PolicyMismatch("\n".join(problems))
    return database.display_url


def _problems(database: AppDatabase, policy: DomainPolicy) -> list[str]:
    problems = database.policy_problems(policy)
    if problems or not policy.subject_column:
        return problems
    found = subject_index(database, policy, database.app_table(policy))
    return [subject_index_problem(found, policy)] if found.missing else []


def add_policies_commands(commands) -> None:
    policies = commands.add_parser("policies", help="the policy file").add_subparsers(
        dest="policies_command", required=True, metavar="COMMAND")
    validate = policies.add_parser("validate", help="check a policy file and list its domains")
    validate.add_argument("file", nargs="?", help="policy file (default: RETENTION_POLICIES_FILE or the shipped one)")
    validate.add_argument("--database", action="store_true",
                          help="also check each enabled domain's table, columns, types, nulls and clock index "
                               "in the database of RETENTION_DATABASE_URL")
    validate.set_defaults(handler=cmd_validate)
    add_schedule_command(policies)
