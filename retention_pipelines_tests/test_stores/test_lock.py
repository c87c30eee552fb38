"""Domain locks: one holder at a time, waiting works, a dead holder's lock goes, a lost lock is told."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest
import redis

from retention_pipelines.stores import DomainLocked, LockLost, StoreUnavailable
from retention_pipelines.stores.lock import FileDomainLocks, RedisDomainLocks, domain_locks
from retention_pipelines_tests.support.servers import free_port

DOMAIN = "quiz_responses"
KEY = f"retention:lock:{DOMAIN}"


@pytest.fixture(params=["file", "redis"])
def locks(request, tmp_path):
    if request.param == "file":
        return domain_locks(None, tmp_path / "locks", 5.0)
    return domain_locks(request.getfixturevalue("redis_url"), tmp_path / "unused", 5.0)


def test_domain_locks_picks_redis_when_a_url_is_given(redis_url, tmp_path):
    assert isinstance(domain_locks(redis_url, tmp_path, 5.0), RedisDomainLocks)
    assert isinstance(domain_locks(None, tmp_path, 5.0), FileDomainLocks)


def test_second_acquire_is_refused_naming_the_domain(locks):
    held = locks.acquire(DOMAIN)
    try:
        with pytest.raises(DomainLocked, match=DOMAIN) as refused:
            locks.acquire(DOMAIN)
        assert "another run" in str(refused.value)
        other = locks.acquire("magic_link_tokens")  # another domain is free
        other.release()
        held.ensure_held()
    finally:
        held.release()
    locks.acquire(DOMAIN).release()  # free again after release


def lock_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "retention_pipelines.lock"]


def test_waiting_acquire_succeeds_once_the_holder_releases(locks, caplog):
    caplog.set_level(logging.INFO, logger="retention_pipelines")
    locks.acquire("magic_link_tokens", wait_seconds=10).release()  # free: taken at once, nothing to say
    assert lock_lines(caplog) == []
    held = locks.acquire(DOMAIN)
    releaser = threading.Timer(0.7, held.release)
    releaser.start()
    started = time.monotonic()
    try:
        second = locks.acquire(DOMAIN, wait_seconds=10)
    finally:
        releaser.join()
    waited = time.monotonic() - started
    second.ensure_held()
    second.release()
    assert 0.5 <= waited < 5
    waiting, taken = lock_lines(caplog)
    assert waiting == f"domain {DOMAIN} is busy (another run holds its lock): waiting up to 10s for it"
    assert taken.startswith(f"domain {DOMAIN}: its lock is free, taken after waiting ")


def test_waiting_acquire_gives_up_after_wait_seconds(locks, caplog):
    caplog.set_level(logging.INFO, logger="retention_pipelines")
    held = locks.acquire(DOMAIN)
    try:
        started = time.monotonic()
        with pytest.raises(DomainLocked, match=DOMAIN) as refused:
            locks.acquire(DOMAIN, wait_seconds=0.6)
        assert 0.5 <= time.monotonic() - started < 5
    finally:
        held.release()
    assert str(refused.value) == (f"domain {DOMAIN} is being cleaned by another run (its lock is held) after "
                                  "waiting 0.6s; nothing was done")
    assert lock_lines(caplog) == [f"domain {DOMAIN} is busy (another run holds its lock): waiting up to 0.6s for it"]


def test_released_file_lock_is_no_longer_held(tmp_path):
    held = FileDomainLocks(tmp_path).acquire(DOMAIN)
    held.release()
    with pytest.raises(LockLost):
        held.ensure_held()


def test_redis_lock_is_renewed_beyond_its_ttl_while_held(redis_url):
    held = RedisDomainLocks(redis_url, ttl_seconds=1.0).acquire(DOMAIN)
    try:
        time.sleep(3.0)
        held.ensure_held()
        with pytest.raises(DomainLocked):
            RedisDomainLocks(redis_url, ttl_seconds=1.0).acquire(DOMAIN)
        assert 0 < redis.Redis.from_url(redis_url).pttl(KEY) <= 1000
    finally:
        held.release()
    assert redis.Redis.from_url(redis_url).exists(KEY) == 0


HOLDER = """
import sys, time
from pathlib import Path
from retention_pipelines.stores.lock import domain_locks
locks = domain_locks(sys.argv[1] or None, Path(sys.argv[2]), 1.0)
held = locks.acquire("quiz_responses")
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_a_dead_holders_lock_is_taken_over(kind, request, tmp_path):
    """The holder is SIGKILLed: it stops renewing (Redis: the lock expires after its TTL) or the
    kernel drops its flock (file); either way a new run gets the lock."""
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else ""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, redis_url, str(tmp_path / "locks")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        locks = domain_locks(redis_url or None, tmp_path / "locks", 1.0)
        time.sleep(1.5)  # past the TTL: a living holder keeps renewing
        with pytest.raises(DomainLocked):
            locks.acquire(DOMAIN)
        holder.kill()
        holder.wait(10)
        started = time.monotonic()
        taken = locks.acquire(DOMAIN, wait_seconds=5)
        taken.ensure_held()
        taken.release()
        assert time.monotonic() - started < 2.5
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        holder.stdout.close()


@pytest.mark.parametrize("takeover", ["deleted", "overwritten"])
def test_ensure_held_raises_lock_lost_when_the_key_goes(redis_url, takeover):
    held = RedisDomainLocks(redis_url, ttl_seconds=5.0).acquire(DOMAIN)
    client = redis.Redis.from_url(redis_url)
    try:
        held.ensure_held()
        if takeover == "deleted":
            client.delete(KEY)
        else:
            client.set(KEY, "another-run-token", px=5000)
        with pytest.raises(LockLost, match=DOMAIN):
            held.ensure_held()
    finally:
        held.release()
    if takeover == "overwritten":  # releasing a lost lock must not free the new holder's
        assert client.get(KEY) == b"another-run-token"


def test_unreachable_redis_raises_store_unavailable_without_the_password():
    port = free_port()
    locks = RedisDomainLocks(f"redis://:hunter2secret@127.0.0.1:{port}/0", ttl_seconds=5.0)
    with pytest.raises(StoreUnavailable) as unavailable:
        locks.acquire(DOMAIN)
    message = str(unavailable.value)
    assert "lock service" in message
    assert f"127.0.0.1:{port}" in message
    assert "hunter2secret" not in message


def test_a_redis_that_does_not_answer_raises_store_unavailable():
    """A lock service that accepts connections but never answers (hung, or a firewall that lets
    the handshake through) fails like an unreachable one, once its socket timeout is over."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes the handshakes; nothing ever answers
        port = silent.getsockname()[1]
        locks = RedisDomainLocks(f"redis://:hunter2secret@127.0.0.1:{port}/0", ttl_seconds=5.0)
        with pytest.raises(StoreUnavailable) as unavailable:
            locks.acquire(DOMAIN)
    message = str(unavailable.value)
    assert "lock service" in message and f"127.0.0.1:{port}" in message
    assert "hunter2secret" not in message
