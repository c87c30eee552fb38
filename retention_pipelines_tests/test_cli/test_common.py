"""What every command shares: a domain it is given is one of the policy file's, or the command is
refused (exit 2) before it touches anything; `--version`."""

from __future__ import annotations

import re
from importlib.metadata import version

import dagster as dg
import pytest
import sqlalchemy as sa

from retention_pipelines import schema
from retention_pipelines.policies import load_policies
from retention_pipelines_tests.support.audit_rows import write_audit_rows

TYPO = "quiz_responsez"
COMMANDS_NAMING_A_DOMAIN = {
    "run": ["run", TYPO],
    "run --domain": ["run", "--domain", "quiz_responses", "--domain", TYPO],
    "run --dry-run": ["run", "--dry-run", TYPO],
    "hold add": ["hold", "add", "--domain", TYPO, "--record-id", "1", "--by", "ops", "--reason", "case 7"],
    "hold release": ["hold", "release", "--domain", TYPO, "--record-id", "1", "--by", "ops"],
    "hold list": ["hold", "list", "--domain", TYPO],
    "queue list": ["queue", "list", "--domain", TYPO],
    "audit show": ["audit", "show", "--record-id", "1", "--domain", TYPO],
    "audit verify": ["audit", "verify", "--domain", TYPO],
    "restore": ["restore", "--domain", TYPO, "--run", "abc", "--by", "ops"],
    "archive expire": ["archive", "expire", "--domain", TYPO],
}


def retention_rows(database) -> dict[str, int]:
    with database.engine.connect() as connection:
        return {table.name: connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                for table in (schema.audit_log, schema.audit_batches, schema.legal_holds, schema.manual_queue,
                              schema.audit_chain_heads)}


@pytest.mark.parametrize("command", sorted(COMMANDS_NAMING_A_DOMAIN))
def test_every_command_refuses_an_unknown_domain_before_it_does_anything(cli, cli_env, command):
    before = retention_rows(cli_env)
    refused = cli(*COMMANDS_NAMING_A_DOMAIN[command])
    assert refused.code == 2, (command, refused.text)
    known = ", ".join(load_policies().domains)
    assert f"retention: error: unknown domain {TYPO!r}; the policy file has: {known}" in refused.err
    assert refused.out == ""  # never "every chain is intact" or an empty table
    assert retention_rows(cli_env) == before
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs_count() == 0  # nothing launched


def test_a_known_domain_passes_the_check(cli, cli_env):
    listed = cli("hold", "list", "--domain", "quiz_responses")
    assert listed.code == 0, listed.text
    verified = cli("audit", "verify", "--domain", "quiz_responses")
    assert verified.code == 0, verified.text


def test_version_is_the_installed_package_s(cli):
    shown = cli("--version")
    assert (shown.code, shown.out) == (0, f"retention {version('retention_pipelines')}\n")
    assert re.fullmatch(r"retention \d+\.\d+\.\d+\S*\n", shown.out)


def test_the_audit_commands_also_know_the_domains_the_chains_name(cli, cli_env):
    """A domain taken out of the policy file keeps its evidence: its chain is verified by name; the
    commands that act on a domain's rows still refuse it."""
    write_audit_rows(cli_env, 4)  # domains alpha and beta, in no policy file
    verified = cli("audit", "verify", "--domain", "alpha")
    assert verified.code == 0 and "every chain is intact" in verified.out, verified.text
    typo = cli("audit", "verify", "--domain", "alpah")
    assert typo.code == 2 and typo.out == ""
    assert typo.err.rstrip().endswith("; the audit log's chains: alpha, beta"), typo.err
    held = cli("hold", "list", "--domain", "alpha")
    assert held.code == 2 and "unknown domain 'alpha'" in held.err and "chains" not in held.err
