"""`retention`: the operators' command line. Runs go through Dagster, so they appear in the UI."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from collections.abc import Sequence

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.policies import PolicyError, PolicyFile, load_policies
from retention_pipelines.policies.model import format_duration
from retention_pipelines.redaction import EMAIL, without_personal_data
from retention_pipelines.cli.common import (
    EXIT_BAD_INPUT, EXIT_FAILED, CliError, dagster_instance, failure_message, number_from, open_current_database,
    open_database, print_table,
)
from retention_pipelines.cli.archive import add_archive_commands
from retention_pipelines.cli.audit import add_audit_commands
from retention_pipelines.cli.alerts import add_alerts_commands
from retention_pipelines.cli.erasure import add_erasure_commands
from retention_pipelines.cli.restore import add_restore_command
from retention_pipelines.cli.queue import add_queue_commands
from retention_pipelines.cli.report import add_report_commands
from retention_pipelines.errors import first_line
from retention_pipelines.logs import configure_logging
from retention_pipelines.stores import ConfigurationError, PolicyMismatch, StoreUnavailable, load_settings
from retention_pipelines.stores.settings import MAX_LOCK_WAIT_SECONDS

DEMO_MAX_ROWS = 100_000  # a laptop's demo; larger tables are the benchmarks' (make bench)

def _domains(policies: PolicyFile, names: Sequence[str]) -> list[str]:
    if not names:
        return [name for name, policy in policies.domains.items() if policy.enabled]
    for name in names:
        if name not in policies.domains:
            raise CliError(f"unknown domain {name!r}; the policy file has: {', '.join(policies.domains)}")
        if not policies.domains[name].enabled:
            raise CliError(f"domain {name} is disabled in the policy file (enabled: false)")
    return list(dict.fromkeys(names))


# retention run ----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    policies = load_policies()
    domains = _domains(policies, args.domains)
    open_current_database().dispose()  # refuse before any run starts, not in each of them
    rows = [run_domain_job(domain, args.dry_run, args.wait) for domain in domains]
    print_table([{k: v for k, v in row.items() if k != "message"} for row in rows])
    for row in rows:
        if row["message"]:
            print(f"{row['domain']}: {without_personal_data(row['message'])}", file=sys.stderr)
    return 0 if all(row["status"] == "ok" for row in rows) else EXIT_FAILED


def run_domain_job(domain: str, dry_run: bool, wait_seconds: float | None = None) -> dict:
    """Execute the domain's job for its latest partition on the DAGSTER_HOME instance."""
    import dagster as dg

    from retention_pipelines.defs.common import DRY_RUN_TAG, job_name
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


# retention demo ---------------------------------------------------------------------------------
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
    print(f"demo database {demo_file}: " + ", ".join(f"{n} {t}" for t, n in seeded.items()))
    return cmd_run(argparse.Namespace(domains=[], dry_run=False, wait=None))


# retention policies validate -------------------------------------------------------------------
def cmd_policies_validate(args: argparse.Namespace) -> int:
    policies = load_policies(args.file)
    checked = _validate_against_database(policies) if args.database else None
    print(f"{args.file or 'policy file'}: valid, version {policies.policy_version}, {len(policies.domains)} domains"
          + (f"; every enabled domain's table fits it in {checked}" if checked else ""))
    print_table([{
        "domain": p.name, "enabled": p.enabled, "table": p.table, "clock": p.clock_column,
        "retain_for": format_duration(p.retain_for), "action": p.action_name, "archive": p.archive.enabled,
        "partitions": p.partitions.cadence, "batch_size": p.batch_size,
    } for p in policies.domains.values()])
    return 0


def _validate_against_database(policies: PolicyFile) -> str:
    """Each enabled domain against the live database (RETENTION_DATABASE_URL): what the engine and
    `retention health` require of its table (AppDatabase.policy_problems); every problem, one line
    each, refused with exit code 2."""
    database = open_database()
    try:
        problems = [problem for policy in policies.domains.values() if policy.enabled
                    for problem in database.policy_problems(policy)]
    except sa.exc.OperationalError as exc:
        raise database.connect_error(exc) from None
    finally:
        database.dispose()
    if problems:
        raise PolicyMismatch("\n".join(problems))
    return database.display_url


# retention hold … -------------------------------------------------------------------------------
def _no_personal_data(value: str, what: str) -> str:
    if EMAIL.search(value):
        raise CliError(f"{what} looks like it holds an e-mail address: refer to the case, not the person")
    return value


def _hold_book(domain: str):
    """The policy of a known domain, its key column and the hold book, for `hold add | release`."""
    from retention_pipelines.engine.oversight.holds import LegalHolds

    policies = load_policies()
    if domain not in policies.domains:
        raise CliError(f"unknown domain {domain!r}; the policy file has: {', '.join(policies.domains)}")
    policy = policies.domains[domain]
    database = open_current_database()
    key = database.app_table(policy).c[policy.primary_key]
    return LegalHolds(database, policies.policy_version), key


def _handle(value: str, what: str) -> str:
    value = _no_personal_data(value.strip(), what)
    if not value:
        raise CliError(f"{what} must not be empty: say who you are (a handle, no e-mail address)")
    return value


def _change_hold(args: argparse.Namespace, verb: str, change) -> int:
    """`hold add | release`: the change made through the hold book, its refusals as exit codes."""
    from retention_pipelines.engine.oversight.holds import HoldRefused
    from retention_pipelines.engine.identity.records import RecordIdInvalid

    by = _handle(args.by, "--by")
    holds, key = _hold_book(args.domain)
    try:
        done = change(holds, key, by)
    except RecordIdInvalid as exc:
        raise CliError(f"--record-id: {exc}") from None
    except HoldRefused as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    finally:
        holds.database.dispose()
    print(f"legal hold {done.hold_id} {verb} {args.domain} record {done.record_id} by {by}")
    return 0


def cmd_hold_add(args: argparse.Namespace) -> int:
    _no_personal_data(args.record_id, "--record-id")
    reason = _no_personal_data(args.reason.strip(), "--reason")
    if not args.record_id.strip() or not reason:
        raise CliError("--record-id and --reason must not be empty")
    return _change_hold(args, "placed on", lambda holds, key, by: holds.place(
        args.domain, key, args.record_id, reason, by, force=args.force))


def cmd_hold_release(args: argparse.Namespace) -> int:
    _no_personal_data(args.record_id, "--record-id")
    return _change_hold(args, "released on", lambda holds, key, by: holds.release(args.domain, key, args.record_id, by))


def cmd_hold_list(args: argparse.Namespace) -> int:
    database = open_current_database()
    holds = schema.legal_holds
    query = sa.select(holds).order_by(holds.c.placed_at, holds.c.id)
    if args.domain:
        query = query.where(holds.c.domain == args.domain)
    if not args.all:
        query = query.where(holds.c.released_at.is_(None))
    with database.engine.connect() as connection:
        print_table([dict(row._mapping) for row in connection.execute(query)])
    return 0


# retention health -------------------------------------------------------------------------------
def cmd_health(args: argparse.Namespace) -> int:
    from retention_pipelines.defs.health import run_health
    from retention_pipelines.defs.resources import RetentionStores

    load_settings()  # a deployment missing a variable is refused here, each missing one named
    policies = load_policies()
    stores = RetentionStores()
    try:
        probes = run_health(stores, [p for p in policies.domains.values() if p.enabled])
    finally:
        stores.close()
    print_table([{"dependency": p.name, "ok": p.ok, "detail": without_personal_data(p.message)} for p in probes])
    return 0 if all(p.ok for p in probes) else EXIT_FAILED


# retention db upgrade ---------------------------------------------------------------------------
def cmd_db_upgrade(args: argparse.Namespace) -> int:
    database = open_database()
    try:
        before, after = schema.upgrade(database.engine)
    except sa.exc.OperationalError as exc:
        raise database.connect_error(exc) from None
    print(f"{database.display_url}: retention tables at migration {after}"
          + ("" if before == after else f" (was {before or 'none'})"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retention", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run domains' retention jobs now (through Dagster)")
    run.add_argument("domains", nargs="*", metavar="DOMAIN", help="domains to run (default: every enabled one)")
    run.add_argument("--dry-run", action="store_true", help="walk and count, change nothing anywhere")
    run.add_argument("--wait", type=number_from(0, MAX_LOCK_WAIT_SECONDS, whole=False, unit=" seconds"),
                     metavar="SECONDS", help="wait this long for a busy domain's lock")
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser("demo", help="build the SQLite demo database and run every enabled domain")
    demo.add_argument("--rows", type=number_from(1, DEMO_MAX_ROWS), default=500,
                      help="rows per app table (default 500)")
    demo.set_defaults(handler=cmd_demo)

    policies = commands.add_parser("policies", help="the policy file").add_subparsers(
        dest="policies_command", required=True, metavar="COMMAND")
    validate = policies.add_parser("validate", help="check a policy file and list its domains")
    validate.add_argument("file", nargs="?", help="policy file (default: RETENTION_POLICIES_FILE or the shipped one)")
    validate.add_argument("--database", action="store_true",
                          help="also check each enabled domain's table, columns, types, nulls and clock index "
                               "in the database of RETENTION_DATABASE_URL")
    validate.set_defaults(handler=cmd_policies_validate)

    hold = commands.add_parser("hold", help="legal holds").add_subparsers(dest="hold_command", required=True,
                                                                            metavar="COMMAND")
    add = hold.add_parser("add", help="place a legal hold on a record")
    release = hold.add_parser("release", help="release a record's legal hold")
    for sub in (add, release):
        sub.add_argument("--domain", required=True)
        sub.add_argument("--record-id", required=True, help="the record's key, in any spelling its type accepts")
        sub.add_argument("--by", required=True, help="who places or releases the hold (a handle, no e-mail address)")
    add.add_argument("--reason", required=True, help="the case or claim; no personal data")
    add.add_argument("--force", action="store_true",
                     help="place the hold although the record does not exist now (its archived copy, or a record to come)")
    add.set_defaults(handler=cmd_hold_add)
    release.set_defaults(handler=cmd_hold_release)
    listing = hold.add_parser("list", help="list active legal holds")
    listing.add_argument("--domain")
    listing.add_argument("--all", action="store_true", help="include released holds")
    listing.set_defaults(handler=cmd_hold_list)

    commands.add_parser("health", help="probe every dependency of the retention runs").set_defaults(
        handler=cmd_health)

    add_queue_commands(commands)
    add_audit_commands(commands)
    add_erasure_commands(commands)
    add_restore_command(commands)
    add_alerts_commands(commands)
    add_report_commands(commands)
    add_archive_commands(commands)

    db = commands.add_parser("db", help="the retention tables").add_subparsers(dest="db_command", required=True,
                                                                                metavar="COMMAND")
    db.add_parser("upgrade", help="apply the retention tables' migrations").set_defaults(handler=cmd_db_upgrade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # The terminal shows tables; log lines (JSON, on stderr) only from warnings up, unless
        # RETENTION_LOG_LEVEL asks for more.
        configure_logging(default_level="WARNING")
        return args.handler(args)
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
