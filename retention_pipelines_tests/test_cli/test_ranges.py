"""Every numeric setting and argument in range: random values out of range, and malformed ones, fed
through the real `retention` entry point, are refused with exit code 2 and one line naming the
setting (or argument) and the range it accepts, never a traceback; nothing reaches a store."""

from __future__ import annotations

import copy
import re
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention_pipelines.cli.common import MAX_ID
from retention_pipelines.engine.gdpr.requests import MAX_EXTENSION_DAYS
from retention_pipelines.engine.report.figures import MONTH
from retention_pipelines.policies import default_policy_path
from retention_pipelines.stores.settings import MAX_LOCK_WAIT_SECONDS, RANGES, RetentionSettings

RANDOM = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

MALFORMED = ["", " ", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999", "-1e999", "ten", "5s", "30 days",
             "1,5", "0x1f", "\u00bd", "\u221e", "forever", "null", "true", "[1]", "1e", "."]


def bad_numbers(low: int, high: int, whole: bool) -> st.SearchStrategy[str]:
    """Numbers below and above the range, specials, words; for a whole number, fractions too."""
    outside = st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1),
                        st.floats(allow_nan=False).filter(lambda x: not low <= x <= high)).map(str)
    words = st.one_of(st.sampled_from(MALFORMED),
                      st.text(alphabet=string.ascii_letters + " -", min_size=1, max_size=12))
    fractions = st.integers(low, min(high, low + 10**6) - 1).map("{}.5".format)
    return st.one_of(outside, words, fractions) if whole else st.one_of(outside, words)


def one_error_line(stderr: str) -> str:
    """The error line: argparse's usage synopsis (and its continuation lines) may precede it."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith(("usage: ", "   "))]
    assert len(errors) == 1, stderr
    return errors[0]


# Settings --------------------------------------------------------------------------------------
@RANDOM
@given(data=st.data())
@pytest.mark.parametrize("field", sorted(RANGES))
def test_a_setting_out_of_range_is_refused_in_one_line_naming_it_and_its_range(cli, monkeypatch, tmp_path, field,
                                                                               data):
    low, high, unit = RANGES[field]
    value = data.draw(bad_numbers(low, high, RetentionSettings.model_fields[field].annotation is int), label="value")
    variable = f"RETENTION_{field.upper()}"
    with monkeypatch.context() as patch:
        patch.setenv("RETENTION_HOME", str(tmp_path))  # were it accepted, the demo database would be made there
        patch.setenv(variable, value)
        outcome = cli("hold", "list")
    assert outcome.code == 2 and outcome.out == "", outcome.text
    [line] = outcome.err.strip().splitlines()
    assert line.startswith(f"retention: error: configuration: {variable}: ") and f"from {low} to {high} {unit}" in line
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("field", sorted(RANGES))
def test_each_bound_of_a_setting_is_accepted(monkeypatch, field):
    from retention_pipelines.stores import load_settings

    low, high, _ = RANGES[field]
    for value in (low, high):
        monkeypatch.setenv(f"RETENTION_{field.upper()}", str(value))
        assert getattr(load_settings(), field) == value


# Numeric arguments ------------------------------------------------------------------------------
# (argv with {} for the value, the argument as argparse names it, low, high, whole)
ARGUMENTS = [
    (["run", "--wait={}"], "--wait", 0, MAX_LOCK_WAIT_SECONDS, False),
    (["demo", "--rows={}"], "--rows", 1, 100_000, True),
    (["erasure", "status", "--", "{}"], "id", 1, MAX_ID, True),
    (["erasure", "extend", "--days=5", "--reason", "backlog", "--", "{}"], "id", 1, MAX_ID, True),
    (["erasure", "extend", "1", "--reason", "backlog", "--days={}"], "--days", 1, MAX_EXTENSION_DAYS, True),
    (["erasure", "run", "--", "{}"], "id", 1, MAX_ID, True),
    (["queue", "show", "--", "{}"], "id", 1, MAX_ID, True),
    (["queue", "claim", "--by", "ops", "--", "{}"], "id", 1, MAX_ID, True),
    (["queue", "retry", "--by", "ops", "--", "1", "{}"], "ID", 1, MAX_ID, True),
    (["queue", "resolve", "--note", "done", "--by", "ops", "--", "{}"], "id", 1, MAX_ID, True),
    (["queue", "dismiss", "--note", "noise", "--by", "ops", "--", "{}"], "id", 1, MAX_ID, True),
]


@RANDOM
@given(data=st.data())
@pytest.mark.parametrize("argv, argument, low, high, whole", ARGUMENTS,
                         ids=[" ".join(a[0][:2]) + f" {a[1]}" for a in ARGUMENTS])
def test_a_numeric_argument_out_of_range_is_refused_naming_it_and_its_range(cli, argv, argument, low, high, whole,
                                                                           data):
    value = data.draw(bad_numbers(low, high, whole), label="value")
    outcome = cli(*[part.replace("{}", value) for part in argv])
    assert outcome.code == 2 and outcome.out == "", outcome.text
    line = one_error_line(outcome.err)
    assert f"argument {argument}: must be a" in line and f"from {low} to {high}" in line, line


def not_a_month(text: str) -> bool:
    return MONTH.fullmatch(text.strip()) is None


MONTHS = st.one_of(
    st.builds("{:04d}-{:02d}".format, st.integers(0, 1999) | st.integers(3000, 99_999), st.integers(1, 12)),
    st.builds("{:04d}-{:02d}".format, st.integers(2000, 2999), st.integers(0, 99).filter(lambda m: not 1 <= m <= 12)),
    st.builds("{}-{}".format, st.integers(), st.integers()),
    st.text(max_size=12),
).filter(not_a_month)


@RANDOM
@given(month=MONTHS)
def test_a_report_month_out_of_range_or_malformed_is_refused_in_one_line(cli, month):
    outcome = cli("report", f"--month={month}")
    assert outcome.code == 2 and outcome.out == "", outcome.text
    [line] = outcome.err.strip().splitlines()
    assert line.startswith("retention: error: --month ") and "from 2000-01 to 2999-12" in line, line


# Durations in the policy file --------------------------------------------------------------------
SHIPPED = yaml.safe_load(default_policy_path().read_text())
DURATION_FIELDS = [("meal_plans", "retain_for"), ("meal_plans", "archive", "keep_for"),
                   ("quiz_responses", "sla", "max_lag"), ("quiz_responses", "sla", "max_run_duration"),
                   ("quiz_responses", "sla", "resolve_within")]
TOO_LONG = st.one_of(st.integers(36_501, 10**30).map("{}d".format), st.just(f"{10**12}d"), st.just("9" * 5000 + "d"),
                     st.integers(36_500 * 86_400 + 1, 10**40).map("{}s".format))


@RANDOM
@given(data=st.data())
@pytest.mark.parametrize("path", DURATION_FIELDS, ids=[".".join(p[1:]) for p in DURATION_FIELDS])
def test_a_policy_duration_past_a_century_is_refused_at_validation(cli, tmp_path, path, data):
    value = data.draw(TOO_LONG, label="duration")
    policies = copy.deepcopy(SHIPPED)
    node = policies["domains"][path[0]]
    for part in path[1:-1]:
        node = node[part]
    node[path[-1]] = value
    file = tmp_path / "retention_policies.yaml"
    file.write_text(yaml.safe_dump(policies, sort_keys=False))
    outcome = cli("policies", "validate", str(file))
    assert outcome.code == 2 and outcome.out == "", outcome.text
    [line] = outcome.err.strip().splitlines()
    assert f"domain {path[0]}, field {'.'.join(path[1:])}: " in line and "longer than 36500d (100 years)" in line
    assert re.search(r"'\d+[sd]'", line), line
