"""What a command prints: tables without NaN, NaT or None, and with --json one JSON document that
says what the tables and sentences say, for every command."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from retention_pipelines.cli.main import _commands, build_parser
from retention_pipelines.cli.output import print_table
from retention_pipelines_tests.support.app_rows import insert_quiz_rows
from retention_pipelines_tests.support.cli import parse_table


def test_every_command_takes_json():
    commands = list(_commands(build_parser()))
    assert len(commands) >= 25  # every command, not the groups
    for command in commands:
        assert "--json" in command._option_string_actions, command.prog


def as_json(cli, *args: str) -> dict:
    outcome = cli(*args, "--json")
    assert outcome.code == 0, outcome.text
    assert outcome.out.count("\n") == 1, outcome.out  # one document, one line
    return json.loads(outcome.out)


def test_a_run_reports_the_same_in_json_as_in_its_table(cli, cli_env):
    due = insert_quiz_rows(cli_env, [timedelta(hours=30)] * 3)
    text = cli("run", "quiz_responses", "--dry-run")
    assert text.code == 0, text.text
    [row] = as_json(cli, "run", "quiz_responses", "--dry-run")["rows"]
    [shown] = parse_table(text.out)
    assert row["domain"] == shown["domain"] == "quiz_responses"
    assert row["found"] == len(due) and str(row["found"]) == shown["found"]
    assert row["dry_run"] is True


def test_listings_and_reports_are_json_documents(cli, cli_env):
    [record] = insert_quiz_rows(cli_env, [timedelta(hours=30)])
    assert as_json(cli, "hold", "list")["rows"] == []
    placed = as_json(cli, "hold", "add", "--domain", "quiz_responses", "--record-id", record, "--by", "ops-ines",
                     "--reason", "case 12")
    assert (placed["domain"], placed["record_id"], placed["by"]) == ("quiz_responses", record, "ops-ines")
    [hold] = as_json(cli, "hold", "list")["rows"]
    assert hold["record_id"] == record and hold["domain"] == "quiz_responses"
    assert datetime.fromisoformat(hold["placed_at"]).tzinfo is not None
    verified = as_json(cli, "audit", "verify", "--no-anchors")
    assert verified["intact"] is True and verified["messages"][-1] == "every chain is intact"
    policies = as_json(cli, "policies", "validate")
    assert policies["valid"] is True and {row["domain"] for row in policies["rows"]} >= {"quiz_responses"}
    assert as_json(cli, "queue", "list")["rows"] == []
    requested = as_json(cli, "erasure", "request", "--email", "dana@example.org")
    assert "dana" not in json.dumps(requested)
    [request] = as_json(cli, "erasure", "status")["rows"]
    assert request["id"] == requested["id"] and request["status"] == "received"


@pytest.mark.parametrize("args", [["hold", "list", "--domain", "nope"], ["erasure", "status", "999"]])
def test_a_refusal_in_json_is_still_one_line_on_standard_error(cli, cli_env, args):
    refused = cli(*args, "--json")
    assert refused.code in (1, 2) and refused.out == ""
    assert refused.err.startswith("retention: error: ") and len(refused.err.splitlines()) == 1


def test_a_table_shows_each_value_as_its_own_text_and_nothing_where_there_is_none(capsys):
    moment = datetime(2026, 12, 6, 18, 55, tzinfo=UTC)
    print_table([{"id": 7, "due": moment, "claimed_by": None, "days": 45.0, "done": False},
                 {"id": 12, "due": None, "claimed_by": "ops-ines", "days": 1.5, "extra": "x"}])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "due", "claimed_by", "days", "done", "extra"]
    assert lines[1].split() == ["7", "2026-12-06", "18:55:00+00:00", "45.0", "False"]
    assert lines[2].split() == ["12", "ops-ines", "1.5", "x"]
    assert not re.search(r"\b(NaN|NaT|None|nan)\b", "\n".join(lines))
    print_table([])
    assert capsys.readouterr().out == "(none)\n"
