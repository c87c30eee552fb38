"""`retention policies validate`: the shipped file passes; a broken one is refused, one line per problem."""

from __future__ import annotations

import yaml

from retention_pipelines.policies import default_policy_path
from retention_pipelines_tests.test_cli.conftest import run_script

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
