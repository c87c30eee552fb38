"""`retention policies validate`: the shipped file passes; a broken one is refused, one line per problem."""

from __future__ import annotations

import json

import yaml

from retention_pipelines.policies import default_policy_path
from retention_pipelines_tests.support.cli import run_script

DOMAINS = ["quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist"]


def broken_file(tmp_path):
    data = yaml.safe_load(default_policy_path().read_text())
    data["domains"]["quiz_responses"]["batch_size"] = 0
    data["domains"]["quiz_responses"]["retain_for"] = "ninety days"
    data["domains"]["meal_plans"]["partitions"]["cadence"] = "weekly"
    path = tmp_path / "broken_policies.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_validate_shipped_file_lists_its_domains(cli):
    outcome = cli("policies", "validate")
    assert outcome.code == 0, outcome.err
    assert "valid" in outcome.out
    assert "4 domains" in outcome.out
    for domain in DOMAINS:
        assert domain in outcome.out
    assert outcome.err == ""


def test_validate_an_explicit_file(cli, tmp_path):
    copy = tmp_path / "copy.yaml"
    copy.write_bytes(default_policy_path().read_bytes())
    outcome = cli("policies", "validate", str(copy))
    assert outcome.code == 0, outcome.err
    assert str(copy) in outcome.out
    for domain in DOMAINS:
        assert domain in outcome.out


def test_validate_honours_the_environment_override(cli, tmp_path, monkeypatch):
    path = broken_file(tmp_path)
    monkeypatch.setenv("RETENTION_POLICIES_FILE", str(path))
    outcome = cli("policies", "validate")
    assert outcome.code == 2
    assert str(path) in outcome.err


def test_validate_broken_file_one_line_per_problem(cli, tmp_path):
    path = broken_file(tmp_path)
    outcome = cli("policies", "validate", str(path))
    assert outcome.code == 2
    assert outcome.out == ""
    lines = outcome.err.strip().splitlines()
    assert lines[0].startswith("retention: error: ")
    assert len(lines) == 3, outcome.err
    text = outcome.err
    assert "domain quiz_responses, field batch_size" in text
    assert "domain quiz_responses, field retain_for" in text
    assert "domain meal_plans, field partitions.cadence" in text
    for line in lines:
        assert str(path) in line


def test_validate_missing_file(cli, tmp_path):
    missing = tmp_path / "absent.yaml"
    outcome = cli("policies", "validate", str(missing))
    assert outcome.code == 2
    assert outcome.err.startswith("retention: error: ")
    assert str(missing) in outcome.err


def test_console_script_validate_ok():
    result = run_script("policies", "validate")
    assert result.returncode == 0, result.stderr
    for domain in DOMAINS:
        assert domain in result.stdout
    assert "Traceback" not in result.stderr


def test_console_script_validate_broken_file(tmp_path):
    path = broken_file(tmp_path)
    result = run_script("policies", "validate", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("retention: error: ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 3, result.stderr
    assert result.stdout == ""


# the record of processing: warned about where missing, never refused --------------------------------
def without_processing_fields(tmp_path, **fields_by_domain: list[str]):
    data = yaml.safe_load(default_policy_path().read_text())
    for domain, fields in fields_by_domain.items():
        for field in fields:
            data["domains"][domain].pop(field)
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_validate_warns_of_each_missing_field_naming_domain_and_field_and_still_passes(cli, tmp_path):
    path = without_processing_fields(tmp_path, quiz_responses=["lawful_basis"],
                                     email_blacklist=["purpose", "data_categories", "recipients"])
    outcome = cli("policies", "validate", str(path))
    assert outcome.code == 0, outcome.err
    assert "valid" in outcome.out and "warning" not in outcome.out
    lines = outcome.err.strip().splitlines()
    assert [line.split(": ", 3)[:3] for line in lines] == [
        ["retention", "warning", str(path)]] * 4, lines
    assert [line.split(": ", 3)[3].split(":")[0] for line in lines] == [
        "domain quiz_responses, field lawful_basis", "domain email_blacklist, field purpose",
        "domain email_blacklist, field data_categories", "domain email_blacklist, field recipients"]
    assert "Art. 9(2) condition for health data" in lines[0]


def test_validate_json_lists_the_warnings_and_stays_one_document(cli, tmp_path):
    path = without_processing_fields(tmp_path, meal_plans=["purpose"])
    outcome = cli("policies", "validate", str(path), "--json")
    assert outcome.code == 0 and outcome.err == ""
    document = json.loads(outcome.out)
    assert document["valid"] is True
    assert [warning.split(": ")[1] for warning in document["warnings"]] == ["domain meal_plans, field purpose"]
    assert "warnings" not in json.loads(cli("policies", "validate", "--json").out)  # the shipped file: none


def test_console_script_validate_warns_on_standard_error(tmp_path):
    path = without_processing_fields(tmp_path, magic_link_tokens=["recipients"])
    result = run_script("policies", "validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (
        f"retention: warning: {path}: domain magic_link_tokens, field recipients: missing; the record of processing "
        "names the categories of recipients the data is disclosed to (Art. 30(1)(d)); [] for none")


# --database: the policy file against the live database's tables ---------------------------------
def edited_file(tmp_path, **domains: dict):
    """The shipped file with these fields changed, per domain."""
    data = yaml.safe_load(default_policy_path().read_text())
    for domain, fields in domains.items():
        data["domains"][domain].update(fields)
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def refused_lines(outcome) -> list[str]:
    assert outcome.code == 2, outcome.text
    assert outcome.out == ""
    lines = outcome.err.strip().splitlines()
    assert lines[0].startswith("retention: error: ")
    return lines


def test_validate_database_the_shipped_file_fits_the_app_schema(cli, cli_env):
    outcome = cli("policies", "validate", "--database")
    assert outcome.code == 0, outcome.text
    assert "every enabled domain's table fits it in" in outcome.out
    for domain in DOMAINS:
        assert domain in outcome.out


def test_validate_database_a_misspelled_column_does_not_validate(cli, cli_env, tmp_path):
    path = edited_file(tmp_path, quiz_responses={"clock_column": "created_att"},
                       meal_plans={"subject_column": "e_mail"})
    assert cli("policies", "validate", str(path)).code == 0  # the file alone is well formed
    lines = refused_lines(cli("policies", "validate", str(path), "--database"))
    assert len(lines) == 2, lines
    assert "domain quiz_responses, field clock_column: table quiz_responses has no column 'created_att'" in lines[0]
    assert "domain meal_plans, field subject_column: table meal_plans has no column 'e_mail'" in lines[1]
    assert all(str(path) in line for line in lines)


def test_validate_database_a_column_of_the_wrong_type(cli, cli_env, tmp_path):
    path = edited_file(tmp_path, quiz_responses={"subject_column": "answers"})
    lines = refused_lines(cli("policies", "validate", str(path), "--database"))
    assert len(lines) == 1, lines
    assert "domain quiz_responses, field subject_column: column quiz_responses.answers is JSONB, not text" in lines[0]


def test_validate_database_a_wall_time_clock_needs_its_zone(cli, cli_env, tmp_path):
    with cli_env.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE quiz_responses "
                                   "ALTER COLUMN created_at TYPE timestamp without time zone")
    lines = refused_lines(cli("policies", "validate", "--database"))
    assert len(lines) == 1, lines
    assert "domain quiz_responses, field clock_timezone: column quiz_responses.created_at is a timestamp " \
           "without time zone" in lines[0]
    declared = edited_file(tmp_path, quiz_responses={"clock_timezone": "Europe/Berlin"})
    assert cli("policies", "validate", str(declared), "--database").code == 0
    unknown = edited_file(tmp_path, quiz_responses={"clock_timezone": "Europe/Atlantis"})
    outcome = cli("policies", "validate", str(unknown))  # refused by the file's own validation
    assert outcome.code == 2 and "domain quiz_responses, field clock_timezone" in outcome.err


def test_validate_database_a_nullable_clock_needs_a_meaning_for_null(cli, cli_env, tmp_path):
    with cli_env.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE email_blacklist ALTER COLUMN created_at DROP NOT NULL")
    lines = refused_lines(cli("policies", "validate", "--database"))
    assert len(lines) == 1, lines
    assert "domain email_blacklist, field clock_nulls: column email_blacklist.created_at may be NULL" in lines[0]
    declared = edited_file(tmp_path, email_blacklist={"clock_nulls": "keep"})
    assert cli("policies", "validate", str(declared), "--database").code == 0
    outcome = cli("policies", "validate", str(edited_file(tmp_path, email_blacklist={"clock_nulls": "delete"})))
    assert outcome.code == 2 and "domain email_blacklist, field clock_nulls" in outcome.err


def test_validate_database_a_missing_clock_index(cli, cli_env):
    with cli_env.engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX magic_link_tokens_expires_at_idx")
    lines = refused_lines(cli("policies", "validate", "--database"))
    assert len(lines) == 1, lines
    assert "domain magic_link_tokens, field clock_column: table magic_link_tokens has no index on expires_at" \
        in lines[0]


def test_validate_database_a_subject_lookup_without_its_index(cli, cli_env):
    with cli_env.engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX email_blacklist_email_subject_key_idx")
    lines = refused_lines(cli("policies", "validate", "--database"))
    assert len(lines) == 1, lines
    assert "domain email_blacklist, field subject_column: no index on table email_blacklist serves the subject " \
           "lookup" in lines[0]
    statement = ("CREATE INDEX email_blacklist_email_subject_key_idx ON email_blacklist ((CASE WHEN "
                 "(email ~ '[^ -~]') THEN '' ELSE lower(trim(email) COLLATE \"C\") END))")
    assert lines[0].endswith(statement)
    with cli_env.engine.begin() as connection:
        connection.exec_driver_sql(statement)
    assert cli("policies", "validate", "--database").code == 0


def test_validate_database_skips_disabled_domains(cli, cli_env, tmp_path):
    path = edited_file(tmp_path, quiz_responses={"enabled": False, "clock_column": "created_att"})
    assert cli("policies", "validate", str(path), "--database").code == 0
