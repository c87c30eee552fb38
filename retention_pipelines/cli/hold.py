"""`retention hold …`: legal holds placed, listed and released through the engine's hold book."""

from __future__ import annotations

import argparse

from retention_pipelines.cli.common import EXIT_FAILED, CliError, open_current_database
from retention_pipelines.cli.output import say, show_table
from retention_pipelines.engine.identity.records import RecordIdInvalid
from retention_pipelines.engine.oversight.holds import HoldRefused, LegalHolds, placed_holds
from retention_pipelines.policies import load_policies
from retention_pipelines.redaction import EMAIL


def _no_personal_data(value: str, what: str) -> str:
    if EMAIL.search(value):
        raise CliError(f"{what} looks like it holds an e-mail address: refer to the case, not the person")
    return value


def _hold_book(domain: str):
    """The policy of a known domain, its key column and the hold book, for `hold add | release`."""
    policies = load_policies()
    policy = policies.domains[domain]  # a known one (refuse_unknown_domains)
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
    say(f"legal hold {done.hold_id} {verb} {args.domain} record {done.record_id} by {by}", hold_id=done.hold_id,
        domain=args.domain, record_id=done.record_id, by=by)
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    _no_personal_data(args.record_id, "--record-id")
    reason = _no_personal_data(args.reason.strip(), "--reason")
    if not args.record_id.strip() or not reason:
        raise CliError("--record-id and --reason must not be empty")
    return _change_hold(args, "placed on", lambda holds, key, by: holds.place(
        args.domain, key, args.record_id, reason, by, force=args.force))


def cmd_release(args: argparse.Namespace) -> int:
    _no_personal_data(args.record_id, "--record-id")
    return _change_hold(args, "released on", lambda holds, key, by: holds.release(args.domain, key, args.record_id, by))


def cmd_list(args: argparse.Namespace) -> int:
    holds = placed_holds(open_current_database(), domain=args.domain, include_released=args.all)
    show_table([vars(hold) for hold in holds])
    return 0


def add_hold_commands(commands) -> None:
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
                     help="place the hold although the record does not exist now "
                          "(its archived copy, or a record to come)")
    add.set_defaults(handler=cmd_add)
    release.set_defaults(handler=cmd_release)
    listing = hold.add_parser("list", help="list active legal holds")
    listing.add_argument("--domain")
    listing.add_argument("--all", action="store_true", help="include released holds")
    listing.set_defaults(handler=cmd_list)
