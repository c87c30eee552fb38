"""sla.escalate_at: rising multiples of a limit above 1, and the escalation level they give."""

from __future__ import annotations

from datetime import timedelta

import pytest

from retention_pipelines.policies import PolicyError, load_policies
from retention_pipelines.policies.model import Sla
from retention_pipelines_tests.support.policy_files import edit, setting


def refused(tmp_path, escalate_at) -> str:
    path = tmp_path / "retention_policies.yaml"
    path.write_text(edit(setting("quiz_responses", "sla", "escalate_at", escalate_at)))
    with pytest.raises(PolicyError) as caught:
        load_policies(path)
    message = str(caught.value)
    assert str(path) in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("escalate_at", [[4, 2], [2, 2], [2, 4, 3], [1, 2], [0.5], [-2, 4], [1.0]],
                         ids=["falling", "repeated", "not-rising-at-the-end", "starts-at-1", "below-1",
                              "negative", "exactly-1"])
def test_escalation_multiples_must_rise_and_exceed_one(tmp_path, escalate_at):
    message = refused(tmp_path, escalate_at)
    assert "domain quiz_responses, field sla.escalate_at" in message, message
    assert "rising multiples" in message and "above 1" in message, message
    assert len(message.splitlines()) == 1, message


def test_too_many_escalation_levels_are_refused(tmp_path):
    message = refused(tmp_path, [2, 3, 4, 5, 6, 7])
    assert "domain quiz_responses, field sla.escalate_at" in message, message


def test_a_multiple_that_is_not_a_number_is_refused_naming_the_field(tmp_path):
    message = refused(tmp_path, [2, "twice"])
    assert "domain quiz_responses, field sla.escalate_at" in message, message


@pytest.mark.parametrize("escalate_at", [[1.5], [1.01, 2], [2, 4, 8], []])
def test_rising_multiples_above_one_are_accepted(tmp_path, escalate_at):
    path = tmp_path / "retention_policies.yaml"
    path.write_text(edit(setting("quiz_responses", "sla", "escalate_at", escalate_at)))
    assert load_policies(path).domains["quiz_responses"].sla.escalate_at == escalate_at


def test_the_shipped_domains_escalate_at_twice_and_four_times_their_limits(policies):
    for policy in policies.domains.values():
        assert policy.sla.escalate_at == [2.0, 4.0]


HOUR = timedelta(hours=1).total_seconds()


@pytest.mark.parametrize(("observed", "level"), [
    (HOUR + 1, 1), (2 * HOUR - 1, 1), (2 * HOUR, 2), (4 * HOUR - 1, 2), (4 * HOUR, 3), (100 * HOUR, 3),
])
def test_the_level_rises_at_each_multiple_of_the_limit(observed, level):
    sla = Sla(max_lag="1h", max_run_duration="30m")
    assert sla.escalation_level(observed, HOUR) == level


@pytest.mark.parametrize(("failures", "level"), [(3, 1), (5, 1), (6, 2), (11, 2), (12, 3), (30, 3)])
def test_failures_in_a_row_escalate_at_multiples_of_the_tolerated_count(failures, level):
    sla = Sla(max_lag="1h", max_run_duration="30m", max_consecutive_failures=3)
    assert sla.escalation_level(failures, sla.max_consecutive_failures) == level


def test_custom_multiples_give_their_own_levels():
    sla = Sla(max_lag="1h", max_run_duration="30m", escalate_at=[1.5, 3, 10])
    assert [sla.escalation_level(x * HOUR, HOUR) for x in (1.2, 1.5, 2.9, 3, 9.99, 10)] == [1, 2, 2, 3, 3, 4]


def test_without_multiples_a_breach_never_escalates():
    sla = Sla(max_lag="1h", max_run_duration="30m", escalate_at=[])
    assert sla.escalation_level(1000 * HOUR, HOUR) == 1
