"""`retention`: the operators' command line. Runs go through Dagster, so they appear in the UI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import version

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.cli.alerts import add_alerts_commands
from retention_pipelines.cli.archive import add_archive_commands
from retention_pipelines.cli.audit import add_audit_commands
from retention_pipelines.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, CliError, refuse_unknown_domains
from retention_pipelines.cli.db import add_db_commands
from retention_pipelines.cli.erasure import add_erasure_commands
from retention_pipelines.cli.health import add_health_command
from retention_pipelines.cli.hold import add_hold_commands
from retention_pipelines.cli.output import OUTPUT
from retention_pipelines.cli.policies import add_policies_commands
from retention_pipelines.cli.queue import add_queue_commands
from retention_pipelines.cli.report import add_report_commands
from retention_pipelines.cli.restore import add_restore_command
from retention_pipelines.cli.run import add_run_commands
from retention_pipelines.errors import first_line
from retention_pipelines.logs import configure_logging
from retention_pipelines.policies import PolicyError
from retention_pipelines.redaction import without_personal_data
from retention_pipelines.stores import ConfigurationError, PolicyMismatch, StoreUnavailable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retention", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('retention_pipelines')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # In the order `retention --help` lists them.
    for add_commands in (add_run_commands, add_policies_commands, add_hold_commands, add_health_command,
                         add_queue_commands, add_audit_commands, add_erasure_commands, add_restore_command,
                         add_alerts_commands, add_report_commands, add_archive_commands, add_db_commands):
        add_commands(commands)
    for command in _commands(parser):
        command.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    return parser


def _commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parsers of the commands themselves (`hold list`, `health`), below their groups: argparse
    offers no public walk of its subparsers, and one `--json` added here is spelled alike everywhere."""
    groups = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not groups:
        yield parser
    for group in groups:
        for command in group.choices.values():
            yield from _commands(command)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # The terminal shows tables; log lines (JSON, on stderr) only from warnings up, unless
        # RETENTION_LOG_LEVEL asks for more.
        configure_logging(default_level="WARNING")
        refuse_unknown_domains(args)
        OUTPUT.start(as_json=args.json)
        exit_code = args.handler(args)
        OUTPUT.flush()
        return exit_code
    except CliError as exc:
        return _refuse(exc, exc.exit_code)
    except (PolicyError, PolicyMismatch, schema.SchemaBehindError, ConfigurationError) as exc:
        return _refuse(exc, EXIT_BAD_INPUT)
    except StoreUnavailable as exc:
        return _refuse(exc, EXIT_FAILED)
    except sa.exc.DBAPIError as exc:
        return _refuse(f"database error: {first_line(exc)}", EXIT_FAILED)


def _refuse(message: object, exit_code: int) -> int:
    print(f"retention: error: {without_personal_data(str(message))}", file=sys.stderr)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
