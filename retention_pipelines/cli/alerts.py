"""`retention alerts test`: one test alert through every configured channel (the deployment
checklist's "alerts configured"), opened and closed at once so that no incident stays open."""

from __future__ import annotations

import argparse

from retention_pipelines.cli.common import EXIT_FAILED, CliError
from retention_pipelines.cli.output import say
from retention_pipelines.logs import get_logger
from retention_pipelines.stores import StoreUnavailable, load_settings
from retention_pipelines.stores.notifier import CLOSED, OPENED, Alert, LogNotifier, notifier


def cmd_test(args: argparse.Namespace) -> int:
    channels = notifier(load_settings(), get_logger("alerts"))
    if isinstance(channels, LogNotifier):
        say("no alert channel is configured (RETENTION_SLACK_TOKEN, RETENTION_PAGERDUTY_ROUTING_KEY, "
            "RETENTION_ALERT_WEBHOOK_URL): alerts are JSON log lines only", channels=[])
        return 0
    names = [channel.name for channel in channels.channels]
    try:
        for event in (OPENED, CLOSED):
            channels.send(Alert(domain="retention", kind="alert_test", event=event,
                                summary="test alert from `retention alerts test`: no action needed"))
    except StoreUnavailable as exc:
        raise CliError(f"the test alert did not reach every channel: {exc}", EXIT_FAILED) from None
    say(f"test alert opened and closed on {', '.join(names)}", channels=names)
    return 0


def add_alerts_commands(commands) -> None:
    alerts = commands.add_parser("alerts", help="the alert channels").add_subparsers(
        dest="alerts_command", required=True, metavar="COMMAND")
    alerts.add_parser("test", help="send a test alert (opened, then closed) through every configured channel"
                      ).set_defaults(handler=cmd_test)
