"""`retention db upgrade`: the retention tables brought to this code's migration."""

from __future__ import annotations

import argparse

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.cli.common import open_database
from retention_pipelines.cli.output import say


def cmd_upgrade(args: argparse.Namespace) -> int:
    database = open_database()
    try:
        before, after = schema.upgrade(database.engine)
    except sa.exc.OperationalError as exc:
        raise database.connect_error(exc) from None
    say(f"{database.display_url}: retention tables at migration {after}"
        + ("" if before == after else f" (was {before or 'none'})"), migration=after, was=before)
    return 0


def add_db_commands(commands) -> None:
    db = commands.add_parser("db", help="the retention tables").add_subparsers(dest="db_command", required=True,
                                                                                metavar="COMMAND")
    db.add_parser("upgrade", help="apply the retention tables' migrations").set_defaults(handler=cmd_upgrade)
