"""The shipped policy file loads into the four domains the business agreed on."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from retention_pipelines.policies import DomainPolicy, PolicyFile, default_policy_path, load_policies
from retention_pipelines.policies.model import MAX_DURATION, parse_duration

SHIPPED_DOMAINS = ["quiz_responses", "magic_link_tokens", "meal_plans", "email_blacklist"]


@pytest.fixture(scope="module")
def shipped() -> PolicyFile:
    return load_policies(default_policy_path())


def test_shipped_file_has_the_four_domains_each_on_its_own_table(shipped):
    assert list(shipped.domains) == SHIPPED_DOMAINS
    for name, policy in shipped.domains.items():
        assert isinstance(policy, DomainPolicy)
        assert policy.name == name
        assert policy.table == name
        assert policy.primary_key == "id"


def test_quiz_responses_are_deleted_24_hours_after_creation_and_not_archived(shipped):
    quiz = shipped.domains["quiz_responses"]
    assert quiz.clock_column == "created_at"
    assert quiz.retain_for == timedelta(hours=24)
    assert quiz.action == "delete"
    assert quiz.redact is None
    assert quiz.action_name == "deleted"
    assert quiz.archive.enabled is False
    assert quiz.partitions.cadence == "hourly"
    assert quiz.schedule.hour_of_day is None


def test_magic_link_tokens_expire_on_their_own_deadline(shipped):
    tokens = shipped.domains["magic_link_tokens"]
    assert tokens.clock_column == "expires_at"
    assert tokens.retain_for == timedelta(0)
    assert tokens.action_name == "deleted"
    assert tokens.archive.enabled is False


def test_meal_plans_are_redacted_not_deleted(shipped):
    plans = shipped.domains["meal_plans"]
    assert plans.retain_for == timedelta(days=90)
    assert plans.redact is not None
    assert plans.redact.null_columns == ["pdf_blob_key"]
    assert plans.redact.stamp_column == "pdf_deleted_at"
    assert plans.action_name == "redacted"
    assert plans.archive.enabled is True
    assert plans.archive.exclude_columns == ["email"]
    assert plans.archive.keep_for == timedelta(days=3650)  # ten years: purchase records
    assert plans.partitions.cadence == "daily"


def test_email_blacklist_is_kept_90_days_and_archived(shipped):
    blacklist = shipped.domains["email_blacklist"]
    assert blacklist.clock_column == "created_at"
    assert blacklist.retain_for == timedelta(days=90)
    assert blacklist.action_name == "deleted"
    assert blacklist.archive.enabled is True
    assert blacklist.archive.keep_for == timedelta(days=365)
    # "Never one second earlier", even on a request for erasure: the policy says so, and why.
    assert blacklist.on_erasure == "keep_until_deadline" and "legal claims" in blacklist.on_erasure_reason


def test_every_other_domain_erases_on_request(shipped):
    for name, policy in shipped.domains.items():
        if name != "email_blacklist":
            assert (policy.on_erasure, policy.on_erasure_reason) == ("erase", None), name


def test_every_archived_domain_says_how_long_its_archive_lives_and_why(shipped):
    text = default_policy_path().read_text()
    for name, policy in shipped.domains.items():
        if policy.archive.enabled:
            assert policy.archive.keep_for > timedelta(0), name
            # The reason is written next to the value, as a comment in the domain's archive entry.
            entry = text[text.index(f"\n  {name}:\n"):]
            archive = entry[entry.index("    archive:\n"):entry.index("      keep_for:")]
            assert "      # " in archive, name
        else:
            assert policy.archive.keep_for is None, name


def test_policy_version_is_declared_version_plus_a_digest_of_the_file(shipped):
    declared = yaml.safe_load(default_policy_path().read_text())["version"]
    assert shipped.version == declared
    match = re.fullmatch(r"(.+)\+([0-9a-f]{12})", shipped.policy_version)
    assert match, shipped.policy_version
    assert match.group(1) == declared


def test_policy_version_changes_with_the_files_bytes_even_without_a_version_bump(shipped, tmp_path):
    original = default_policy_path().read_bytes()
    same = tmp_path / "same.yaml"
    same.write_bytes(original)
    edited = tmp_path / "edited.yaml"
    edited.write_bytes(original + b"\n# an edit that forgot to bump the version\n")

    assert load_policies(same).policy_version == shipped.policy_version
    changed = load_policies(edited)
    assert changed.version == shipped.version
    assert changed.policy_version != shipped.policy_version
    assert changed.policy_version.startswith(shipped.version + "+")
    assert re.fullmatch(re.escape(shipped.version) + r"\+[0-9a-f]{12}", changed.policy_version)


def test_policies_are_frozen(shipped):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        shipped.domains["quiz_responses"].retain_for = timedelta(0)


@given(amount=st.integers(min_value=0, max_value=10**40), unit=st.sampled_from("smhd"))
def test_a_duration_is_a_timedelta_of_at_most_a_century_or_a_clear_refusal(amount, unit):
    """Never an OverflowError: 10**12 days is no timedelta, and no period a policy may give."""
    seconds = amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    if seconds <= MAX_DURATION.total_seconds():
        assert parse_duration(f"{amount}{unit}") == timedelta(seconds=seconds)
    else:
        with pytest.raises(ValueError, match=r"is longer than 36500d \(100 years\)"):
            parse_duration(f"{amount}{unit}")
