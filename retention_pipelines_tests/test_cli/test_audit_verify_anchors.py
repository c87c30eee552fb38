"""`retention audit verify` on the anchors themselves: one deleted from the archive store, or
replaced there, fails the command, named; a day anchor of the earlier format does not."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from retention_pipelines.cli.common import EXIT_FAILED
from retention_pipelines.engine.audit.anchor import anchor
from retention_pipelines.stores import archive_store_from_url, load_settings
from retention_pipelines_tests.support.audit_rows import execute, write_audit_rows


def anchored(database) -> tuple[str, Path]:
    """An anchor of a written log (chained as it was written) in the CLI's archive: its key and its file."""
    write_audit_rows(database, 6)
    url = load_settings().resolved_archive_url()
    key = anchor(database, archive_store_from_url(url))
    return key, Path(urlparse(url).path) / key


def test_verify_fails_naming_an_anchor_deleted_from_the_store(cli, cli_env):
    key, path = anchored(cli_env)
    assert cli("audit", "verify").code == 0
    path.unlink()
    verified = cli("audit", "verify")
    assert verified.code == EXIT_FAILED
    assert f"first broken link: anchor {key}, written at " in verified.out
    assert "is missing from the archive store: it was deleted" in verified.out
    assert "a chain is broken" in verified.out
    assert cli("audit", "verify", "--no-anchors").code == 0


def test_verify_fails_naming_an_anchor_replaced_in_the_store(cli, cli_env):
    key, path = anchored(cli_env)
    path.write_bytes(path.read_bytes().replace(b'"verified_intact": null', b'"verified_intact": true'))
    verified = cli("audit", "verify")
    assert verified.code == EXIT_FAILED
    assert f"anchor {key}" in verified.out and "was replaced" in verified.out


def test_verify_reads_a_day_anchor_of_the_earlier_format(cli, cli_env):
    key, path = anchored(cli_env)
    day = path.parent.with_suffix(".json")  # audit_anchors/YYYY/MM/DD.json
    day.write_bytes(path.read_bytes())
    path.unlink()
    execute(cli_env, "DELETE FROM retention_audit_anchors")
    verified = cli("audit", "verify")
    assert verified.code == 0, verified.out
    assert "2 anchored positions" in verified.out and "every chain is intact" in verified.out
