"""Fencing tokens (engine/retention/fence.py): a run that lost its lock commits no batch once another run
holds the domain, even one stopped between its lock check and its commit."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from retention_pipelines.engine.retention.fence import DomainFence
from retention_pipelines.schema import domain_fences
from retention_pipelines.stores import LockLost
from retention_pipelines.stores.lock import RedisDomainLocks
from retention_pipelines_tests.support.app_rows import bulk_insert_pg, remaining_ids
from retention_pipelines_tests.support.engines import engine_for


def token(database, domain: str) -> int | None:
    with database.engine.connect() as connection:
        return connection.execute(sa.select(domain_fences.c.token).where(domain_fences.c.domain == domain)).scalar()


def test_each_take_raises_the_token_and_an_older_one_no_longer_passes(any_database):
    first = DomainFence.take(any_database, "quiz_responses")
    with any_database.begin() as connection:
        first.check(connection)
    second = DomainFence.take(any_database, "quiz_responses")
    assert second.token == first.token + 1 == token(any_database, "quiz_responses")
    with any_database.begin() as connection:
        second.check(connection)
        with pytest.raises(LockLost, match="quiz_responses: its lock was taken over by another run"):
            first.check(connection)
    assert DomainFence.take(any_database, "magic_link_tokens").token == 1  # one token per domain


def test_a_take_waits_for_a_batch_that_passed_its_check_and_has_not_committed(pg_database):
    stale = DomainFence.take(pg_database, "quiz_responses")
    taken = threading.Event()
    newer: list[DomainFence] = []

    def take() -> None:
        newer.append(DomainFence.take(pg_database, "quiz_responses"))
        taken.set()

    with pg_database.begin() as batch:  # the stale holder's batch: checked, not yet committed
        stale.check(batch)
        taker = threading.Thread(target=take)
        taker.start()
        with pg_database.engine.connect() as watcher:  # the new holder waits on the batch's row lock
            waiting = 0
            for _ in range(500):
                waiting = watcher.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()").scalar_one()
                watcher.rollback()
                if waiting:
                    break
                taken.wait(0.01)
        assert waiting == 1 and not taken.is_set()
    taker.join(30)
    assert taken.is_set() and newer[0].token == stale.token + 1


def test_a_run_under_a_lock_takes_the_fence_and_one_without_does_not(pg_database, redis_url, policies, quiz_policy,
                                                                     local_archive_url):
    bulk_insert_pg(pg_database, 300, "2 days")
    engine = engine_for(quiz_policy, policies, pg_database, local_archive_url)
    assert engine.run("unlocked").acted.acted_on == 300 and token(pg_database, "quiz_responses") is None
    bulk_insert_pg(pg_database, 300, "2 days")
    held = RedisDomainLocks(redis_url, ttl_seconds=30).acquire("quiz_responses")
    try:
        assert engine.run("locked", lock=held).acted.acted_on == 300
    finally:
        held.release()
    assert token(pg_database, "quiz_responses") == 1 and remaining_ids(pg_database) == set()
