"""`retention audit …`: the evidence the audit log holds, and the hash chains that make it tamper-evident."""

from __future__ import annotations

import argparse

import sqlalchemy as sa

from retention_pipelines.cli.common import EXIT_FAILED, open_current_database
from retention_pipelines.cli.output import say, show_table
from retention_pipelines.engine.audit.entries import Action
from retention_pipelines.engine.audit.evidence import index_records, record_evidence
from retention_pipelines.engine.audit.verify import verify
from retention_pipelines.engine.identity.records import RecordIdInvalid, canonical_record_ids
from retention_pipelines.policies import load_policies
from retention_pipelines.policies.model import format_duration
from retention_pipelines.schema import audit_chain_heads
from retention_pipelines.stores import PolicyMismatch


def _why(entry: dict, policies) -> str:
    """The rule the entry was made under, when the current policy file is the version it names."""
    policy = policies.domains.get(entry["domain"])
    if entry["actor"]:
        return f"by {entry['actor']}"
    if policy is None or entry["policy_version"] != policies.policy_version:
        return f"policy version {entry['policy_version']}"
    if entry["action"] == Action.ARCHIVE_EXPIRED:  # an archive object, kept its archive.keep_for
        return f"written + {format_duration(policy.archive.keep_for)} ({policies.policy_version})"
    return f"{policy.clock_column} + {format_duration(policy.retain_for)} ({policies.policy_version})"


def _spellings_of(database, policies, given: str, domain: str | None) -> list[str]:
    """The ids the audit log may name the record by: its canonical form in the domain's key type
    (in every domain's, without --domain), and the text as given, which names an archive object."""
    names = {given}
    for policy in policies.domains.values():
        if domain is not None and policy.name != domain:
            continue
        try:
            names.update(canonical_record_ids(database, database.app_table(policy).c[policy.primary_key], [given]))
        except (RecordIdInvalid, PolicyMismatch):
            continue  # not a key of this domain (or a table this database lacks): nothing to look up there
    return sorted(names)


def cmd_show(args: argparse.Namespace) -> int:
    policies = load_policies()
    database = open_current_database()
    try:
        entries = []
        for record_id in _spellings_of(database, policies, args.record_id, args.domain):
            entries += record_evidence(database, record_id, args.domain)
        entries.sort(key=lambda entry: entry["occurred_at"])
    finally:
        database.dispose()
    if not entries:
        where = f" in {args.domain}" if args.domain else ""
        say(f"no audit entry for record {args.record_id}{where}", entries=[])
        return EXIT_FAILED
    show_table([{
        "when": entry["occurred_at"].isoformat(timespec="seconds"), "domain": entry["domain"],
        "action": entry["action"], "why": _why(entry, policies),
        "deadline": entry["deadline"].isoformat(timespec="seconds") if entry["deadline"] else "",
        "run_id": entry["run_id"], "archived_at": entry["archive_uri"] or "",
    } for entry in entries])
    return 0


def _archive_store():
    from retention_pipelines.stores import archive_store_from_url, load_settings

    settings = load_settings()
    return archive_store_from_url(settings.resolved_archive_url(), settings.archive_storage_class)


def cmd_verify(args: argparse.Namespace) -> int:
    """Check the chains as they are."""
    database = open_current_database()
    try:
        verification = verify(database, None if args.no_anchors else _archive_store(),
                              [args.domain] if args.domain else None)
    finally:
        database.dispose()
    say(f"{verification.rows_checked:,} audit rows checked in {verification.seconds:.1f} s, "
        f"{verification.anchors_checked} anchored positions, {verification.outside_chain:,} rows outside the chain",
        rows_checked=verification.rows_checked, seconds=round(verification.seconds, 3),
        anchors_checked=verification.anchors_checked, rows_outside_chain=verification.outside_chain)
    show_table([{
        "domain": chain.domain, "positions": chain.positions, "rows_checked": chain.rows_checked,
        "status": "intact" if chain.intact else "BROKEN",
        "problems": chain.problems,
    } for chain in verification.domains])
    for link in verification.broken:
        say(f"first broken link: {link.message}")
    say("every chain is intact" if verification.intact else "a chain is broken", intact=verification.intact)
    if not verification.intact:
        return EXIT_FAILED
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    database = open_current_database()
    try:
        indexed = index_records(database)
    finally:
        database.dispose()
    say(f"{indexed:,} audit entries added to the evidence index", rows_indexed=indexed)
    return 0


def chained_domains() -> tuple[str, list[str]]:
    """The domains the audit log's chains name, a domain taken out of the policy file among them."""
    database = open_current_database()
    try:
        with database.connect() as connection:
            return "the audit log's chains", sorted(connection.execute(sa.select(audit_chain_heads.c.domain)).scalars())
    finally:
        database.dispose()


def add_audit_commands(commands) -> None:
    audit = commands.add_parser("audit", help="the evidence in the audit log").add_subparsers(
        dest="audit_command", required=True, metavar="COMMAND")
    # Not named verify: that is the engine's function this module calls.
    show_command = audit.add_parser("show", help="every audit entry of one record: when, why, by which run, "
                                                 "archived where")
    show_command.add_argument("--record-id", required=True)
    show_command.add_argument("--domain")
    show_command.set_defaults(handler=cmd_show)
    verify_command = audit.add_parser("verify", help="check the audit log's hash chains and their anchors; exit 1 "
                                                     "when broken")
    verify_command.add_argument("--domain", help="only this domain's chain")
    verify_command.add_argument("--no-anchors", action="store_true", help="skip the anchors in the archive store")
    verify_command.set_defaults(handler=cmd_verify)
    index_command = audit.add_parser("index", help="add the entries written since the last time to the evidence "
                                                   "index (`audit show`; the job does it every 15 min)")
    index_command.set_defaults(handler=cmd_index)
    for command in (show_command, verify_command):
        command.set_defaults(domains_also_known=chained_domains)
