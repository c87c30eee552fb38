"""`retention erasure …`: requests for erasure, received and followed to their deadline. The
address given is never printed back."""

from __future__ import annotations

import argparse
from datetime import timedelta

from retention_pipelines.cli.common import EXIT_FAILED, CliError, open_current_database, print_table
from retention_pipelines.engine.erasure import ErasureRefused, ErasureRequests
from retention_pipelines.stores import load_settings


def _requests() -> ErasureRequests:
    settings = load_settings()
    return ErasureRequests(open_current_database(settings), settings.resolved_erasure_hash_key(),
                           timedelta(days=settings.erasure_due_days))


def cmd_request(args: argparse.Namespace) -> int:
    try:
        request = _requests().request(args.email)
    except ErasureRefused as exc:
        raise CliError(str(exc)) from None
    print(f"erasure request {request.id} received; due {request.due_at:%Y-%m-%d %H:%M} UTC")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    requests = _requests()
    try:
        found = [requests.get(args.id)] if args.id is not None else requests.list()
    except ErasureRefused as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    now = requests.database.now()
    print_table([{
        "id": r.id, "status": r.status, "received": f"{r.received_at:%Y-%m-%d %H:%M}",
        "due": f"{r.due_at:%Y-%m-%d %H:%M}", "days_left": r.days_left(now) if r.completed_at is None else "",
        "completed": f"{r.completed_at:%Y-%m-%d %H:%M}" if r.completed_at else "",
        "extended": r.extension_reason or "", "outcome": r.outcome or "",
    } for r in found])
    return 0


def cmd_extend(args: argparse.Namespace) -> int:
    try:
        request = _requests().extend(args.id, timedelta(days=args.days), args.reason)
    except ErasureRefused as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    print(f"erasure request {request.id} now due {request.due_at:%Y-%m-%d %H:%M} UTC")
    return 0


def add_erasure_commands(commands) -> None:
    erasure = commands.add_parser("erasure", help="requests for erasure (GDPR Art. 17)").add_subparsers(
        dest="erasure_command", required=True, metavar="COMMAND")
    request = erasure.add_parser("request", help="receive a request for erasure")
    request.add_argument("--email", required=True, help="the subject's address (never printed back)")
    request.set_defaults(handler=cmd_request)
    status = erasure.add_parser("status", help="requests, their deadlines and days left")
    status.add_argument("id", type=int, nargs="?")
    status.set_defaults(handler=cmd_status)
    extend = erasure.add_parser("extend", help="extend a request's deadline, with the reason (Art. 12(3))")
    extend.add_argument("id", type=int)
    extend.add_argument("--days", type=int, required=True)
    extend.add_argument("--reason", required=True, help="why; no personal data")
    extend.set_defaults(handler=cmd_extend)
