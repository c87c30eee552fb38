"""`retention queue …`: the operator's side of the manual-resolution queue."""

from __future__ import annotations

import argparse
import getpass

from retention_pipelines.cli.common import (
    EXIT_FAILED,
    MAX_ID,
    CliError,
    dagster_instance,
    failure_message,
    number_from,
    open_current_database,
)
from retention_pipelines.cli.output import say, show_record, show_table
from retention_pipelines.engine.oversight.queue import ManualQueue, QueueItem, QueueRefused
from retention_pipelines.policies import load_policies
from retention_pipelines.redaction import without_personal_data

ITEM_ID = number_from(1, MAX_ID)


def _queue() -> ManualQueue:
    return ManualQueue(open_current_database(), load_policies().policy_version)


def _row(item: QueueItem, now) -> dict:
    return {"id": item.id, "domain": item.domain, "record_id": item.record_id, "reason": item.reason,
            "status": item.status, "due_at": item.due_at.strftime("%Y-%m-%d %H:%M"),
            "overdue": item.overdue(now), "level": item.escalation_level, "attempts": item.attempts,
            "claimed_by": item.claimed_by or ""}


def _refused(exc: QueueRefused) -> CliError:
    return CliError(str(exc), EXIT_FAILED)


def cmd_list(args: argparse.Namespace) -> int:
    queue = _queue()
    try:
        items = queue.list(domain=args.domain, status=args.status, overdue=args.overdue)
    except QueueRefused as exc:
        raise CliError(str(exc)) from None
    now = queue.clock()
    show_table([_row(item, now) for item in items])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    queue = _queue()
    try:
        item = queue.get(args.id)
    except QueueRefused as exc:
        raise _refused(exc) from None
    show_record(vars(item), "item")
    say("\nhistory (audit log):")
    show_table([{"at": entry["occurred_at"], "action": entry["action"], "by": entry["actor"],
                 "run_id": entry["run_id"], "detail": entry["detail"]} for entry in queue.history(item.id)], "history")
    return 0


def _transition(args: argparse.Namespace, command: str) -> int:
    queue = _queue()
    try:
        if command == "claim":
            item = queue.claim(args.id, args.by)
        else:
            item = getattr(queue, command)(args.id, args.by, args.note)
    except QueueRefused as exc:
        raise _refused(exc) from None
    say(f"queue item {item.id} ({item.domain}, {item.reason}) is now {item.status}"
        + (f" by {item.claimed_by}" if item.status == "claimed" else ""), id=item.id, status=item.status)
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    """Through the `manual_queue_retry` job, so the retry is a run in the UI like any other."""
    from retention_pipelines.dagster_wiring.manual_queue import RETRY_JOB
    from retention_pipelines.definitions import defs

    queue = _queue()
    for item_id in args.ids:
        try:
            queue.retryable(item_id)
        except QueueRefused as exc:
            raise _refused(exc) from None
    job = defs.resolve_job_def(RETRY_JOB)
    with dagster_instance() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False, run_config={
            "ops": {"retry_queue_items": {"config": {"item_ids": args.ids, "by": args.by}}},
            "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    now = queue.clock()
    show_table([_row(queue.get(item_id), now) for item_id in args.ids])
    failures = [failure_message(e) for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    if failures:
        raise CliError(f"run {result.run_id[:8]}: " + without_personal_data("; ".join(failures)), EXIT_FAILED)
    say(f"run {result.run_id[:8]}: every item resolved", run_id=result.run_id)
    return 0


def add_queue_commands(commands) -> None:
    queue = commands.add_parser("queue", help="the manual-resolution queue").add_subparsers(
        dest="queue_command", required=True, metavar="COMMAND")
    listing = queue.add_parser("list", help="list queue items (default: all, soonest due first)")
    listing.add_argument("--domain")
    listing.add_argument("--status", choices=["open", "claimed", "resolved", "dismissed"])
    listing.add_argument("--overdue", action="store_true", help="only open or claimed items past their due date")
    listing.set_defaults(handler=cmd_list)
    show = queue.add_parser("show", help="one item and its history")
    show.add_argument("id", type=ITEM_ID)
    show.set_defaults(handler=cmd_show)
    claim = queue.add_parser("claim", help="take an open item")
    claim.add_argument("id", type=ITEM_ID)
    claim.add_argument("--by", required=True, metavar="NAME", help="your handle (not an e-mail address)")
    claim.set_defaults(handler=lambda args: _transition(args, "claim"))
    retry = queue.add_parser("retry", help="run items through the engine again (the manual_queue_retry job)")
    retry.add_argument("ids", type=ITEM_ID, nargs="+", metavar="ID")
    retry.add_argument("--by", default=getpass.getuser(), metavar="NAME", help="who retries (default: your login)")
    retry.set_defaults(handler=cmd_retry)
    for command, what in (("resolve", "mark an item resolved"), ("dismiss", "close an item that needs nothing")):
        sub = queue.add_parser(command, help=what)
        sub.add_argument("id", type=ITEM_ID)
        sub.add_argument("--note", required=True, help="what was done or why; no personal data")
        sub.add_argument("--by", default=getpass.getuser(), metavar="NAME", help="who (default: your login)")
        sub.set_defaults(handler=lambda args, command=command: _transition(args, command))
