"""`retention policies schedule`: the record of processing as Markdown (a row per domain), CSV
(read back, the compliance report's own processing.csv) or JSON; wrong arguments exit 2."""

from __future__ import annotations

import csv
import io
import json

import pytest
import yaml

from retention_pipelines.engine.report.render import processing_table, to_csv
from retention_pipelines.policies import default_policy_path, load_policies
from retention_pipelines.policies.processing import COLUMNS, record_of_processing
from retention_pipelines_tests.support.cli import run_script

DOMAINS = ["quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist"]


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of a Markdown table's lines, header first, the |---| line left out."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            cells = [cell.strip().replace("\\|", "|") for cell in line.strip().strip("|").split(" | ")]
            rows.append(cells)
    return rows


def test_markdown_has_a_row_per_domain_with_both_time_limits_and_the_record(cli):
    outcome = cli("policies", "schedule")
    assert outcome.code == 0 and outcome.err == ""
    assert outcome.out.startswith(f"## Record of processing (GDPR Art. 30(1)), policy version "
                                  f"{load_policies().policy_version}\n")
    header, *rows = markdown_rows(outcome.out)
    assert header == list(COLUMNS)
    by_domain = {row[0]: dict(zip(header, row)) for row in rows}
    assert list(by_domain) == DOMAINS
    assert by_domain["meal_plans"]["archive_keep_for"] == "3650d"
    assert by_domain["email_blacklist"]["archive_keep_for"] == "365d"
    assert by_domain["quiz_responses"]["archive_keep_for"] == "not archived"
    assert by_domain["quiz_responses"]["retain_for"] == "1d"
    assert by_domain["quiz_responses"]["special_category_condition"] == "Art. 9(2)(a) explicit consent"
    assert by_domain["magic_link_tokens"]["counted_from"] == "expires_at"
    for row in by_domain.values():
        assert all(row[column] for column in ("purpose", "lawful_basis", "data_categories", "recipients")), row
    assert outcome.out == cli("policies", "schedule", "--format", "markdown").out


def test_a_pipe_in_a_cell_stays_in_its_cell(cli, tmp_path):
    data = yaml.safe_load(default_policy_path().read_text())
    data["domains"]["quiz_responses"]["purpose"] = "tailoring | sending the plan"
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    header, *rows = markdown_rows(cli("policies", "schedule", str(path)).out)
    assert all(len(row) == len(header) for row in rows)
    assert dict(zip(header, rows[0]))["purpose"] == "tailoring | sending the plan"


def test_csv_reads_back_as_the_reports_processing_table(cli):
    outcome = cli("policies", "schedule", "--format", "csv")
    assert outcome.code == 0 and outcome.err == ""
    rows = list(csv.DictReader(io.StringIO(outcome.out)))
    assert [row["domain"] for row in rows] == DOMAINS
    assert list(rows[0]) == list(COLUMNS)
    plans = rows[DOMAINS.index("meal_plans")]
    assert (plans["retain_for"], plans["archive_keep_for"]) == ("90d", "3650d")
    assert plans["lawful_basis"].startswith("Art. 6(1)(b) contract; Art. 6(1)(c) legal obligation — ")
    assert plans["data"] == "table meal_plans; the objects named by pdf_blob_key"
    assert plans["data_categories"].split("; ") == load_policies().domains["meal_plans"].data_categories
    # byte for byte the compliance report's processing.csv
    assert outcome.out.encode() == to_csv(processing_table(record_of_processing(load_policies())))


def test_csv_leaves_a_missing_field_blank_and_guards_against_formulas(cli, tmp_path):
    data = yaml.safe_load(default_policy_path().read_text())
    data["domains"]["meal_plans"].pop("recipients")
    data["domains"]["quiz_responses"]["purpose"] = "=HYPERLINK(\"x\")"
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    rows = {row["domain"]: row for row in csv.DictReader(io.StringIO(
        cli("policies", "schedule", str(path), "--format", "csv").out))}
    assert rows["meal_plans"]["recipients"] == ""
    assert rows["quiz_responses"]["purpose"] == "'=HYPERLINK(\"x\")"  # a spreadsheet shows it as text


def test_json_rows_keep_lists_as_lists(cli):
    outcome = cli("policies", "schedule", "--json")
    assert outcome.code == 0 and outcome.err == ""
    document = json.loads(outcome.out)
    assert document["policy_version"] == load_policies().policy_version
    assert [row["domain"] for row in document["rows"]] == DOMAINS
    quiz = document["rows"][0]
    assert list(quiz) == list(COLUMNS)
    assert quiz["data_categories"] == load_policies().domains["quiz_responses"].data_categories
    assert quiz["lawful_basis"] == "Art. 6(1)(a) consent"
    assert document["rows"][2]["archive_keep_for"] == "3650d"


@pytest.mark.parametrize(("args", "expected"), [
    (["--format", "xml"], "argument --format: invalid choice: 'xml' (choose from markdown, csv)"),
    (["--format"], "argument --format: expected one argument"),
    (["--format", "csv", "--json"], "--format csv and --json are two ways of printing the schedule: give one"),
    (["--colour"], "unrecognized arguments: --colour"),
])
def test_wrong_arguments_exit_2_saying_what_is_wrong(cli, args, expected):
    outcome = cli("policies", "schedule", *args)
    assert outcome.code == 2
    assert outcome.out == ""
    assert expected in outcome.err.replace("'markdown', 'csv'", "markdown, csv"), outcome.err


def test_a_broken_policy_file_exits_2(cli, tmp_path):
    path = tmp_path / "policies.yaml"
    path.write_text("version: 1\ndomains: {}\n")
    outcome = cli("policies", "schedule", str(path))
    assert outcome.code == 2 and outcome.out == ""
    assert outcome.err.startswith("retention: error: ") and str(path) in outcome.err


def test_console_script_prints_the_csv():
    result = run_script("policies", "schedule", "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert [row["domain"] for row in csv.DictReader(io.StringIO(result.stdout))] == DOMAINS
