"""`retention restore`: rows a run deleted in error, re-inserted from their archive, or redacted in
error, un-redacted with their PDFs written back (the rollback plan), under the domain's lock, each
with a `restored` audit entry."""

from __future__ import annotations

import argparse
import contextlib
import uuid

from retention_pipelines.cli.common import EXIT_FAILED, CliError, open_current_database
from retention_pipelines.cli.output import say, show_table
from retention_pipelines.cli.progress import RESTORED, run_progress
from retention_pipelines.engine.archive.keys import ArchiveKeys
from retention_pipelines.engine.identity.records import RecordIdInvalid, canonical_record_ids
from retention_pipelines.engine.retention.restore import Restorer, RestoreRefused
from retention_pipelines.engine.retention.restore_redacted import RedactionRestorer
from retention_pipelines.engine.retention.run import RetentionEngine
from retention_pipelines.policies import load_policies
from retention_pipelines.redaction import EMAIL
from retention_pipelines.stores import (
    DomainLocked,
    StoreUnavailable,
    archive_store_from_url,
    blob_store_from_url,
    domain_locks,
    load_settings,
)


def cmd_restore(args: argparse.Namespace) -> int:
    policies = load_policies()
    policy = policies.domains[args.domain]  # a known one (refuse_unknown_domains)
    if EMAIL.search(args.by):
        raise CliError("--by: give a handle, not an e-mail address")
    settings = load_settings()
    database = open_current_database(settings)
    lock = None
    try:
        try:  # the ids as the audit log names them, whatever spelling of the key was given
            record_ids = canonical_record_ids(database, database.app_table(policy).c[policy.primary_key],
                                              args.record_id)
        except RecordIdInvalid as exc:
            raise CliError(f"--record-id: {exc}") from None
        keys = (ArchiveKeys(database, settings.resolved_archive_master_key(), settings.resolved_erasure_hash_key())
                if policy.archive.enabled else None)
        engine = RetentionEngine(policy, policies.policy_version, database,
                                 archive_store_from_url(settings.resolved_archive_url(),
                                                        settings.archive_storage_class),
                                 blob_store_from_url(settings.resolved_blob_url()) if policy.blob_key_column else None,
                                 keys=keys)
        if not args.dry_run:
            lock = domain_locks(settings.redis_url, settings.lock_dir(), settings.lock_ttl_seconds).acquire(
                policy.name, settings.lock_wait_seconds)
        restore_run_id = f"restore-{uuid.uuid4()}"
        with (contextlib.nullcontext() if args.dry_run else run_progress(
                database, restore_run_id, f"{policy.name} restore", actions=RESTORED)):
            restorer = RedactionRestorer(engine) if policy.redact else Restorer(engine)
            report = restorer.restore(args.run, record_ids or None, args.by, restore_run_id, args.dry_run, lock)
    except RestoreRefused as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    except (DomainLocked, StoreUnavailable) as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    finally:
        if lock is not None:
            lock.release()
        database.dispose()
    rows = [{"record_id": rid, "outcome": "would be restored" if args.dry_run else "restored"}
            for rid in report.restored]
    rows += [{"record_id": rid, "outcome": f"refused: {why}"} for rid, why in sorted(report.refused.items())]
    show_table(rows)
    verb = "would restore" if args.dry_run else "restored"
    say(f"{policy.name}: run {report.run_id} {report.verb} {report.deleted_in_run} rows; "
        f"{verb} {len(report.restored)}, refused {len(report.refused)}", domain=policy.name, run_id=report.run_id,
        dry_run=args.dry_run, deleted_in_run=report.deleted_in_run, restored=len(report.restored),
        refused=len(report.refused), still_due=report.still_due)
    if report.still_due:
        again = "redacts" if policy.redact else "deletes"
        say(f"note: {report.still_due} restored rows are past their deadline: the next run {again} them again unless "
            "the policy is changed or a legal hold is placed (`retention hold add`)")
    return 0


def add_restore_command(commands) -> None:
    restore = commands.add_parser("restore", help="put back rows a run deleted or redacted in error, from their "
                                                  "archive (a redacted row's PDF too)")
    restore.add_argument("--domain", required=True)
    restore.add_argument("--run", required=True,
                         help="the run id that deleted or redacted them (in the audit log): whole, or its beginning "
                              "as printed")
    restore.add_argument("--record-id", action="append", default=[], help="only these records (repeatable)")
    restore.add_argument("--by", required=True, help="who restores: a handle, written in each audit entry")
    restore.add_argument("--dry-run", action="store_true", help="say what would be restored; change nothing")
    restore.set_defaults(handler=cmd_restore)
