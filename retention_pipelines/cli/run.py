"""`retention run` and `retention demo`: domains' retention jobs, run now through Dagster so that
they appear in the UI."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import urllib.parse
import uuid
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
from retention_pipelines.cli.progress import run_progress
from retention_pipelines.cli.slots import release_slots_of_dead_runs, this_process_tags
from retention_pipelines.errors import first_line
from retention_pipelines.policies import PolicyFile, load_policies
from retention_pipelines.redaction import display_url, without_personal_data
from retention_pipelines.stores import AppDatabase, load_settings
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
    if args.submit:
        if args.wait is not None:
            raise CliError("--wait is for a run in this process: a submitted run waits in the instance's queue")
        rows = [submit_domain_job(domain, args.dry_run, args.submit) for domain in domains]
        show_table(rows)
        return 0
    database = open_current_database()  # refused before any run starts, not in each of them
    try:
        rows = [run_domain_job(domain, args.dry_run, args.wait, database) for domain in domains]
    finally:
        database.dispose()
    show_table([{k: v for k, v in row.items() if k != "message"} for row in rows])
    for row in rows:
        if row["message"]:
            print(f"{row['domain']}: {without_personal_data(row['message'])}", file=sys.stderr)
    return 0 if all(row["status"] == "ok" for row in rows) else EXIT_FAILED


def submit_domain_job(domain: str, dry_run: bool, webserver: str) -> dict:
    """Submit the domain's job for its windows through the webserver, into the instance's
    run queue: its limits (one run per domain, pools) apply, and the daemon launches it where the
    deployment runs its runs."""
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    from retention_pipelines.dagster_wiring.common import dry_run_job_name, job_name
    from retention_pipelines.dagster_wiring.windows import window_tags

    url = urllib.parse.urlsplit(webserver)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise CliError(f"--submit: a Dagster webserver's URL is http[s]://host[:port], not {display_url(webserver)}")
    name = dry_run_job_name(domain) if dry_run else job_name(domain)
    with dagster_instance() as instance:
        windows = _windows(instance, domain, dry_run)
    client = DagsterGraphQLClient(url.hostname, port_number=url.port, use_https=url.scheme == "https",
                                  path_prefix=url.path.rstrip("/"), timeout=60)
    try:
        run_id = client.submit_job_execution(name, tags=window_tags(windows))
    except (DagsterGraphQLClientError, OSError) as exc:
        # The client's own message is its query; what went wrong is the transport's error, or the
        # webserver's answer (its body).
        why = exc.__cause__ or getattr(exc, "body", None) or exc
        raise CliError(f"the Dagster webserver at {display_url(webserver)} did not take the run of {domain}: "
                       f"{first_line(why) if isinstance(why, BaseException) else why}", EXIT_FAILED) from None
    base = display_url(webserver).rstrip("/")
    return {"domain": domain, "partition": _shown(windows), "dry_run": dry_run, "status": "queued", "run_id": run_id,
            "url": f"{base}/runs/{run_id}"}


def run_domain_job(domain: str, dry_run: bool, wait_seconds: float | None, database: AppDatabase) -> dict:
    """Execute the domain's job (or its dry-run job) for its windows on the DAGSTER_HOME
    instance, with its progress on the terminal (a dry run acts on nothing: no bar)."""
    import dagster as dg

    from retention_pipelines.dagster_wiring.common import domain_pool, dry_run_job_name, job_name
    from retention_pipelines.dagster_wiring.windows import window_tags
    from retention_pipelines.definitions import defs

    job = defs.resolve_job_def(dry_run_job_name(domain) if dry_run else job_name(domain))
    run_id = str(uuid.uuid4())
    found_key = dg.AssetKey([domain, "expired_records"])

    def rows_found(instance: dg.DagsterInstance) -> int | None:
        [latest] = instance.fetch_materializations(found_key, limit=1).records or [None]
        if latest is None or latest.run_id != run_id:
            return None  # not found yet
        return latest.asset_materialization.metadata["rows_found"].value

    with dagster_instance() as instance, _environment("RETENTION_LOCK_WAIT_SECONDS",
                                                      None if wait_seconds is None else str(wait_seconds)), \
            (contextlib.nullcontext() if dry_run else run_progress(database, run_id, domain,
                                                                   lambda: rows_found(instance))):
        windows = _windows(instance, domain, dry_run)
        release_slots_of_dead_runs(instance, domain_pool(domain))
        result = job.execute_in_process(instance=instance, raise_on_error=False, run_id=run_id,
                                        tags={**window_tags(windows), **this_process_tags()},
                                        # The terminal gets the summary table; step logs are in the UI.
                                        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    metadata = {}
    for event in result.get_asset_materialization_events():
        metadata.update({k: v.value for k, v in event.materialization.metadata.items()})
    for event in result.all_events:  # a dry run's figures are its step's output metadata
        if dry_run and event.event_type_value == "STEP_OUTPUT":
            metadata.update({k: v.value for k, v in event.step_output_data.metadata.items()})
    # Only an ERROR check fails the run; a WARN one informs.
    failed_checks = [e.check_name for e in result.get_asset_check_evaluations()
                     if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
    failures = [failure_message(e) for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    ok = result.success and not failed_checks
    acted = metadata.get("rows_redacted", metadata.get("rows_deleted", 0))
    return {
        "domain": domain, "partition": _shown(windows), "status": "ok" if ok else "FAILED",
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
    _forget_demo_history()
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
    return cmd_run(argparse.Namespace(domains=[], domain=None, dry_run=False, wait=None, submit=None))


def _windows(instance, domain: str, dry_run: bool):
    """The windows a run of the domain covers (dagster_wiring/windows.py); a dry run records
    nothing, so it reports on the latest window alone."""
    import dagster as dg

    from retention_pipelines.dagster_wiring.windows import windows_to_cover

    windows = windows_to_cover(instance, load_policies().domains[domain])
    return dg.PartitionKeyRange(windows.end, windows.end) if dry_run else windows


def _shown(windows) -> str:
    return windows.start if windows.start == windows.end else f"{windows.start}…{windows.end}"


def _forget_demo_history() -> None:
    """The last demo's runs, materializations and check results describe a database that is about
    to go: they go with it, so that the UI, the audit log and the report of the new demo agree. Only
    an instance that keeps its storage in local SQLite files (the demo's dagster.yaml) is wiped; one
    with any other storage is refused, never touched."""
    # Dagster exports no public name for its storage classes: the SQLite run storage is the one
    # that says the history is a local file of this DAGSTER_HOME.
    from dagster._core.storage.runs.sqlite import SqliteRunStorage

    with dagster_instance() as instance:
        if not isinstance(instance.run_storage, SqliteRunStorage):
            raise CliError("`retention demo` replaces its own Dagster history: DAGSTER_HOME must be a demo instance "
                           f"(local SQLite storage), not one storing runs in {type(instance.run_storage).__name__}")
        instance.wipe()
        # The wipe frees the pools' slots but keeps their limits, which would then offer no slot at
        # all (a run would wait for ever): dropped too, each pool starts again from the default limit.
        for pool in instance.event_log_storage.get_concurrency_keys():
            instance.event_log_storage.delete_concurrency_limit(pool)


def add_run_commands(commands) -> None:
    run = commands.add_parser("run", help="run domains' retention jobs now (through Dagster)")
    run.add_argument("domains", nargs="*", metavar="DOMAIN", help="domains to run (default: every enabled one)")
    run.add_argument("--domain", action="append", metavar="DOMAIN", help="a domain to run, as DOMAIN (repeatable)")
    run.add_argument("--dry-run", action="store_true", help="walk and count, change nothing anywhere")
    run.add_argument("--submit", nargs="?", const="http://localhost:3000", metavar="WEBSERVER",
                     help="submit the runs to the instance's run queue through its webserver (default "
                          "http://localhost:3000) instead of running them in this process; prints each run's URL")
    run.add_argument("--wait", type=number_from(0, MAX_LOCK_WAIT_SECONDS, whole=False, unit=" seconds"),
                     metavar="SECONDS", help="wait this long for a busy domain's lock")
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser("demo", help="build the SQLite demo database and run every enabled domain")
    demo.add_argument("--rows", type=number_from(1, DEMO_MAX_ROWS), default=500,
                      help="rows per app table (default 500)")
    demo.set_defaults(handler=cmd_demo)
