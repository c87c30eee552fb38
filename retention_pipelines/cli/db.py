"""`retention db upgrade` and `retention db downgrade`: the retention tables brought to this code's
migration, or taken back to an earlier one (a release rolled back), never dropping data unasked."""

from __future__ import annotations

import argparse

import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.cli.common import CliError, open_database
from retention_pipelines.cli.output import say
from retention_pipelines.schema.downgrade import DowngradeRefused, DowngradeWouldDropData, downgrade


def cmd_upgrade(args: argparse.Namespace) -> int:
    database = open_database()
    try:
        before, after = schema.upgrade(database.engine)
    except sa.exc.OperationalError as exc:
        raise database.connect_error(exc) from None
    say(f"{database.display_url}: retention tables at migration {after}"
        + ("" if before == after else f" (was {before or 'none'})"), migration=after, was=before)
    return 0


def cmd_downgrade(args: argparse.Namespace) -> int:
    database = open_database()
    try:
        before, after, lost = downgrade(database.engine, args.revision, drop_data=args.drop_data)
    except DowngradeRefused as exc:
        raise CliError(str(exc)) from None
    except DowngradeWouldDropData as exc:
        raise CliError(f"{exc}; nothing was changed. Keep what you need (pg_dump), then downgrade with --drop-data "
                       "to drop it") from None
    except sa.exc.OperationalError as exc:
        raise database.connect_error(exc) from None
    finally:
        database.dispose()
    dropped = [str(item) for item in lost]
    say(f"{database.display_url}: retention tables at migration {after}"
        + ("" if before == after else f" (was {before})")
        + (f"; dropped {', '.join(dropped)}" if dropped else ""), migration=after, was=before, dropped=dropped)
    return 0


def add_db_commands(commands) -> None:
    db = commands.add_parser("db", help="the retention tables").add_subparsers(dest="db_command", required=True,
                                                                                metavar="COMMAND")
    db.add_parser("upgrade", help="apply the retention tables' migrations").set_defaults(handler=cmd_upgrade)
    back = db.add_parser("downgrade", help="take the retention tables back to an earlier migration (a release "
                                           "rolled back); refused while it would drop data")
    back.add_argument("revision", metavar="REVISION", help="the migration to go back to (e.g. 0010), or base")
    back.add_argument("--drop-data", action="store_true",
                      help="go on although tables or columns that hold data are dropped with the later migrations")
    back.set_defaults(handler=cmd_downgrade)
