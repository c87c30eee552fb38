"""Bad input: a corpus — broken policy files, bad arguments, malformed erasure
requests, queue operations on unknown ids, bad configuration — each run through the real
`retention` console script against a seeded PostgreSQL database.

Every case must end in a clear one-line error naming what is wrong, a non-zero exit code, no
traceback, and a database byte-identical before and after (every table's rows, sorted, and every
sequence's position). argparse's own refusals keep their `usage:` synopsis above the one error
line (the CLI's documented convention, see test_cli/test_run.py); no other line is allowed.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from datetime import date, timedelta

import pytest

from retention_pipelines.engine.gdpr.requests import ErasureRequests
from retention_pipelines.engine.oversight.queue import ManualQueue
from retention_pipelines.stores import AppDatabase
from retention_pipelines_tests.support.app_rows import (
    insert_blacklist_at,
    insert_meal_plans_at,
    insert_quiz_rows,
    insert_token_expiring_at,
)
from retention_pipelines_tests.support.cli import RETENTION_SCRIPT, dagster_home
from retention_pipelines_tests.support.databases import dump_all_tables, new_database
from retention_pipelines_tests.support.figures import record
from retention_pipelines_tests.support.policy_files import edit as policy_text
from retention_pipelines_tests.support.policy_files import setting

DUPLICATE_ADDRESS = "already-asked@example.invalid"
HASH_KEY = "b" * 64


def policy(text: str, keyword: str, id: str, argv=("run", "quiz_responses")):
    """A case whose policy file (RETENTION_POLICIES_FILE) is `text`."""
    return pytest.param(list(argv), {}, text, keyword, id=f"policy-{id}")


def command(argv: list[str], keyword: str, id: str, env: dict | None = None):
    return pytest.param(argv, env or {}, None, keyword, id=id)


CASES = [
    # broken policy files: syntax, types, unknown keys, impossible periods, SQL in identifiers
    policy("version: '1'\ndomains: [unclosed\n", "YAML syntax error", "yaml-syntax"),
    policy("- just\n- a list\n", "mapping", "not-a-mapping"),
    policy("", "mapping", "empty-file"),
    policy(policy_text(setting("quiz_responses", "batch_size", "many")), "batch_size", "batch-size-not-a-number"),
    policy(policy_text(setting("quiz_responses", "enabled", "perhaps")), "enabled", "enabled-not-a-bool"),
    policy(policy_text(setting("quiz_responses", "colour", "red")), "unknown key", "unknown-key"),
    policy(policy_text(lambda d: d.update(owner="someone")), "unknown key", "unknown-top-level-key"),
    policy(policy_text(setting("quiz_responses", "retain_for", "ninety days")), "duration", "retain-for-words"),
    policy(policy_text(setting("quiz_responses", "retain_for", "-1d")), "retain_for", "retain-for-negative"),
    policy(policy_text(setting("quiz_responses", "retain_for", "0d")), "zero", "retain-for-zero-on-created-at"),
    policy(policy_text(setting("email_blacklist", "on_erasure_reason", " ")), "on_erasure_reason",
           "kept-until-deadline-without-its-reason"),
    policy(policy_text(setting("meal_plans", "archive", "keep_for", "0d")), "keep_for", "keep-for-zero"),
    policy(policy_text(setting("quiz_responses", "sla", "max_run_duration", "0m")), "max_run_duration",
           "max-run-duration-zero"),
    policy(policy_text(setting("quiz_responses", "partitions", "cadence", "weekly")), "cadence", "weekly-cadence"),
    policy(policy_text(setting("quiz_responses", "action", "truncate")), "action", "unknown-action"),
    policy(policy_text(setting("quiz_responses", "table", "quiz_responses; DROP TABLE meal_plans")), "identifier",
           "sql-injection-in-table"),
    policy(policy_text(setting("quiz_responses", "clock_column", 'created_at" OR 1=1 --')), "identifier",
           "sql-injection-in-clock-column"),
    policy(policy_text(setting("quiz_responses", "primary_key", "id) OR (1=1")), "identifier",
           "sql-injection-in-primary-key"),
    policy(policy_text(setting("meal_plans", "action", "redact", "null_columns", ["email; DELETE FROM meal_plans"])),
           "identifier", "sql-injection-in-null-columns"),
    policy(policy_text(setting("quiz_responses", "table", "no_such_table")), "no_such_table",
           "table-that-does-not-exist"),
    policy(policy_text(setting("quiz_responses", "clock_column", "no_such_column")), "no_such_column",
           "column-that-does-not-exist"),
    pytest.param(["run", "quiz_responses"], {"RETENTION_POLICIES_FILE": "/nonexistent/policies.yaml"}, None,
                 "cannot read", id="policy-file-missing"),
    # bad arguments
    command(["run", "no_such_domain"], "unknown domain", "run-unknown-domain"),
    command(["run", "--wait", "soon"], "--wait", "run-wait-not-a-number"),
    command(["frobnicate"], "invalid choice", "unknown-command"),
    command([], "required", "no-command"),
    command(["hold", "add", "--domain", "quiz_responses", "--record-id", "r1", "--by", "legal"], "--reason",
            "hold-without-reason"),
    command(["hold", "add", "--domain", "quiz_responses", "--record-id", "r1", "--reason", "case 7"], "--by",
            "hold-without-by"),
    command(["hold", "add", "--domain", "quiz_responses", "--record-id", "not-a-uuid", "--reason", "case 7", "--by",
             "legal"], "not a value of the key column", "hold-record-id-not-a-uuid"),
    command(["hold", "add", "--domain", "no_such_domain", "--record-id", "r1", "--reason", "case 7", "--by", "legal"],
            "unknown domain", "hold-unknown-domain"),
    command(["hold", "add", "--domain", "quiz_responses", "--record-id", "r1", "--reason", "asked by a@b.example",
             "--by", "legal"],
            "e-mail", "hold-reason-with-an-address"),
    command(["report", "--month", "2026-13"], "month", "report-month-13"),
    command(["report", "--month", "last month"], "month", "report-month-words"),
    command(["restore", "--domain", "quiz_responses", "--run", "no-such-run", "--by", "ops"], "archive",
            "restore-unarchived-domain"),
    command(["audit", "show"], "--record-id", "audit-show-without-record-id"),
    command(["audit", "verify", "--domain"], "--domain", "audit-verify-domain-without-value"),
    # malformed erasure requests
    command(["erasure", "request", "--email", "not-an-address"], "address", "erasure-invalid-address"),
    command(["erasure", "request", "--email", "two@at@example.invalid"], "address", "erasure-two-at-signs"),
    command(["erasure", "request", "--email", ""], "address", "erasure-empty-address"),
    command(["erasure", "request", "--email", DUPLICATE_ADDRESS], "open", "erasure-duplicate"),
    command(["erasure", "request", "--email", DUPLICATE_ADDRESS.upper()], "open", "erasure-duplicate-other-case"),
    command(["erasure", "extend", "999999", "--days", "10", "--reason", "complex case"], "999999",
            "erasure-extend-unknown-id"),
    command(["erasure", "extend", "1", "--days", "-10", "--reason", "complex case"], "days",
            "erasure-extend-negative-days"),
    command(["erasure", "run", "999999"], "999999", "erasure-run-unknown-id"),
    command(["erasure", "status", "abc"], "whole number", "erasure-status-not-a-number"),
    # queue operations on unknown ids
    command(["queue", "show", "999999"], "999999", "queue-show-unknown-id"),
    command(["queue", "claim", "999999", "--by", "ops"], "999999", "queue-claim-unknown-id"),
    command(["queue", "resolve", "999999", "--note", "done", "--by", "ops"], "999999", "queue-resolve-unknown-id"),
    command(["queue", "dismiss", "999999", "--note", "noise", "--by", "ops"], "999999", "queue-dismiss-unknown-id"),
    command(["queue", "retry", "999999"], "999999", "queue-retry-unknown-id"),
    command(["queue", "list", "--status", "lost"], "invalid choice", "queue-list-unknown-status"),
    # bad configuration
    command(["hold", "list"], "RETENTION_DATABASE_URL", "database-url-not-a-url",
            env={"RETENTION_DATABASE_URL": "not a url"}),
    command(["run", "quiz_responses"], "RETENTION_LOCK_WAIT_SECONDS", "lock-wait-not-a-number",
            env={"RETENTION_LOCK_WAIT_SECONDS": "forever"}),
    command(["erasure", "request", "--email", "fresh-subject@example.invalid"], "RETENTION_ERASURE_DUE_DAYS",
            "erasure-due-days-not-a-number", env={"RETENTION_ERASURE_DUE_DAYS": "a month"}),
    # numbers out of range: settings, arguments, durations (each refused before it can break later)
    command(["run", "quiz_responses"], "RETENTION_LOCK_TTL_SECONDS", "lock-ttl-below-its-floor",
            env={"RETENTION_LOCK_TTL_SECONDS": "1"}),
    command(["run", "quiz_responses"], "RETENTION_LOCK_WAIT_SECONDS", "lock-wait-nan",
            env={"RETENTION_LOCK_WAIT_SECONDS": "nan"}),
    command(["erasure", "run", "1"], "RETENTION_ERASURE_LOCK_WAIT_SECONDS", "erasure-lock-wait-negative",
            env={"RETENTION_ERASURE_LOCK_WAIT_SECONDS": "-1"}),
    command(["erasure", "request", "--email", "fresh-subject@example.invalid"], "RETENTION_ERASURE_DUE_DAYS",
            "erasure-due-days-past-the-law", env={"RETENTION_ERASURE_DUE_DAYS": "91"}),
    command(["hold", "list"], "RETENTION_LAG_SENSOR_INTERVAL_SECONDS", "lag-sensor-interval-zero",
            env={"RETENTION_LAG_SENSOR_INTERVAL_SECONDS": "0"}),
    # a deployment, not the demo, that forgot its stores and keys: refused, naming them, no fallback
    command(["run", "quiz_responses"], "RETENTION_REDIS_URL", "production-without-redis",
            env={"RETENTION_ENV": "production"}),
    command(["hold", "list"], "RETENTION_ENV", "environment-unknown", env={"RETENTION_ENV": "staging"}),
    command(["run", "--wait", "1e999"], "--wait", "run-wait-infinite"),
    command(["erasure", "extend", "1", "--days", "61", "--reason", "complex case"], "--days",
            "erasure-extend-past-two-months"),
    command(["queue", "show", "99999999999999999999"], "argument id", "queue-show-id-past-bigint"),
    command(["report", "--month", "9999-12"], "2000-01 to 2999-12", "report-month-year-9999"),
    policy(policy_text(setting("quiz_responses", "retain_for", f"{10**12}d")), "100 years",
           "retain-for-a-trillion-days"),
    policy(policy_text(setting("quiz_responses", "partitions", "start", date(1, 1, 1))), "partitions.start",
           "partitions-start-year-1"),
]
HANDLED: list[str] = []


@pytest.fixture(scope="module")
def seeded(postgres_server, tmp_path_factory):
    """One database with rows in every app and retention table the commands read, and the CLI's
    environment pointing at it. Cases never share a change: each compares its own before and after."""
    url = new_database(postgres_server)
    database = AppDatabase(url)
    now = database.now()
    insert_quiz_rows(database, [timedelta(hours=30), timedelta(minutes=5)], email="seeded@example.invalid")
    insert_token_expiring_at(database, [now - timedelta(hours=1), now + timedelta(hours=1)])
    insert_blacklist_at(database, [now - timedelta(days=100), now - timedelta(days=1)])
    insert_meal_plans_at(database, [now - timedelta(days=100)], [None])
    ErasureRequests(database, bytes.fromhex(HASH_KEY)).request(DUPLICATE_ADDRESS)
    ManualQueue(database).add("quiz_responses", "rec-1", "delete_blocked", "a foreign key", timedelta(days=1))
    folder = tmp_path_factory.mktemp("bad_input")
    (folder / "archive").mkdir()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("RETENTION_", "DAGSTER_"))}
    environment.update({
        "RETENTION_DATABASE_URL": url, "RETENTION_ARCHIVE_URL": (folder / "archive").as_uri(),
        "RETENTION_HOME": str(folder / "home"), "RETENTION_ERASURE_HASH_KEY": HASH_KEY, "RETENTION_ENV": "demo",
        "DAGSTER_HOME": str(dagster_home(folder / "dagster_home")),
    })
    yield database, environment, folder
    database.dispose()


def digest(database: AppDatabase) -> str:
    return hashlib.sha256(repr(dump_all_tables(database)).encode()).hexdigest()


@pytest.mark.parametrize("argv, env, policy_file, keyword", CASES)
def test_bad_input_is_refused_in_one_line_changing_nothing(seeded, request, argv, env, policy_file, keyword):
    database, environment, folder = seeded
    environment = {**environment, **env}
    if policy_file is not None:
        path = folder / f"{request.node.callspec.id}.yaml"
        path.write_text(policy_file)
        environment["RETENTION_POLICIES_FILE"] = str(path)
    before = digest(database)
    result = subprocess.run([str(RETENTION_SCRIPT), *argv], capture_output=True, text=True, env=environment,
                            cwd=folder, timeout=120)
    after = digest(database)

    assert result.returncode != 0, (argv, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    # argparse's usage synopsis (and its continuation lines) precede its one error line.
    errors = [line for line in lines if not line.startswith(("usage: ", "   "))]
    assert len(errors) == 1, result.stderr
    assert keyword.lower() in errors[0].lower(), (keyword, result.stderr)
    assert after == before, f"{argv}: the database changed"
    HANDLED.append(request.node.callspec.id)


def test_every_case_was_handled():
    """The figure: every case of the corpus ended as it must (a failed case is missing here)."""
    handled, total = len(set(HANDLED)), len(CASES)
    record("bad input: cases handled", f"all {total}", f"{handled}/{total}", handled == total)
    assert total >= 30
    assert handled == total, f"{total - handled} cases not handled: see their failures above"
