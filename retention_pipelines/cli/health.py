"""`retention health`: every dependency of the retention runs probed, one line each."""

from __future__ import annotations

import argparse

from retention_pipelines.cli.common import EXIT_FAILED
from retention_pipelines.cli.output import show_table
from retention_pipelines.policies import load_policies
from retention_pipelines.redaction import without_personal_data
from retention_pipelines.stores import load_settings


def cmd_health(args: argparse.Namespace) -> int:
    from retention_pipelines.dagster_wiring.health import run_health
    from retention_pipelines.dagster_wiring.resources import RetentionStores

    load_settings()  # a deployment missing a variable is refused here, each missing one named
    policies = load_policies()
    stores = RetentionStores()
    try:
        probes = run_health(stores, [p for p in policies.domains.values() if p.enabled])
    finally:
        stores.close()
    show_table([{"dependency": p.name, "ok": p.ok, "detail": without_personal_data(p.message)} for p in probes])
    return 0 if all(p.ok for p in probes) else EXIT_FAILED


def add_health_command(commands) -> None:
    commands.add_parser("health", help="probe every dependency of the retention runs").set_defaults(
        handler=cmd_health)
