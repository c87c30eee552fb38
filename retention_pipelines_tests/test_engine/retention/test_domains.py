"""Each shipped domain's own deadline, on both databases: tokens on expires_at, the blacklist at 90 days."""

from __future__ import annotations

from datetime import timedelta

from retention_pipelines.engine.audit.entries import AuditStamp, write_entries
from retention_pipelines_tests.support.app_rows import (
    audit_entries,
    insert_blacklist_at,
    insert_token_expiring_at,
    remaining_ids,
)
from retention_pipelines_tests.support.engines import engine_for, whole_second


def test_a_token_expiring_exactly_at_the_cutoff_goes_and_one_a_second_later_stays(any_database, policies,
                                                                             local_archive_url):
    policy = policies.domains["magic_link_tokens"]
    cutoff = whole_second(any_database.now())
    expired = insert_token_expiring_at(any_database, [cutoff, cutoff - timedelta(hours=3)])
    valid = insert_token_expiring_at(any_database, [cutoff + timedelta(seconds=1), cutoff + timedelta(hours=1)])
    report = engine_for(policy, policies, any_database, local_archive_url).run("tokens", window_end=cutoff)
    assert report.acted.acted_on == 2
    assert remaining_ids(any_database, "magic_link_tokens") == set(valid)
    assert {e["record_id"] for e in audit_entries(any_database)} == set(expired)
    assert report.archived.batches == []  # secrets are never archived


def test_the_blacklist_keeps_an_entry_until_the_90th_day_and_archives_it_first(any_database, policies,
                                                                             local_archive_url):
    policy = policies.domains["email_blacklist"]
    now = whole_second(any_database.now())
    kept = insert_blacklist_at(any_database, [now - timedelta(days=89, hours=23, minutes=59),
                                              now - timedelta(days=10)])
    removed = insert_blacklist_at(any_database, [now - timedelta(days=90), now - timedelta(days=200)])
    engine = engine_for(policy, policies, any_database, local_archive_url)
    report = engine.run("blacklist", window_end=now)
    assert remaining_ids(any_database, "email_blacklist") == set(kept)
    entries = audit_entries(any_database)
    assert {e["record_id"] for e in entries} == set(removed)
    assert all(e["archive_uri"] and e["archive_uri"].startswith("file://") for e in entries)
    assert report.archived.rows == 2
    assert engine.count_acted_on_early(report.acted, "blacklist") == 0
    # Each entry's deadline is recorded: added + 90 days, never after its removal.
    for entry in entries:
        assert entry["deadline"] is not None
        assert any_database.read_time(entry["deadline"]) <= any_database.read_time(entry["occurred_at"])


def test_an_entry_acted_on_before_its_deadline_is_counted(any_database, policies, local_archive_url):
    """The check behind "never one second earlier" is able to fail: a forged early entry shows."""
    policy = policies.domains["email_blacklist"]
    now = any_database.now()
    insert_blacklist_at(any_database, [now - timedelta(days=91)])
    engine = engine_for(policy, policies, any_database, local_archive_url)
    report = engine.run("early-check")
    assert engine.count_acted_on_early(report.acted, "early-check") == 0
    with any_database.engine.begin() as connection:
        write_entries(connection, [AuditStamp("email_blacklist", "deleted", "early-check", "test").row(
            "forged", any_database.bind_time(now + timedelta(days=1)))])
    assert engine.count_acted_on_early(report.acted, "early-check") == 1
