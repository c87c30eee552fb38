"""What the subcommands share: refusals, exit codes, tables on the terminal, the stores."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.policies import load_policies
from retention_pipelines.redaction import without_personal_data
from retention_pipelines.stores import AppDatabase, RetentionSettings, load_settings

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2
MAX_ID = 2**63 - 1  # the retention tables' ids are BIGINTs: a larger one names nothing, and SQLite cannot bind it


class CliError(Exception):
    """A refusal with an operator-ready message; exit_code says whether input or outcome was bad."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.exit_code = exit_code


def number_from(low: int, high: int, whole: bool = True, unit: str = "") -> Callable[[str], int | float]:
    """An argparse type: a number from low to high (a whole one unless `whole` is False), else
    argparse's refusal, exit 2, naming the argument and the range (NaN and infinities are refused too)."""
    kind = "a whole number" if whole else "a number"

    def parse(text: str) -> int | float:
        try:
            value = int(text) if whole else float(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {kind} from {low} to {high}{unit}, not {text!r}")
        return value

    return parse


def refuse_unknown_domains(args: argparse.Namespace) -> None:
    """Every domain a command names (`--domain`, `run`'s DOMAIN…) is one of the policy file's, or
    the command is refused (exit 2) before it does anything: a typo never reads as a domain that
    has nothing in it ("every chain is intact"). The audit commands also know the domains the
    audit log's chains name (`domains_also_known`): a domain taken out of the policy file keeps its
    evidence."""
    named = []
    for given in (getattr(args, "domain", None), getattr(args, "domains", None)):
        named += [given] if isinstance(given, str) else list(given or ())
    if not named:
        return
    policies = load_policies()
    unknown = [name for name in named if name not in policies.domains]
    if not unknown:
        return
    also_known = getattr(args, "domains_also_known", None)
    where, names = also_known() if also_known else ("", [])
    unknown = [name for name in unknown if name not in names]
    if unknown:
        raise CliError(f"unknown domain {unknown[0]!r}; the policy file has: {', '.join(policies.domains)}"
                       + (f"; {where}: {', '.join(names)}" if names else ""))


def open_database(settings: RetentionSettings | None = None) -> AppDatabase:
    return AppDatabase((settings or load_settings()).resolved_database_url())


def open_current_database(settings: RetentionSettings | None = None) -> AppDatabase:
    """The app database, refused with a clear message when it cannot be reached or its retention
    migrations are behind this code."""
    database = open_database(settings)
    try:
        schema.ensure_current(database.engine)
    except (sa.exc.OperationalError, schema.SchemaBehindError) as exc:
        database.dispose()
        if isinstance(exc, sa.exc.OperationalError):
            raise database.connect_error(exc) from None
        raise
    return database


def dagster_instance():
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        raise CliError("DAGSTER_HOME is not set: point it at the folder holding dagster.yaml "
                       "(the repository root for the demo), so that runs appear in the UI")
    return dg.DagsterInstance.get()


def failure_message(event) -> str:
    """A failed step's message for the terminal: an unexpected error's is a driver's own words."""
    data = event.step_failure_data
    if data.user_failure_data and data.user_failure_data.description:
        return without_personal_data(data.user_failure_data.description)
    error = data.error.cause or data.error if data.error else None
    return without_personal_data(error.message.strip().splitlines()[-1]) if error else "step failed"
