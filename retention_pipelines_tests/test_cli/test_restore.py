"""`retention restore --domain D --run RUN_ID [--record-id …] [--dry-run] --by NAME` on PostgreSQL:
the table of outcomes, the exit codes, and refusals that name what is wrong."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import sqlalchemy as sa

from retention_pipelines.policies import load_policies
from retention_pipelines.stores import load_settings
from retention_pipelines.stores.blob import LocalBlobStore
from retention_pipelines_tests.support.app_rows import _insert, insert_meal_plans_at, meal_plan_rows
from retention_pipelines_tests.support.cli import EMAIL, parse_table
from retention_pipelines_tests.support.engines import blacklist_deleted_by_a_run, meal_plans_engine


def present(database) -> set[str]:
    with database.engine.connect() as connection:
        return {str(i) for i in connection.execute(sa.text("SELECT id FROM email_blacklist")).scalars()}


def test_dry_run_then_restore_then_again(cli, cli_env):
    ids = blacklist_deleted_by_a_run(cli_env, 2)
    dry = cli("restore", "--domain", "email_blacklist", "--run", "run-in-error", "--by", "ops-ines", "--dry-run")
    assert dry.code == 0, dry.text
    assert dry.out.count("would be restored") == 2 and "would restore 2, refused 0" in dry.out
    assert present(cli_env) == set()

    done = cli("restore", "--domain", "email_blacklist", "--run", "run-in-error", "--by", "ops-ines")
    assert done.code == 0, done.text
    assert "restored 2, refused 0" in done.out and "the next run deletes them again" in done.out
    assert present(cli_env) == set(ids)
    assert not EMAIL.search(done.text)

    again = cli("restore", "--domain", "email_blacklist", "--run", "run-in-error", "--by", "ops-ines",
                "--record-id", ids[0])
    assert again.code == 0 and "refused: it exists again" in again.out and "restored 0, refused 1" in again.out


def test_wrong_arguments_are_named(cli, cli_env):
    unknown = cli("restore", "--domain", "nope", "--run", "r", "--by", "ops")
    assert unknown.code == 2 and "unknown domain 'nope'" in unknown.err
    person = cli("restore", "--domain", "email_blacklist", "--run", "r", "--by", "ines@example.com")
    assert person.code == 2 and "--by: give a handle" in person.err and "ines@example.com" not in person.text
    nothing = cli("restore", "--domain", "email_blacklist", "--run", "never-ran", "--by", "ops")
    assert nothing.code == 1 and "run never-ran deleted nothing in email_blacklist" in nothing.err
    redacting = cli("restore", "--domain", "meal_plans", "--run", "r", "--by", "ops")
    assert redacting.code == 1 and "run r redacted nothing in meal_plans" in redacting.err
    missing = cli("restore", "--domain", "email_blacklist", "--run", "r")
    assert missing.code == 2 and "--by" in missing.err


def test_record_ids_are_taken_in_any_spelling_of_the_key_and_refused_when_no_key_can_be(cli, cli_env):
    ids = blacklist_deleted_by_a_run(cli_env, 2)
    done = cli("restore", "--domain", "email_blacklist", "--run", "run-in-error", "--by", "ops-ines",
               "--record-id", ids[0].upper().replace("-", ""))
    assert done.code == 0, done.text
    assert "restored 1, refused 0" in done.out
    assert present(cli_env) == {ids[0]}
    bad = cli("restore", "--domain", "email_blacklist", "--run", "run-in-error", "--by", "ops-ines",
              "--record-id", "not-a-key")
    assert bad.code == 2 and bad.err.startswith("retention: error: --record-id") and "key column" in bad.err


def test_the_run_id_run_prints_is_taken_as_it_is_printed(cli, cli_env):
    now = cli_env.now()
    ids = _insert(cli_env, "email_blacklist", [
        {"email": "person@example.com", "reason": "refund_abuse", "created_at": now - timedelta(days=95)}])
    ran = cli("run", "email_blacklist")
    assert ran.code == 0, ran.text
    [row] = [r for r in parse_table(ran.out) if r["domain"] == "email_blacklist"]
    printed = row["run_id"]
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
    assert run.run_id.startswith(printed) and len(printed) < len(run.run_id)
    restored = cli("restore", "--domain", "email_blacklist", "--run", printed, "--by", "ops-ines")
    assert restored.code == 0, restored.text
    assert f"email_blacklist: run {run.run_id} deleted 1 rows; restored 1, refused 0" in restored.out
    assert present(cli_env) == set(ids)


def test_a_meal_plan_redacted_in_error_gets_its_pdf_and_row_back(cli, cli_env, tmp_path, monkeypatch):
    blobs = tmp_path / "blobs"
    (blobs / "plans").mkdir(parents=True)
    monkeypatch.setenv("RETENTION_BLOB_URL", blobs.as_uri())
    pdfs = {f"plans/{i}.pdf": b"%PDF-1.4 plan " + bytes([i]) * 2000 for i in range(2)}
    for key, data in pdfs.items():
        (blobs / key).write_bytes(data)
    ids = insert_meal_plans_at(cli_env, [cli_env.now() - timedelta(days=92)] * 2, list(pdfs))
    before = meal_plan_rows(cli_env)
    meal_plans_engine(load_policies(), cli_env, load_settings().resolved_archive_url(),
                      LocalBlobStore(blobs)).run("redacting-run")
    assert not any((blobs / key).exists() for key in pdfs)

    done = cli("restore", "--domain", "meal_plans", "--run", "redacting", "--by", "ops-ines")
    assert done.code == 0, done.text
    assert "meal_plans: run redacting-run redacted 2 rows; restored 2, refused 0" in done.out
    assert "the next run redacts them again" in done.out
    assert {key: (blobs / key).read_bytes() for key in pdfs} == pdfs
    assert meal_plan_rows(cli_env) == before
    assert not EMAIL.search(done.text)

    again = cli("restore", "--domain", "meal_plans", "--run", "redacting-run", "--by", "ops-ines",
                "--record-id", ids[0])
    assert again.code == 0 and "refused: it is not redacted (restored already?)" in again.out
    assert "restored 0, refused 1" in again.out
