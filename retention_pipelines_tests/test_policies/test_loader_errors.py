"""A corpus of broken policy files: each is refused with one operator-ready PolicyError naming
the file, the domain and the field, never with a traceback."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from retention_pipelines.policies import PolicyError, default_policy_path, load_policies
from retention_pipelines.policies.loader import POLICIES_ENV
from retention_pipelines_tests.support.policy_files import edit, setting


def removing(domain: str, key: str):
    return lambda data: data["domains"][domain].pop(key)


BAD_IDENTIFIERS = ["id; drop table x", "Quiz", "a-b", "1abc"]


def case(change, domain, fields, *expected, id):
    return pytest.param(edit(change), domain, fields, expected, id=id)


# (file text, domain named, field(s) named, other words the message must hold)
CORPUS = [
    case(setting("quiz_responses", "colour", "red"), "quiz_responses", ["colour"], "unknown key",
         id="unknown-key-in-domain"),
    case(setting("quiz_responses", "sla", "max_lagg", "1h"), "quiz_responses", ["sla.max_lagg"], "unknown key",
         id="unknown-key-in-sla"),
    case(setting("quiz_responses", "archive", "bucket", "cold"), "quiz_responses", ["archive.bucket"],
         "unknown key", id="unknown-key-in-archive"),
    case(setting("quiz_responses", "retain_for", "0d"), "quiz_responses", ["retain_for"], "zero",
         id="zero-retain-for-on-created-at"),
    case(setting("quiz_responses", "retain_for", "-1d"), "quiz_responses", ["retain_for"], id="negative-retain-for"),
    case(setting("magic_link_tokens", "retain_for", "-1d"), "magic_link_tokens", ["retain_for"],
         id="negative-retain-for-on-expires-at"),
    case(setting("quiz_responses", "retain_for", "ninety days"), "quiz_responses", ["retain_for"],
         "'ninety days'", "duration", id="not-a-duration"),
    case(removing("email_blacklist", "on_erasure_reason"), "email_blacklist", ["on_erasure_reason"], "says why",
         id="kept-until-deadline-without-its-reason"),
    case(setting("email_blacklist", "on_erasure_reason", "  "), "email_blacklist", ["on_erasure_reason"], "says why",
         id="kept-until-deadline-with-a-blank-reason"),
    case(setting("quiz_responses", "on_erasure_reason", "we like it"), "quiz_responses", ["on_erasure_reason"],
         "only for on_erasure: keep_until_deadline", id="a-reason-without-keep-until-deadline"),
    case(setting("email_blacklist", "on_erasure", "keep_forever"), "email_blacklist", ["on_erasure"],
         id="unknown-on-erasure"),
    case(removing("email_blacklist", "subject_column"), "email_blacklist", ["on_erasure"], "subject_column",
         id="kept-until-deadline-without-a-subject"),
    case(setting("quiz_responses", "action", "remove"), "quiz_responses", ["action"], "'remove'",
         id="unknown-action"),
    case(setting("quiz_responses", "batch_size", 0), "quiz_responses", ["batch_size"], id="batch-size-zero"),
    case(setting("quiz_responses", "partitions", "cadence", "weekly"), "quiz_responses", ["partitions.cadence"],
         id="weekly-cadence"),
    case(setting("quiz_responses", "schedule", "hour_of_day", 3), "quiz_responses", ["schedule.hour_of_day"],
         id="hour-of-day-on-hourly-domain"),
    case(removing("quiz_responses", "table"), "quiz_responses", ["table"], id="missing-table"),
    # Two domains on one table: the message must say which two domains clash.
    case(setting("email_blacklist", "table", "meal_plans"), "email_blacklist", ["table"], "meal_plans",
         id="two-domains-same-table"),
]
for bad in BAD_IDENTIFIERS:
    for field in ("table", "primary_key", "clock_column"):
        CORPUS.append(case(setting("quiz_responses", field, bad), "quiz_responses", [field], repr(bad),
                           "identifier", id=f"{field}={bad}"))
    CORPUS.append(case(setting("meal_plans", "action", "redact", "null_columns", [bad]), "meal_plans",
                       ["action.redact.null_columns"], repr(bad), "identifier", id=f"null_columns={bad}"))
    CORPUS.append(case(setting("meal_plans", "archive", "exclude_columns", [bad]), "meal_plans",
                       ["archive.exclude_columns"], repr(bad), "identifier", id=f"exclude_columns={bad}"))
CORPUS.append(case(setting("meal_plans", "action", "redact", "stamp_column", "Quiz"), "meal_plans",
                   ["action.redact.stamp_column"], "'Quiz'", "identifier", id="stamp_column=Quiz"))


def renaming(domain: str, to: str):
    return lambda data: data["domains"].update({to: data["domains"].pop(domain)})


# archive.keep_for: required where the domain is archived, a duration longer than zero.
CORPUS += [
    case(lambda data: data["domains"]["email_blacklist"]["archive"].pop("keep_for"), "email_blacklist",
         ["archive", "archive.keep_for"], "required when archive.enabled is true", id="archived-without-keep-for"),
    case(setting("meal_plans", "archive", "keep_for", "0d"), "meal_plans", ["archive.keep_for"], "longer than zero",
         id="keep-for-zero"),
    case(setting("meal_plans", "archive", "keep_for", "ten years"), "meal_plans", ["archive.keep_for"],
         "'ten years'", "duration", id="keep-for-not-a-duration"),
    # A domain named like a prefix of the archive store that is no domain's archive.
    case(renaming("email_blacklist", "reports"), "reports", ["name"], "holds no domain's archives",
         id="archived-domain-named-reports"),
]


# Values whose arithmetic would leave the range of a date, a timedelta or a query's LIMIT.
CORPUS += [
    case(setting("quiz_responses", "retain_for", f"{10**12}d"), "quiz_responses", ["retain_for"],
         "longer than 36500d (100 years)", id="retain-for-a-trillion-days"),
    case(setting("meal_plans", "archive", "keep_for", "36501d"), "meal_plans", ["archive.keep_for"],
         "longer than 36500d (100 years)", id="keep-for-past-a-century"),
    case(setting("quiz_responses", "sla", "max_lag", "99999999999999999999h"), "quiz_responses", ["sla.max_lag"],
         "100 years", id="max-lag-past-a-century"),
    case(setting("quiz_responses", "partitions", "start", date(1, 1, 1)), "quiz_responses", ["partitions.start"],
         "from 2000-01-01 to 2999-12-31", id="partitions-start-year-1"),
    case(setting("quiz_responses", "partitions", "start", date(9999, 12, 31)), "quiz_responses",
         ["partitions.start"], "from 2000-01-01 to 2999-12-31", id="partitions-start-year-9999"),
    case(setting("quiz_responses", "sla", "escalate_at", [2, 1e308]), "quiz_responses", ["sla.escalate_at"],
         "at most 100", id="escalate-at-1e308"),
    case(setting("quiz_responses", "sla", "escalate_at", [float("nan")]), "quiz_responses", ["sla.escalate_at"],
         "at most 100", id="escalate-at-nan"),
    case(setting("quiz_responses", "sla", "max_consecutive_failures", 10**18), "quiz_responses",
         ["sla.max_consecutive_failures"], "100", id="max-consecutive-failures-huge"),
]


def refusal(tmp_path: Path, text: str, name: str = "retention_policies.yaml") -> tuple[Path, str]:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policies(path)
    message = str(caught.value)
    assert "Traceback" not in message
    assert 'File "' not in message
    assert str(path) in message
    return path, message


@pytest.mark.parametrize(("text", "domain", "fields", "expected"), CORPUS)
def test_broken_policy_is_refused_naming_file_domain_and_field(tmp_path, text, domain, fields, expected):
    path, message = refusal(tmp_path, text)
    assert f"domain {domain}" in message, message
    for field in fields:
        assert field in message, message
    for words in expected:
        assert words in message, message
    # Every line is a complete statement about this file, fit for an operator.
    for line in message.splitlines():
        assert line.startswith(f"{path}: "), message


@pytest.mark.parametrize(("text", "domain", "fields", "expected"), CORPUS)
def test_one_problem_gives_exactly_one_line(tmp_path, text, domain, fields, expected):
    """_describe promises one line per problem: each file of the corpus has exactly one."""
    _, message = refusal(tmp_path, text)
    assert len(message.splitlines()) == 1, message


def test_yaml_syntax_error_names_the_file_and_the_line(tmp_path):
    text = "\n".join([
        'version: "1"',
        "domains:",
        "  quiz_responses:",
        "    table: quiz_responses",
        "    primary_key: [id",  # line 5: never closed
        "    clock_column: created_at",
        "",
    ])
    _, message = refusal(tmp_path, text)
    assert "YAML syntax error" in message
    line = re.search(r"line (\d+)", message)
    assert line, message
    assert 5 <= int(line.group(1)) <= 7, message


def test_yaml_syntax_error_on_a_known_line(tmp_path):
    text = 'version: "1"\ndomains:\n  quiz_responses:\n    table: "quiz_responses\n'
    _, message = refusal(tmp_path, text)
    assert "YAML syntax error" in message
    assert re.search(r"line \d+", message), message


@pytest.mark.parametrize("text", ["- quiz_responses\n- meal_plans\n", "just a sentence\n", "42\n", ""],
                         ids=["list", "string", "number", "empty"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    _, message = refusal(tmp_path, text)
    assert "mapping" in message
    assert "top level" in message


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "policies.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policies(missing)
    message = str(caught.value)
    assert str(missing) in message
    assert "cannot read" in message
    assert "Traceback" not in message


def test_every_problem_of_a_file_is_reported(tmp_path):
    def two_problems(data):
        data["domains"]["quiz_responses"]["batch_size"] = 0
        data["domains"]["meal_plans"]["partitions"]["cadence"] = "weekly"
    _, message = refusal(tmp_path, edit(two_problems))
    assert "domain quiz_responses, field batch_size" in message
    assert "domain meal_plans, field partitions.cadence" in message


def test_shipped_file_is_the_default(monkeypatch):
    monkeypatch.delenv(POLICIES_ENV, raising=False)
    path = default_policy_path()
    assert path.name == "retention_policies.yaml"
    assert path.parent.name == "retention_pipelines"
    assert path.is_file()


def test_environment_variable_overrides_the_default_path(tmp_path, monkeypatch):
    override = tmp_path / "other_policies.yaml"
    override.write_text(edit(setting("quiz_responses", "retain_for", "48h")))
    monkeypatch.setenv(POLICIES_ENV, str(override))

    assert default_policy_path() == override
    assert load_policies().domains["quiz_responses"].retain_for.total_seconds() == 48 * 3600


def test_environment_override_to_a_broken_file_is_refused_naming_it(tmp_path, monkeypatch):
    override = tmp_path / "broken.yaml"
    override.write_text(edit(setting("quiz_responses", "batch_size", 0)))
    monkeypatch.setenv(POLICIES_ENV, str(override))

    with pytest.raises(PolicyError) as caught:
        load_policies()
    assert str(override) in str(caught.value)
    assert "domain quiz_responses, field batch_size" in str(caught.value)
